"""The fast lane answers byte for byte as twisted.web does.

One daemon's objects are served twice on loopback: by the daemon's own site
(with the fast lane, as ``twistd pypicache`` serves) and by a site without it.
The same bytes go to both over raw sockets, and everything that comes back
(every response on the connection, every header in its order, the body, the
connection closing) must be equal but for ``Date``: pages HTML and JSON, gzip
and identity, ``HEAD``, ``If-None-Match``, files, core metadata, HTTP/1.0,
``Connection: close``, 404s and redirects, a bad ``Host``, pipelined requests
mixing both kinds, a request split across TCP segments, a body sent in
pieces. Requests reaching twisted.web on the fast site (through the guard and
Klein, or as cold reads straight to their route) are counted, to pin which
ones the lane answers by itself.
"""

import re
import socket
import time

import bcrypt
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread

from pypicache.web import fastlane, rendered
from pypicache.web.access import parse_cidr
from pypicache.web.accesslog import make_site
from pypicache.web.limits import DEFAULT_MAX_BODY, limited_request_factory
from tests.clients import pip_install
from tests.daemon import start_world
from tests.packages import build_sdist, build_wheel
from tests.webclient import put

JSON = "application/vnd.pypi.simple.v1+json"


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    d = tmp_path_factory.mktemp("dists")
    return {
        "wheel": build_wheel(d, "lane-thing", "1.0"),
        "wheel2": build_wheel(d, "lane-thing", "2.0"),
        "sdist": build_sdist(d, "lane-thing", "2.0"),
        "secret": build_wheel(d, "secret-lane", "1.0"),
    }


def request(
    method, target, headers=None, version="HTTP/1.1", close=False, host="127.0.0.1"
):
    """The bytes of one request (``Connection: close`` if ``close``)."""
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _talk(port, pieces, pause):
    """Send ``pieces`` (a pause between them), read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(pause)
            s.sendall(piece)
        return read_all(s)


def read_all(s):
    """What ``s`` reads until the server closes, ``Date`` values blanked."""
    chunks = []
    while chunk := s.recv(1 << 16):
        chunks.append(chunk)
    return re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\nDate: -\r\n", b"".join(chunks))


class Lanes:
    """The daemon's site (fast lane) and a site without it, on the same objects."""

    def __init__(self, world, slow_port, calls):
        self.world = world
        self.daemon = world.daemon
        self.fast = self.daemon.port.getHost().port
        self.slow_port = slow_port
        self.slow = slow_port.getHost().port
        self.calls = calls

    async def same(self, *pieces, pause=0.05):
        """Send the same bytes to both sites; assert equal exchanges; return one."""
        fast = await deferToThread(_talk, self.fast, pieces, pause)
        slow = await deferToThread(_talk, self.slow, pieces, pause)
        assert fast == slow, pieces
        return fast

    async def stop(self):
        await self.slow_port.stopListening()
        await self.world.stop()


def watch_guard(daemon, calls):
    """Append the target of each request the daemon's guard renders to ``calls``."""
    guarded = daemon.port.factory.resource
    render = guarded.render

    def counted(request):
        calls.append(request.uri)
        return render(request)

    guarded.render = counted


def watch_cold(daemon, calls, of=lambda head: head.uri):
    """Append ``of(head)`` to ``calls`` for each request the daemon's lane
    hands to its route below Klein (``web/coldlane``)."""
    cold = daemon.port.factory.ready.cold
    call_for = cold.call_for

    def counted(head):
        call = call_for(head)
        if call is not None:
            calls.append(of(head))
        return call

    cold.call_for = counted


async def lanes_for(world):
    app = world.daemon.app
    site = make_site(app.resource(), limited_request_factory(DEFAULT_MAX_BODY), reactor)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    calls = []
    watch_guard(world.daemon, calls)
    # Cold reads reach twisted.web too, their route below Klein.
    watch_cold(world.daemon, calls)
    return Lanes(world, port, calls)


@pytest_twisted.async_yield_fixture()
async def lanes(tmp_path, dists):
    """lane-thing's page fetched and its 1.0 wheel cached; a private project."""
    world = await start_world(
        tmp_path, [dists["wheel"], dists["wheel2"], dists["sdist"]], timeout=5
    )
    t = await lanes_for(world)
    response = await t.daemon.get(f"packages/lane-thing/{dists['wheel'].name}")
    assert response.code == 200
    await response.content()
    await world.stored("lane-thing", dists["wheel"].name)
    assert (await put(t.daemon, dists["secret"])).code == 201
    await t.same(request("GET", "/simple/lane-thing/", close=True))
    t.calls.clear()
    yield t
    await t.stop()


def etag_of(answer: bytes) -> str:
    return re.search(rb"\r\nETag: ([^\r]*)\r\n", answer).group(1).decode()


async def test_pages_answered_by_the_lane(lanes):
    """Pages (simple, local, private) in HTML and JSON, gzip and identity, GET
    and HEAD, HTTP/1.1 and 1.0, and 304s answer alike, all from the lane."""
    for path in ("/simple/lane-thing/", "/local/lane-thing/", "/simple/secret-lane/"):
        for method in ("GET", "HEAD"):
            for headers in (
                {},
                {"Accept": JSON},
                {"Accept": JSON, "Accept-Encoding": "gzip"},
                {"Accept-Encoding": "gzip, deflate"},
                {"Accept-Encoding": "gzip;q=0"},
            ):
                answer = await lanes.same(request(method, path, headers, close=True))
                assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
                await lanes.same(request(method, path, headers, "HTTP/1.0"))
        plain = await lanes.same(request("GET", path, close=True))
        for tags in (etag_of(plain), f'W/{etag_of(plain)}, "x"', "*"):
            answer = await lanes.same(
                request("GET", path, {"If-None-Match": tags}, close=True)
            )
            assert answer.startswith(b"HTTP/1.1 304 Not Modified\r\n")
    assert lanes.calls == []


async def test_files_answered_by_the_lane(lanes, dists):
    """A stored wheel (GET, HEAD, If-None-Match) and its core metadata (chunked
    in HTTP/1.1, not in 1.0) answer alike, from the lane."""
    path = f"/packages/lane-thing/{dists['wheel'].name}"
    answer = await lanes.same(request("GET", path, close=True))
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    for version in ("HTTP/1.1", "HTTP/1.0"):
        for method in ("GET", "HEAD"):
            await lanes.same(request(method, path, version=version, close=True))
            await lanes.same(
                request(method, path + ".metadata", version=version, close=True)
            )
    for tags in (etag_of(answer), "*", f'"x" {etag_of(answer)}'):
        answer304 = await lanes.same(
            request("GET", path, {"If-None-Match": tags}, close=True)
        )
        assert answer304.startswith(b"HTTP/1.1 304 ")
    assert lanes.calls == []


async def test_the_rest_goes_to_twisted_web(lanes, dists):
    """Errors, redirects, ranges, conditions on dates, queries, a bad or missing
    Host, a body, an unknown method, a header given twice and a malformed
    request answer alike, through twisted.web."""
    wheel = dists["wheel"].name
    cases = [
        request("GET", f"/packages/other-thing/{wheel}", close=True),
        request(
            "GET",
            "/packages/lane-thing/lane_thing-9.0-py3-none-any.whl.metadata",
            close=True,
        ),
        request(
            "GET", "/packages/secret-lane/secret_lane-9.0-py3-none-any.whl", close=True
        ),
        request("GET", "/simple/Lane_Thing/", close=True),
        request("GET", "/simple/lane-thing", close=True),
        request("GET", "/local/nothing-here/", close=True),
        request("GET", "/simple/lane-thing/?format=" + JSON, close=True),
        request("GET", "/simple/%6cane-thing/", close=True),
        request(
            "GET", f"/packages/lane-thing/{wheel}", {"Range": "bytes=0-9"}, close=True
        ),
        request(
            "GET",
            f"/packages/lane-thing/{wheel}",
            {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"},
            close=True,
        ),
        request("GET", "/simple/lane-thing/", host="a" * 64 + ".example", close=True),
        request("GET", "/simple/lane-thing/", host=None, close=True),
        request("GET", "/simple/lane-thing/", {"Content-Length": "2"}, close=True)
        + b"xx",
        request("POST", "/simple/lane-thing/", {"Content-Length": "0"}, close=True),
        request(
            "GET",
            "/simple/lane-thing/",
            {"Accept": "text/html", "accept": JSON},
            close=True,
        ),
        b"GET /simple/lane-thing/ HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET /simple/lane-thing/ HTTP/1.1\r\nHost: x\r\n  folded\r\nConnection: close\r\n\r\n",
        request("GET", "/simple/", close=True),
    ]
    for data in cases:
        await lanes.same(data)
    assert len(lanes.calls) == len(cases) - 1  # HTTPChannel refuses "Host :" itself


async def test_pipelined_and_split_requests(lanes, dists):
    """Pipelined requests mixing lane and twisted.web answers come back in
    order; a request split across TCP segments (mid-line, between CR and LF)
    is answered whole; bytes after a Connection: close are ignored."""
    wheel = f"/packages/lane-thing/{dists['wheel'].name}"
    mixed = (
        request("GET", "/simple/lane-thing/")
        + request("GET", "/packages/other-thing/x-1.0-py3-none-any.whl")
        + request("HEAD", wheel)
        + request("GET", "/simple/Lane.Thing/")
        + request("GET", "/simple/lane-thing/", {"Accept-Encoding": "gzip"})
        + request("GET", wheel + ".metadata")
        + request("GET", "/local/lane-thing/", {"Accept": JSON}, close=True)
        + request("GET", "/simple/lane-thing/")
    )
    answer = await lanes.same(mixed)
    assert answer.count(b"HTTP/1.1 ") == 7
    assert len(lanes.calls) == 2
    await lanes.same(*(mixed[i : i + 50] for i in range(0, len(mixed), 50)), pause=0.01)
    one = request("GET", "/simple/lane-thing/", {"Accept": JSON}, close=True)
    cut = one.index(b"\r\n") + 1
    lanes.calls.clear()
    await lanes.same(one[:10], one[10:cut], one[cut:])
    await lanes.same(
        request("GET", wheel)[:-2], b"\r\n" + request("GET", wheel, close=True)
    )
    assert lanes.calls == []


def pad_pages(monkeypatch, size):
    """Make every page rendered from now on ``size`` bytes longer (a comment)."""
    plain = rendered.plain
    monkeypatch.setattr(
        rendered,
        "plain",
        lambda data, media, max_age: plain(
            data + b"<!--" + b"x" * size + b"-->", media, max_age
        ),
    )


async def test_large_body_in_pieces(tmp_path, dists, monkeypatch):
    """A page larger than one piece is sent as the transport drains, and the
    requests pipelined behind it wait for it; alike, from the lane. Requests
    pipelined behind one that waits for the upstream come back to the lane."""
    pad_pages(monkeypatch, 400_000)
    world = await start_world(tmp_path, [dists["wheel"]], timeout=5)
    lanes = await lanes_for(world)
    try:
        page = request("GET", "/simple/lane-thing/")
        # The first waits for the upstream; the second, buffered meanwhile, is the lane's.
        await lanes.same(page + request("GET", "/simple/lane-thing/", close=True))
        assert lanes.calls == [b"/simple/lane-thing/"]
        lanes.calls.clear()
        answer = await lanes.same(
            page
            + request("HEAD", "/simple/lane-thing/")
            + page
            + request("GET", "/nowhere")
            + page
            + request("GET", "/simple/lane-thing/", {"Accept": JSON}, close=True)
        )
        assert answer.count(b"HTTP/1.1 200 OK") == 5
        assert lanes.calls == [b"/nowhere"]
    finally:
        await lanes.stop()


async def test_access_log_lines_alike(tmp_path, dists):
    """Both ways write the same access log line for the same request."""
    world = await start_world(tmp_path, [dists["wheel"]], timeout=5)
    app = world.daemon.app
    ports, logs = [], []
    try:
        for name, ready in (("fast", app.ready_answers()), ("slow", None)):
            logs.append(tmp_path / f"{name}.log")
            site = make_site(
                app.resource(),
                limited_request_factory(DEFAULT_MAX_BODY),
                reactor,
                access_log=str(logs[-1]),
                client_address=app.policy.client_address,
                ready=ready,
            )
            ports.append(
                await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
            )
        data = request(
            "GET", "/simple/lane-thing/", {"User-Agent": 'pip/"1"', "Referer": "x"}
        )
        data += request(
            "HEAD", "/simple/lane-thing/", {"Accept": JSON}, version="HTTP/1.0"
        )
        for port in ports:
            await deferToThread(_talk, port.getHost().port, [data], 0)
            await deferToThread(_talk, port.getHost().port, [data], 0)
    finally:
        for port in ports:
            await port.stopListening()  # closes the logs
        await world.stop()
    fast, slow = (re.sub(r"\[[^]]*\]", "[-]", p.read_text()) for p in logs)
    assert fast == slow
    assert len(fast.splitlines()) == 4
    assert '"GET /simple/lane-thing/ HTTP/1.1" 200' in fast


async def test_access_policy_kept(tmp_path, dists):
    """--allow-from refuses in the lane as in the guard (403 from twisted.web);
    with --trust-proxy an allowed forwarded address is answered by the lane;
    reads behind credentials always go to twisted.web."""
    world = await start_world(
        tmp_path,
        [dists["wheel"]],
        timeout=5,
        allow_from=[parse_cidr("10.0.0.0/8")],
        trust_proxy=True,
    )
    lanes = await lanes_for(world)
    try:
        refused = await lanes.same(request("GET", "/simple/lane-thing/", close=True))
        assert refused.startswith(b"HTTP/1.1 403 ")
        assert len(lanes.calls) == 1
        proxied = {"X-Forwarded-For": "10.1.2.3"}
        await lanes.same(request("GET", "/simple/lane-thing/", proxied, close=True))
        lanes.calls.clear()
        answer = await lanes.same(
            request("GET", "/simple/lane-thing/", proxied, close=True)
        )
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert lanes.calls == []
    finally:
        await lanes.stop()
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "htpasswd").write_text(f"alice:{hashed}\n")
    world = await start_world(
        tmp_path / "auth",
        [dists["wheel"]],
        timeout=5,
        auth_file=str(tmp_path / "htpasswd"),
        read_auth=True,
    )
    lanes = await lanes_for(world)
    try:
        answer = await lanes.same(request("GET", "/simple/lane-thing/", close=True))
        assert answer.startswith(b"HTTP/1.1 401 ")
        assert len(lanes.calls) == 1
    finally:
        await lanes.stop()


async def test_pip_installs_through_the_lane(tmp_path, dists):
    """pip installs twice; the second time the lane answers the page and the wheel."""
    world = await start_world(tmp_path, [dists["wheel"], dists["wheel2"]], timeout=10)
    site = world.daemon.port.factory
    answered = []
    answer = site.ready.answer

    def counted(head):
        ready = answer(head)
        if ready is not None:
            answered.append(head.uri)
        return ready

    site.ready.answer = counted
    try:
        for target in ("t1", "t2"):
            result = await pip_install(
                world.daemon.url + "simple/",
                ["lane-thing"],
                tmp_path / target,
                tmp_path,
            )
            result.check()
            assert (tmp_path / target / "lane_thing-2.0.dist-info").is_dir()
        assert b"/simple/lane-thing/" in answered
        assert any(uri.endswith(b".whl") for uri in answered)
    finally:
        await world.stop()


async def test_idle_timeout_with_a_partial_head(lanes):
    """A connection that sends part of a head and then nothing is closed by
    the idle timeout, unanswered, on both sites."""
    for port in (lanes.daemon.port, lanes.slow_port):
        port.factory.timeOut = 0.5
    partial = request("GET", "/simple/lane-thing/")[:20]
    started = time.monotonic()
    assert await lanes.same(partial) == b""
    assert time.monotonic() - started < 5


def test_first_piece_joined_once_per_headers():
    """A large body's first piece is joined with the headers once and reused
    while the headers (Date) and the piece stay the same; other headers or
    another piece are joined anew, and only a few joins are kept."""
    piece, other = b"p" * 200_000, b"q" * 200_000
    first = fastlane._joined(b"H1\r\n\r\n", piece)
    assert first == b"H1\r\n\r\n" + piece
    assert fastlane._joined(b"H1\r\n\r\n", piece) is first
    assert fastlane._joined(b"H1\r\n\r\n", other) == b"H1\r\n\r\n" + other
    assert fastlane._joined(b"H2\r\n\r\n", piece) == b"H2\r\n\r\n" + piece
    for i in range(20):
        fastlane._joined(b"H%d\r\n\r\n" % i, piece)
    assert len(fastlane._JOINED) <= fastlane._JOINED_MAX
