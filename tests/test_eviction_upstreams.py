"""Bounded disk and ``pypicache-admin`` over every store: the files of a named
upstream (``DIR/upstreams/<name>/mirror/``, served under
``/upstreams/<name>/simple/``) count against the one ``--max-cache-size``,
are evicted least recently used first together with the cache's own, and
are walked by ``cleanup`` and ``verify``.

A real ``twistd -n pypicache --upstream extra=URL`` in front of two fake
upstreams; time passing is simulated as in :mod:`tests.test_eviction`.
"""

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.python.filepath import FilePath

from pypicache.storage.eviction import scan_mirror
from tests.clients import pip_install
from tests.fakeindex import FakeIndex, start_fake_index
from tests.test_admin import admin, snapshot
from tests.test_crash import eventually, payload_wheel
from tests.test_eviction import DAY, KiB, Run

#: Where the named upstream's files are, under the cache.
EXTRA = "upstreams/extra/mirror"


@pytest.fixture(scope="module")
def dists(tmp_path_factory: Any) -> dict[str, Path]:
    """Wheels of about 40 KiB: ``olda`` on the default upstream; ``oldx``,
    ``newx`` and ``routedp`` (routed to it) on the ``extra`` one."""
    d = tmp_path_factory.mktemp("upstream-eviction-dists")
    names = ["olda", "oldx", "newx", "routedp"]
    return {name: payload_wheel(d, name, "1.0", 40 * KiB) for name in names}


class TwoRun(Run):
    """:class:`~tests.test_eviction.Run` with a second upstream, ``extra``."""

    def __init__(self, tmp_path: Path, dists: dict[str, Path]) -> None:
        super().__init__(tmp_path, {"olda": dists["olda"]})
        self.dists = dists
        self.extra = FakeIndex(tmp_path / "extra", "json")
        for name in ("oldx", "newx", "routedp"):
            self.extra.add(dists[name])
        self.extra_upstream: Any = None

    async def start(self, *options: str) -> None:
        if self.extra_upstream is None:
            self.extra_upstream = await start_fake_index(self.extra)
        await super().start(
            "--upstream",
            f"extra={self.extra_upstream.url}",
            "--route",
            "routedp=extra",
            *options,
        )

    async def close(self) -> None:
        await super().close()
        if self.extra_upstream is not None:
            await self.extra_upstream.stop()

    async def install_from_extra(self, name: str, target: str) -> None:
        result = await pip_install(
            self.url + "upstreams/extra/simple/",
            [name],
            self.tmp_path / target,
            self.tmp_path,
        )
        result.check()

    def path(self, name: str) -> Path:
        """Where ``name``'s wheel is stored: the extra upstream's store or the cache's."""
        folder = EXTRA if name in ("oldx", "newx") else "mirror"
        return self.cache / folder / name / self.dists[name].name

    def key(self, name: str) -> str:
        """``name``'s key in ``usage.json``."""
        prefix = "upstreams/extra/" if name in ("oldx", "newx") else ""
        return f"{prefix}{name}/{self.dists[name].name}"

    def age_all(self, **days: float) -> None:
        """Make each file look stored and last used that many days ago (daemon stopped)."""
        record = self.cache / "usage.json"
        data = json.loads(record.read_text())
        for name, ago in days.items():
            then = time.time() - ago * DAY
            os.utime(self.path(name), (then, then))
            data["used"][self.key(name)] = int(then)
        record.write_text(json.dumps(data))


@pytest_twisted.async_yield_fixture()
async def two(tmp_path: Path, dists: dict[str, Path]) -> Any:
    running = TwoRun(tmp_path, dists)
    yield running
    await running.close()


async def fill(two: TwoRun) -> None:
    """Install ``olda`` and ``routedp`` through ``/simple/`` and ``oldx``
    through ``/upstreams/extra/simple/``, then stop the daemon."""
    await two.start()
    await two.install("olda", "routedp")
    await two.install_from_extra("oldx", "tx")
    await two.stop_daemon()
    assert all(two.path(n).exists() for n in ("olda", "routedp", "oldx"))


@pytest_twisted.ensureDeferred
async def test_cap_evicts_least_recently_used_across_stores(two):
    """Uses of files served through /upstreams/extra/simple/ and of a routed
    project are recorded; under a --max-cache-size that counts every store,
    the least recently used go first whichever store they are in (the extra
    upstream's oldest, then the cache's own next oldest) while a pip install
    through the named upstream runs; the rest stay, and an evicted file is
    fetched again on demand."""
    await fill(two)
    used = json.loads((two.cache / "usage.json").read_text())["used"]
    assert {two.key("olda"), two.key("routedp"), two.key("oldx")} <= set(used)

    two.age_all(oldx=4, olda=3, routedp=2)
    scan = scan_mirror(FilePath(str(two.cache)))
    assert {e.store for e in scan.entries} == {"", "upstreams/extra"}
    entry = max(e.size for e in scan.entries)
    # Three files over it: one goes at start-up, one more once newx is in.
    cap = int((scan.total - entry / 2) / 0.9)
    await two.start("--max-cache-size", f"{cap}")

    await two.install_from_extra("newx", "t2")

    await eventually(lambda: not two.path("olda").exists(), "eviction of olda")
    assert not two.path("oldx").exists()
    assert two.path("routedp").exists() and two.path("newx").exists()
    assert scan_mirror(FilePath(str(two.cache))).total <= cap
    code, _ = await two.get("upstreams/extra/local/oldx/")
    assert code == 404
    fetched = two.extra.downloads(two.dists["oldx"].name)
    await two.install_from_extra("oldx", "t3")
    assert two.extra.downloads(two.dists["oldx"].name) == fetched + 1


@pytest_twisted.ensureDeferred
async def test_admin_cleanup_and_verify_walk_named_upstreams(two):
    """cleanup --dry-run lists a named upstream's stale file and changes
    nothing; cleanup removes it; verify checks the named upstream's files and
    moves a corrupt one aside within its store."""
    await fill(two)
    await two.start()
    await two.install_from_extra("newx", "t2")
    await eventually(lambda: two.path("newx").exists(), "newx stored")
    await two.stop_daemon()
    two.age_all(oldx=40, olda=1, routedp=1, newx=1)
    before = snapshot(two.cache)

    code, out = admin(
        "cleanup", "--cache", str(two.cache), "--evict-unused-after", "30d", "--dry-run"
    )
    assert code == 0, out
    assert f"would evict {two.key('oldx')}" in out
    assert "1 files" in out
    assert snapshot(two.cache) == before

    code, out = admin(
        "cleanup", "--cache", str(two.cache), "--evict-unused-after", "30d"
    )
    assert code == 0 and f"evicted {two.key('oldx')}" in out
    assert not two.path("oldx").exists() and two.path("newx").exists()

    two.path("newx").write_bytes(b"not the wheel")
    code, out = admin("verify", "--cache", str(two.cache))
    assert code == 1
    assert f"CORRUPT {EXTRA}/newx/{two.dists['newx'].name}" in out
    assert "moved to upstreams/extra/corrupt/newx/" in out
    assert "3 files checked, 1 corrupt." in out
    assert not two.path("newx").exists()
