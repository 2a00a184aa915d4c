"""The store's listings: read from the disk when needed, kept in a bounded
cache, and brought up to date when another process changes a folder."""

import json
import os
import time

import attrs
import pytest
from twisted.python.filepath import FilePath

from pypicache.index.model import DistFile
from pypicache.storage import listed, listings
from pypicache.storage.filesystem import FilesystemStore
from pypicache.storage.records import MIRROR, RELEASES
from tests.test_store import result_of

CONTENT = b"PK\x03\x04 not really a zip"


def info(filename: str, **kwargs) -> DistFile:
    kwargs.setdefault("hashes", {"sha256": "ab" * 32})
    return DistFile(filename=filename, size=len(CONTENT), **kwargs)


def put(store, project, filename, area=MIRROR, **kwargs):
    temp = store.open_temp(project, area)
    temp.write(CONTENT)
    return result_of(store.commit(temp, info(filename, **kwargs)))


def wheel(project: str, version: str) -> str:
    return f"{project}-{version}-py3-none-any.whl"


@pytest.fixture
def root(tmp_path) -> FilePath:
    return FilePath(str(tmp_path))


@pytest.fixture
def ours(root) -> FilesystemStore:
    return FilesystemStore(root)


@pytest.fixture
def theirs(root) -> FilesystemStore:
    """The store of another process (another worker, the importer) on the same folder."""
    return FilesystemStore(root)


def names(store, project):
    return [s.info.filename for s in store.listed_files(project)]


def later():
    """Let the time pass within which a listing just checked is used unchecked."""
    time.sleep(2 * listings.RECHECK_NS / 1e9)


def test_file_stored_by_another_process_is_listed(ours, theirs):
    """A file another process stores shows in ``files`` and ``find`` at once,
    in a listing that was already in memory."""
    put(ours, "foo", wheel("foo", "1.0"))
    assert names(ours, "foo") == [wheel("foo", "1.0")]
    put(theirs, "foo", wheel("foo", "2.0"))
    later()
    assert names(ours, "foo") == [wheel("foo", "1.0"), wheel("foo", "2.0")]
    assert ours.find_now("foo", wheel("foo", "2.0")) is not None


def test_upload_by_another_process_makes_the_project_private(ours, theirs):
    """An upload through another process lists the project's private file here."""
    assert names(ours, "bar") == []
    put(theirs, "bar", wheel("bar", "1.0"), area=RELEASES)
    later()
    assert ours.private_now("bar")
    [stored] = ours.listed_files("bar")
    assert stored.private


def test_removal_by_another_process_is_seen(ours, theirs):
    """A file another process deletes leaves the listing."""
    put(ours, "foo", wheel("foo", "1.0"))
    put(ours, "foo", wheel("foo", "2.0"))
    assert len(ours.listed_files("foo")) == 2
    result_of(theirs.remove(theirs.find_now("foo", wheel("foo", "1.0"))))
    later()
    assert names(ours, "foo") == [wheel("foo", "2.0")]


def test_yank_by_another_process_is_seen(ours, theirs):
    """A sidecar another process rewrites (a yank) shows its new content."""
    put(ours, "foo", wheel("foo", "1.0"), area=RELEASES)
    assert ours.listed_files("foo")[0].info.yanked is False
    stored = theirs.find_now("foo", wheel("foo", "1.0"))
    result_of(theirs.update(stored, attrs.evolve(stored.info, yanked="broken")))
    later()
    assert ours.listed_files("foo")[0].info.yanked == "broken"


def test_generation_follows_changes_made_elsewhere(ours, theirs):
    """The generation (which keys rendered pages) stays while nothing changes,
    and moves when another process changes the project's files."""
    put(ours, "foo", wheel("foo", "1.0"))
    first = ours.generation("foo")
    assert first != 0
    assert ours.generation("foo") == first
    put(theirs, "foo", wheel("foo", "2.0"))
    later()
    second = ours.generation("foo")
    assert second not in (0, first)


def test_change_within_one_timestamp_tick_is_seen(ours, theirs):
    """A folder changed again within its timestamp's granularity keeps its
    modification time; a listing read that recently is checked again anyway."""
    folder = ours.project_dir(MIRROR, "foo").path
    put(ours, "foo", wheel("foo", "1.0"))
    assert len(ours.listed_files("foo")) == 1
    stamp = os.stat(folder).st_mtime_ns
    put(theirs, "foo", wheel("foo", "2.0"))
    os.utime(folder, ns=(stamp, stamp))
    later()
    assert len(ours.listed_files("foo")) == 2


def test_only_changed_sidecars_are_read_again(ours, theirs, monkeypatch):
    """When a folder changes, the files that did not change are not read again."""
    for i in range(20):
        put(ours, "foo", wheel("foo", f"1.{i}"))
    assert len(ours.listed_files("foo")) == 20
    read = []
    real = ours.stored_file
    monkeypatch.setattr(
        ours._listings, "_read", lambda path: read.append(path) or real(path)
    )
    put(theirs, "foo", wheel("foo", "2.0"))
    later()
    assert len(ours.listed_files("foo")) == 21
    assert [p.basename() for p in read] == [wheel("foo", "2.0")]


def test_a_listing_just_checked_is_not_checked_again(ours, monkeypatch):
    """Within one request (and under load) a listing checked moments ago is
    used without looking at its folders again."""
    monkeypatch.setattr(listings, "RECHECK_NS", 60 * 10**9)  # however slow this machine
    put(ours, "foo", wheel("foo", "1.0"))
    ours.listed_files("foo")
    stats = []
    monkeypatch.setattr(listings, "folder_stamps", lambda f: stats.append(f))
    for _ in range(10):
        assert len(ours.listed_files("foo")) == 1
        assert ours.generation("foo") != 0
    assert stats == []


def test_private_answer_is_kept_briefly(ours, theirs, monkeypatch):
    """``private_now`` (asked several times per request: the page, the rules)
    answers from memory within ``RECHECK_NS``; a change made through this
    store is seen at once, another process's once ``RECHECK_NS`` has passed."""
    monkeypatch.setattr(listed, "RECHECK_NS", 60 * 10**9)  # however slow this machine
    assert not ours.private_now("bar")
    scans = []
    on_disk = ours._private_on_disk
    monkeypatch.setattr(
        ours, "_private_on_disk", lambda p: scans.append(p) or on_disk(p)
    )
    for _ in range(5):
        assert not ours.private_now("bar")
    assert scans == []
    put(theirs, "bar", wheel("bar", "1.0"), area=RELEASES)
    assert not ours.private_now("bar")  # kept: within RECHECK_NS
    put(ours, "baz", wheel("baz", "1.0"), area=RELEASES)
    assert ours.private_now("baz") and ours.private_now("bar")  # a change here
    monkeypatch.setattr(listed, "RECHECK_NS", 0)
    put(theirs, "qux", wheel("qux", "1.0"), area=RELEASES)
    later()
    assert ours.private_now("qux")


def test_listing_in_memory_is_brought_up_to_date_by_find(ours, monkeypatch):
    """A file stored through this process into a project whose listing is in
    memory is found from that listing, read again once (session 8: it was
    left out of date, and every ``find_now`` read the file alone from the
    disk, a dozen system calls per small wheel served)."""
    monkeypatch.setattr(listings, "RACY_NS", 0)
    put(ours, "foo", wheel("foo", "1.0"))
    assert names(ours, "foo") == [wheel("foo", "1.0")]  # in memory
    put(ours, "foo", wheel("foo", "2.0"))
    alone = []
    read_one = ours._read_one
    monkeypatch.setattr(ours, "_read_one", lambda *a: alone.append(a) or read_one(*a))
    later()
    for _ in range(3):
        assert ours.find_now("foo", wheel("foo", "2.0")) is not None
        assert ours.find_now("foo", wheel("foo", "1.0")) is not None
    assert alone == []
    assert names(ours, "foo") == [wheel("foo", "1.0"), wheel("foo", "2.0")]


def test_listings_in_memory_are_bounded(root):
    """The cache holds at most its budget of files; a listing that left it is
    read again, complete, when next needed."""
    store = FilesystemStore(root, listing_budget=10)
    for i in range(8):
        for v in range(3):
            put(store, f"p{i}", wheel(f"p{i}", f"1.{v}"))
    for i in range(8):
        assert len(store.listed_files(f"p{i}")) == 3
    assert store._listings._size <= 10
    assert len(store._listings._cache) == 3
    assert names(store, "p0") == [wheel("p0", f"1.{v}") for v in range(3)]


def test_the_budget_counts_files_added_through_this_process(root):
    """Files stored through this process into a listing in memory count
    against the budget, and leave it with the listing."""
    store = FilesystemStore(root, listing_budget=100)
    put(store, "foo", wheel("foo", "1.0"))
    store.listed_files("foo")
    for v in range(1, 5):
        put(store, "foo", wheel("foo", f"1.{v}"))
    assert store._listings._size == 5
    store.forget("foo")
    assert store._listings._size == 0


def test_one_listing_larger_than_the_budget_is_kept(root):
    """The most recently used listing stays in memory even if it alone is over
    the budget (otherwise every request would read it again)."""
    store = FilesystemStore(root, listing_budget=2)
    for v in range(5):
        put(store, "big", wheel("big", f"1.{v}"))
    assert len(store.listed_files("big")) == 5
    assert list(store._listings._cache) == ["big"]


def test_names_never_stored_take_no_memory(ours):
    """Looking up projects with nothing on disk keeps nothing in memory."""
    for i in range(100):
        assert ours.listed_files(f"nothing-{i}") == []
        assert ours.generation(f"nothing-{i}") == 0
    assert len(ours._listings._cache) == 0


def test_find_does_not_load_the_listing(ours, theirs):
    """``find`` on a project whose listing is not in memory reads the one file
    (an upload's duplicate check must not pull a listing into memory)."""
    for v in range(5):
        put(theirs, "up", wheel("up", f"1.{v}"), area=RELEASES)
    assert ours.find_now("up", wheel("up", "1.3")).private
    assert ours.find_now("up", wheel("up", "9.9")) is None
    assert "up" not in ours._listings._cache


def test_private_file_wins_over_the_mirrored_one(ours):
    """A file of the same name in the private area and the mirror is the private one,
    whether found alone or through the listing."""
    name = wheel("foo", "1.0")
    put(ours, "foo", name, area=MIRROR)
    put(ours, "foo", name, area=RELEASES)
    fresh = FilesystemStore(ours.root)
    assert fresh.find_now("foo", name).private
    assert [s.private for s in fresh.listed_files("foo")] == [True]


def test_stray_archive_is_listed_after_a_rescan(ours, root):
    """An archive indexed outside its project's folders (dropped anywhere under
    ``private/``) is listed under the project its name gives, and removable."""
    folder = root.preauthChild("private/wheelhouse")
    folder.makedirs()
    name = wheel("stray", "1.0")
    folder.child(name).setContent(CONTENT)
    sidecar = {"file": info(name).to_json(), "stored_at": 1.0}
    folder.child(name + ".json").setContent(json.dumps(sidecar).encode())
    assert ours.listed_files("stray") == []
    ours.use_strays(ours.strays_on_disk())
    assert names(ours, "stray") == [name]
    assert ours.private_now("stray")
    assert "stray" in result_of(ours.projects())
    result_of(ours.remove(ours.find_now("stray", name)))
    assert ours.listed_files("stray") == []


def test_projects_lists_folders_with_an_indexed_archive(ours, theirs, root):
    """``projects`` names each project with an archive beside its sidecar, from
    this process or another; an empty folder or a bare archive does not count."""
    put(ours, "foo", wheel("foo", "1.0"))
    put(theirs, "bar", wheel("bar", "1.0"), area=RELEASES)
    root.preauthChild("mirror/empty").makedirs()
    bare = root.preauthChild("mirror/bare")
    bare.makedirs()
    bare.child(wheel("bare", "1.0")).setContent(CONTENT)
    assert result_of(ours.projects()) == ["bar", "foo"]


def test_racy_window_is_short():
    """A folder untouched for longer than the racy window is trusted without a
    re-read (the window only costs re-reads right after a change)."""
    listing = listings.Listing(
        stamps=(1,), read_at=1 + 2 * listings.RACY_NS, files={}, read={}, version=1
    )
    assert listing.trusted((1,))
    assert not listing.trusted((2,))
    assert not attrs.evolve(listing, read_at=1).trusted((1,))


def test_a_marked_project_is_read_again_at_once(ours, theirs, root, monkeypatch):
    """A purge marked by another process (DELETE /+cache/ on another worker)
    is seen at the next use, even within the time a listing is used
    unchecked; an unmarked project keeps its listing unchecked."""
    from pypicache.storage.marks import Marks

    monkeypatch.setattr(listings, "RECHECK_NS", 60 * 10**9)  # however slow this machine
    ours.follow_marks(Marks(root).watch())
    put(ours, "foo", wheel("foo", "1.0"))
    put(ours, "bar", wheel("bar", "1.0"))
    assert len(ours.listed_files("foo")) == 1 and len(ours.listed_files("bar")) == 1
    result_of(theirs.remove(theirs.find_now("foo", wheel("foo", "1.0"))))
    result_of(theirs.remove(theirs.find_now("bar", wheel("bar", "1.0"))))
    Marks(root).mark("foo")
    assert names(ours, "foo") == []
    assert names(ours, "bar") == [wheel("bar", "1.0")]  # unmarked: not looked at
