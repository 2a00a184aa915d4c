"""Large project pages are rendered and gzipped in a thread, not on the reactor.

A page of ``InstallerRoutes.big_page`` files or more that is not rendered yet
is left by the fast lane and the ``_now`` paths to the route, which renders
it (and compresses it) with ``run_blocking``, once for the requests that ask
meanwhile; what goes out is what the reactor's rendering gave: the same
bytes, ``Content-Length``, ``ETag``, ``Vary``, ``Content-Type`` and
``Cache-Control``, gzip or not, for ``/simple/`` and ``/local/``.
"""

import threading

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults

from pypicache.web import rendered
from pypicache.web.rendered import RenderCache
from tests.daemon import start_world
from tests.packages import build_wheel
from tests.test_page_bodies import HTML, JSON, wire

#: Files of ``big`` (upstream), one of them stored (so ``/local/`` lists it).
FILES = 6


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    d = tmp_path_factory.mktemp("dists")
    return [build_wheel(d, "big", f"1.{k}") for k in range(FILES)]


@pytest_twisted.async_yield_fixture
async def world(tmp_path, dists):
    """A daemon in front of ``big``, whose pages count as large (``big_page`` 1)."""
    w = await start_world(tmp_path, dists, timeout=5)
    w.daemon.app.installer.big_page = 1
    response = await w.daemon.get(f"packages/big/{dists[0].name}")
    await response.content()
    await w.stored("big", dists[0].name)
    yield w
    await w.stop()


@pytest.fixture
def renders(monkeypatch):
    """Each page rendered from now on: whether it was on the reactor's thread."""
    seen = []
    plain, gzipped = rendered.plain, rendered.gzipped

    def noted(make):
        def made(*args):
            seen.append(threading.current_thread() is threading.main_thread())
            return make(*args)

        return made

    monkeypatch.setattr(rendered, "plain", noted(plain))
    monkeypatch.setattr(rendered, "gzipped", noted(gzipped))
    return seen


def headers_and_body(answer):
    """An answer's headers but its ``Date``, and its body, as sent."""
    head, _, body = answer.raw.partition(b"\r\n\r\n")
    lines = [
        line for line in head.split(b"\r\n") if not line.lower().startswith(b"date:")
    ]
    return lines, body


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("accept", [HTML, JSON], ids=["html", "json"])
@pytest.mark.parametrize("area", ["simple", "local"])
@pytest_twisted.ensureDeferred
async def test_large_page_rendered_in_a_thread(world, renders, area, accept, gzipped):
    """A large page not rendered yet is rendered (and gzipped) off the
    reactor; its answer, headers and bytes, is the one the reactor renders
    when there is no thread to render in, and the next request is answered
    from what was kept (nothing rendered again)."""
    installer = world.daemon.app.installer
    installer._rendered = RenderCache()  # the fixture's listings rendered
    path = f"{area}/big/"
    threaded = await wire(world.daemon, path, accept, gzipped)
    assert threaded.status == 200
    assert renders and not any(renders), renders  # every render in a thread
    renders.clear()
    kept = await wire(world.daemon, path, accept, gzipped)
    assert renders == []
    assert headers_and_body(kept) == headers_and_body(threaded)

    installer.run_blocking, installer._rendered = None, RenderCache()
    on_reactor = await wire(world.daemon, path, accept, gzipped)
    assert renders and all(renders)
    assert headers_and_body(on_reactor) == headers_and_body(threaded)
    head = await wire(world.daemon, path, accept, gzipped, method="HEAD")
    assert headers_and_body(head)[0] == headers_and_body(threaded)[0]


@pytest_twisted.ensureDeferred
async def test_concurrent_requests_share_one_render(world, renders):
    """Requests for a large page that arrive while it is rendered wait for
    that rendering: the page is rendered and gzipped once, and every one of
    them gets the same bytes."""
    await wire(world.daemon, "simple/big/", JSON)  # the upstream page fetched
    renders.clear()
    world.daemon.app.installer._rendered = RenderCache()
    answers = await gatherResults(
        [wire(world.daemon, "simple/big/", JSON, True) for _ in range(4)]
    )
    assert renders == [False, False]  # plain, then gzipped, once, in a thread
    bodies = {headers_and_body(a)[1] for a in answers}
    assert len(bodies) == 1 and all(a.status == 200 for a in answers)


@pytest_twisted.ensureDeferred
async def test_ready_answers_leave_large_pages_to_the_route(world):
    """The fast lane's answer for a large page not rendered yet is "not
    ready" (the route renders it in a thread); once rendered, it is ready."""
    installer = world.daemon.app.installer
    await wire(world.daemon, "simple/big/", JSON)  # fetched and rendered
    installer._rendered = RenderCache()
    assert installer.page_ready("simple", "big", JSON.encode(), b"gzip") is None
    await wire(world.daemon, "simple/big/", JSON, True)
    ready = installer.page_ready("simple", "big", JSON.encode(), b"gzip")
    assert ready is not None and (b"content-encoding", b"gzip") in ready.headers
    installer.big_page = FILES + 1  # a small page: rendered at once, on the reactor
    installer._rendered = RenderCache()
    assert installer.page_ready("simple", "big", JSON.encode(), b"gzip") is not None


@pytest_twisted.ensureDeferred
async def test_walk_below_a_cold_page_starts_once_it_is_rendered(world, renders):
    """A page fetched from upstream for a client is told to the prefetcher
    once its answer is rendered (in a thread), so that the walk below it
    does not compete with that rendering; once only."""
    told = []

    class Cold:
        def page_fetched(self, project, page):
            told.append((project, len(page.files), list(renders)))

    world.daemon.app.views.on_cold = Cold()
    await world.daemon.app.mirror.pages.forget("big")  # fetched again
    answer = await wire(world.daemon, "simple/big/", JSON, True)
    assert answer.status == 200
    assert told == [("big", FILES, [False, False])]
    await wire(world.daemon, "simple/big/", JSON, True)  # fresh: not fetched
    assert len(told) == 1
