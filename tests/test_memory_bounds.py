"""What the daemon remembers of names that were looked up and never found stays bounded."""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.filepath import FilePath

from pypicache.errors import NotFound
from pypicache.proxy.pages import ProjectPages
from pypicache.storage.filesystem import FilesystemStore
from pypicache.storage.shared import DOCS_KEPT, SharedDocs


class MissingUpstream:
    """An upstream that has no project at all."""

    async def fetch_page(self, project, etag=None, last_modified=None):
        raise NotFound(f"No project {project!r} upstream")


def lookup(pages: ProjectPages, project: str) -> None:
    """Ask for a page and swallow the NotFound."""
    d = Deferred.fromCoroutine(pages.get(project))
    d.addErrback(lambda f: f.trap(NotFound))


def test_negative_cache_is_bounded(tmp_path):
    """Thousands of unknown names leave at most memory_size negative entries, newest kept."""
    clock = Clock()
    store = FilesystemStore(FilePath(str(tmp_path)), clock=clock)
    pages = ProjectPages(MissingUpstream(), store, clock, memory_size=100)
    for i in range(5000):
        lookup(pages, f"nosuch{i}")
    assert len(pages._missing) == 100
    assert "nosuch4999" in pages._missing and "nosuch0" not in pages._missing


def test_negative_cache_drops_expired_entries(tmp_path):
    """Entries past negative_ttl leave the table as new ones arrive."""
    clock = Clock()
    store = FilesystemStore(FilePath(str(tmp_path)), clock=clock)
    pages = ProjectPages(MissingUpstream(), store, clock, negative_ttl=60)
    for i in range(50):
        lookup(pages, f"early{i}")
    clock.advance(61)
    lookup(pages, "late")
    assert list(pages._missing) == ["late"]


def test_unknown_projects_are_not_listed_in_memory(tmp_path):
    """Asking the store for the files of projects it never stored keeps nothing in memory."""
    store = FilesystemStore(FilePath(str(tmp_path)))
    for i in range(1000):
        assert store.listed_files(f"nosuch{i}") == []
    assert len(store._listings._cache) == 0


def test_shared_docs_keep_at_most_their_bound(tmp_path):
    """A folder's views (withdrawals, statuses: one per project read) keep
    the ``DOCS_KEPT`` most recently used, however many projects are read;
    a project used all along stays in memory."""
    store = FilesystemStore(FilePath(str(tmp_path)))
    docs = SharedDocs(store, "withdrawn", Clock())
    assert docs.memory_size == DOCS_KEPT <= 1024
    hot = docs.doc("hot")
    for n in range(3 * DOCS_KEPT):
        assert docs.get(f"cold-{n}") == {}
        assert docs.doc("hot") is hot
        assert len(docs._docs) <= DOCS_KEPT
    assert len(docs._docs) == DOCS_KEPT


def test_forgotten_view_never_repeats_a_turn(tmp_path):
    """A document's view made again after it was forgotten never shows a
    turn an earlier view showed (turns key rendered pages: a repeated one
    would serve a page made from the document's old content)."""
    store = FilesystemStore(FilePath(str(tmp_path)))
    docs = SharedDocs(store, "withdrawn", Clock(), memory_size=2)
    seen = set()
    for content in ({"files": {"a": 1}}, {"files": {"b": 2}}, {}):
        docs.put("app", content)
        seen.add(docs.version("app"))
        docs.get("other-1"), docs.get("other-2")  # "app" is forgotten
        assert docs.get("app") == content
        assert docs.version("app") not in seen
        seen.add(docs.version("app"))
