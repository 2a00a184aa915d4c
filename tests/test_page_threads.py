"""Large project pages are rendered and gzipped in a thread, not on the reactor.

A page of ``InstallerRoutes.big_page`` files or more that is not rendered yet
is left by the fast lane and the ``_now`` paths to the route, which renders
it (and compresses it) with ``run_blocking``, once for the requests that ask
meanwhile; what goes out is what the reactor's rendering gave: the same
bytes, ``Content-Length``, ``ETag``, ``Vary``, ``Content-Type`` and
``Cache-Control``, gzip or not, for ``/simple/`` and ``/local/``.
"""

import gzip
import threading

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater

from pypicache.web import rendered
from pypicache.web.rendered import RenderCache, render_form
from pypicache.web.routes import pagebodies
from tests.daemon import start_world
from tests.packages import build_wheel
from tests.test_fastlane import lanes_for, request
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
    monkeypatch.setattr(pagebodies, "gzipped", noted(gzipped))  # behind the first
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
    reactor; the answers kept for the requests after, headers and bytes,
    are the ones the reactor renders when there is no thread to render in,
    and nothing is rendered again for them. The first answer is that one
    too, but gzipped it is the same page compressed faster (level 1): its
    own bytes, ``Content-Length`` and ETag (``-gzip1``), the same headers
    otherwise and the same page once decompressed."""
    installer = world.daemon.app.installer
    installer._rendered = RenderCache()  # the fixture's listings rendered
    path = f"{area}/big/"
    threaded = await wire(world.daemon, path, accept, gzipped)
    assert threaded.status == 200
    # Asked for again: the same answer, and the level 6 gzip made behind it.
    again = await wire(world.daemon, path, accept, gzipped)
    assert headers_and_body(again) == headers_and_body(threaded)
    await installer.compressed_behind()
    assert renders and not any(renders), renders  # every render in a thread
    renders.clear()
    kept = await wire(world.daemon, path, accept, gzipped)
    assert renders == []

    installer.run_blocking, installer._rendered = None, RenderCache()
    on_reactor = await wire(world.daemon, path, accept, gzipped)
    assert renders and all(renders)
    assert headers_and_body(kept) == headers_and_body(on_reactor)
    head = await wire(world.daemon, path, accept, gzipped, method="HEAD")
    assert headers_and_body(head)[0] == headers_and_body(on_reactor)[0]
    if not gzipped:
        assert headers_and_body(threaded) == headers_and_body(on_reactor)
        return
    first, second = headers_and_body(threaded), headers_and_body(on_reactor)
    assert gzip.decompress(first[1]) == gzip.decompress(second[1])
    assert first[1] == gzip.compress(gzip.decompress(second[1]), 1, mtime=0)
    assert threaded.headers["etag"] == on_reactor.headers["etag"][:-1] + '1"'
    assert int(threaded.headers["content-length"]) == len(first[1])
    unsent = (b"etag:", b"content-length:")
    assert [h for h in first[0] if not h.lower().startswith(unsent)] == [
        h for h in second[0] if not h.lower().startswith(unsent)
    ]


async def conditional(lanes, accept, method, held):
    """One conditional request for ``big``'s page, gzipped, to the fast
    lane and to twisted.web alike (the same exchange from both); its answer."""
    headers = {"Accept": accept, "Accept-Encoding": "gzip", "If-None-Match": held}
    return await lanes.same(request(method, "/simple/big/", headers, close=True))


@pytest.mark.parametrize("accept", [HTML, JSON], ids=["html", "json"])
@pytest_twisted.ensureDeferred
async def test_either_gzip_etag_is_answered_304(world, accept):
    """Once the page gzipped at level 6 replaces its first, faster gzip,
    a conditional request naming either ETag is answered ``304`` naming the
    ETag the client holds (a cache updates the response that ETag names),
    by the fast lane as by twisted.web, ``GET`` and ``HEAD``; an ETag of
    neither gets the page. Before the swap, the first one is answered."""
    installer = world.daemon.app.installer
    lanes = await lanes_for(world)
    try:
        installer._rendered = RenderCache()
        first = await wire(world.daemon, "simple/big/", accept, True)
        quick = first.headers["etag"]
        assert quick.endswith('-gzip1"')
        await installer.compressed_behind()
        assert not installer._behind  # not before it is asked for again
        again = await wire(world.daemon, "simple/big/", accept, True)
        assert again.raw == first.raw
        await installer.compressed_behind()
        kept = await wire(world.daemon, "simple/big/", accept, True)
        best = kept.headers["etag"]
        assert best == quick[:-2] + '"' and kept.raw != first.raw
        for method in ("GET", "HEAD"):
            for held, named in [
                (quick, quick),
                (best, best),
                (f"{best}, {quick}", best),
                (f'"x", W/{quick}', quick),
            ]:
                answer = await conditional(lanes, accept, method, held)
                assert answer.startswith(b"HTTP/1.1 304"), answer[:200]
                assert f"\r\nETag: {named}\r\n".encode() in answer
            answer = await conditional(lanes, accept, method, '"x"')
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            assert f"\r\nETag: {best}\r\n".encode() in answer

        # Until the level 6 body is made, the quick one is kept and answered.
        installer._rendered = RenderCache()
        threads, behind = installer.run_blocking, []

        def held_back(f, *args):
            if f is render_form:
                return threads(f, *args)
            behind.append((Deferred(), args))
            return behind[-1][0]

        installer.run_blocking = held_back
        again = await wire(world.daemon, "simple/big/", accept, True)
        assert again.headers["etag"] == quick and behind == []
        assert (
            again.raw.partition(b"\r\n\r\n")[2] == first.raw.partition(b"\r\n\r\n")[2]
        )
        answer = await conditional(lanes, accept, "GET", quick)
        assert answer.startswith(b"HTTP/1.1 304") and quick.encode() in answer
        assert len(behind) == 1  # asked for again: compressed at level 6 once
        answer = await conditional(lanes, accept, "GET", best)
        assert answer.startswith(b"HTTP/1.1 200") and quick.encode() in answer
        done, args = behind[0]
        done.callback(rendered.gzipped(*args))
        answer = await conditional(lanes, accept, "GET", best)
        assert answer.startswith(b"HTTP/1.1 304") and best.encode() in answer
    finally:
        await installer.compressed_behind()
        await lanes.slow_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_concurrent_requests_share_one_render(world, renders):
    """Requests for a large page that arrive while it is rendered wait for
    that rendering: the page is rendered and gzipped once, and every one of
    them gets the same bytes; asked for again, it is gzipped at level 6
    behind them, once."""
    installer = world.daemon.app.installer
    await wire(world.daemon, "simple/big/", JSON)  # the upstream page fetched
    renders.clear()
    installer._rendered = RenderCache()
    behind = []  # (a request arriving once it is made asks for it again)
    installer._compress_behind = lambda *args: behind.append(args)
    answers = await gatherResults(
        [wire(world.daemon, "simple/big/", JSON, True) for _ in range(4)]
    )
    assert renders == [False, False]  # plain, then gzipped, once, in a thread
    bodies = {headers_and_body(a)[1] for a in answers}
    assert len(bodies) == 1 and all(a.status == 200 for a in answers)
    assert len(behind) <= 1
    del installer._compress_behind  # the class's again
    if behind:
        installer._compress_behind(*behind[0])
    else:
        await wire(world.daemon, "simple/big/", JSON, True)
    await wire(world.daemon, "simple/big/", JSON, True)  # the first one only
    await installer.compressed_behind()
    assert renders == [False, False, False]  # gzipped at level 6 behind them


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


@pytest_twisted.ensureDeferred
async def test_cold_page_written_once_its_answer_is_made(world, renders, monkeypatch):
    """The page fetched for a client is written into the store once that
    client's answer is rendered and gzipped (in a thread), not beside the
    rendering; it is written (and read back) all the same."""
    store = world.daemon.app.store
    writes = []
    write_page = store.write_page

    def noted(project, cached):
        writes.append((project, list(renders)))
        return write_page(project, cached)

    monkeypatch.setattr(store, "write_page", noted)
    await world.daemon.app.mirror.pages.forget("big")  # fetched again
    renders.clear()
    answer = await wire(world.daemon, "simple/big/", JSON, True)
    assert answer.status == 200
    assert writes == [("big", [False, False])]
    await world.daemon.app.installer.compressed_behind()
    for _ in range(100):
        cached = await store.read_page("big")
        if cached is not None:
            break
        await deferLater(reactor, 0.02)
    assert cached is not None and len(cached.page.files) == FILES
