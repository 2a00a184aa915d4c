"""A large cold file from a plain HTTP upstream is spliced off the socket into
its temporary file by a thread (``proxy/splicing.py``), hashed from the page
cache, and streamed to every waiting client as the spool's path does; TLS,
chunked or small bodies still go through Twisted and the spool.

The daemon runs in this process (``tests.daemon``), so ``os.splice`` is
wrapped here to see which path read the body.
"""

import os
import zipfile

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import Site

from pypicache.proxy import splicing
from pypicache.storage.records import TEMP_PREFIX
from tests.daemon import start_daemon, start_world
from tests.fakeindex import FakeIndex
from tests.packages import build_wheel
from tests.tunnel import make_authority, start_tls_index

PROJECT = "splicy"


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A wheel with 9 MB of random bytes stored uncompressed (above SPLICE_MIN)."""
    path = build_wheel(tmp_path_factory.mktemp("dists"), PROJECT, "1.0")
    with zipfile.ZipFile(path, "a", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{PROJECT}/payload.bin", os.urandom(9 * 1024 * 1024))
    assert path.stat().st_size > 2 * splicing.SPLICE_MIN
    return path


@pytest.fixture
def spliced(monkeypatch):
    """The bytes each ``os.splice`` call moved, in this process."""
    moved: list[int] = []
    real = os.splice

    def splice(*args, **kwargs):
        n = real(*args, **kwargs)
        moved.append(n)
        return n

    monkeypatch.setattr(os, "splice", splice)
    return moved


async def _outcome(daemon, path, headers=None, method="GET"):
    """(status, headers, body) of a request; body ``None`` if it was cut off."""
    if method == "HEAD":
        response = await daemon.head(path, headers=headers)
    else:
        response = await daemon.get(path, headers=headers)
    try:
        body = await response.content()
    except Exception:
        body = None
    return response.code, response.headers, body


def _leftovers(world) -> list[str]:
    """Temporary files left in the project's mirror folder."""
    return [n for n in world.mirror_files(PROJECT) if n.startswith(TEMP_PREFIX)]


async def _settled(world) -> None:
    """Wait until the download given up has removed its temporary file."""
    for _ in range(250):
        if not _leftovers(world):
            return
        await deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"temporary files left: {_leftovers(world)}")


@pytest_twisted.ensureDeferred
async def test_many_clients_get_identical_verified_bytes(tmp_path, big, spliced):
    """Five clients of a large file nobody has cached get it whole and
    identical; the body was spliced (the bytes ``os.splice`` moved off the
    socket and into the file are the body's, twice), downloaded once, then
    stored and listed."""
    world = await start_world(tmp_path, [big], timeout=10)
    world.index.rate = 12 * 1024 * 1024  # the clients join while it flows
    try:
        path = f"packages/{PROJECT}/{big.name}"
        outcomes = await DeferredList(
            [Deferred.fromCoroutine(_outcome(world.daemon, path)) for _ in range(5)],
            fireOnOneErrback=True,
        )
        expected = big.read_bytes()
        for _, (code, _headers, body) in outcomes:
            assert code == 200 and body == expected
        assert world.index.downloads(big.name) == 1
        # Into the pipe and out of it: nearly all of the body, twice (what
        # Twisted read with the headers is written as it is).
        assert sum(spliced) > 2 * (len(expected) - 2 * 1024 * 1024)
        await world.stored(PROJECT, big.name)
        assert _leftovers(world) == []
    finally:
        await world.stop()


@pytest.mark.parametrize(
    "fault", ["truncate", "die_midway", "reset_midway", "corrupt", "stall"]
)
@pytest_twisted.ensureDeferred
async def test_broken_body_leaves_nothing(tmp_path, big, spliced, fault):
    """A short body (a clean close before ``Content-Length``), a connection
    that dies or is reset midway, a body whose hash does not match the
    index's, or an upstream silent mid-body: no client gets the whole file,
    nothing is listed, no partial or temporary file is left; once healed the
    file is spliced and stored."""
    world = await start_world(tmp_path, [big], timeout=2)
    name = big.name
    if fault == "stall":
        world.index.stall(name, 2 * 1024 * 1024)
    else:
        getattr(world.index, fault)(name)
    try:
        path = f"packages/{PROJECT}/{name}"
        outcomes = await DeferredList(
            [Deferred.fromCoroutine(_outcome(world.daemon, path)) for _ in range(3)]
        )
        expected = big.read_bytes()
        for ok, result in outcomes:
            assert ok
            code, _headers, body = result
            assert body != expected
            assert code != 200 or body is None
        assert spliced, "the body was not spliced"
        await _settled(world)
        assert world.mirror_files(PROJECT) == []
        world.index.heal(name)
        code, _headers, body = await _outcome(world.daemon, path)
        assert code == 200 and body == expected
        await world.stored(PROJECT, name)
        assert _leftovers(world) == []
    finally:
        await world.stop()


@pytest.mark.parametrize("enabled", [False, True], ids=["spool", "splice"])
@pytest_twisted.ensureDeferred
async def test_range_and_head_while_cold_as_before(
    tmp_path, big, spliced, monkeypatch, enabled
):
    """``HEAD`` and ``Range`` requests for a large file still downloading
    answer the same whether its body is spliced or goes through the spool
    (pinned here against each other and against the file's own bytes)."""
    monkeypatch.setattr(splicing, "ENABLED", enabled)
    world = await start_world(tmp_path, [big], timeout=10)
    world.index.rate = 6 * 1024 * 1024
    try:
        path = f"packages/{PROJECT}/{big.name}"
        expected = big.read_bytes()
        whole = Deferred.fromCoroutine(_outcome(world.daemon, path))
        await deferLater(reactor, 0.3, lambda: None)  # under way
        code, headers, body = await _outcome(world.daemon, path, method="HEAD")
        assert code == 200 and body == b""
        length = headers.getRawHeaders(b"content-length")
        assert length in (None, [str(len(expected)).encode()])
        code, headers, body = await _outcome(
            world.daemon, path, headers={"Range": "bytes=100-199"}
        )
        if code == 206:
            assert body == expected[100:200]
            assert headers.getRawHeaders(b"content-range") == [
                f"bytes 100-199/{len(expected)}".encode()
            ]
        else:
            assert code == 200 and body == expected
        code, _headers, body = await whole
        assert code == 200 and body == expected
        assert bool(spliced) == enabled
        await world.stored(PROJECT, big.name)
    finally:
        await world.stop()


@pytest.fixture(scope="module")
def authority():
    return make_authority()


@pytest_twisted.ensureDeferred
async def test_tls_upstream_goes_through_twisted(tmp_path, big, spliced, authority):
    """Over TLS the body cannot be spliced: it is read by Twisted and the
    spool, verified and stored as ever."""
    index = FakeIndex(tmp_path, "html")
    index.add(big)
    upstream = await start_tls_index(index, authority)
    ca = str(authority.write_ca(tmp_path / "ca.pem"))
    daemon = await start_daemon(
        upstream.url, tmp_path / "cache", timeout=10, upstream_ca=ca
    )
    try:
        code, _headers, body = await _outcome(daemon, f"packages/{PROJECT}/{big.name}")
        assert code == 200 and body == big.read_bytes()
        assert spliced == []
    finally:
        await daemon.stop()
        await upstream.stop()


class _Chunked(Resource):
    """An upstream of one project whose file goes out chunked (no
    ``Content-Length``)."""

    isLeaf = True

    def __init__(self, wheel) -> None:
        super().__init__()
        self.wheel = wheel

    def render_GET(self, request):
        import hashlib

        data = self.wheel.read_bytes()
        if request.path.startswith(b"/simple/"):
            digest = hashlib.sha256(data).hexdigest()
            link = f"../../files/{self.wheel.name}#sha256={digest}"
            request.setHeader(b"content-type", b"text/html")
            return f'<html><body><a href="{link}">{self.wheel.name}</a></body></html>'.encode()
        for start in range(0, len(data), 1024 * 1024):
            request.write(data[start : start + 1024 * 1024])
        request.finish()
        from twisted.web.server import NOT_DONE_YET

        return NOT_DONE_YET


@pytest_twisted.ensureDeferred
async def test_chunked_body_goes_through_twisted(tmp_path, big, spliced):
    """A chunked body (no ``Content-Length``) is read by Twisted and the
    spool, verified and stored as ever."""
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Site(_Chunked(big))
    )
    url = f"http://127.0.0.1:{port.getHost().port}/simple/"
    daemon = await start_daemon(url, tmp_path / "cache", timeout=10)
    try:
        response = await daemon.get(f"packages/{PROJECT}/{big.name}")
        body = await treq.content(response)
        assert response.code == 200 and body == big.read_bytes()
        assert spliced == []
    finally:
        await daemon.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_cancelled_splice_gives_up_at_once(tmp_path, big, spliced, monkeypatch):
    """A splice cancelled while the body still flows (what a stopping daemon
    does to each) gives up within a step: its clients are cut off, nothing
    is listed and no temporary file is left."""
    bodies = []
    real_read = splicing.SplicedBody.read

    def read(self):
        bodies.append(self)
        return real_read(self)

    monkeypatch.setattr(splicing.SplicedBody, "read", read)
    world = await start_world(tmp_path, [big], timeout=10)
    world.index.rate = 2 * 1024 * 1024  # four seconds and more
    try:
        path = f"packages/{PROJECT}/{big.name}"
        answer = Deferred.fromCoroutine(_outcome(world.daemon, path))
        for _ in range(200):
            if bodies and sum(spliced) > 1024 * 1024:
                break
            await deferLater(reactor, 0.02, lambda: None)
        started = reactor.seconds()
        bodies[0].cancel()
        code, _headers, body = await answer
        assert code != 200 or body is None
        assert reactor.seconds() - started < 2
        await _settled(world)
        assert world.mirror_files(PROJECT) == []
    finally:
        await world.stop()
