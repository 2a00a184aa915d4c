"""Upstream URLs: credentials are sent, never logged; small pages are parsed
without a trip through a thread; endpoints made once per origin, with large
reads."""

import base64
import gzip
import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.client import URI, HTTPConnectionPool
from twisted.web.error import SchemeNotSupported

from pypicache.errors import UpstreamError
from pypicache.proxy.bodies import SMALL_PAGE, read_page, read_small_page
from pypicache.proxy.endpoints import READ_SIZE, Endpoints
from pypicache.proxy.upstream import (
    MAX_PAGE_SIZE,
    Upstream,
    make_agent,
    mask_url,
    split_credentials,
)
from tests.daemon import start_daemon
from tests.fakeindex import JSON_TYPE, FakeIndex, start_fake_index
from tests.packages import build_wheel


@pytest.mark.parametrize(
    "url, masked",
    [
        (
            "https://user:secret@mirror.invalid/simple/",
            "https://user:***@mirror.invalid/simple/",
        ),
        (
            "https://user:secret@mirror.invalid:8443/simple/",
            "https://user:***@mirror.invalid:8443/simple/",
        ),
        ("https://mirror.invalid/simple/", "https://mirror.invalid/simple/"),
        (
            "https://token@mirror.invalid/simple/",
            "https://token@mirror.invalid/simple/",
        ),
    ],
)
def test_mask_url(url, masked):
    """Passwords in URLs are replaced by *** for logs."""
    assert mask_url(url) == masked


def test_split_credentials():
    """Credentials are taken out of the index URL, to be sent as a header."""
    assert split_credentials("https://u:p%40ss@mirror.invalid:8443/simple/") == (
        "https://mirror.invalid:8443/simple/",
        ("u", "p@ss"),
    )
    assert split_credentials("https://mirror.invalid/simple/") == (
        "https://mirror.invalid/simple/",
        None,
    )


@pytest_twisted.ensureDeferred
async def test_credentials_sent_to_upstream_and_masked_in_logs(tmp_path):
    """Credentials in --index-url go to the upstream as Basic auth and never into a log line."""
    wheel = build_wheel(tmp_path / "d", "authed", "1.0")
    index = FakeIndex(tmp_path / "d", "html")
    index.add(wheel)
    upstream = await start_fake_index(index)
    url = upstream.url.replace("http://", "http://alice:s%40cret@")
    lines = []
    observer = lambda event: lines.append(formatEvent(event))
    globalLogPublisher.addObserver(observer)
    daemon = await start_daemon(url, tmp_path / "cache")
    try:
        response = await daemon.get(f"packages/authed/{wheel.name}")
        assert await response.content() == wheel.read_bytes()
    finally:
        globalLogPublisher.removeObserver(observer)
        await daemon.stop()
        await upstream.stop()
    expected = "Basic " + base64.b64encode(b"alice:s@cret").decode()
    for request in index.requests:
        assert {k.lower(): v for k, v in request.headers.items()}.get(
            "authorization"
        ) == expected
    assert any("Fetching page" in line for line in lines)
    assert not any("cret" in line for line in lines)


# -- small pages parsed at once, larger ones in a thread ------------------------


def _json_page(files: int) -> bytes:
    entries = [
        {
            "filename": f"lib-1.{i}-py3-none-any.whl",
            "url": f"../../files/lib-1.{i}-py3-none-any.whl",
            "hashes": {"sha256": "a" * 64},
        }
        for i in range(files)
    ]
    return json.dumps({"meta": {"api-version": "1.1"}, "files": entries}).encode()


def test_small_pages_read_at_once_large_ones_left_for_a_thread():
    """``read_small_page`` parses a page of at most SMALL_PAGE bytes decoded,
    plain or gzip, exactly as ``read_page`` does; a larger body, a gzip body
    that decodes past SMALL_PAGE (however small it is), and a corrupt one are
    left to ``read_page`` in a thread (``None``)."""
    args = (JSON_TYPE, "http://up.invalid/simple/lib/", "lib", MAX_PAGE_SIZE)
    small = _json_page(3)
    assert len(small) <= SMALL_PAGE
    for body, encoding in ((small, None), (gzip.compress(small), "gzip")):
        assert read_small_page(body, encoding, *args) == read_page(small, None, *args)
    large = _json_page(200)
    assert len(large) > SMALL_PAGE
    assert read_small_page(large, None, *args) is None
    bomb = gzip.compress(large)
    assert len(bomb) <= SMALL_PAGE
    assert read_small_page(bomb, "gzip", *args) is None
    assert read_small_page(b"\x1f\x8b not gzip", "gzip", *args) is None
    with pytest.raises(UpstreamError):
        read_small_page(b"<html><body></body></html>", None, *args)


@pytest_twisted.ensureDeferred
async def test_only_large_pages_go_to_a_thread(tmp_path):
    """An upstream page of a few files is parsed without a trip through the
    thread pool; a page past SMALL_PAGE goes through it. Both list their files."""
    d = tmp_path / "d"
    index = FakeIndex(d, "json")
    index.add(build_wheel(d, "few", "1.0"))
    for i in range(60):
        index.add(build_wheel(d, "many", f"1.{i}"))
    upstream = await start_fake_index(index)
    calls: list[str] = []

    def run_blocking(f, *args):
        calls.append(f.__name__)
        return deferToThread(f, *args)

    pool = HTTPConnectionPool(reactor, persistent=False)
    client = Upstream(
        upstream.url, make_agent(reactor, pool), reactor, run_blocking=run_blocking
    )
    try:
        few = await client.fetch_page("few")
        assert [f.filename for f in few.page.files] == ["few-1.0-py3-none-any.whl"]
        assert calls == []
        many = await client.fetch_page("many")
        assert len(many.page.files) == 60 and calls == ["read_page"]
    finally:
        await pool.closeCachedConnections()
        await upstream.stop()


def test_one_endpoint_per_origin():
    """The agent's endpoints are made once per scheme, host and port (not per
    request: Twisted's own factory checks the host name's IDNA each time), and
    a scheme other than HTTP(S) is refused as the standard agent refuses it."""
    endpoints = Endpoints(reactor)
    first = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:8080/a/"))
    again = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:8080/b/c"))
    other = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:8081/a/"))
    tls = endpoints.endpointForURI(URI.fromBytes(b"https://127.0.0.1:8080/a/"))
    assert again is first
    assert other is not first and tls is not first
    with pytest.raises(SchemeNotSupported):
        endpoints.endpointForURI(URI.fromBytes(b"ftp://127.0.0.1/a"))


@pytest.mark.parametrize(
    "url, kind",
    [
        (b"http://127.0.0.1:8080/", TCP4ClientEndpoint),
        (b"http://[::1]:8080/", TCP6ClientEndpoint),
        (b"http://localhost:8080/", HostnameEndpoint),
    ],
)
def test_addresses_are_not_resolved(url, kind):
    """An upstream named by its IP address is connected to directly (no
    getaddrinfo in a thread per connection); a host name is resolved."""
    endpoint = Endpoints(reactor).endpointForURI(URI.fromBytes(url))
    assert isinstance(endpoint._endpoint, kind)


@pytest_twisted.ensureDeferred
async def test_upstream_connections_read_large():
    """A connection to the upstream reads READ_SIZE bytes at a time (not
    Twisted's 64 KiB), so a large file arrives in a few large chunks."""
    port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    try:
        uri = URI.fromBytes(f"http://127.0.0.1:{port.getHost().port}/".encode())
        endpoint = Endpoints(reactor).endpointForURI(uri)
        protocol = await endpoint.connect(Factory.forProtocol(Protocol))
        try:
            assert READ_SIZE > 64 * 1024
            assert protocol.transport.bufferSize == READ_SIZE
        finally:
            protocol.transport.loseConnection()
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_upstream_connections_are_not_logged(tmp_path):
    """Fetching from the upstream logs what it fetches, but not Twisted's
    "Starting factory" and "Stopping factory" lines of each connection the
    pool opens (two lines of the text log per connection of a cold burst)."""
    upstream = await start_fake_index(FakeIndex(tmp_path, "json"))
    lines = []
    observer = lambda event: lines.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    pool = HTTPConnectionPool(reactor, persistent=True)
    client = Upstream(upstream.url, make_agent(reactor, pool), reactor)
    try:
        for _ in range(2):
            try:
                await client.fetch_page("absent")
            except Exception:
                pass
        await pool.closeCachedConnections()
    finally:
        globalLogPublisher.removeObserver(observer)
        await upstream.stop()
    assert any("Fetching page" in line for line in lines)
    assert not any("factory" in line.lower() for line in lines), lines
