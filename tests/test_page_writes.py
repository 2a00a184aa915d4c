"""A page fetched for a client is written into the store once that client's
answer is made, not beside it (:meth:`ProjectPages.hold_write`,
``Views.simple(announce=False)``), and is always written in the end."""

from types import SimpleNamespace

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.filepath import FilePath

from pypicache.index.model import DistFile, ProjectPage
from pypicache.proxy.pages import ProjectPages
from pypicache.proxy.upstream import PageResponse
from pypicache.proxy.upstreams import RoutedPages, Router
from pypicache.proxy.views import Views
from pypicache.storage.filesystem import FilesystemStore

WHEEL = "thing-1.0-py3-none-any.whl"


class Upstream:
    """An upstream whose page fetches wait for the test to answer them."""

    def __init__(self):
        self.asked = []

    def fetch_page(self, project, etag=None, last_modified=None):
        self.asked.append(Deferred())
        return self.asked[-1]

    def answer(self, project="thing"):
        page = ProjectPage(project, (DistFile(WHEEL, f"http://up/{WHEEL}"),))
        self.asked.pop(0).callback(PageResponse(page, '"e"', None))


@pytest.fixture
def setup(tmp_path):
    """Pages over a store whose writes are recorded (and made at once)."""
    clock = Clock()
    store = FilesystemStore(FilePath(str(tmp_path)), clock=clock)
    writes = []
    write_page = store.write_page

    def recorded(project, cached):
        writes.append(project)
        return write_page(project, cached)

    store.write_page = recorded
    upstream = Upstream()
    pages = ProjectPages(upstream, store, clock)
    return SimpleNamespace(
        store=store, upstream=upstream, pages=pages, writes=writes, clock=clock
    )


def get(pages, project="thing"):
    return Deferred.fromCoroutine(pages.get(project))


def test_unheld_page_is_written_at_once(setup):
    """Without a hold, a fetched page is written as it arrives."""
    d = get(setup.pages)
    setup.upstream.answer()
    assert d.called and setup.writes == ["thing"]
    assert setup.store.read_page("thing").result.page.files[0].filename == WHEEL


def test_held_page_is_written_once_released(setup):
    """A page fetched while its write is held is written when the hold is
    released, once, however often release is called; another project's
    page is not held."""
    release = setup.pages.hold_write("thing")
    d = get(setup.pages)
    setup.upstream.answer()
    assert d.called and setup.writes == []
    assert setup.pages.fresh_now("thing") is not None  # served from memory
    other = get(setup.pages, "other")
    setup.upstream.answer("other")
    assert other.called and setup.writes == ["other"]
    release()
    release()
    assert setup.writes == ["other", "thing"]
    assert setup.store.read_page("thing").result is not None


def test_write_waits_for_every_hold(setup):
    """Two answers made from one fetch: written once both are made."""
    first, second = (setup.pages.hold_write("thing") for _ in range(2))
    get(setup.pages)
    get(setup.pages)  # the same fetch
    setup.upstream.answer()
    first()
    assert setup.writes == []
    second()
    assert setup.writes == ["thing"]


def test_hold_released_before_the_fetch_ends(setup):
    """A hold released while the fetch is under way (the client went away)
    holds nothing: the page is written as it arrives."""
    release = setup.pages.hold_write("thing")
    d = get(setup.pages)
    release()
    setup.upstream.answer()
    assert d.called and setup.writes == ["thing"]


def test_page_fetched_again_while_held(setup):
    """A page fetched again while an earlier fetch's write is held: the
    earlier write goes first, then the new one waits for the hold."""
    release = setup.pages.hold_write("thing")
    get(setup.pages)
    setup.upstream.answer()
    setup.clock.advance(setup.pages.ttl + 1)
    get(setup.pages)
    setup.upstream.answer()
    assert setup.writes == ["thing"]
    release()
    assert setup.writes == ["thing", "thing"]


def test_routed_pages_hold_each_source(setup):
    """:class:`RoutedPages` holds the write on each upstream of a project."""
    routed = RoutedPages(setup.pages, {}, Router((), frozenset()))
    release = routed.hold_write("thing")
    get(routed)
    setup.upstream.answer()
    assert setup.writes == []
    release()
    assert setup.writes == ["thing"]


def views_of(setup):
    return Views(setup.store, SimpleNamespace(pages=setup.pages))


def test_views_hold_until_announced(setup):
    """``Views.simple(announce=False)`` holds the write of the page it
    fetches until :meth:`Views.announce` (once its caller's answer is
    made); with ``announce=True`` nothing is held."""
    views = views_of(setup)
    d = Deferred.fromCoroutine(views.simple("thing", announce=False))
    setup.upstream.answer()
    view = d.result
    assert setup.writes == [] and view.page.files[0].filename == WHEEL
    views.announce("thing", view)
    views.announce("thing", view)
    assert setup.writes == ["thing"]
    setup.clock.advance(setup.pages.ttl + 1)
    d = Deferred.fromCoroutine(views.simple("thing"))
    setup.upstream.answer()
    assert d.called and setup.writes == ["thing", "thing"]


def test_views_release_a_cancelled_hold(setup):
    """A client gone while its page is fetched (its Deferred cancelled)
    holds nothing back: the page is written as it arrives."""
    views = views_of(setup)
    d = Deferred.fromCoroutine(views.simple("thing", announce=False))
    d.cancel()
    assert d.called and isinstance(d.result.value, CancelledError)
    d.addErrback(lambda _: None)
    setup.upstream.answer()
    assert setup.writes == ["thing"]


def test_views_release_on_a_failure(setup):
    """A failure after the fetch (here: the store's listing) lets the
    held write go."""
    views = views_of(setup)

    def failing(project):
        raise OSError("disk gone")

    setup.store.files = failing  # the listing after the page's fetch
    d = Deferred.fromCoroutine(views.simple("thing", announce=False))
    setup.upstream.answer()
    assert d.called and isinstance(d.result.value, OSError)
    d.addErrback(lambda _: None)
    assert setup.writes == ["thing"]
