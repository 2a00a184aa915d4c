"""What a fresh daemon loads: the modules only some requests need are imported
when such a request comes, not at start-up (they cost start-up time and memory;
see docs/benchmark.rst, "Footprint"); and what waits for its first answer: the
walks of the cache folder (``tap/service.py``, ``AfterFirstAnswer``)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest_twisted
import treq
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred

from pypicache.storage.capacity import Capacity
from pypicache.tap import Options
from pypicache.tap import service as service_module
from pypicache.tap.service import serving
from tests.packages import build_wheel

#: Builds the daemon's services as ``twistd pypicache`` does, listens on a free
#: port, asks for the health check, the project lists and the home page, stops,
#: and prints the names of every module imported.
SCRIPT = """
import json, sys
from twisted.internet import task
from twisted.internet.defer import ensureDeferred
from twisted.web.client import Agent, readBody
from pypicache.tap import Options
from pypicache.tap.service import serving

async def main(reactor):
    options = Options()
    options.parseOptions(["--cache", sys.argv[1], "--index-url", "http://127.0.0.1:9/simple/"])
    top, site = serving(options, reactor)
    top.startService()
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    agent = Agent(reactor)
    for path in ("/health", "/simple/", "/local/", "/"):
        url = f"http://127.0.0.1:{port.getHost().port}{path}"
        response = await agent.request(b"GET", url.encode())
        await readBody(response)
        assert response.code == 200, (path, response.code)
    await port.stopListening()
    await top.stopService()
    import gc
    assert gc.isenabled(), "importing pypicache.tap left the collector paused"
    print(json.dumps(sorted(sys.modules)))

task.react(lambda reactor: ensureDeferred(main(reactor)))
"""

#: Loaded only by what needs them: bulk caching (the resolver, the requirements
#: parser, packaging's markers and metadata), reading archives (pkginfo),
#: rendering descriptions (readme_renderer, docutils: project pages).
LAZY = [
    "resolvelib",
    "pip_requirements_parser",
    "pkginfo",
    "packaging.markers",
    "packaging.metadata",
    "pypicache.bulk.job",
    "pypicache.bulk.source",
    "pypicache.bulk.targets",
    "readme_renderer",
    "docutils",
    # The object store, only with --storage s3:// (botocore alone: 40 ms).
    "botocore",
    "pypicache.storage.s3.settings",
    "pypicache.storage.s3.store",
    # The prefetcher's pick and the block list's entries; --config's TOML.
    "packaging.specifiers",
    "tomllib",
]


def test_fresh_daemon_has_not_loaded_what_it_does_not_need(tmp_path: Path) -> None:
    """A daemon on the filesystem that has started and answered the health
    check, both project lists and the home page has not imported the bulk
    resolver, the requirements parser, packaging's markers, metadata and
    specifiers, pkginfo, the description renderers, botocore and the object
    store, or tomllib; and importing ``pypicache.tap`` (which pauses the
    garbage collector while it runs) left the collector running."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "cache")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert "pypicache.web.app" in loaded
    assert sorted(loaded.intersection(LAZY)) == []


DEAD_UPSTREAM = "http://127.0.0.1:9/simple/"


def _walks_recorded(monkeypatch, events: list[str], scans: list[Deferred]) -> None:
    """Record when the start-up scan and the mirror's count begin."""

    def scan(app):
        events.append("scan")
        scans.append(Deferred.fromCoroutine(app.start_up()))

    original_start = Capacity.start

    def start(capacity):
        events.append("count")
        original_start(capacity)

    monkeypatch.setattr(service_module, "_start_up_scan", scan)
    monkeypatch.setattr(Capacity, "start", start)


async def _serve(tmp_path: Path):
    drop = tmp_path / "cache" / "private"
    build_wheel(drop, "dropped", "1.0")
    options = Options()
    options.parseOptions(
        ["--cache", str(tmp_path / "cache"), "--index-url", DEAD_UPSTREAM]
    )
    top, site = serving(options, reactor)
    top.startService()
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    return top, port


async def _walked(events: list[str], scans: list[Deferred], tries: int) -> None:
    """Wait (``tries`` times 10 ms at most) for the cache walks, then check
    that both ran and that the scan indexed the dropped archive."""
    for _ in range(tries):
        if scans:
            break
        await task.deferLater(reactor, 0.01, lambda: None)
    assert sorted(events) == ["count", "scan"]
    report = await scans[0]
    assert report.indexed == ["private/dropped-1.0-py3-none-any.whl"]


@pytest_twisted.ensureDeferred
async def test_cache_walks_wait_for_the_first_answer(tmp_path, monkeypatch):
    """Nothing walks the cache folder before the daemon has answered: the
    start-up scan of ``private/`` and the mirror's count begin once the first
    request is answered (here ``/health``, asked 0.3 s after start-up, with
    the fallback wait made longer than the test), and the scan then indexes
    the archive dropped into ``private/``."""
    monkeypatch.setattr(service_module, "FIRST_ANSWER_WAIT", 600.0)
    events: list[str] = []
    scans: list[Deferred] = []
    _walks_recorded(monkeypatch, events, scans)
    top, port = await _serve(tmp_path)
    try:
        await task.deferLater(reactor, 0.3, lambda: None)
        assert events == []  # listening for 0.3 s, nothing asked: no walk
        url = f"http://127.0.0.1:{port.getHost().port}/health"
        response = await treq.get(url)
        await response.content()
        assert response.code == 200
        await _walked(events, scans, tries=100)
    finally:
        await port.stopListening()
        await top.stopService()


@pytest_twisted.ensureDeferred
async def test_cache_walks_start_anyway_when_nobody_asks(tmp_path, monkeypatch):
    """A daemon nobody asks anything walks its cache all the same, once
    ``FIRST_ANSWER_WAIT`` has passed (the scan indexes the dropped archive)."""
    monkeypatch.setattr(service_module, "FIRST_ANSWER_WAIT", 0.2)
    events: list[str] = []
    scans: list[Deferred] = []
    _walks_recorded(monkeypatch, events, scans)
    top, port = await _serve(tmp_path)
    try:
        assert events == []
        await _walked(events, scans, tries=500)
    finally:
        await port.stopListening()
        await top.stopService()
