"""Real pip and uv installing through the daemon, and a twistd smoke test."""

import re
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred

from tests.clients import clean_env, pip_install, uv_pip_install
from tests.daemon import start_daemon
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
    index = FakeIndex(tmp_path, mode)
    for path in tree:
        index.add(path)
    upstream = await start_fake_index(index)
    daemon = await start_daemon(upstream.url, tmp_path / "cache", timeout=10)
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
        await daemon.stop()
        if upstream._listening.connected:
            await upstream.stop()


@pytest_twisted.ensureDeferred
async def test_uv_through_simple(tmp_path, tree):
    """uv pip install works through /simple/, every file coming from the daemon."""
    index = FakeIndex(tmp_path, "json")
    for path in tree:
        index.add(path)
    upstream = await start_fake_index(index)
    daemon = await start_daemon(upstream.url, tmp_path / "cache", timeout=10)
    try:
        result = await uv_pip_install(
            daemon.url + "simple/", ["app"], tmp_path / "t", tmp_path
        )
        result.check()
        assert installed(tmp_path / "t") == {"app", "lib", "srconly", "leaf"}
        assert_served_by_daemon(index, daemon.cache, tree)
    finally:
        await daemon.stop()
        await upstream.stop()


def twistd_command() -> list[str]:
    """The ``twistd`` of this interpreter."""
    script = Path(sys.executable).parent / "twistd"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class _Twistd(protocol.ProcessProtocol):
    """Watches a twistd's output for the line that names its port."""

    def __init__(self) -> None:
        self.output = b""
        self.port: Deferred[int] = Deferred()
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        match = re.search(rb"Site starting on (\d+)", self.output)
        if match and not self.port.called:
            self.port.callback(int(match.group(1)))

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        if not self.port.called:
            self.port.errback(RuntimeError(self.output.decode(errors="replace")))
        self.ended.callback(None)


@pytest_twisted.ensureDeferred
async def test_twistd_smoke(tmp_path, tree):
    """`twistd -n pypicache` starts as a real process and pip installs through it."""
    index = FakeIndex(tmp_path, "json")
    for path in tree:
        index.add(path)
    upstream = await start_fake_index(index)
    twistd = _Twistd()
    env = clean_env(tmp_path)
    command = twistd_command()
    process = reactor.spawnProcess(
        twistd,
        command[0],
        [
            *command,
            "-n",
            "--pidfile=",
            "pypicache",
            "--cache",
            str(tmp_path / "cache"),
            "--index-url",
            upstream.url,
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ],
        env=env,
        path=str(tmp_path),
    )
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
        if process.pid is not None:
            process.signalProcess("TERM")
        await twistd.ended
        await upstream.stop()


@pytest_twisted.ensureDeferred
async def test_plugin_is_listed(tmp_path):
    """`twistd --help` lists the pypicache plugin."""
    from tests.clients import run

    result = await run([*twistd_command(), "--help"], clean_env(tmp_path), cwd=tmp_path)
    assert "pypicache" in result.out
