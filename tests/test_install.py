"""Real pip and uv installing through the daemon, and a twistd smoke test."""

from pathlib import Path

import pytest
import pytest_twisted

from tests.clients import clean_env, pip_install, uv_pip_install
from tests.daemon import spawn_twistd, start_world, twistd_command
from tests.fakeindex import FakeIndex, start_fake_index
from tests.packages import build_sdist, build_wheel


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """app -> lib (wheel) and srconly (sdist, built offline by its in-tree backend) -> leaf."""
    d = tmp_path_factory.mktemp("tree")
    return [
        build_wheel(d, "app", "1.0", requires=["lib>=1", "srconly"]),
        build_wheel(d, "lib", "1.0"),
        build_wheel(d, "lib", "2.0", requires=["leaf"]),
        build_sdist(d, "srconly", "0.5", requires=["leaf"]),
        build_wheel(d, "leaf", "3.0"),
    ]


def installed(target: Path) -> set[str]:
    return {p.name.split("-")[0] for p in target.glob("*.dist-info")}


def assert_served_by_daemon(index: FakeIndex, cache: Path, files) -> None:
    """Every upstream request came from the daemon, once per file; the files are in its cache."""
    assert {
        r.headers.get("user-agent", r.headers.get("User-Agent")) for r in index.requests
    } <= {"pypicache"}
    for path in files:
        assert sum(1 for r in index.requests if r.path == f"/files/{path.name}") <= 1
    stored = {p.name for p in cache.glob("mirror/*/*")}
    assert {
        "lib-2.0-py3-none-any.whl",
        "srconly-0.5.tar.gz",
        "leaf-3.0-py3-none-any.whl",
        "app-1.0-py3-none-any.whl",
    } <= stored


@pytest.mark.parametrize("mode", ["html", "json"])
@pytest_twisted.ensureDeferred
async def test_pip_through_simple_then_offline_through_local(tmp_path, tree, mode):
    """pip installs a tree through /simple/; with the upstream stopped, the same install works through /local/."""
    world = await start_world(tmp_path, tree, mode, timeout=10)
    index, upstream, daemon = world.index, world.upstream, world.daemon
    try:
        result = await pip_install(
            daemon.url + "simple/", ["app"], tmp_path / "t1", tmp_path
        )
        result.check()
        assert installed(tmp_path / "t1") == {"app", "lib", "srconly", "leaf"}
        assert "lib-2.0" in " ".join(
            p.name for p in (tmp_path / "t1").glob("*.dist-info")
        )
        assert_served_by_daemon(index, daemon.cache, tree)
        await upstream.stop()
        result = await pip_install(
            daemon.url + "local/", ["app"], tmp_path / "t2", tmp_path
        )
        result.check()
        assert installed(tmp_path / "t2") == {"app", "lib", "srconly", "leaf"}
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_uv_through_simple(tmp_path, tree):
    """uv pip install works through /simple/, every file coming from the daemon."""
    world = await start_world(tmp_path, tree, timeout=10)
    index, daemon = world.index, world.daemon
    try:
        result = await uv_pip_install(
            daemon.url + "simple/", ["app"], tmp_path / "t", tmp_path
        )
        result.check()
        assert installed(tmp_path / "t") == {"app", "lib", "srconly", "leaf"}
        assert_served_by_daemon(index, daemon.cache, tree)
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_twistd_smoke(tmp_path, tree):
    """`twistd -n pypicache` starts as a real process and pip installs through it."""
    index = FakeIndex(tmp_path, "json")
    for path in tree:
        index.add(path)
    upstream = await start_fake_index(index)
    twistd = spawn_twistd(tmp_path, upstream.url, clean_env(tmp_path))
    try:
        port = await twistd.port
        result = await pip_install(
            f"http://127.0.0.1:{port}/simple/", ["app"], tmp_path / "t", tmp_path
        )
        result.check()
        assert installed(tmp_path / "t") == {"app", "lib", "srconly", "leaf"}
        assert (
            tmp_path / "cache" / "mirror" / "app" / "app-1.0-py3-none-any.whl"
        ).exists()
    finally:
        await twistd.stop()
        await upstream.stop()


@pytest_twisted.ensureDeferred
async def test_plugin_is_listed(tmp_path):
    """`twistd --help` lists the pypicache plugin."""
    from tests.clients import run

    result = await run([*twistd_command(), "--help"], clean_env(tmp_path), cwd=tmp_path)
    assert "pypicache" in result.out
