"""Tests for :mod:`pypicache.storage`: the on-disk layout of archives, sidecars and pages."""

import json
import os
import time

import pytest
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface.verify import verifyObject

from pypicache.errors import BadRequest
from pypicache.index.model import DistFile, ProjectPage
from pypicache.storage.filesystem import FilesystemStore
from pypicache.storage.interface import IStore
from pypicache.storage.records import (
    MIRROR,
    PRERELEASES,
    RELEASES,
    TEMP_PREFIX,
    CachedPage,
    StoredFile,
)

WHEEL = "foo-1.0-py3-none-any.whl"
SDIST = "foo-1.0.tar.gz"
CONTENT = b"PK\x03\x04 not really a zip"
METADATA = b"Metadata-Version: 2.1\nName: foo\nVersion: 1.0\n"


def info_for(filename: str = WHEEL, **kwargs) -> DistFile:
    kwargs.setdefault("url", f"https://files.example/{filename}")
    kwargs.setdefault("hashes", {"sha256": "ab" * 32})
    kwargs.setdefault("size", len(CONTENT))
    return DistFile(filename=filename, **kwargs)


@pytest.fixture
def root(tmp_path) -> FilePath:
    return FilePath(str(tmp_path))


@pytest.fixture
def store(root, clock) -> FilesystemStore:
    return FilesystemStore(root, clock=clock)


def result_of(d):
    """The result of a Deferred that has fired (as ``projects()`` does at once
    on a store without a thread pool); a failure is raised."""
    results = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def put(
    store,
    project="foo",
    filename=WHEEL,
    area=MIRROR,
    content=CONTENT,
    metadata=None,
    **kwargs,
):
    """Store ``content`` as ``filename`` through ``open_temp`` and ``commit``."""
    temp = store.open_temp(project, area)
    temp.write(content)
    return result_of(store.commit(temp, info_for(filename, **kwargs), metadata))


def metadata_file(store, project, filename):
    """The path of the stored core metadata of ``filename``, or ``None``."""
    opened = result_of(store.open_metadata(project, filename))
    return None if opened is None else opened.path


def listing(directory: FilePath) -> list[str]:
    return sorted(directory.listdir()) if directory.exists() else []


# -- interface -----------------------------------------------------------------


def test_provides_istore(store):
    """FilesystemStore fully implements IStore."""
    assert verifyObject(IStore, store)


def test_layout_created(root):
    """A new store creates the mirror, private and pages folders."""
    FilesystemStore(root)
    for area in (MIRROR, RELEASES, PRERELEASES, "pages"):
        assert root.preauthChild(area).isdir()


def test_default_clock(root):
    """Without a clock the store uses wall time for ``stored_at``."""
    store = FilesystemStore(root)
    stored = put(store)
    assert isinstance(stored.stored_at, float) and stored.stored_at > 1_600_000_000


# -- open_temp / commit / discard ----------------------------------------------


def test_commit_layout(store, root):
    """Commit puts the archive, its ``.json`` sidecar and ``.metadata`` in ``mirror/<project>/``."""
    put(store, metadata=METADATA)
    directory = root.preauthChild("mirror/foo")
    assert listing(directory) == [WHEEL, WHEEL + ".json", WHEEL + ".metadata"]
    assert directory.child(WHEEL).getContent() == CONTENT
    assert directory.child(WHEEL + ".metadata").getContent() == METADATA


def test_commit_without_metadata(store, root):
    """Without metadata only the archive and its sidecar are written."""
    put(store)
    assert listing(root.preauthChild("mirror/foo")) == [WHEEL, WHEEL + ".json"]


def test_commit_sidecar(store, root, clock):
    """The sidecar holds the file's info (without its upstream URL) and when it was stored."""
    put(store, requires_python=">=3.8", yanked="bad")
    sidecar = json.loads(root.preauthChild(f"mirror/foo/{WHEEL}.json").getContent())
    assert sidecar["stored_at"] == clock.seconds()
    assert DistFile.from_json(sidecar["file"]) == info_for(
        url=None, requires_python=">=3.8", yanked="bad"
    )


def test_commit_result(store, root, clock):
    """Commit returns the StoredFile: path, info without URL, area, time,
    project, and the scheme and host the mirrored file came from (its origin),
    which a sidecar read again gives too."""
    stored = put(store)
    assert stored == StoredFile(
        path=root.preauthChild(f"mirror/foo/{WHEEL}"),
        info=info_for(url=None),
        area=MIRROR,
        stored_at=clock.seconds(),
        project="foo",
        origin="https://files.example",
    )
    assert store.stored_file(stored.path).origin == "https://files.example"
    assert stored.project == "foo"
    assert not stored.private
    assert stored.metadata_path == root.preauthChild(f"mirror/foo/{WHEEL}.metadata")


@pytest.mark.parametrize(
    "area, folder, private",
    [
        (MIRROR, "mirror", False),
        (RELEASES, "private/releases", True),
        (PRERELEASES, "private/prereleases", True),
    ],
)
def test_commit_areas(store, root, area, folder, private):
    """Each area commits into its own folder; only mirror files are not private."""
    stored = put(store, area=area)
    assert stored.path == root.preauthChild(f"{folder}/foo/{WHEEL}")
    assert stored.private is private
    assert store.find_now("foo", WHEEL).area == area


def test_commit_leaves_no_temporary(store, root):
    """After a commit no ``.tmp-`` file is left in the project folder."""
    put(store, metadata=METADATA)
    assert not [
        n for n in listing(root.preauthChild("mirror/foo")) if n.startswith(TEMP_PREFIX)
    ]


def test_commit_replaces(store):
    """Committing a file of the same name again replaces its content and sidecar."""
    put(store, content=b"old", size=3)
    stored = put(store, content=b"newer", size=5)
    assert stored.path.getContent() == b"newer"
    assert store.find_now("foo", WHEEL).info.size == 5
    assert len(store.listed_files("foo")) == 1


@pytest.mark.parametrize(
    "filename", ["../x.whl", "a/b.whl", ".hidden.whl", "x\x00.whl", "a%2Fb.whl"]
)
def test_commit_unsafe_filename(store, filename):
    """Commit refuses a filename that is not a single safe path segment."""
    temp = store.open_temp("foo", MIRROR)
    with pytest.raises(BadRequest):
        result_of(store.commit(temp, DistFile(filename=filename), None))
    temp.discard()


def test_open_temp_in_project_folder(store, root):
    """A temporary file is created, hidden, in the folder it will be committed to."""
    temp = store.open_temp("foo", MIRROR)
    assert temp.path.parent() == root.preauthChild("mirror/foo")
    assert temp.path.basename().startswith(TEMP_PREFIX)
    assert (temp.project, temp.area) == ("foo", MIRROR)
    temp.discard()


def test_open_temp_unique(store):
    """Two temporary files for one project never collide."""
    first, second = store.open_temp("foo", MIRROR), store.open_temp("foo", MIRROR)
    assert first.path != second.path
    first.discard()
    second.discard()


def test_temp_never_listed(store):
    """A temporary file being written is not listed, nor makes its project appear."""
    temp = store.open_temp("foo", MIRROR)
    temp.write(CONTENT)
    temp.flush_and_sync()
    assert store.listed_files("foo") == []
    assert result_of(store.projects()) == []
    temp.discard()


def test_temp_not_listed_beside_files(store):
    """A temporary file beside stored archives is not listed."""
    put(store)
    store.forget("foo")
    temp = store.open_temp("foo", MIRROR)
    temp.write(CONTENT)
    temp.flush_and_sync()
    assert [s.info.filename for s in store.listed_files("foo")] == [WHEEL]
    temp.discard()


def test_discard(store):
    """Discard closes and deletes the temporary file; a second discard is harmless."""
    temp = store.open_temp("foo", MIRROR)
    temp.write(CONTENT)
    temp.discard()
    assert temp.file.closed
    assert not temp.path.exists()
    temp.discard()
    assert store.listed_files("foo") == []


@pytest.mark.parametrize(
    "folder",
    [
        "mirror/foo",
        "private/releases/foo",
        "private/prereleases/foo",
        "pages",
        "mirror",
        "withdrawn",
        "private/status",
        "ui/descriptions/ab",
    ],
)
def test_cleanup_removes_temporaries(root, folder):
    """The start-up clean-up deletes ``.tmp-*`` files a crash left behind, and nothing else."""
    FilesystemStore(root)
    directory = root.preauthChild(folder)
    directory.makedirs(ignoreExistingDirectory=True)
    directory.child(TEMP_PREFIX + "0123456789abcdef").setContent(b"partial")
    directory.child("keep-1.0.tar.gz").setContent(b"x")
    result_of(FilesystemStore(root).remove_temporaries())
    assert listing(directory) == ["keep-1.0.tar.gz"]


def test_cleanup_removes_temporaries_of_the_top_records(root):
    """A kill while a record at the top of the cache (``usage.json``,
    ``tokens.json``...) was being written leaves a ``.tmp-*`` file there: the
    start-up clean-up deletes it and keeps the records."""
    FilesystemStore(root)
    root.child(TEMP_PREFIX + "0123456789abcdef").setContent(b'{"used": {}}')
    root.child("usage.json").setContent(b"{}")
    result_of(FilesystemStore(root).remove_temporaries())
    assert not root.child(TEMP_PREFIX + "0123456789abcdef").exists()
    assert root.child("usage.json").exists()


def test_new_store_reads_nothing_of_the_tree(root):
    """Creating a store leaves leftovers alone: the clean-up walks the tree, so
    it runs later, in a thread, once the daemon answers."""
    directory = root.preauthChild("mirror/foo")
    directory.makedirs()
    directory.child(TEMP_PREFIX + "0123456789abcdef").setContent(b"partial")
    FilesystemStore(root)
    assert listing(directory) == [TEMP_PREFIX + "0123456789abcdef"]


def test_cleanup_keeps_temporaries_still_being_written(root):
    """A temporary file its writer holds open (a download started after
    start-up, or another worker's) is kept; once nobody holds it, as after a
    kill, it goes."""
    store = FilesystemStore(root)
    temp = store.open_temp("foo", MIRROR)
    temp.write(CONTENT)
    result_of(store.remove_temporaries())
    assert os.path.exists(temp.path.path)
    temp.file.close()
    result_of(store.remove_temporaries())
    assert not os.path.exists(temp.path.path)


def test_cleanup_keeps_recent_sidecars_without_archive(root):
    """A sidecar without its archive changed since ``before`` may be another
    process's commit about to rename its archive: kept; an older one goes."""
    store = FilesystemStore(root)
    folder = root.preauthChild("mirror/foo")
    folder.makedirs()
    old = folder.child("foo-1.0.tar.gz.json")
    old.setContent(b"{}")
    os.utime(old.path, (1000, 1000))
    new = folder.child("foo-2.0.tar.gz.json")
    new.setContent(b"{}")
    result_of(store.remove_temporaries(before=time.time() - 60))
    assert not old.exists()
    assert new.exists()


def test_temporary_removed_before_it_was_locked_is_replaced(root, monkeypatch):
    """A temporary file the clean-up removed between its creation and its
    locking is noticed, and the writer gets a new one that stays."""
    import pypicache.storage.atomic as atomic

    real_open = open
    removed = []

    def open_then_clean(path, *args, **kwargs):
        file = real_open(path, *args, **kwargs)
        if not removed:
            removed.append(path)
            assert atomic.remove_if_unlocked(path)
        return file

    monkeypatch.setattr(atomic, "open", open_then_clean, raising=False)
    temp = FilesystemStore(root).open_temp("foo", MIRROR)
    assert removed and temp.path.path != removed[0]
    assert temp.path.exists()
    temp.discard()


# -- files / find / projects ---------------------------------------------------


def test_files_sorted_private_first(store):
    """``files`` lists private files first, then mirrored ones, each sorted by filename."""
    put(store, filename="foo-2.0.tar.gz")
    put(store, filename="foo-1.0.tar.gz")
    put(store, filename="foo-3.0rc1.tar.gz", area=PRERELEASES)
    put(store, filename="foo-1.5.tar.gz", area=RELEASES)
    assert [(s.info.filename, s.area) for s in store.listed_files("foo")] == [
        ("foo-1.5.tar.gz", RELEASES),
        ("foo-3.0rc1.tar.gz", PRERELEASES),
        ("foo-1.0.tar.gz", MIRROR),
        ("foo-2.0.tar.gz", MIRROR),
    ]


def test_files_unknown_project(store):
    """A project with nothing stored has no files."""
    assert store.listed_files("nothing") == []


def test_files_read_from_disk(root, store, clock):
    """A new store lists what an earlier one committed, with the sidecar's info."""
    put(store, requires_python=">=3.8", metadata=METADATA)
    again = FilesystemStore(root)
    [stored] = again.listed_files("foo")
    assert stored.info == info_for(url=None, requires_python=">=3.8")
    assert stored.stored_at == clock.seconds()
    assert stored.area == MIRROR


def test_private_shadows_mirror(store):
    """A private file and a mirrored file of the same name list once, as the private one."""
    put(store, area=MIRROR)
    put(store, area=RELEASES)
    [stored] = store.listed_files("foo")
    assert stored.area == RELEASES
    assert store.find_now("foo", WHEEL).area == RELEASES


def test_find(store):
    """``find`` returns the stored file by name, or None."""
    stored = put(store)
    assert store.find_now("foo", WHEEL) == stored
    assert store.find_now("foo", SDIST) is None
    assert store.find_now("bar", WHEEL) is None


def test_find_private_stored_by_another_process(root, store):
    """A private file another process stores, in a project folder that did
    not exist when this store last looked, is found once the area's change
    shows (within ``RECHECK_NS``): a cold file's lookup skips the private
    folders that do not exist without a ``stat`` of the archive in each."""
    assert store.find_now("foo", WHEEL) is None  # the areas looked at
    other = FilesystemStore(root)
    stored = put(other, area=RELEASES)
    time.sleep(0.01)  # past RECHECK_NS (5 ms)
    found = store.find_now("foo", WHEEL)
    assert found is not None and found.area == RELEASES and found.path == stored.path


def test_find_deleted_behind_our_back(store):
    """A file removed from disk is not found, and the project's generation changes."""
    put(store)
    [listed] = store.listed_files("foo")  # the listing is now cached
    before = store.generation("foo")
    os.remove(listed.path.path)  # by an operator or another process
    assert store.find_now("foo", WHEEL) is None
    assert store.generation("foo") != before
    assert store.listed_files("foo") == []


def test_projects(store):
    """``projects`` lists every project with a stored file in any area, sorted, once."""
    put(store, project="zeta", filename="zeta-1.0.tar.gz")
    put(store, project="alpha", filename="alpha-1.0.tar.gz", area=RELEASES)
    put(store, project="mid", filename="mid-1.0.tar.gz", area=PRERELEASES)
    put(store, project="alpha", filename="alpha-0.9.tar.gz")
    assert result_of(store.projects()) == ["alpha", "mid", "zeta"]


def test_projects_listed_through_the_thread_pool(root):
    """With a thread pool, ``projects`` lists the folders there, not on the
    caller's thread: its Deferred fires when that work is done; callers asking
    meanwhile share the one listing, and the names are then kept."""
    work = []

    def run_blocking(f, *args):
        work.append((f, args, Deferred()))
        return work[-1][2]

    store = FilesystemStore(root, run_blocking=run_blocking, run_sync=maybeDeferred)
    put(store, project="foo")
    first, second = store.projects(), store.projects()
    assert len(work) == 1
    assert not first.called and not second.called
    f, args, done = work[0]
    done.callback(f(*args))
    assert result_of(first) == result_of(second) == ["foo"]
    assert result_of(store.projects()) == ["foo"]
    assert len(work) == 1
    put(store, project="bar", filename="bar-1.0.tar.gz")
    again = store.projects()
    assert len(work) == 2 and not again.called


def test_projects_ignores_empty_and_hidden(store, root):
    """Folders without archives (empty, only a temp, sidecar or metadata) and dot folders are no projects."""
    put(store)
    root.preauthChild("mirror/empty").makedirs()
    store.open_temp("tempy", MIRROR).discard()
    store.open_temp("writing", MIRROR).write(b"x")
    result_of(store.write_metadata("metaonly", "metaonly-1.0.tar.gz", METADATA))
    hidden = root.preauthChild("mirror/.hidden")
    hidden.makedirs()
    hidden.child("hidden-1.0.tar.gz").setContent(b"x")
    assert result_of(store.projects()) == ["foo"]


@pytest.mark.parametrize(
    "filename",
    ["README", "notes.txt", SDIST + ".json", SDIST + ".metadata", ".foo-1.0.tar.gz"],
)
def test_non_archives_not_listed(store, root, filename):
    """Files that are not distributions (sidecars, metadata, dotfiles, others) are not listed."""
    directory = root.preauthChild("mirror/foo")
    directory.makedirs()
    directory.child(filename).setContent(b"{}")
    assert store.listed_files("foo") == []
    assert result_of(store.projects()) == []


@pytest.mark.parametrize(
    "filename", [WHEEL, SDIST, "foo-1.0.zip", "foo-1.0-py2.7.egg", "foo-1.0.tar.bz2"]
)
def test_archive_without_sidecar_is_not_listed(store, root, filename):
    """An archive dropped in by hand is not listed until a rescan has checked it."""
    directory = root.preauthChild("private/releases/foo")
    directory.makedirs()
    directory.child(filename).setContent(b"x" * 123)
    assert store.listed_files("foo") == []
    assert result_of(store.projects()) == []


@pytest.mark.parametrize(
    "sidecar",
    [
        b"",
        b"not json",
        b"[]",
        b'{"nofile": 1}',
        b'{"file": {"size": 1}}',
        b"\xff",
        b'{"file": null}',
        b'{"file": []}',
        b'{"file": "x"}',
    ],
)
def test_archive_with_unusable_sidecar_is_not_listed(store, root, sidecar):
    """An archive whose sidecar cannot be read, or records another size, is not listed."""
    directory = root.preauthChild("mirror/foo")
    directory.makedirs()
    directory.child(SDIST).setContent(b"abcd")
    directory.child(SDIST + ".json").setContent(sidecar)
    assert store.listed_files("foo") == []


def test_sidecar_filename_is_the_archives(store, root):
    """The listed filename is the archive's own name, whatever its sidecar says."""
    directory = root.preauthChild("mirror/foo")
    directory.makedirs()
    directory.child(SDIST).setContent(b"abcd")
    sidecar = {
        "file": DistFile(filename="other-9.tar.gz", url="https://x/", size=4).to_json()
    }
    directory.child(SDIST + ".json").setContent(json.dumps(sidecar).encode())
    [stored] = store.listed_files("foo")
    assert (stored.info.filename, stored.info.url) == (SDIST, None)


# -- generation ----------------------------------------------------------------


def test_generation_starts_at_zero(store):
    """An untouched project is at generation 0."""
    assert store.generation("foo") == 0


def test_generation_changes_on_commit(store):
    """Every commit changes the project's generation, and only that project's."""
    seen = {store.generation("foo")}
    put(store)
    seen.add(store.generation("foo"))
    put(store, filename=SDIST)
    seen.add(store.generation("foo"))
    assert len(seen) == 3
    assert store.generation("bar") == 0


def test_generation_unchanged_by_reads(store):
    """Listing and finding do not change the generation."""
    put(store)
    before = store.generation("foo")
    store.listed_files("foo")
    store.find_now("foo", WHEEL)
    result_of(store.projects())
    assert store.generation("foo") == before


def test_generation_unchanged_by_discard(store):
    """A discarded temporary file does not change the generation."""
    store.open_temp("foo", MIRROR).discard()
    assert store.generation("foo") == 0


def test_commit_visible_after_listing(store):
    """A file committed after a listing was cached shows up in the next listing."""
    put(store)
    assert len(store.listed_files("foo")) == 1
    put(store, filename=SDIST)
    assert [s.info.filename for s in store.listed_files("foo")] == [WHEEL, SDIST]


# -- core metadata -------------------------------------------------------------


def test_add_metadata(store, root, clock):
    """``add_metadata`` writes ``.metadata`` and records its sha256 in the sidecar."""
    stored = put(store)
    before = store.generation("foo")
    clock.advance(60)
    updated = result_of(store.add_metadata("foo", WHEEL, METADATA, "cd" * 32))
    assert updated.info.core_metadata == {"sha256": "cd" * 32}
    assert updated.stored_at == stored.stored_at
    assert stored.metadata_path.getContent() == METADATA
    assert store.generation("foo") != before
    assert store.find_now("foo", WHEEL).info.core_metadata == {"sha256": "cd" * 32}
    assert FilesystemStore(root).find_now("foo", WHEEL).info.core_metadata == {
        "sha256": "cd" * 32
    }
    assert metadata_file(store, "foo", WHEEL) == stored.metadata_path


def test_add_metadata_unknown_file(store):
    """``add_metadata`` for a file not stored raises KeyError."""
    with pytest.raises(KeyError):
        result_of(store.add_metadata("foo", WHEEL, METADATA, "cd" * 32))


def test_write_metadata_ahead_of_archive(store, root):
    """``write_metadata`` keeps upstream metadata in the mirror before the archive exists."""
    result_of(store.write_metadata("foo", WHEEL, METADATA))
    path = metadata_file(store, "foo", WHEEL)
    assert path == root.preauthChild(f"mirror/foo/{WHEEL}.metadata")
    assert path.getContent() == METADATA
    assert store.listed_files("foo") == []


def test_write_metadata_overwrites(store):
    """Writing metadata again replaces it."""
    result_of(store.write_metadata("foo", WHEEL, b"old"))
    result_of(store.write_metadata("foo", WHEEL, METADATA))
    assert metadata_file(store, "foo", WHEEL).getContent() == METADATA


def test_metadata_file_absent(store):
    """Without stored metadata ``metadata_file`` is None."""
    put(store)
    assert metadata_file(store, "foo", WHEEL) is None
    assert metadata_file(store, "bar", WHEEL) is None


def test_metadata_file_prefers_private(store):
    """The metadata of a private file wins over mirrored metadata of the same name."""
    result_of(store.write_metadata("foo", WHEEL, b"mirrored"))
    put(store, area=RELEASES, metadata=b"private")
    assert metadata_file(store, "foo", WHEEL).getContent() == b"private"


def test_metadata_from_commit(store):
    """Metadata given to ``commit`` is found by ``metadata_file``."""
    stored = put(store, area=PRERELEASES, metadata=METADATA)
    assert metadata_file(store, "foo", WHEEL) == stored.metadata_path


@pytest.mark.parametrize(
    "filename", ["../x.whl", "a/b.whl", ".x.whl", "x\x00.whl", "%2e%2e"]
)
def test_metadata_unsafe_filename(store, filename):
    """Metadata look-ups and writes refuse unsafe filenames."""
    with pytest.raises(BadRequest):
        metadata_file(store, "foo", filename)
    with pytest.raises(BadRequest):
        result_of(store.write_metadata("foo", filename, METADATA))


# -- pages ---------------------------------------------------------------------


PAGE = ProjectPage(
    name="foo",
    files=(
        DistFile(
            filename=WHEEL,
            url="https://files.example/foo-1.0-py3-none-any.whl",
            hashes={"sha256": "ab" * 32},
            requires_python=">=3.8",
            yanked="broken",
            core_metadata={"sha256": "cd" * 32},
            size=10,
            upload_time="2024-01-02T03:04:05Z",
            provenance="https://p.example/prov",
        ),
        DistFile(
            filename=SDIST,
            url="https://files.example/foo-1.0.tar.gz",
            core_metadata=True,
        ),
    ),
    versions=("1.0",),
)


@pytest.mark.parametrize(
    "cached",
    [
        CachedPage(
            page=PAGE,
            fetched_at=1234.5,
            etag='"abc"',
            last_modified="Tue, 02 Jan 2024 03:04:05 GMT",
        ),
        CachedPage(page=PAGE, fetched_at=0.0),
        CachedPage(page=ProjectPage(name="empty"), fetched_at=1.0, etag='W/"x"'),
    ],
)
def test_page_round_trip(store, root, cached):
    """A written page reads back equal, from this store and from a new one."""
    result_of(store.write_page("foo", cached))
    assert result_of(store.read_page("foo")) == cached
    assert result_of(FilesystemStore(root).read_page("foo")) == cached


def test_page_overwrite(store):
    """Writing a page again replaces it."""
    result_of(
        store.write_page("foo", CachedPage(page=PAGE, fetched_at=1.0, etag='"a"'))
    )
    result_of(
        store.write_page("foo", CachedPage(page=PAGE, fetched_at=2.0, etag='"b"'))
    )
    assert result_of(store.read_page("foo")).etag == '"b"'


def test_page_absent(store):
    """A project without a cached page reads as None."""
    assert result_of(store.read_page("foo")) is None


def test_page_file_location(store, root):
    """Pages are kept as ``pages/<project>.json`` with no temporary left over."""
    result_of(store.write_page("foo", CachedPage(page=PAGE, fetched_at=1.0)))
    assert listing(root.child("pages")) == ["foo.json"]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"not json",
        b"\xff\xfe",
        b"null",
        b"[]",
        b"{}",
        b'{"page": {}, "fetched_at": 1}',
        b'{"page": {"name": "foo"}}',
        b'{"page": {"name": "foo", "files": 5}, "fetched_at": 1}',
        b'{"page": {"name": "foo", "files": [{"url": "x"}]}, "fetched_at": 1}',
        b'{"page": {"name": "foo"}, "fetched_at": "soon"}',
        b'{"page": {"name": "foo"}, "fetched_at": null}',
    ],
)
def test_page_corrupt(store, root, content):
    """A corrupt page file reads as None instead of raising."""
    root.child("pages").child("foo.json").setContent(content)
    assert result_of(store.read_page("foo")) is None


@pytest.mark.parametrize(
    "content",
    [
        b'{"page": "foo", "fetched_at": 1}',
        b'{"page": ["foo"], "fetched_at": 1}',
        b'{"page": {"name": "foo", "files": ["oops"]}, "fetched_at": 1}',
        b'{"page": {"name": "foo", "files": [null]}, "fetched_at": 1}',
        b'{"listing": {"name": "foo", "fields": ["filename"], "rows": ["oops"]},'
        b' "fetched_at": 1}',
        b'{"listing": {"name": "foo", "fields": ["filename"], "rows": [null]},'
        b' "fetched_at": 1}',
        b'{"listing": {"name": "foo", "fields": ["filename"], "rows": [[]]},'
        b' "fetched_at": 1}',
        b'{"listing": {"name": "foo", "fields": "filename", "rows": []},'
        b' "fetched_at": 1}',
        b'{"listing": {"name": "foo", "rows": []}, "fetched_at": 1}',
    ],
)
def test_page_corrupt_file_entry(store, root, content):
    """A page file whose page or file entries are not objects reads as None instead of raising."""
    root.child("pages").child("foo.json").setContent(content)
    assert result_of(store.read_page("foo")) is None


def test_startup_removes_leftovers_of_an_unfinished_store(tmp_path):
    """A crash between writing sidecars and renaming the archive leaves sidecars alone:
    start-up removes them (and temporaries in every area), but keeps tombstones,
    cached pages and core metadata fetched from upstream ahead of its archive."""
    root = FilePath(str(tmp_path))
    FilesystemStore(root)
    releases = tmp_path / "private" / "releases" / "p"
    mirror = tmp_path / "mirror" / "m"
    deleted = tmp_path / "private" / ".deleted" / "p"
    pages = tmp_path / "pages"
    for folder in (releases, mirror, deleted):
        folder.mkdir(parents=True, exist_ok=True)
    leftovers = [
        releases / "p-1.0-py3-none-any.whl.json",
        releases / "p-1.0-py3-none-any.whl.metadata",
        mirror / "m-1.0-py3-none-any.whl.json",
        deleted / ".tmp-0123456789abcdef",
    ]
    kept = [
        mirror / "m-2.0-py3-none-any.whl.metadata",
        deleted / "p-0.9-py3-none-any.whl.json",
        pages / "m.json",
        releases / "p-2.0-py3-none-any.whl",
        releases / "p-2.0-py3-none-any.whl.json",
    ]
    for path in leftovers + kept:
        path.write_bytes(b"{}")
    dropped = releases / "by-hand.json"
    dropped.mkdir()
    (dropped / "p-3.0-py3-none-any.whl").write_bytes(b"PK")
    store = FilesystemStore(root)
    result_of(store.remove_temporaries())
    assert (dropped / "p-3.0-py3-none-any.whl").exists()
    assert [p for p in leftovers if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []
    assert metadata_file(store, "p", "p-1.0-py3-none-any.whl") is None
    assert metadata_file(store, "m", "m-2.0-py3-none-any.whl") is not None


# -- answers at once (concurrency.result_now) ---------------------------------


def test_result_now_of_a_fired_deferred():
    """``result_now`` gives the result of a fired Deferred, and raises the
    error of a failed one (which is then not logged as unhandled)."""
    from twisted.internet.defer import fail, succeed

    from pypicache.concurrency import result_now

    assert result_now(succeed(5)) == 5
    failed = fail(KeyError("x"))
    with pytest.raises(KeyError):
        result_now(failed)
    assert failed.result is None


def test_result_now_of_a_deferred_not_fired():
    """``result_now`` raises NotReady for a Deferred that has not fired, or
    waits on another, and leaves it running."""
    from pypicache.concurrency import NotReady, result_now

    waiting = Deferred()
    with pytest.raises(NotReady):
        result_now(waiting)
    inner = Deferred()
    chained = Deferred()
    chained.callback(None)
    chained.addCallback(lambda _: inner)
    with pytest.raises(NotReady):
        result_now(chained)
    waiting.callback(1)
    inner.callback(2)
    assert result_now(waiting) == 1 and result_now(chained) == 2
