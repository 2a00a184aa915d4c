"""Bounded disk: --max-cache-size and --evict-unused-after on a real daemon.

Time passing is simulated between two runs of the daemon the way a stopped
daemon would find it after weeks: the archives' modification times and the
persisted usage record are moved back.
"""

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.python.filepath import FilePath
from twisted.web.client import HTTPConnectionPool

from pypicache.private.importer import main as import_main
from pypicache.storage.eviction import scan_mirror
from pypicache.storage.usage import read_usage
from tests.clients import clean_env, pip_install
from tests.daemon import spawn_twistd
from tests.fakeindex import FakeIndex, start_fake_index
from tests.test_crash import STARTUP, bounded, eventually, payload_wheel

KiB = 1024
DAY = 86400


@pytest.fixture(scope="module")
def dists(tmp_path_factory: Any) -> dict[str, Path]:
    """Wheels of about 40 KiB each (random bytes: they do not compress)."""
    d = tmp_path_factory.mktemp("eviction-dists")
    names = ["olda", "oldb", "oldc", "oldd", "keep", "drop", "app", "lib"]
    wheels = {
        name: payload_wheel(d, name, "1.0", 40 * KiB, **_requires(name))
        for name in names
    }
    wheels["priv"] = payload_wheel(
        tmp_path_factory.mktemp("eviction-private"), "priv", "1.0", 40 * KiB
    )
    return wheels


def _requires(name: str) -> dict[str, Any]:
    return {"requires": ["lib"]} if name == "app" else {}


class Run:
    """A fake upstream and ``twistd -n pypicache`` runs on one cache."""

    def __init__(self, tmp_path: Path, dists: dict[str, Path]) -> None:
        self.tmp_path = tmp_path
        self.dists = dists
        self.cache = tmp_path / "cache"
        self.index = FakeIndex(tmp_path, "json")
        for name, path in dists.items():
            if name != "priv":
                self.index.add(path)
        self.upstream: Any = None
        self.twistd: Any = None
        self.url = ""

    async def start(self, *options: str) -> None:
        if self.upstream is None:
            self.upstream = await start_fake_index(self.index)
        self.twistd = spawn_twistd(
            self.tmp_path, self.upstream.url, clean_env(self.tmp_path), *options
        )
        port = await bounded(self.twistd.port, STARTUP)
        self.url = f"http://127.0.0.1:{port}/"

    async def stop_daemon(self) -> None:
        await self.twistd.stop()
        self.twistd = None

    async def close(self) -> None:
        if self.twistd is not None:
            await self.twistd.stop()
        if self.upstream is not None:
            await self.upstream.stop()

    async def install(self, *names: str, target: str = "t") -> None:
        result = await pip_install(
            self.url + "simple/", names, self.tmp_path / target, self.tmp_path
        )
        result.check()

    async def get(self, path: str, accept: str = "*/*") -> tuple[int, bytes]:
        pool = HTTPConnectionPool(reactor, persistent=False)
        try:
            response = await treq.get(
                self.url + path, pool=pool, headers={"Accept": accept}
            )
            return response.code, await response.content()
        finally:
            await pool.closeCachedConnections()

    def archive(self, name: str) -> Path:
        return self.cache / "mirror" / name / self.dists[name].name

    def mirrored(self) -> set[str]:
        return {p.parent.name for p in self.cache.glob("mirror/*/*.whl")}

    def usage(self) -> dict[str, int]:
        return read_usage(FilePath(str(self.cache)))

    def age(self, name: str, seconds: float, area: str = "mirror") -> None:
        """Make ``name`` look stored and last used ``seconds`` ago (daemon stopped)."""
        then = time.time() - seconds
        path = self.cache / area / name / self.dists[name].name
        os.utime(path, (then, then))
        record = self.cache / "usage.json"
        if area == "mirror" and record.exists():
            data = json.loads(record.read_text())
            data["used"][f"{name}/{path.name}"] = int(then)
            record.write_text(json.dumps(data))

    def add_private(self, name: str = "priv") -> None:
        out = io.StringIO()
        code = import_main(
            ["--cache", str(self.cache), str(self.dists[name])], out, io.StringIO()
        )
        assert code == 0, out.getvalue()

    def mirror_size(self) -> int:
        return scan_mirror(FilePath(str(self.cache))).total


@pytest_twisted.async_yield_fixture()
async def run(tmp_path: Path, dists: dict[str, Path]) -> Any:
    running = Run(tmp_path, dists)
    yield running
    await running.close()


@pytest_twisted.ensureDeferred
async def test_cap_evicts_least_recently_used_while_pip_installs(run):
    """Over --max-cache-size, stores during a pip install evict the least
    recently used mirrored files (never the ones just stored, never private
    ones) to under the cap; the install succeeds, an evicted file leaves
    /local/ and is fetched again on demand through /simple/."""
    await run.start()
    await run.install("olda", "oldb", "oldc", "oldd")
    await run.stop_daemon()
    run.add_private()
    for name, days in (("olda", 4), ("oldb", 3), ("oldc", 2), ("oldd", 1)):
        run.age(name, days * DAY)
    run.age("priv", 10 * DAY, area="private/releases")
    before = run.mirror_size()
    cap = before + 50 * KiB  # the old files fit; the install's two do not
    await run.start("--max-cache-size", f"{cap // KiB}K")

    await run.install("app", target="t2")

    await eventually(lambda: run.mirror_size() <= cap, "eviction under the cap")
    assert {"app", "lib"} <= run.mirrored()
    assert "olda" not in run.mirrored()  # the least recently used went first
    assert "oldd" in run.mirrored()  # the low-water mark was reached before it
    assert (run.cache / "private/releases/priv" / run.dists["priv"].name).exists()
    assert not (run.cache / "mirror/olda" / (run.dists["olda"].name + ".json")).exists()
    code, _ = await run.get("local/olda/")
    assert code == 404
    code, _ = await run.get("local/priv/")
    assert code == 200
    asked = len(
        [r for r in run.index.requests if r.path.endswith(run.dists["olda"].name)]
    )
    await run.install("olda", target="t3")
    again = [r for r in run.index.requests if r.path.endswith(run.dists["olda"].name)]
    assert len(again) == asked + 1
    assert "olda" in run.mirrored()


@pytest_twisted.ensureDeferred
async def test_usage_record_survives_a_restart(run):
    """Uses are persisted at stop and merged, not replaced, by the next run:
    a file served in the second run outlives, under a cap set in the third,
    a file stored at the same time but not served since."""
    await run.start()
    await run.install("keep", "drop")
    await run.stop_daemon()
    assert {"keep/" + run.dists["keep"].name, "drop/" + run.dists["drop"].name} <= set(
        run.usage()
    )
    run.age("keep", 2 * DAY)
    run.age("drop", 2 * DAY)

    await run.start()
    code, _ = await run.get(f"packages/keep/{run.dists['keep'].name}")
    assert code == 200
    await run.stop_daemon()
    used = run.usage()
    assert used["keep/" + run.dists["keep"].name] > time.time() - 600
    assert used["drop/" + run.dists["drop"].name] < time.time() - DAY

    size = run.mirror_size()
    await run.start("--max-cache-size", f"{(size - 10 * KiB) // KiB}K")
    await eventually(lambda: "drop" not in run.mirrored(), "eviction of drop")
    assert "keep" in run.mirrored()


@pytest_twisted.ensureDeferred
async def test_evict_unused_after(run):
    """--evict-unused-after removes mirrored files unused for that long, once
    the daemon answers; newer ones and private ones (however old) stay."""
    await run.start()
    await run.install("olda", "keep")
    await run.stop_daemon()
    run.add_private()
    run.age("olda", 100 * DAY)
    run.age("keep", 1 * DAY)
    run.age("priv", 100 * DAY, area="private/releases")

    await run.start("--evict-unused-after", "90d")
    await eventually(lambda: "olda" not in run.mirrored(), "eviction of olda")
    assert "keep" in run.mirrored()
    assert (run.cache / "private/releases/priv" / run.dists["priv"].name).exists()
    await eventually(
        lambda: "olda/" + run.dists["olda"].name not in run.usage(),
        "the usage record to forget olda",
    )
    code, _ = await run.get("local/olda/")
    assert code == 404


def _stored_entry(root: Path, project: str, filename: str) -> Any:
    """A mirrored archive with its sidecar, written by hand, and its Entry."""
    from pypicache.storage.eviction import Entry

    folder = root / "mirror" / project
    folder.mkdir(parents=True, exist_ok=True)
    (folder / filename).write_bytes(b"x" * 100)
    (folder / (filename + ".json")).write_text("{}")
    return Entry(project, filename, 102, time.time() - DAY)


def test_a_pinned_file_is_not_evicted_until_its_job_ends(tmp_path):
    """A file pinned by an open pin set (a bulk job) survives eviction; once
    the set is closed it can go; pinning a file already evicted says so."""
    from pypicache.index.model import DistFile
    from pypicache.storage.eviction import evict
    from pypicache.storage.layout import Layout
    from pypicache.storage.pins import Pins
    from pypicache.storage.records import MIRROR, StoredFile

    root = FilePath(str(tmp_path))
    layout = Layout(root)
    entry = _stored_entry(tmp_path, "demo", "demo-1.0-py3-none-any.whl")
    path = root.child("mirror").child("demo").child(entry.filename)
    stored = StoredFile(path, DistFile(entry.filename), MIRROR, project="demo")
    pins = Pins(root).open()
    assert pins.pin(stored)
    assert not evict(root, entry, layout.lock_path)
    assert os.path.exists(path.path) and os.path.exists(path.path + ".json")
    pins.close()
    assert evict(root, entry, layout.lock_path)
    assert not os.path.exists(path.path) and not os.path.exists(path.path + ".json")
    assert not Pins(root).open().pin(stored)


def test_a_file_being_downloaded_is_not_evicted(tmp_path):
    """Eviction skips a file whose download lock another holder has."""
    from pypicache.storage.eviction import evict
    from pypicache.storage.layout import Layout
    from pypicache.storage.locks import try_lock
    from pypicache.storage.records import MIRROR

    root = FilePath(str(tmp_path))
    layout = Layout(root)
    entry = _stored_entry(tmp_path, "demo", "demo-1.0-py3-none-any.whl")
    held = try_lock(layout.lock_path(MIRROR, "demo", entry.filename))
    assert held is not None
    assert not evict(root, entry, layout.lock_path)
    held.release()
    assert evict(root, entry, layout.lock_path)


def _options(*args: str) -> Any:
    from pypicache.tap import Options

    options = Options()
    options.parseOptions(
        ["--cache", "/tmp/x", "--index-url", "http://h.invalid/", *args]
    )
    return options


def test_limit_options_take_sizes_and_ages():
    """--max-cache-size takes K/M/G suffixes, --evict-unused-after s/m/h/d
    ones (a bare number is seconds); both default to no limit."""
    assert _options()["max-cache-size"] is None
    assert _options()["evict-unused-after"] is None
    assert _options("--max-cache-size", "50G")["max-cache-size"] == 50 * 1024**3
    assert _options("--evict-unused-after", "90d")["evict-unused-after"] == 90 * DAY
    assert _options("--evict-unused-after", "12h")["evict-unused-after"] == 12 * 3600
    assert _options("--evict-unused-after", "600")["evict-unused-after"] == 600


@pytest.mark.parametrize(
    "args",
    [
        ("--max-cache-size", "0"),
        ("--max-cache-size", "lots"),
        ("--evict-unused-after", "-1d"),
        ("--evict-unused-after", "soon"),
    ],
)
def test_limit_options_refuse_bad_values(args):
    """A zero, negative or unreadable limit is a usage error."""
    from twisted.python import usage

    with pytest.raises(usage.UsageError):
        _options(*args)


def test_two_processes_records_merge(tmp_path):
    """Flushes of two usage records (two workers) merge into one file: each
    file keeps the later of the times, nothing recorded by the other is lost."""
    from pypicache.storage.layout import Layout
    from pypicache.storage.records import LOCKS
    from pypicache.storage.usage import RESOLUTION, USAGE_FILE, Usage, read_usage

    root = FilePath(str(tmp_path))
    lock = Layout(root).lock_path(LOCKS, None, USAGE_FILE)
    clock = Clock()
    clock.advance(1_000_000)
    first = Usage(root, lock, clock)
    second = Usage(root, lock, clock)
    first.record("a", "a-1.0-py3-none-any.whl")
    first.record("b", "b-1.0-py3-none-any.whl")
    clock.advance(10 * RESOLUTION)
    second.record("b", "b-1.0-py3-none-any.whl")
    second.flush(second.take())
    first.flush(first.take())
    then = 1_000_000 - 1_000_000 % RESOLUTION
    assert read_usage(root) == {
        "a/a-1.0-py3-none-any.whl": then,
        "b/b-1.0-py3-none-any.whl": then + 10 * RESOLUTION,
    }


def test_flushes_append_and_merge_when_the_log_outgrows_the_record(
    tmp_path, monkeypatch
):
    """A periodic flush appends what was served to usage.log (the record is
    not rewritten); a torn last line is skipped; once the log is larger than
    the record and COMPACT_AT it is merged into usage.json and removed; a full
    flush (stop, eviction) leaves the log empty."""
    from pypicache.storage import usage as usage_module
    from pypicache.storage.layout import Layout
    from pypicache.storage.records import LOCKS
    from pypicache.storage.usage import RESOLUTION, USAGE_FILE, USAGE_LOG, Usage

    root = FilePath(str(tmp_path))
    lock = Layout(root).lock_path(LOCKS, None, USAGE_FILE)
    clock = Clock()
    clock.advance(1_000_000)
    then = 1_000_000 - 1_000_000 % RESOLUTION
    usage = Usage(root, lock, clock)
    usage.record("a", "a-1.0-py3-none-any.whl")
    usage.flush(usage.take())
    record = (tmp_path / USAGE_FILE).read_bytes()
    clock.advance(5 * RESOLUTION)
    usage.record("a", "a-1.0-py3-none-any.whl")
    usage.record("b", "b-1.0-py3-none-any.whl")
    usage.append(usage.take())
    assert (tmp_path / USAGE_FILE).read_bytes() == record, "not rewritten"
    with open(tmp_path / USAGE_LOG, "ab") as log:
        log.write(b"c/c-1.0-py3-no")  # a crash tore this line
    later = then + 5 * RESOLUTION
    assert read_usage(root) == {
        "a/a-1.0-py3-none-any.whl": later,
        "b/b-1.0-py3-none-any.whl": later,
    }
    monkeypatch.setattr(usage_module, "COMPACT_AT", 10)
    usage.record("d", "d-1.0-py3-none-any.whl")
    usage.append(usage.take())
    assert not (tmp_path / USAGE_LOG).exists(), "merged into the record"
    assert set(read_usage(root)) == {
        "a/a-1.0-py3-none-any.whl",
        "b/b-1.0-py3-none-any.whl",
        "d/d-1.0-py3-none-any.whl",
    }
    usage.record("e", "e-1.0-py3-none-any.whl")
    monkeypatch.setattr(usage_module, "COMPACT_AT", 10**9)
    usage.append(usage.take())
    assert (tmp_path / USAGE_LOG).exists()
    usage.flush({}, frozenset({"a/a-1.0-py3-none-any.whl"}))
    assert not (tmp_path / USAGE_LOG).exists()
    assert set(json.loads((tmp_path / USAGE_FILE).read_text())["used"]) == {
        "b/b-1.0-py3-none-any.whl",
        "d/d-1.0-py3-none-any.whl",
        "e/e-1.0-py3-none-any.whl",
    }


@pytest_twisted.ensureDeferred
async def test_workers_persist_their_uses(run):
    """With --workers 2, what the workers served is in the usage record once
    the daemon has stopped."""
    await run.start("--workers", "2")
    await run.install("keep", "drop")
    await run.stop_daemon()
    assert {
        "keep/" + run.dists["keep"].name,
        "drop/" + run.dists["drop"].name,
    } <= set(run.usage())


@pytest_twisted.ensureDeferred
async def test_an_open_bulk_job_pins_its_files(run):
    """A file an open POST /requirements.txt job has listed is pinned: a
    cleanup while the job runs leaves it, though it is unused for long; the
    pin goes when the job ends."""
    from pypicache.tap.admin import main as admin_main

    await run.start()
    await run.install("olda")
    await run.stop_daemon()
    run.age("olda", 10 * DAY)
    await run.start()
    hold = run.index.hold(run.dists["keep"].name)
    pool = HTTPConnectionPool(reactor, persistent=False)
    job = treq.post(run.url + "requirements.txt", data=b"olda\nkeep\n", pool=pool)
    try:
        await bounded(hold.wait_for(1), STARTUP)
        pins = run.cache / "locks" / "pins"
        key = "olda/" + run.dists["olda"].name
        await eventually(
            lambda: any(key in p.read_text() for p in pins.iterdir()), "the pin"
        )
        out = io.StringIO()
        cleanup = ["cleanup", "--cache", str(run.cache), "--evict-unused-after", "1d"]
        assert admin_main(cleanup, out, io.StringIO()) == 0
        assert out.getvalue().startswith("0 files"), out.getvalue()
        assert run.archive("olda").exists()
    finally:
        hold.release()
        response = await job
        report = json.loads(await response.content())
        await pool.closeCachedConnections()
    assert {e["filename"]: e["status"] for e in report["files"]} == {
        run.dists["olda"].name: "cached",
        run.dists["keep"].name: "fetched",
    }
    assert list(pins.iterdir()) == []
