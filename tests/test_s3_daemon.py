"""Several daemons on one S3 bucket (``--storage s3://...``), driven by real
clients: moto's server on loopback is the bucket, the fake index the upstream."""

from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.web.client import HTTPConnectionPool

from tests.clients import clean_env, pip_install, twine_upload, uv_pip_install
from tests.daemon import spawn_twistd
from tests.fakeindex import FakeIndex, start_fake_index
from tests.packages import build_wheel
from tests.s3server import S3Bucket
from tests.test_crash import STARTUP, bounded

#: The documented visibility delay across daemons (2 s), plus a round trip.
VISIBLE_WITHIN = 3.0


class S3Daemon:
    """``twistd -n pypicache --storage s3://...`` on its own local folder."""

    def __init__(self, tmp_path: Path, name: str, s3: S3Bucket, upstream: str) -> None:
        self.home = tmp_path / name
        self.home.mkdir()
        self.s3 = s3
        self.upstream = upstream
        self.twistd: Any = None
        self.url = ""

    async def start(self, *options: str) -> None:
        self.twistd = spawn_twistd(
            self.home,
            self.upstream,
            clean_env(self.home),
            "--storage",
            self.s3.url("pypi"),
            "--s3-endpoint-url",
            self.s3.endpoint,
            *options,
        )
        port = await bounded(self.twistd.port, STARTUP)
        self.url = f"http://127.0.0.1:{port}/"

    async def stop(self) -> None:
        if self.twistd is not None:
            await self.twistd.stop()
            self.twistd = None

    async def get(self, path: str) -> tuple[int, str]:
        pool = HTTPConnectionPool(reactor, persistent=False)
        try:
            response = await treq.get(self.url + path, pool=pool)
            return response.code, (await response.content()).decode()
        finally:
            await pool.closeCachedConnections()


@pytest_twisted.async_yield_fixture()
async def world(tmp_path: Path, s3: S3Bucket) -> Any:
    """A fake upstream offering ``cold``, and two daemons A and B on one bucket."""
    index = FakeIndex(tmp_path, "json")
    index.add(build_wheel(tmp_path / "upstream", "cold", "1.0"))
    upstream = await start_fake_index(index)
    a = S3Daemon(tmp_path, "a", s3, upstream.url)
    b = S3Daemon(tmp_path, "b", s3, upstream.url)
    await a.start()
    await b.start()
    state = {"upstream": upstream, "a": a, "b": b}
    yield state
    for daemon in (state["a"], state["b"], state.get("c")):
        if daemon is not None:
            await daemon.stop()
    await state["upstream"].stop()


async def visible(daemon: S3Daemon, project: str, filename: str) -> float:
    """Seconds until ``filename`` is on ``daemon``'s page of ``project``."""
    started = reactor.seconds()
    while True:
        code, text = await daemon.get(f"simple/{project}/")
        if code == 200 and filename in text:
            return reactor.seconds() - started
        assert reactor.seconds() - started < VISIBLE_WITHIN, (code, text)
        await deferLater(reactor, 0.1)


@pytest_twisted.ensureDeferred
async def test_upload_through_one_daemon_installs_through_another(world, tmp_path):
    """A wheel uploaded with twine through daemon A is installable with pip
    through daemon B within the documented delay; a cold pip install through
    B stores its file in the bucket, so that B restarted on a fresh local
    folder, with the upstream stopped, installs it again from /local/."""
    a, b = world["a"], world["b"]
    wheel = build_wheel(tmp_path / "dist", "secret-pkg", "1.0")
    (await twine_upload(a.url, [wheel], tmp_path)).check()
    assert await visible(b, "secret-pkg", wheel.name) < VISIBLE_WITHIN
    result = await pip_install(
        b.url + "simple/", ["secret-pkg"], tmp_path / "t1", tmp_path
    )
    result.check()
    assert (tmp_path / "t1" / "secret_pkg").is_dir()

    result = await pip_install(b.url + "simple/", ["cold"], tmp_path / "t2", tmp_path)
    result.check()
    await b.stop()
    await world["upstream"].stop()
    fresh = S3Daemon(tmp_path, "b2", b.s3, b.upstream)
    world["b"] = fresh
    await fresh.start()
    for project in ("cold", "secret-pkg"):
        target = tmp_path / f"t3-{project}"
        result = await pip_install(fresh.url + "local/", [project], target, tmp_path)
        result.check()
    assert (tmp_path / "t3-cold" / "cold").is_dir()


@pytest_twisted.ensureDeferred
async def test_concurrent_uploads_of_one_filename_one_wins(world, tmp_path):
    """The same filename with other bytes uploaded through A and B at once:
    exactly one upload succeeds and the other is refused with 409; every
    daemon then serves the winner's bytes."""
    a, b = world["a"], world["b"]
    one = build_wheel(tmp_path / "one", "race", "1.0", module_body="X = 1\n")
    two = build_wheel(tmp_path / "two", "race", "1.0", module_body="X = 2\n")
    assert one.name == two.name and one.read_bytes() != two.read_bytes()
    results = await gatherResults(
        [
            Deferred.fromCoroutine(_upload(a.url, one, tmp_path / "one")),
            Deferred.fromCoroutine(_upload(b.url, two, tmp_path / "two")),
        ]
    )
    assert sorted(r.ok for r in results) == [False, True], results
    loser = next(r for r in results if not r.ok)
    assert "409" in loser.out + loser.err
    winner = one if results[0].ok else two
    for daemon in (a, b):
        await visible(daemon, "race", winner.name)
        code, body = await _bytes(daemon, f"packages/race/{winner.name}")
        assert code == 200 and body == winner.read_bytes()


@pytest_twisted.ensureDeferred
async def test_uv_cold_install_through_an_s3_daemon(world, tmp_path):
    """uv installs a cold file through an S3-backed daemon; the folder scan
    (POST /+rescan), which has no folder to scan there, is refused with 400;
    a daemon with --s3-redirect sends clients to a presigned URL of the
    stored file, which serves its bytes."""
    result = await uv_pip_install(
        world["a"].url + "simple/", ["cold"], tmp_path / "t", tmp_path
    )
    result.check()
    assert (tmp_path / "t" / "cold").is_dir()
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        response = await treq.post(world["a"].url + "+rescan", pool=pool)
        assert response.code == 400
        assert "object store" in (await response.content()).decode()
    finally:
        await pool.closeCachedConnections()

    c = S3Daemon(tmp_path, "c", world["a"].s3, world["a"].upstream)
    world["c"] = c
    await c.start("--s3-redirect")
    name = "cold-1.0-py3-none-any.whl"
    started = reactor.seconds()
    while name not in (await c.get("local/cold/"))[1]:
        assert reactor.seconds() - started < 10, "never stored"
        await deferLater(reactor, 0.2)
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        answer = await treq.get(
            c.url + f"packages/cold/{name}", pool=pool, allow_redirects=False
        )
        await answer.content()
        assert answer.code in (302, 303, 307), answer.code
        [location] = answer.headers.getRawHeaders("location")
        assert location.startswith(c.s3.endpoint) and "Signature" in location
        fetched = await treq.get(location, pool=pool)
        body = await fetched.content()
        assert fetched.code == 200 and body[:2] == b"PK"
    finally:
        await pool.closeCachedConnections()


async def _upload(url: str, wheel: Path, tmp: Path) -> Any:
    return await twine_upload(url, [wheel], tmp)


async def _bytes(daemon: S3Daemon, path: str) -> tuple[int, bytes]:
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        response = await treq.get(daemon.url + path, pool=pool)
        return response.code, await response.content()
    finally:
        await pool.closeCachedConnections()
