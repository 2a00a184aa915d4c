"""``twistd pypicache --workers 2``: real processes sharing one socket and one cache folder.

Which worker served a request is read from the twistd log: every batch of
access lines is relayed with the tag ``worker-<n>/<pid>``, and a probe's ``User-Agent``
names it. A keep-alive connection stays with the worker that accepted it, so
:func:`pinned` finds one connection per worker and the tests aim requests at
a chosen worker with it.
"""

import io
import os
import re
import signal
import uuid
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.http_headers import Headers

from tests.clients import clean_env
from tests.daemon import Twistd, spawn_twistd
from tests.fakeindex import FakeIndex, RunningIndex, start_fake_index
from tests.packages import build_wheel, sha256_of
from tests.test_crash import STARTUP, bounded, eventually, payload_wheel

#: A worker's tag in the twistd log.
TAG = rb"\[worker-(\d+)/(\d+)\]"


@pytest.fixture(scope="module")
def dists(tmp_path_factory: Any) -> dict[str, Path]:
    """A wheel big enough to be in flight for a while, and two uploads of one name."""
    d = tmp_path_factory.mktemp("workers-dists")
    other = tmp_path_factory.mktemp("workers-other")
    return {
        "big": payload_wheel(d, "shared", "1.0", 2 * 1024 * 1024),
        "small": build_wheel(d, "trickle", "1.0"),
        "upload": build_wheel(d, "mine", "1.0", module_body="A = 1\n"),
        "upload_other": build_wheel(other, "mine", "1.0", module_body="B = 2\n"),
    }


@attrs.define
class Workers:
    """A ``twistd --workers 2`` in front of a fake upstream."""

    twistd: Twistd
    index: FakeIndex
    upstream: RunningIndex
    url: str
    pidfile: Path
    cache: Path
    pools: list[HTTPConnectionPool] = attrs.field(factory=list)

    def pids(self) -> dict[int, int]:
        """The pid of each worker, by number, from the latest "ready" lines."""
        ready = re.findall(rb"Worker (\d+) ready \(pid (\d+)\)", self.twistd.output)
        return {int(n): int(pid) for n, pid in ready}

    def pool(self) -> HTTPConnectionPool:
        """A pool of one keep-alive connection: its requests stay on one worker."""
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 1
        self.pools.append(pool)
        return pool

    async def request(
        self,
        pool: HTTPConnectionPool,
        method: str,
        path: str,
        body: bytes | None = None,
        agent: str = "test",
    ) -> tuple[int, bytes]:
        headers = Headers({b"user-agent": [agent.encode()]})
        producer = FileBodyProducer(io.BytesIO(body)) if body else None
        response = await bounded(
            Agent(reactor, pool=pool).request(
                method.encode(),
                (self.url + path.lstrip("/")).encode(),
                headers,
                producer,
            )
        )
        return response.code, await bounded(treq.content(response))

    async def served_by(self, agent: str) -> int:
        """The worker whose access line names ``agent``."""
        # Access lines come in batches: one event, the lines below its first
        # indented by a tab.
        line = rb"\[worker-(\d+)/\d+\] [^\n]*(?:\n\t[^\n]*)*?" + re.escape(
            agent.encode()
        )
        match = await bounded(self.twistd.wait_for(line))
        return int(match.group(1))

    async def pinned(self) -> dict[int, HTTPConnectionPool]:
        """One keep-alive connection on each worker, by worker number."""
        found: dict[int, HTTPConnectionPool] = {}
        # Rounds a little apart: a worker busy for a moment (its start-up
        # scan, a loaded machine) leaves a whole burst to the other.
        for round_ in range(40):
            if round_:
                await deferLater(reactor, 0.05, lambda: None)
            batch = [(self.pool(), f"probe-{uuid.uuid4().hex}") for _ in range(6)]
            await gatherResults(
                [
                    Deferred.fromCoroutine(self.request(p, "GET", "/health", agent=a))
                    for p, a in batch
                ]
            )
            for pool, agent in batch:
                found.setdefault(await self.served_by(agent), pool)
            if len(found) == 2:
                return found
        raise AssertionError(f"connections reached workers {sorted(found)} only")

    async def close(self) -> None:
        for pool in self.pools:
            await pool.closeCachedConnections()
        if not self.twistd.ended.called:
            self.twistd.process.signalProcess("KILL")
            await self.twistd.ended
        for pid in self.pids().values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        await bounded(self.upstream.stop())


def spawn_two_workers(tmp_path: Path, upstream: Any, *extra: str, **kwargs: Any) -> Any:
    """``twistd pypicache --workers 2`` (and ``extra``) in front of ``upstream``."""
    return spawn_twistd(
        tmp_path, upstream.url, clean_env(tmp_path), "--workers", "2", *extra, **kwargs
    )


async def start_workers(tmp_path: Path, index: FakeIndex, *extra: str) -> Workers:
    """``twistd pypicache --workers 2`` (and ``extra``) in front of ``index``,
    once both workers are ready (close it with :meth:`Workers.close`)."""
    upstream = await bounded(start_fake_index(index))
    pidfile = tmp_path / "twistd.pid"
    twistd = spawn_two_workers(tmp_path, upstream, *extra, pidfile=str(pidfile))
    running = Workers(twistd, index, upstream, "", pidfile, tmp_path / "cache")
    try:
        port = await bounded(twistd.port, STARTUP)
        running.url = f"http://127.0.0.1:{port}/"
        for n in (1, 2):
            await bounded(twistd.wait_for(b"Worker %d ready" % n), STARTUP)
    except BaseException:
        await running.close()
        raise
    return running


@pytest_twisted.async_yield_fixture()
async def workers(tmp_path: Path, dists: dict[str, Path]) -> Any:
    index = FakeIndex(tmp_path / "upstream", "json")
    index.add(dists["big"])
    index.add(dists["small"])
    running = await start_workers(tmp_path, index)
    try:
        yield running
    finally:
        await running.close()


def parent_of(pid: int) -> int:
    """The parent pid of a running process (from /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def running(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest_twisted.ensureDeferred
async def test_two_workers_serve_one_port(workers):
    """Two worker processes, children of the twistd process, both accept on its port;
    the pidfile holds the twistd process's pid only."""
    pids = workers.pids()
    assert sorted(pids) == [1, 2] and len(set(pids.values())) == 2
    twistd_pid = workers.twistd.process.pid
    assert all(parent_of(pid) == twistd_pid for pid in pids.values())
    assert int(workers.pidfile.read_text()) == twistd_pid
    assert sorted(await workers.pinned()) == [1, 2]


@pytest_twisted.ensureDeferred
async def test_one_upstream_download_and_page_fetch_across_workers(workers, dists):
    """Requests for an uncached file on both workers and on many connections make one
    page fetch and one download upstream; the second worker waits for the first's
    and every client gets the verified bytes."""
    on = await workers.pinned()
    name = dists["big"].name
    page_hold = workers.index.hold_page("shared")
    file_hold = workers.index.hold(name)
    path = f"/packages/shared/{name}"
    asked = [
        Deferred.fromCoroutine(workers.request(on[n], "GET", path, agent=f"pin-{n}"))
        for n in (1, 2)
    ]
    asked += [
        Deferred.fromCoroutine(workers.request(workers.pool(), "GET", path))
        for _ in range(10)
    ]
    # One worker fetches the page while the other waits for it...
    await bounded(page_hold.wait_for(1))
    await bounded(
        workers.twistd.wait_for(
            rb"Waiting for another process.s fetch of the page of shared"
        )
    )
    page_hold.release()
    # ... then one downloads while the other waits for its download.
    await bounded(file_hold.wait_for(1))
    await bounded(
        workers.twistd.wait_for(
            rb"Waiting for another process.s download of " + re.escape(name.encode())
        )
    )
    file_hold.release()
    answers = await bounded(gatherResults(asked))
    expected = dists["big"].read_bytes()
    assert all(code == 200 and body == expected for code, body in answers)
    assert workers.index.downloads(name) == 1
    assert workers.index.count("/simple/shared/") == 1
    assert {await workers.served_by(f"pin-{n}") for n in (1, 2)} == {1, 2}
    assert sha256_of(workers.cache / "mirror/shared" / name) == sha256_of(dists["big"])


@pytest_twisted.ensureDeferred
async def test_one_upstream_metadata_fetch_across_workers(workers, dists):
    """The core metadata of an uncached wheel asked on both workers at once is
    fetched from upstream once; the worker that waited serves what was stored."""
    on = await workers.pinned()
    name = dists["big"].name
    hold = workers.index.hold(name + ".metadata")
    path = f"/packages/shared/{name}.metadata"
    asked = [
        Deferred.fromCoroutine(workers.request(on[n], "GET", path)) for n in (1, 2)
    ]
    await bounded(hold.wait_for(1))
    await bounded(
        workers.twistd.wait_for(
            rb"Waiting for another process.s fetch of " + re.escape(name.encode())
        )
    )
    hold.release()
    (code1, body1), (code2, body2) = await bounded(gatherResults(asked))
    assert code1 == code2 == 200 and body1 == body2 and b"Name: shared" in body1
    assert workers.index.count(name + ".metadata") == 1
    assert workers.index.downloads(name) == 0


@pytest_twisted.ensureDeferred
async def test_second_worker_streams_the_first_workers_download(workers, dists):
    """A client of the worker that waits for another worker's download gets the
    bytes as they arrive, not only once the file is stored; one upstream GET."""
    on = await workers.pinned()
    name = dists["small"].name
    size = dists["small"].stat().st_size
    workers.index.drip(name, 3.0 / size)  # the whole file in about 3 s
    path = f"/packages/trickle/{name}"
    first = Deferred.fromCoroutine(workers.request(on[1], "GET", path))
    await eventually(lambda: workers.index.downloads(name) == 1, "the download")
    arrivals: list[tuple[float, int]] = []
    response = await bounded(
        Agent(reactor, pool=on[2]).request(b"GET", (workers.url + path[1:]).encode())
    )
    assert response.code == 200
    await bounded(
        treq.collect(
            response, lambda chunk: arrivals.append((reactor.seconds(), len(chunk)))
        )
    )
    ended = reactor.seconds()
    code, body = await bounded(first)
    assert code == 200 and body == dists["small"].read_bytes()
    assert sum(n for _, n in arrivals) == size
    assert ended - arrivals[0][0] > 1.0, "the bytes came all at once, at the end"
    assert workers.index.downloads(name) == 1
    assert re.search(
        rb"\[worker-2/\d+\] Waiting for another process.s download of "
        + re.escape(name.encode()),
        workers.twistd.output,
    )


@pytest_twisted.ensureDeferred
async def test_a_failed_download_cuts_off_the_other_workers_clients(workers, dists):
    """When the download a worker streams from another worker fails midway, its
    client, which holds part of the body, is cut off too (never a short file
    taken for whole), and nothing is stored; the next request downloads again."""
    on = await workers.pinned()
    name = dists["small"].name
    workers.index.die_midway(name, drip=2.0 / dists["small"].stat().st_size)
    path = f"/packages/trickle/{name}"
    first = Deferred.fromCoroutine(workers.request(on[1], "GET", path))
    first.addErrback(lambda failure: failure.value)  # cut off as well
    await eventually(lambda: workers.index.downloads(name) == 1, "the download")
    received: list[bytes] = []
    response = await bounded(
        Agent(reactor, pool=on[2]).request(b"GET", (workers.url + path[1:]).encode())
    )
    assert response.code == 200
    with pytest.raises(Exception) as cut:
        await bounded(treq.collect(response, received.append))
    assert "ResponseFailed" in repr(cut.value) or "PotentialDataLoss" in repr(
        cut.value
    ), cut.value
    assert received, "the client got no byte before the failure"
    assert "ResponseFailed" in repr(await bounded(first))
    assert not (workers.cache / "mirror/trickle" / name).exists()
    assert workers.index.downloads(name) == 1
    workers.index.heal(name)
    code, body = await workers.request(on[2], "GET", path)
    assert code == 200 and body == dists["small"].read_bytes()
    assert workers.index.downloads(name) == 2


@pytest_twisted.ensureDeferred
async def test_conflicting_uploads_on_two_workers(workers, dists):
    """Two uploads of one filename with other bytes, one on each worker at once: one
    201, one 409, and the stored file is the winner's; the winner's bytes again on
    the other worker are a duplicate (200)."""
    on = await workers.pinned()
    for n in (1, 2):  # each worker has read the (empty) private index
        code, _ = await workers.request(on[n], "GET", "/local/mine/")
        assert code == 404
    name = dists["upload"].name
    path = f"/packages/mine/{name}"
    bodies = {1: dists["upload"].read_bytes(), 2: dists["upload_other"].read_bytes()}
    codes = await bounded(
        gatherResults(
            [
                Deferred.fromCoroutine(workers.request(on[n], "PUT", path, bodies[n]))
                for n in (1, 2)
            ]
        )
    )
    assert sorted(code for code, _ in codes) == [201, 409], codes
    winner = 1 if codes[0][0] == 201 else 2
    stored = workers.cache / "private/releases/mine" / name
    assert stored.read_bytes() == bodies[winner]
    loser = 3 - winner
    code, _ = await workers.request(on[loser], "PUT", path, bodies[winner])
    assert code == 200


@pytest_twisted.ensureDeferred
async def test_killed_worker_restarts_and_sigterm_stops_all(workers):
    """A worker killed with SIGKILL is logged and started again; SIGTERM to twistd
    stops every process and removes the pidfile."""
    before = workers.pids()
    os.kill(before[1], signal.SIGKILL)
    await bounded(
        workers.twistd.wait_for(
            rb"Worker 1 \(pid %d\) ended \(killed by signal 9\)" % before[1]
        )
    )
    start = len(workers.twistd.output)
    again = await bounded(
        workers.twistd.wait_for(rb"Worker 1 ready \(pid (\d+)\)", start), STARTUP
    )
    restarted = int(again.group(1))
    assert restarted != before[1] and parent_of(restarted) == workers.twistd.process.pid
    assert sorted(await workers.pinned()) == [1, 2]
    workers.twistd.process.signalProcess("TERM")
    await bounded(workers.twistd.ended)
    await eventually(
        lambda: not any(running(p) for p in (restarted, before[2])), "workers to end"
    )
    assert not workers.pidfile.exists()
    assert b"Worker 2 (pid %d) stopped" % before[2] in workers.twistd.output


def https_get(port: int, path: str) -> tuple[int, bytes]:
    """GET over TLS without verifying the certificate (blocking; in a thread)."""
    import http.client
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection(
        "127.0.0.1", port, context=context, timeout=20
    )
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest_twisted.ensureDeferred
async def test_workers_serve_tls_listeners(tmp_path):
    """With an ssl: listener as well as a tcp: one, the workers answer on both, TLS
    on the first (the twistd process holds its plain socket)."""
    from twisted.internet.threads import deferToThread

    from tests.test_tap import self_signed

    index = FakeIndex(tmp_path / "upstream", "json")
    upstream = await bounded(start_fake_index(index))
    key, cert = self_signed(tmp_path)
    twistd = spawn_twistd(
        tmp_path,
        upstream.url,
        clean_env(tmp_path),
        "--listen",
        f"ssl:0:privateKey={key}:certKey={cert}:interface=127.0.0.1",
        "--workers",
        "2",
    )
    try:
        for n in (1, 2):
            await bounded(twistd.wait_for(b"Worker %d ready" % n), STARTUP)
        plain, tls = map(
            int, re.findall(rb"\[-\] Site starting on (\d+)", twistd.output)
        )
        status, body = await bounded(deferToThread(https_get, tls, "/health"))
        assert status == 200 and b"ok" in body
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await bounded(
            treq.get(f"http://127.0.0.1:{plain}/health", pool=pool)
        )
        assert response.code == 200
        await treq.content(response)
        await pool.closeCachedConnections()
    finally:
        await twistd.stop()
        await bounded(upstream.stop())


@pytest_twisted.ensureDeferred
async def test_workers_stop_when_twistd_is_killed(workers):
    """Workers whose twistd process was killed (SIGKILL, no chance to stop them)
    stop by themselves, so nothing keeps serving the port unsupervised."""
    pids = list(workers.pids().values())
    workers.twistd.process.signalProcess("KILL")
    await bounded(workers.twistd.ended)
    await eventually(lambda: not any(running(p) for p in pids), "orphans to stop")


def test_worker_log_records_reach_the_log_whole():
    """What a worker logs (levels, multi-line tracebacks, records split across
    reads) is published by the twistd process as one event each, tagged with
    the worker, and a line that is no record (a crash before logging began) is
    relayed as a warning."""
    from twisted.logger import (
        Logger,
        LogLevel,
        LogPublisher,
        capturedLogs,
        formatEvent,
    )

    from pypicache.tap import workers as parent
    from pypicache.tap.worker import relayed_log

    class NotRunning:
        running = False

    out = io.StringIO()
    source = Logger(
        observer=LogPublisher(relayed_log(out, NotRunning())), namespace="w"
    )
    source.info("ready {n}", n=1)
    try:
        1 / 0
    except ZeroDivisionError:
        source.failure("Boom in {what}", what="a thread")
    published: list[dict] = []
    original = parent.globalLogPublisher
    parent.globalLogPublisher = published.append
    try:
        worker = parent._Worker(None, 3, 0.0)
        worker.tag = "worker-3/42"
        data = out.getvalue().encode()
        for i in range(0, len(data), 7):  # in small reads
            worker.childDataReceived(1, data[i : i + 7])
        with capturedLogs() as stderr:
            worker.childDataReceived(2, b"Traceback at import\n")
    finally:
        parent.globalLogPublisher = original
    texts = [formatEvent(e) for e in published[:2]]
    assert texts[0] == "ready 1" and published[0]["log_level"] == LogLevel.info
    assert texts[1].startswith("Boom in a thread") and "ZeroDivisionError" in texts[1]
    assert published[1]["log_level"] == LogLevel.critical
    assert {e["log_system"] for e in published[:2]} == {"worker-3/42"}
    assert len(published) == 2
    assert [(formatEvent(e), e["log_level"], e["log_system"]) for e in stderr] == [
        ("Traceback at import", LogLevel.warn, "worker-3/42")
    ]


@pytest_twisted.ensureDeferred
async def test_workers_share_one_access_log_file(tmp_path):
    """With --access-log, both workers append their access lines to the one file
    themselves, whole, one per request, and none goes through the twistd log."""
    index = FakeIndex(tmp_path / "upstream", "json")
    upstream = await bounded(start_fake_index(index))
    access = tmp_path / "access.log"
    twistd = spawn_two_workers(tmp_path, upstream, "--access-log", str(access))
    running = Workers(
        twistd, index, upstream, "", tmp_path / "none.pid", tmp_path / "cache"
    )
    try:
        running.url = f"http://127.0.0.1:{await bounded(twistd.port, STARTUP)}/"
        for n in (1, 2):
            await bounded(twistd.wait_for(b"Worker %d ready" % n), STARTUP)
        agents = [f"batch-{i}" for i in range(60)]
        await bounded(
            gatherResults(
                [
                    Deferred.fromCoroutine(
                        running.request(running.pool(), "GET", "/health", agent=a)
                    )
                    for a in agents
                ]
            )
        )
        twistd.process.signalProcess("TERM")  # the workers write what they kept
        await bounded(twistd.ended)
        lines = access.read_text().splitlines()
        assert sorted(line.rsplit('"', 2)[-2] for line in lines) == sorted(agents)
        assert all(
            re.fullmatch(
                r'127\.0\.0\.1 - - \[[^]]+\] "GET /health HTTP/1\.1" 200 \d+ "-" "batch-\d+"',
                line,
            )
            for line in lines
        ), lines
        assert b"GET /health" not in twistd.output
    finally:
        await running.close()
