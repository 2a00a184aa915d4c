"""Requests at the edges of HTTP: hostile Host headers, ``//`` paths, JSON API spellings.

Real daemon on loopback; the raw requests go over a plain socket in a thread, so
that exactly the bytes under test reach the server.
"""

import socket
from urllib.parse import urljoin

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.web.test.requesthelper import DummyRequest
from werkzeug.routing import RequestRedirect

from pypicache.web.app import _routing_error
from pypicache.web.guard import relative_location
from tests.daemon import start_daemon, start_world
from tests.packages import build_wheel

#: Seconds any one request may take before the test fails instead of hanging.
DEADLINE = 5


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection; return what came back until the
    server closed it or went quiet for 2 s (blocking: run it in a thread)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(data)
        received = b""
        try:
            while chunk := s.recv(65536):
                received += chunk
        except socket.timeout:
            pass
    return received


async def raw_request(daemon, data: bytes) -> bytes:
    """One raw request to the daemon, failing the test if it takes over DEADLINE."""
    d = deferToThread(exchange, daemon.port.getHost().port, data)
    d.addTimeout(DEADLINE, reactor)
    return await d


@pytest_twisted.async_yield_fixture
async def world(tmp_path):
    wheel = build_wheel(tmp_path / "dists", "lib", "1.0")
    w = await start_world(tmp_path, [wheel], "json", timeout=5)
    w.wheel = wheel
    yield w
    await w.stop()


async def assert_healthy(daemon) -> None:
    d = daemon.get("health")
    d.addTimeout(DEADLINE, reactor)
    response = await d
    assert response.code == 200
    await response.content()


@pytest.mark.parametrize(
    "host",
    [
        b"a" * 64 + b".example",  # a label over 63 characters: IDNA refuses it
        b"a" * 300,
        b"a..b",
        b"\xff\xfe",  # not UTF-8
    ],
)
@pytest_twisted.ensureDeferred
async def test_unencodable_host_is_400(world, host):
    """A Host header werkzeug cannot encode answers 400 at once (it used to pin the
    connection for ever), on /simple/ as on /health, and the daemon stays healthy."""
    for path in (b"/simple/", b"/health"):
        answer = await raw_request(
            world.daemon,
            b"GET "
            + path
            + b" HTTP/1.1\r\nHost: "
            + host
            + b"\r\nConnection: close\r\n\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    await assert_healthy(world.daemon)


@pytest.mark.parametrize(
    "path, target",
    [
        ("//simple/", "simple/"),
        ("/simple//lib/", "simple/lib/"),
        ("//simple//lib//", "simple/lib/"),
        ("//simple/lib/?format=application/vnd.pypi.simple.v1%2Bjson", None),
        ("/packages//lib/{wheel}", "packages/lib/{wheel}"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest_twisted.ensureDeferred
async def test_empty_path_segments_redirect_relatively(world, path, target, method):
    """A path with ``//`` answers 301 with a relative Location (never one starting
    with ``/``, which ``//`` would make another host) that leads to the merged path,
    query kept; the redirect is followed to a 200."""
    path = path.format(wheel=world.wheel.name)
    url = world.daemon.url.rstrip("/") + path  # as the client asked, slashes kept
    # treq's client would normalize the URL: send the path as it is.
    answer = await raw_request(
        world.daemon,
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
    )
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    assert head[0].startswith("HTTP/1.1 301"), head
    locations = [
        h.split(":", 1)[1].strip() for h in head if h.lower().startswith("location:")
    ]
    assert len(locations) == 1
    location = locations[0]
    assert not location.startswith("/") and "://" not in location
    resolved = urljoin(url, location)
    if target is None:
        assert resolved == world.daemon.url + "simple/lib/?" + path.split("?")[1]
    else:
        assert resolved == world.daemon.url + target.format(wheel=world.wheel.name)
    d = world.daemon.client.request(method, resolved)
    d.addTimeout(DEADLINE, reactor)
    response = await d
    assert response.code == 200
    await response.content()


@pytest_twisted.ensureDeferred
async def test_empty_path_segments_never_redirect_writes(world):
    """An upload to a ``//`` path is a 404 with a reason, not a redirect (twine takes
    a redirect for a failure anyway), and nothing is stored."""
    answer = await raw_request(
        world.daemon,
        f"PUT //packages/lib/{world.wheel.name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Length: 4\r\n\r\nabcd".encode(),
    )
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]
    assert b"location:" not in answer.lower()
    assert not (world.cache / "private" / "releases" / "lib").exists()


def test_werkzeug_redirects_become_relative():
    """Should werkzeug redirect a request itself (a route with strict slashes), the
    Location is made relative to the request's path, query kept."""
    request = DummyRequest([b""])
    request.path = b"/simple/lib/1.0"
    error = RequestRedirect("http://127.0.0.1:8080/simple/lib/1.0/?a=b")

    class Failure:
        value = error

    body = _routing_error(request, Failure())
    assert request.responseCode == 308
    location = request.responseHeaders.getRawHeaders(b"location")[0]
    assert location == b"../../simple/lib/1.0/?a=b"
    assert b"Moved to" in body
    assert (
        urljoin("http://h/simple/lib/1.0", location.decode())
        == "http://h/simple/lib/1.0/?a=b"
    )


@pytest.mark.parametrize(
    "path, target, expected",
    [
        (b"//", b"/", b"../"),
        (b"/a//b", b"/a/b", b"../../a/b"),
        (b"/x", b"/a:b", b"./a:b"),  # a first segment with ':' is not a scheme
    ],
)
def test_relative_location(path, target, expected):
    """relative_location climbs to the root with ``../`` and never starts with ``/``."""
    assert relative_location(path, target) == expected


@pytest_twisted.ensureDeferred
async def test_json_api_with_trailing_slash(tmp_path):
    """/pypi/<p>/json/ and /pypi/<p>/<v>/json/ are served as without the slash (the
    public index serves both); other spellings redirect, keeping the slash."""
    daemon = await start_daemon("http://127.0.0.1:1/simple/", tmp_path / "cache")
    try:
        wheel = build_wheel(tmp_path / "a", "Json.Pkg", "1.0")
        response = await daemon.client.put(
            f"{daemon.url}packages/json-pkg/{wheel.name}", data=wheel.read_bytes()
        )
        assert response.code == 201, await response.content()
        for path in ("pypi/json-pkg/json", "pypi/json-pkg/1.0/json"):
            plain = await (await daemon.get(path)).content()
            response = await daemon.get(path + "/")
            assert response.code == 200
            assert response.headers.getRawHeaders("content-type") == [
                "application/json"
            ]
            assert await response.content() == plain
        for path, location in [
            ("pypi/Json.Pkg/json/", "../../json-pkg/json/"),
            ("pypi/Json.Pkg/1.0/json/", "../../../json-pkg/1.0/json/"),
        ]:
            response = await daemon.get(path, allow_redirects=False)
            assert response.code == 301
            assert response.headers.getRawHeaders("location") == [location]
            await response.content()
        response = await daemon.get("pypi/nothing/json/")
        assert response.code == 404
        await response.content()
    finally:
        await daemon.stop()
