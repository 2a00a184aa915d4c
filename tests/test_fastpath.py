"""The fast path for hot reads answers exactly as the Klein routes do.

One daemon's objects are served twice on loopback: through ``FastReads`` (as
``twistd pypicache`` serves them) and through Klein alone. The same raw
requests go to both and the answers (status, every header but ``Date``, body)
must be equal, for pages, stored files, HEAD, ranges, conditional requests,
redirects, errors, a private project, and reads that need credentials. Klein
is also watched, to pin which requests the fast path answers by itself, and
so are the cold reads the fast lane hands to their route below Klein.
"""

import base64
from pathlib import Path

import bcrypt
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.server import Site

from pypicache.web.fastpath import FastReads
from pypicache.web.files import ArchiveFile, StoredArchive
from tests import rawhttp
from tests.daemon import start_world
from tests.packages import build_sdist, build_wheel
from tests.test_fastlane import watch_cold
from tests.webclient import put

JSON = "application/vnd.pypi.simple.v1+json"


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    d = tmp_path_factory.mktemp("dists")
    return {
        "wheel": build_wheel(d, "fast-thing", "1.0"),
        "wheel2": build_wheel(d, "fast-thing", "2.0"),
        "sdist": build_sdist(d, "fast-thing", "2.0"),
        "secret": build_wheel(d, "secret-thing", "1.0"),
    }


def _comparable(answer):
    """Status, headers but ``Date``, body; a multipart boundary (random) as ``B``."""
    headers = {k: v for k, v in answer.headers.items() if k != "date"}
    body = answer.body
    kind = headers.get("content-type", "")
    if kind.startswith("multipart/byteranges"):
        boundary = kind.split("boundary=")[1].strip('"')
        headers["content-type"] = kind.replace(boundary, "B")
        body = body.replace(boundary.encode(), b"B")
    return answer.status, headers, body


async def both(port_a, port_b, method, target, headers=None, host="127.0.0.1"):
    """The answers of two servers to the same raw request."""
    data = rawhttp.build(method, target, headers, host=host)
    return await rawhttp.request(port_a, data), await rawhttp.request(port_b, data)


async def same(port_a, port_b, method, target, headers=None, host="127.0.0.1"):
    """Ask both servers; assert equal answers; return the first one."""
    a, b = await both(port_a, port_b, method, target, headers, host)
    assert _comparable(a) == _comparable(b), (method, target, headers)
    return a


class Twin:
    """A world whose app is also served by Klein alone, on a second port."""

    def __init__(self, world, port, klein_calls):
        self.world = world
        self.fast_port = int(world.daemon.url.rsplit(":", 1)[1].strip("/"))
        self.port = port
        self.klein_calls = klein_calls

    async def both(self, method, target, headers=None, host="127.0.0.1"):
        """The answers of the fast daemon and of the Klein-only one."""
        return await both(
            self.fast_port, self.port.getHost().port, method, target, headers, host
        )

    async def same(self, method, target, headers=None, host="127.0.0.1"):
        """Ask both; assert equal answers; return the answer."""
        return await same(
            self.fast_port, self.port.getHost().port, method, target, headers, host
        )

    async def stop(self):
        await self.port.stopListening()
        await self.world.stop()


async def twin(tmp_path: Path, dists, **options) -> Twin:
    world = await start_world(
        tmp_path,
        [dists["wheel"], dists["wheel2"], dists["sdist"]],
        timeout=5,
        **options,
    )
    guarded = world.daemon.app.resource(fast_reads=False)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Site(guarded)
    )
    # Count what the fast daemon leaves to Klein.
    fast = world.daemon.port.factory.resource._inner
    assert isinstance(fast, FastReads)
    calls = []
    klein_render = fast._klein.render

    def counted(request):
        calls.append(request.path)
        return klein_render(request)

    fast._klein.render = counted
    # What the fast lane hands to its route below Klein (web/coldlane).
    cold_calls = []
    watch_cold(world.daemon, cold_calls, lambda head: head.path)
    twin = Twin(world, port, calls)
    twin.cold_calls = cold_calls
    return twin


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest_twisted.async_yield_fixture()
async def twins(tmp_path, dists):
    """Twin daemons with fast-thing's page and 1.0 wheel cached, and a private project."""
    t = await twin(tmp_path, dists)
    daemon = t.world.daemon
    response = await daemon.get(f"packages/fast-thing/{dists['wheel'].name}")
    assert response.code == 200
    await response.content()
    await t.world.stored("fast-thing", dists["wheel"].name)
    answer = await put(daemon, dists["secret"])
    assert answer.code == 201, answer.body
    yield t
    await t.stop()


async def test_pages_answer_alike(twins, dists):
    """Project pages, HTML and JSON, plain and gzip, GET and HEAD, 304 and
    redirects answer alike, and fresh pages never reach Klein."""
    await twins.same("GET", "/simple/fast-thing/")  # fetches the page upstream
    twins.klein_calls.clear()
    for path in ("/simple/fast-thing/", "/local/fast-thing/", "/simple/secret-thing/"):
        for method in ("GET", "HEAD"):
            for headers in ({}, {"Accept": JSON}, {"Accept-Encoding": "gzip"}):
                answer = await twins.same(method, path, headers)
                assert answer.status == 200
        etag = (await twins.same("GET", path)).headers["etag"]
        answer = await twins.same("GET", path, {"If-None-Match": etag})
        assert answer.status == 304
    assert twins.klein_calls == []
    for path in ("/simple/Fast_Thing/", "/local/nothing-here/", "/local/Fast.Thing/"):
        await twins.same("GET", path)
    assert twins.klein_calls == []


#: Requests for a file, and the status each gets.
FILE_CASES = [
    ("GET", {}, 200),
    ("HEAD", {}, 200),
    ("GET", {"Range": "bytes=0-9"}, 206),
    ("GET", {"Range": "bytes=-100000"}, 206),
    ("GET", {"Range": "bytes=0-1,5-9"}, 206),
    ("GET", {"Range": "bytes=999999-"}, 416),
    ("HEAD", {"Range": "bytes=0-9"}, 200),
    ("GET", {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}, 304),
    ("HEAD", {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}, 304),
    ("GET", {"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"}, 200),
]


async def test_files_answer_alike(twins, dists):
    """A stored file: GET, HEAD, ranges (one, several, a suffix longer than the
    file, unsatisfiable), If-None-Match and If-Modified-Since answer alike,
    without Klein."""
    path = f"/packages/fast-thing/{dists['wheel'].name}"
    sha = (await twins.same("GET", path)).headers["etag"]
    twins.klein_calls.clear()
    for method, headers, status in FILE_CASES:
        assert (await twins.same(method, path, headers)).status == status
    assert (await twins.same("GET", path, {"If-None-Match": sha})).status == 304
    assert twins.klein_calls == []


async def test_stored_archive_answers_as_archive_file(tmp_path, dists):
    """StoredArchive (one open and fstat for a plain GET or HEAD) answers every
    request as ArchiveFile (static.File) does, for a file and a missing one."""
    ports = []
    for kind in (ArchiveFile, StoredArchive):
        for path in (str(dists["wheel"]), str(tmp_path / "gone.whl")):
            site = Site(kind(path))
            ports.append(
                await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
            )
    try:
        numbers = [p.getHost().port for p in ports]
        for method, headers, status in FILE_CASES:
            answer = await same(numbers[0], numbers[2], method, "/", headers)
            assert answer.status == status
            missing = await same(numbers[1], numbers[3], method, "/", headers)
            assert missing.status == 404
    finally:
        for port in ports:
            await port.stopListening()


async def test_errors_answer_alike(twins, dists):
    """Another project's file, a bad filename, a missing private file, a path
    that is not UTF-8 and a Host that cannot be encoded answer alike; the
    last two are Klein's to refuse."""
    wheel = dists["wheel"].name
    twins.klein_calls.clear()
    for target in (
        f"/packages/other-thing/{wheel}",
        "/packages/fast-thing/not-a-dist.txt",
        "/packages/secret-thing/secret_thing-9.0-py3-none-any.whl",
    ):
        answer = await twins.same("GET", target)
        assert answer.status in (400, 404)
    assert twins.klein_calls == []
    answer = await twins.same("GET", "/simple/%ff/")
    assert answer.status == 400
    answer = await twins.same("GET", "/simple/fast-thing/", host="a" * 64 + ".example")
    assert answer.status == 400
    assert len(twins.klein_calls) == 2


async def test_waiting_reads_go_to_klein(twins, dists):
    """A file not cached yet and core metadata not on disk yet go to their
    route (below Klein, the fast lane's cold reads), the project list to
    Klein; they answer alike."""
    twins.klein_calls.clear()
    twins.cold_calls.clear()
    await twins.same("HEAD", f"/packages/fast-thing/{dists['wheel2'].name}")
    await twins.same("GET", f"/packages/fast-thing/{dists['wheel2'].name}.metadata")
    await twins.same("GET", "/simple/")
    assert twins.klein_calls == [b"/simple/"]
    assert len(twins.cold_calls) == 2


async def test_health_answers_alike_without_klein(twins):
    """``GET`` and ``HEAD /health`` (with a query too) are answered by the fast
    path, without Klein; ``/health/``, a ``POST`` and a ``Host`` Klein cannot route go
    to Klein. Both ways answer alike."""
    twins.klein_calls.clear()
    for method, target in (
        ("GET", "/health"),
        ("HEAD", "/health"),
        ("GET", "/health?x=1"),
    ):
        answer = await twins.same(method, target)
        assert answer.status == 200
    assert twins.klein_calls == []
    await twins.same("GET", "/health/")
    await twins.same("POST", "/health")
    answer = await twins.same("GET", "/health", host="a" * 64 + ".example")
    assert answer.status == 400
    assert len(twins.klein_calls) == 3


async def test_core_metadata_answers_alike(twins, dists):
    """Core metadata on disk (of a cached wheel, of a private one) answers
    alike and without Klein; a private file without it is a 404 from both."""
    cached = f"/packages/fast-thing/{dists['wheel'].name}.metadata"
    first = await twins.world.daemon.get(cached.lstrip("/"))
    assert first.code == 200
    await first.content()
    twins.klein_calls.clear()
    private = f"/packages/secret-thing/{dists['secret'].name}.metadata"
    for target in (cached, private):
        for method in ("GET", "HEAD"):
            answer = await twins.same(method, target)
            assert answer.status == 200
    missing = "/packages/secret-thing/secret_thing-9.0-py3-none-any.whl.metadata"
    assert (await twins.same("GET", missing)).status == 404
    assert twins.klein_calls == []


@pytest_twisted.async_yield_fixture()
async def guarded_twins(tmp_path, dists):
    """Twin daemons whose reads need credentials (--auth-file, --read-auth)."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "htpasswd").write_text(f"alice:{hashed}\n")
    t = await twin(
        tmp_path, dists, auth_file=str(tmp_path / "htpasswd"), read_auth=True
    )
    yield t
    await t.stop()


async def test_reads_needing_credentials_answer_alike(guarded_twins, dists):
    """With --read-auth: 401 without credentials, the page or file with them."""
    alice = {"Authorization": basic("alice", "pw")}
    wheel = f"/packages/fast-thing/{dists['wheel'].name}"
    for target in ("/simple/fast-thing/", wheel):
        answer = await guarded_twins.same("GET", target)
        assert answer.status == 401
    assert (await guarded_twins.same("GET", "/simple/fast-thing/", alice)).status == 200
    fast, _ = await guarded_twins.both("GET", wheel, alice)  # downloads it
    assert fast.status == 200
    # Its client had it once verified; the stored copy (Last-Modified) next.
    await guarded_twins.world.stored("fast-thing", dists["wheel"].name, headers=alice)
    assert (await guarded_twins.same("GET", wheel, alice)).status == 200
    assert (await guarded_twins.same("HEAD", wheel, alice)).status == 200


async def test_stale_pages_go_to_klein(tmp_path, dists):
    """A page older than --page-ttl goes to its route (it revalidates
    upstream; below Klein, a cold read of the fast lane), and answers as a
    fresh one would."""
    t = await twin(tmp_path, dists, page_ttl=0)
    try:
        for headers in ({}, {"Accept": JSON}):
            answer = await t.same("GET", "/simple/fast-thing/", headers)
            assert answer.status == 200
        assert t.klein_calls == []
        assert t.cold_calls == [b"/simple/fast-thing/"] * 2
    finally:
        await t.stop()
