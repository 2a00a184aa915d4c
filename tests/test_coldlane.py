"""Cold reads below Klein answer byte for byte as the guard and Klein do.

Two daemons stand in front of the same fake upstream, each with its own cold
cache: the one ``twistd pypicache`` runs (its fast lane hands the cold
installer reads straight to their route, ``web/coldlane.py``) and one whose
lane has no cold routes (those reads go through the guard, the fast path and
Klein, as before). The same bytes go to both over raw sockets, each read cold
on both, and everything that comes back must be equal but for ``Date`` and a
stored file's ``Last-Modified`` (each daemon stored its own copy): cold pages
(HTML, JSON, gzip, ``HEAD``, HTTP/1.0), cold core metadata, cold files (a
download streamed, ``HEAD`` described, a ``Range``), errors (4xx text), a
refused client, pipelined requests mixing cold and hot ones; and a client
gone while its cold page is fetched. Klein is watched on the first daemon,
to pin that the cold reads never reach it.
"""

import re
import socket

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from pypicache.web.access import parse_cidr
from tests.clients import uv_pip_install
from tests.daemon import start_daemon, start_world
from tests.packages import build_sdist, build_wheel
from tests.test_fastlane import _talk, request, watch_cold, watch_guard

JSON = "application/vnd.pypi.simple.v1+json"


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    d = tmp_path_factory.mktemp("dists")
    return {
        **{v: build_wheel(d, "cold-thing", v) for v in ("1.0", "2.0", "3.0", "4.0")},
        "sdist": build_sdist(d, "cold-thing", "4.0"),
        "other": build_wheel(d, "cold-other", "1.0"),
    }


class Pair:
    """A daemon with cold reads below Klein and one without, on one upstream."""

    def __init__(self, world, other, klein_calls, cold_calls):
        self.world = world
        self.other = other
        self.klein_calls = klein_calls
        self.cold_calls = cold_calls

    async def same(self, *pieces, pause=0.05):
        """Send the same bytes to both; assert equal exchanges; return one."""
        answers = []
        for daemon in (self.world.daemon, self.other):
            port = daemon.port.getHost().port
            answer = await deferToThread(_talk, port, pieces, pause)
            answers.append(re.sub(rb"\r\nLast-Modified: [^\r]*\r\n", b"\r\n", answer))
        assert answers[0] == answers[1], pieces
        return answers[0]

    async def stop(self):
        await self.other.stop()
        await self.world.stop()


async def pair(tmp_path, dists, **options):
    files = list(dists.values())
    world = await start_world(tmp_path / "a", files, timeout=5, **options)
    other = await start_daemon(world.upstream.url, tmp_path / "b", timeout=5, **options)
    other.port.factory.ready.cold = None  # every read through the guard and Klein
    klein_calls, cold_calls = [], []
    watch_guard(world.daemon, klein_calls)
    watch_cold(world.daemon, cold_calls)
    return Pair(world, other, klein_calls, cold_calls)


@pytest_twisted.async_yield_fixture()
async def pages(tmp_path, dists):
    """A pair whose pages are always revalidated upstream (--page-ttl 0): every
    page read is cold."""
    p = await pair(tmp_path, dists, page_ttl=0)
    yield p
    await p.stop()


@pytest_twisted.async_yield_fixture()
async def files(tmp_path, dists):
    p = await pair(tmp_path, dists)
    yield p
    await p.stop()


async def test_cold_pages_alike(pages):
    """Cold pages in HTML and JSON, gzip and identity, GET and HEAD, HTTP/1.1
    and 1.0, If-None-Match, and a project the upstream does not have, answer
    alike, through their route and never Klein."""
    path = "/simple/cold-thing/"
    for method in ("GET", "HEAD"):
        for headers in (
            {},
            {"Accept": JSON},
            {"Accept": JSON, "Accept-Encoding": "gzip"},
            {"Accept-Encoding": "gzip, deflate"},
        ):
            answer = await pages.same(request(method, path, headers, close=True))
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            await pages.same(request(method, path, headers, "HTTP/1.0"))
    plain = await pages.same(request("GET", path, close=True))
    etag = re.search(rb"\r\nETag: ([^\r]*)\r\n", plain).group(1).decode()
    answer = await pages.same(request("GET", path, {"If-None-Match": etag}, close=True))
    assert answer.startswith(b"HTTP/1.1 304 ")
    missing = await pages.same(request("GET", "/simple/not-upstream/", close=True))
    assert missing.startswith(b"HTTP/1.1 404 ")
    assert pages.klein_calls == []
    assert len(pages.cold_calls) == 19


async def test_cold_files_alike(files, dists):
    """Cold core metadata (GET in HTTP/1.1 and 1.0, HEAD), a cold wheel
    streamed, a cold HEAD, a cold Range, then the same files hot, answer alike;
    the cold ones through their route, none through Klein."""
    name = {v: dists[v].name for v in ("1.0", "2.0", "3.0", "4.0", "sdist")}

    def file(version, suffix=""):
        return f"/packages/cold-thing/{name[version]}{suffix}"

    await files.same(request("GET", "/simple/cold-thing/", close=True))
    cold = [
        request("GET", file("1.0", ".metadata"), close=True),
        request("GET", file("2.0", ".metadata"), version="HTTP/1.0"),
        request("HEAD", file("3.0", ".metadata"), close=True),
        request("GET", file("1.0"), close=True),
        request("HEAD", file("2.0"), close=True),
        request("GET", file("sdist"), {"Range": "bytes=0-9"}, close=True),
    ]
    for data in cold:
        answer = await files.same(data)
        assert answer.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 ", b"HTTP/1.1 206 "))
    await files.world.stored("cold-thing", name["1.0"])
    hot = [
        request("GET", file("1.0", ".metadata"), close=True),
        request("GET", file("1.0"), close=True),
    ]
    for data in hot:
        await files.same(data)
    assert files.klein_calls == []
    assert len(files.cold_calls) == 1 + len(cold)  # the page too


async def test_cold_errors_alike(files, dists):
    """Another project's file, a name that is no distribution, a file the
    upstream does not list and a page in a non-canonical spelling answer
    alike; only the last goes to Klein (its redirect)."""
    wheel = dists["1.0"].name
    cases = [
        request("GET", f"/packages/cold-other/{wheel}", close=True),
        request("GET", "/packages/cold-thing/not-a-dist.txt", close=True),
        request(
            "GET", "/packages/cold-thing/cold_thing-9.0-py3-none-any.whl", close=True
        ),
        request(
            "GET",
            "/packages/cold-thing/cold_thing-9.0-py3-none-any.whl.metadata",
            close=True,
        ),
        request("GET", "/packages/cold-thing/..", close=True),
        request("GET", "/simple/Cold_Thing/", close=True),
    ]
    for data in cases:
        answer = await files.same(data)
        assert re.match(rb"HTTP/1.1 [34]0\d ", answer), answer
    assert files.klein_calls == [b"/packages/cold-thing/..", b"/simple/Cold_Thing/"]
    assert len(files.cold_calls) == 4


async def test_pipelined_cold_and_hot(files, dists):
    """Pipelined requests on one connection, cold and hot, through the cold
    route and through Klein, come back in order, alike."""
    page = request("GET", "/simple/cold-other/")
    metadata = request("GET", f"/packages/cold-other/{dists['other'].name}.metadata")
    answer = await files.same(
        page
        + metadata
        + page
        + request("GET", "/nowhere")
        + request("HEAD", f"/packages/cold-other/{dists['other'].name}")
        + request("GET", "/simple/cold-other/", {"Accept": JSON}, close=True)
    )
    assert answer.count(b"HTTP/1.1 200 OK") == 5
    assert files.klein_calls == [b"/nowhere"]


async def test_refused_client_alike(tmp_path, dists):
    """--allow-from refuses a cold read below Klein as the guard does (403)."""
    p = await pair(tmp_path, dists, allow_from=[parse_cidr("10.0.0.0/8")])
    try:
        for target in (
            "/simple/cold-thing/",
            f"/packages/cold-thing/{dists['1.0'].name}",
        ):
            answer = await p.same(request("GET", target, close=True))
            assert answer.startswith(b"HTTP/1.1 403 ")
        assert p.klein_calls == []
    finally:
        await p.stop()


async def test_uv_installs_through_cold_reads(files, tmp_path):
    """A cold ``uv pip install`` gets its pages, core metadata and wheel
    through the cold route, none through Klein."""
    result = await uv_pip_install(
        files.world.daemon.url + "simple/",
        ["cold-thing==4.0"],
        tmp_path / "target",
        tmp_path,
    )
    assert result.code == 0, result.err
    assert list((tmp_path / "target").glob("cold_thing-4.0.dist-info"))
    assert files.klein_calls == []
    assert b"/simple/cold-thing/" in files.cold_calls
    assert any(uri.endswith(b".whl") for uri in files.cold_calls)


async def test_client_gone_while_cold(files):
    """A client that goes away while its cold page is fetched has its route
    cancelled as Klein cancels it, not the fetch: the page fetched meanwhile
    is answered to the next client (by the lane, from memory)."""
    hold = files.world.index.hold_page("cold-other")
    port = files.world.daemon.port.getHost().port
    gone = socket.create_connection(("127.0.0.1", port))
    gone.sendall(request("GET", "/simple/cold-other/"))
    await hold.wait_for(1)
    gone.close()
    await deferLater(reactor, 0.2, lambda: None)
    hold.release()
    answer = await deferToThread(
        _talk, port, [request("GET", "/simple/cold-other/", close=True)], 0
    )
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert files.klein_calls == []
    assert files.cold_calls == [b"/simple/cold-other/"]
