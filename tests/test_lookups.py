"""Lookups made cheaper on the reactor (session 10): the paths of areas and
children remembered, lookups that found nothing not made again at once
(but after a change made here, a lock taken, or ``RECHECK_NS``), state
documents found missing looked for again per folder (``read_state_now``),
and what each of them still sees of other processes' changes."""

import os
import time

import pytest
from twisted.python.filepath import FilePath, InsecurePath

from pypicache.storage import missing as missing_module
from pypicache.storage.filesystem import FilesystemStore
from pypicache.storage.listings import RACY_NS, RECHECK_NS
from pypicache.storage.locks import try_lock
from pypicache.storage.records import MIRROR, RELEASES
from pypicache.storage.shared import SharedDoc, SharedDocs
from pypicache.storage.state import StateDoc
from tests.test_store import METADATA, WHEEL, metadata_file, put, result_of

PAST_RECHECK = RECHECK_NS / 1e9 * 2


@pytest.fixture
def store(tmp_path) -> FilesystemStore:
    """A store with the real clock; its ``root`` is the test's folder."""
    return FilesystemStore(FilePath(str(tmp_path)))


def count_disk_lookups(store, monkeypatch):
    """Count the archives looked up on the disk one at a time."""
    calls = []
    real = store._read_one

    def counted(project, filename):
        calls.append((project, filename))
        return real(project, filename)

    monkeypatch.setattr(store, "_read_one", counted)
    return calls


def test_children_are_fresh_paths(store):
    """``project_dir`` and ``page_path`` give a new ``FilePath`` each time
    (one caches what it learned of its file), with the checks of ``child``."""
    first = store.project_dir(MIRROR, "foo")
    assert first == store.root.child(MIRROR).child(
        "foo"
    ) and first is not store.project_dir(MIRROR, "foo")
    assert not first.exists()
    first.makedirs()
    assert store.project_dir(MIRROR, "foo").isdir()
    os.rmdir(first.path)
    assert not store.project_dir(MIRROR, "foo").exists()
    assert store.page_path("foo") == store.root.child("pages").child("foo.json")
    with pytest.raises(InsecurePath):
        store.project_dir(MIRROR, "..")


def test_missing_file_is_looked_up_once(store, monkeypatch):
    """A file that is not stored, asked for again and again by one request,
    is looked up on the disk once within ``RECHECK_NS``, then again."""
    calls = count_disk_lookups(store, monkeypatch)
    monkeypatch.setattr(missing_module, "RECHECK_NS", 200_000_000)  # a loaded host
    for _ in range(5):
        assert store.find_now("foo", WHEEL) is None
        assert metadata_file(store, "foo", WHEEL) is None
    assert len(calls) == 1
    time.sleep(0.25)
    assert store.find_now("foo", WHEEL) is None
    assert len(calls) == 2


def test_missing_file_stored_here_is_found_at_once(store):
    """A file stored through this store is found at once, although a lookup
    found nothing a moment before; so is core metadata written ahead of its
    archive through it."""
    assert store.find_now("foo", WHEEL) is None
    assert metadata_file(store, "foo", WHEEL) is None
    result_of(store.write_metadata("foo", WHEEL, METADATA))
    assert metadata_file(store, "foo", WHEEL).getContent() == METADATA
    stored = put(store)
    assert store.find_now("foo", WHEEL) == stored


def test_missing_file_stored_by_another_process_is_found_under_a_lock(store):
    """A file (or core metadata) another process stored while this one
    remembered it missing is found once this process takes a lock (what the
    mirror does before it fetches one: the other process held it while it
    stored), or after ``RECHECK_NS``."""
    assert store.find_now("foo", WHEEL) is None
    assert metadata_file(store, "foo", WHEEL) is None
    other = FilesystemStore(store.root)
    result_of(other.write_metadata("foo", WHEEL, METADATA))
    stored = put(other)
    lock = try_lock(store.lock_path(MIRROR, "foo", WHEEL))
    try:
        assert store.find_now("foo", WHEEL) == stored
        assert metadata_file(store, "foo", WHEEL) is not None
    finally:
        lock.release()
    assert store.find_now("foo", "foo-2.0.tar.gz") is None
    put(other, filename="foo-2.0.tar.gz")
    time.sleep(PAST_RECHECK)
    assert store.find_now("foo", "foo-2.0.tar.gz") is not None


def test_reread_sees_another_process_at_once(store):
    """``reread`` (the mirror's look under its download lock) reads the disk,
    whatever a lookup remembered, and lists what it finds."""
    assert store.find_now("foo", WHEEL) is None
    stored = put(FilesystemStore(store.root))
    assert result_of(store.reread(MIRROR, "foo", WHEEL)) == stored
    assert store.find_now("foo", WHEEL) == stored


def test_mirrored_commit_keeps_private_folder_names(store, monkeypatch):
    """Storing a mirrored file keeps what the store knows of the private
    areas' folders (checked on every request); storing a private one reads
    them again at once."""
    store.private_now("foo")
    cached = dict(store._folder_cache)
    put(store)
    assert {a: store._folder_cache.get(a) for a in (RELEASES,)} == {
        RELEASES: cached.get(RELEASES)
    }
    put(store, project="bar", filename="bar-1.0.tar.gz", area=RELEASES)
    assert store.private_now("bar")
    assert store.find_now("bar", "bar-1.0.tar.gz").area == RELEASES


def make_old(path: str) -> None:
    """Give ``path`` a modification time well before now (past RACY_NS)."""
    old = time.time() - 10 * RACY_NS / 1e9
    os.utime(path, (old, old))


def count_opens(store, monkeypatch):
    calls = []
    real = store._read_state

    def counted(name, tag):
        calls.append(name)
        return real(name, tag)

    monkeypatch.setattr(store, "_read_state", counted)
    return calls


def test_missing_documents_are_looked_for_per_folder(store, monkeypatch):
    """Documents missing from a folder that did not change are not opened
    again; the folder is checked once per ``state_max_age`` for all of them,
    and a view is fresh from when its folder was last found so."""
    folder = store.root.child("withdrawn")
    folder.makedirs()
    make_old(folder.path)
    opens = count_opens(store, monkeypatch)
    monkeypatch.setattr(store, "state_max_age", 0.2)  # a loaded host
    names = [f"withdrawn/p{i}.json" for i in range(3)]
    for name in names:
        assert store.read_state_now(name)[0] == StateDoc({}, None)
    assert len(opens) == 3
    time.sleep(0.25)
    first, checked = store.read_state_now(names[0])
    assert first == StateDoc({}, None)
    for name in names[1:]:
        assert store.read_state_now(name) == (StateDoc({}, None), checked)
    assert len(opens) == 3


def test_missing_document_written_by_another_process_shows(store):
    """A document another process writes where this one found it missing
    shows within ``state_max_age`` (its folder changed): in a folder that
    exists, in one that did not, and in a folder changed moments before it
    was found missing (not trusted: looked for every time)."""
    store.root.child("withdrawn").makedirs()
    make_old(store.root.child("withdrawn").path)
    docs = SharedDocs(store, "withdrawn", None)
    fresh = SharedDocs(store, "private/status", None)
    assert docs.get("foo") == {} and fresh.get("foo") == {}
    assert store.read_state_now("local-yanks.json")[0] == StateDoc({}, None)
    other = FilesystemStore(store.root)
    result_of(other.change_state("withdrawn/foo.json", lambda d: {"a": 1}))
    result_of(other.change_state("private/status/foo.json", lambda d: {"b": 2}))
    result_of(other.change_state("local-yanks.json", lambda d: {"c": 3}))
    time.sleep(PAST_RECHECK)
    assert docs.get("foo") == {"a": 1}
    assert fresh.get("foo") == {"b": 2}
    assert store.read_state_now("local-yanks.json")[0].data == {"c": 3}


def test_missing_document_written_here_shows_at_once(store):
    """A document this process writes shows at once in every view of it,
    also in a view made apart from the writer's."""
    store.root.child("withdrawn").makedirs()
    make_old(store.root.child("withdrawn").path)
    reader = SharedDoc(store, "withdrawn/foo.json")
    writer = SharedDocs(store, "withdrawn", None)
    assert reader.data == {} and writer.get("foo") == {}
    result_of(writer.update("foo", lambda d: {"a": 1}))
    assert writer.get("foo") == {"a": 1}
    reader._checked = None  # as when its state_max_age is over
    assert reader.data == {"a": 1}


def test_damaged_document_keeps_the_last_view(store):
    """A damaged document read at once keeps the view as it was (and is
    complained about), as the asynchronous reads do."""
    doc = SharedDoc(store, "local-yanks.json")
    result_of(store.change_state("local-yanks.json", lambda d: {"x": 1}))
    assert doc.data == {"x": 1}
    store.root.child("local-yanks.json").setContent(b"{not json")
    doc._checked = None
    assert doc.data == {"x": 1}


def test_lookup_memory_is_bounded(store):
    """Lookups remembered are bounded (forgotten all at once past the bound)."""
    for i in range(missing_module.KEPT + 5):
        store.find_now("foo", f"foo-{i}.tar.gz")
    assert len(store._missing) <= missing_module.KEPT


def test_project_without_folders_is_looked_up_once(store, monkeypatch):
    """A project with nothing stored (a cold page asks for its files and
    their generation) is looked for on the disk once within ``RECHECK_NS``;
    a file stored through this store lists at once, one another process
    stores after ``RECHECK_NS`` (or once a lock is taken)."""
    stamps = []
    real = store._listings._folders
    monkeypatch.setattr(
        store._listings, "_folders", lambda p: stamps.append(p) or real(p)
    )
    monkeypatch.setattr(missing_module, "RECHECK_NS", 200_000_000)  # a loaded host
    for _ in range(3):
        assert store.listed_files("foo") == [] and store.generation("foo") == 0
    assert len(stamps) == 1
    monkeypatch.setattr(missing_module, "RECHECK_NS", RECHECK_NS)
    stored = put(store)
    assert store.listed_files("foo") == [stored] and store.generation("foo") != 0
    assert store.listed_files("bar") == []
    other = put(FilesystemStore(store.root), project="bar", filename="bar-1.0.tar.gz")
    time.sleep(PAST_RECHECK)
    assert store.listed_files("bar") == [other]
    assert store.listed_files("baz") == []
    more = put(FilesystemStore(store.root), project="baz", filename="baz-1.0.tar.gz")
    try_lock(store.lock_path(MIRROR, "baz", "baz-1.0.tar.gz")).release()
    assert store.listed_files("baz") == [more]


def test_missing_page_is_read_once(store, monkeypatch):
    """A project's page file that is not there is looked for once within
    ``RECHECK_NS``; one written through this store reads at once."""
    from pypicache.index.model import ProjectPage
    from pypicache.storage import filesystem
    from pypicache.storage.records import CachedPage

    reads = []
    real = filesystem.read_page_file
    monkeypatch.setattr(
        filesystem, "read_page_file", lambda path: reads.append(path) or real(path)
    )
    monkeypatch.setattr(missing_module, "RECHECK_NS", 200_000_000)  # a loaded host
    for _ in range(3):
        assert result_of(store.read_page("foo")) is None
    assert len(reads) == 1
    page = CachedPage(page=ProjectPage(name="foo", files=()), fetched_at=1.0)
    result_of(store.write_page("foo", page))
    assert result_of(store.read_page("foo")).fetched_at == 1.0
