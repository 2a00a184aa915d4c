"""Wheels fetched once a client has read their ``.metadata``
(``--prefetch-wheels``), against a fake upstream whose request log shows what
was fetched."""

import os
import re

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage

from pypicache.tap.options import Options
from tests.clients import uv_pip_install
from tests.daemon import start_world
from tests.packages import build_wheel
from tests.webclient import put

APP = "app-2.0-py3-none-any.whl"
LIB = "lib-1.0-py3-none-any.whl"
BIG = "big-1.0-py3-none-any.whl"


def sleep(seconds: float):
    return task.deferLater(reactor, seconds, lambda: None)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """app 2.0 -> lib; big, a wheel of about 200 KB."""
    d = tmp_path_factory.mktemp("tree")
    wheels = [
        build_wheel(d, "app", "2.0", requires=["lib"]),
        build_wheel(d, "lib", "1.0"),
        build_wheel(
            d, "big", "1.0", module_body=f"DATA = {os.urandom(150_000).hex()!r}"
        ),
    ]
    assert wheels[2].stat().st_size > 100_000
    return wheels


async def world_with(tmp_path, tree, **options):
    world = await start_world(tmp_path, tree, timeout=5, **options)
    ahead = world.daemon.app.views.on_metadata
    if ahead is not None:
        ahead.max_lag = float("inf")  # a loaded test machine must not shed them
    return world


async def settled(world) -> None:
    """Wait until the daemon's downloads of wheels ahead have ended."""
    ahead = world.daemon.app.views.on_metadata
    await sleep(0.05)  # a download starts on the reactor's next turn
    for _ in range(500):
        if not ahead.downloads and not ahead._pending:
            return
        await sleep(0.01)
    raise AssertionError("the downloads ahead did not end")


async def get_ok(world, path: str) -> bytes:
    response = await world.daemon.get(path)
    body = await response.content()
    assert response.code == 200, (path, body)
    return body


async def read_metadata(world, project: str, filename: str) -> None:
    """What a resolver does: the page, then the picked wheel's ``.metadata``."""
    await get_ok(world, f"/simple/{project}/")
    await get_ok(world, f"/packages/{project}/{filename}.metadata")


@pytest_twisted.ensureDeferred
async def test_reading_metadata_fetches_the_wheel_once(tmp_path, tree):
    """A client's ``.metadata`` of a wheel makes the daemon download and store
    that wheel, once (a second read of the ``.metadata`` starts nothing);
    the client's own request for the wheel is then answered from the cache."""
    world = await world_with(tmp_path, tree, prefetch_wheels=100_000)
    try:
        await read_metadata(world, "app", APP)
        await get_ok(world, f"/packages/app/{APP}.metadata")
        await settled(world)
        await world.stored("app", APP)
        assert world.index.downloads(APP) == 1
        assert world.daemon.app.views.on_metadata.started == 1
        before = len(world.index.requests)
        body = await get_ok(world, f"/packages/app/{APP}")
        assert body == tree[0].read_bytes()
        assert len(world.index.requests) == before  # a cache hit
        assert world.index.downloads(APP) == 1
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_a_client_joins_the_download_under_way(tmp_path, tree):
    """A client that asks for the wheel while its download ahead is under way
    joins it: the upstream is asked for the wheel once."""
    world = await world_with(tmp_path, tree, prefetch_wheels=100_000)
    try:
        hold = world.index.hold(APP)
        await read_metadata(world, "app", APP)
        await hold.wait_for(1)
        client = world.daemon.get(f"/packages/app/{APP}")
        await sleep(0.1)
        hold.release()
        response = await client
        assert response.code == 200
        assert (await response.content())[:2] == b"PK"
        await settled(world)
        assert world.index.downloads(APP) == 1
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_size_bound_and_switch(tmp_path, tree):
    """A wheel the page lists as larger than ``--prefetch-wheels`` is not
    fetched (a smaller one is); with ``--prefetch-wheels 0`` (``build_app``'s
    default) none is and there is no hook."""
    world = await world_with(tmp_path, tree, prefetch_wheels=100_000)
    try:
        await read_metadata(world, "big", BIG)
        await read_metadata(world, "lib", LIB)
        await settled(world)
        assert world.index.downloads(BIG) == 0
        assert world.index.downloads(LIB) == 1
    finally:
        await world.stop()
    world = await world_with(tmp_path / "off", tree)
    try:
        assert world.daemon.app.views.on_metadata is None
        await read_metadata(world, "lib", LIB)
        await sleep(0.3)
        assert world.index.downloads(LIB) == 0
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_private_projects_are_never_fetched(tmp_path, tree):
    """The ``.metadata`` of a private project's wheel, answered from the
    daemon's own files, asks the upstream nothing; nor does a wheel of a
    project that became private after its upstream page was cached."""
    mirrored = build_wheel(tmp_path / "upstream", "secret", "1.0")
    secret = build_wheel(tmp_path / "private", "secret", "9.0")
    world = await world_with(tmp_path, [*tree, mirrored], prefetch_wheels=100_000)
    ahead = world.daemon.app.views.on_metadata
    try:
        await get_ok(world, "/simple/secret/")
        assert (await put(world.daemon, secret)).code == 201
        await read_metadata(world, "secret", secret.name)
        await get_ok(world, f"/packages/secret/{secret.name}.metadata")
        ahead("secret", mirrored.name)  # as if a client had read it
        await settled(world)
        assert world.asked_about(mirrored.name) == []
        assert world.asked_about(secret.name) == []
        assert ahead.started == 0
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_a_failed_download_only_logs(tmp_path, tree):
    """A download ahead that fails (the wheel does not match its hash) is
    logged and leaves nothing behind: the client's own request, once the
    upstream is well, gets the wheel."""
    texts = []

    def observer(event):
        if event.get("log_namespace") == "pypicache.proxy.wheelahead":
            texts.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    world = await world_with(tmp_path, tree, prefetch_wheels=100_000)
    try:
        world.index.corrupt(APP)
        await read_metadata(world, "app", APP)
        await settled(world)
        assert world.index.downloads(APP) == 1
        assert APP not in world.mirror_files("app")
        assert [t for t in texts if t.startswith(f"Fetching {APP} after")]
        world.index.heal(APP)
        assert (await get_ok(world, f"/packages/app/{APP}"))[:2] == b"PK"
        assert world.index.downloads(APP) == 2
    finally:
        globalLogPublisher.removeObserver(observer)
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_downloads_past_the_concurrency_wait_their_turn(tmp_path, tree):
    """At most ``concurrency`` downloads ahead are under way; the wheels read
    past them are fetched as those end."""
    world = await world_with(tmp_path, tree, prefetch_wheels=1_000_000)
    ahead = world.daemon.app.views.on_metadata
    ahead.concurrency = 1
    try:
        hold = world.index.hold(APP)
        await read_metadata(world, "app", APP)
        await hold.wait_for(1)
        await read_metadata(world, "lib", LIB)
        await read_metadata(world, "big", BIG)
        await sleep(0.1)
        assert list(ahead.downloads) == [APP]
        assert world.index.downloads(LIB) == 0
        hold.release()
        await settled(world)
        assert [world.index.downloads(n) for n in (APP, LIB, BIG)] == [1, 1, 1]
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_uv_install_fetches_each_file_once(tmp_path, tree):
    """A real ``uv pip install`` through a daemon that fetches wheels ahead
    (and walks below cold pages): installed, every upstream file fetched once."""
    world = await world_with(tmp_path, tree, prefetch_wheels=100_000, prefetch_depth=3)
    try:
        result = await uv_pip_install(
            world.daemon.url + "simple/", ["app"], tmp_path / "t", tmp_path
        )
        result.check()
        installed = sorted(p.name for p in (tmp_path / "t").glob("*.dist-info"))
        assert installed == ["app-2.0.dist-info", "lib-1.0.dist-info"]
        await settled(world)
        files = world.file_requests()
        assert len(files) == len(set(files))
    finally:
        await world.stop()


def test_the_option():
    """``--prefetch-wheels`` takes a size (default 0: off) and is in the
    prefetch options."""
    options = Options()
    options.parseOptions(["--cache", "/nonexistent", "--prefetch-wheels", "1M"])
    assert options["prefetch-wheels"] == 1 << 20
    options = Options()
    options.parseOptions(["--cache", "/nonexistent"])
    assert options["prefetch-wheels"] == 0
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--cache", "/x", "--prefetch-wheels", "lots"])


@pytest_twisted.ensureDeferred
async def test_workers_download_a_wheel_ahead_once(tmp_path, tree):
    """With ``--workers 2``, both workers told of the same wheel's ``.metadata``
    download it upstream once (the mirror's lock between processes: the
    second waits for the first's download), and a client gets it stored."""
    from tests.fakeindex import FakeIndex
    from tests.test_crash import bounded
    from tests.test_workers import start_workers

    index = FakeIndex(tmp_path / "upstream", "json")
    for wheel in tree:
        index.add(wheel)
    workers = await start_workers(tmp_path, index, "--prefetch-wheels", "1M")
    try:
        on = await workers.pinned()
        hold = index.hold(APP)
        for n in (1, 2):
            for path in ("/simple/app/", f"/packages/app/{APP}.metadata"):
                code, _ = await bounded(workers.request(on[n], "GET", path))
                assert code == 200, path
        await bounded(hold.wait_for(1))
        await bounded(
            workers.twistd.wait_for(
                rb"Waiting for another process.s download of " + re.escape(APP.encode())
            )
        )
        hold.release()
        for _ in range(500):
            if APP in os.listdir(workers.cache / "mirror" / "app"):
                break
            await sleep(0.02)
        code, body = await bounded(
            workers.request(workers.pool(), "GET", f"/packages/app/{APP}")
        )
        assert code == 200 and body == tree[0].read_bytes()
        assert index.downloads(APP) == 1
    finally:
        await workers.close()
