# -*- test-case-name: tests.test_crash -*-
"""
Crash tests: a real ``twistd -n pypicache`` killed with ``SIGKILL`` at chosen
points of a download, an upload and a bulk caching job, then started again on
the same cache folder.

Two promises are pinned after every restart:

- nothing partial is visible: no archive under its own name that is not whole,
  no temporary file left (start-up removes them), nothing listed or served
  that was not completely stored;
- nothing acknowledged is lost: a file a client received completely, or an
  upload answered ``201``, is listed and served byte for byte.

The points are chosen from outside (an upstream file held or stalled, a
request body cut short) and, for the last steps of storing a file, from inside:
:data:`KILL_HOOK` starts twistd with ``os.replace`` wrapped so that the process
kills itself just before or after renaming into place a chosen name.

After a kill between writing an upload's ``<file>.metadata``/``<file>.json``
and renaming the archive into place, start-up removes those leftovers, and a
private ``.metadata`` is only ever served beside its listed archive.
"""

import base64
import hashlib
import json
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import attrs
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers

from tests.clients import clean_env
from tests.daemon import Twistd, spawn_twistd
from tests.fakeindex import JSON_TYPE, FakeIndex, RunningIndex, start_fake_index
from tests.packages import build_wheel, sha256_of
from tests.webclient import Answer, send

#: Seconds any one network wait may take before the test fails.
WAIT = 20.0

#: Seconds for a twistd to start listening (it imports everything first).
STARTUP = 30.0

MiB = 1024 * 1024

#: Environment variable read by :data:`KILL_HOOK`: ``before|after:<name>[:<nth>]``.
KILL_AT = "PYPICACHE_TEST_KILL_AT"

#: ``python -c`` code that runs twistd with ``os.replace`` wrapped: the process
#: sends itself SIGKILL just before (or after) the ``nth`` rename whose target
#: is called ``name``. The store calls ``os.replace`` through the module, so
#: the wrapper sees every rename it makes, in whatever thread.
KILL_HOOK = f"""
import os, signal
when, name, *nth = os.environ[{KILL_AT!r}].split(":")
nth, seen, real = int(nth[0]) if nth else 1, [0], os.replace

def replace(src, dst, *args, **kwargs):
    hit = os.path.basename(os.fspath(dst)) == name
    if hit:
        seen[0] += 1
    hit = hit and seen[0] == nth
    if hit and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst, *args, **kwargs)
    if hit and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace
from twisted.scripts.twistd import run
run()
"""


def bounded(d: Any, seconds: float = WAIT) -> Deferred:
    """``d`` (a Deferred or a coroutine) failing with a timeout after ``seconds``."""
    if not isinstance(d, Deferred):
        d = Deferred.fromCoroutine(d)
    return d.addTimeout(seconds, reactor)


async def eventually(check: Any, what: str, seconds: float = WAIT) -> None:
    """Poll ``check()`` until it is true; fail after ``seconds``."""
    deadline = reactor.seconds() + seconds
    while not check():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.02, lambda: None)


async def until_listed(daemon: Any, page: str, name: str) -> None:
    """Wait until ``name`` is on the daemon's ``page`` (a cold file's client
    completes once the file is verified, before it is stored and listed)."""
    deadline = reactor.seconds() + WAIT
    while name not in await daemon.listed(page):
        if reactor.seconds() > deadline:
            raise AssertionError(f"{name} never listed on {page}")
        await deferLater(reactor, 0.02, lambda: None)


def payload_wheel(directory: Path, name: str, version: str, size: int, **kw: Any):
    """A real wheel of about ``size`` bytes: its module holds random base64 text."""
    data = random.Random(f"{name}-{version}").randbytes(size * 3 // 4)
    body = f"BLOB = {base64.b64encode(data).decode()!r}\n"
    return build_wheel(directory, name, version, module_body=body, **kw)


@pytest.fixture(scope="module")
def dists(tmp_path_factory: Any) -> dict[str, Path]:
    """The archives of this module (built once: a few MB of random bytes)."""
    d = tmp_path_factory.mktemp("crash-dists")
    other = tmp_path_factory.mktemp("crash-dists-uploads")
    return {
        "big": payload_wheel(d, "bigdl", "1.0", 3 * MiB),
        "cold": payload_wheel(d, "cold", "1.0", 1 * MiB),
        "priv_upstream": build_wheel(d, "crashpriv", "1.0"),
        "priv_upload": payload_wheel(d, "crashpriv", "2.0", MiB // 4),
        "half_upstream": build_wheel(d, "halfup", "1.0"),
        "half_upload": payload_wheel(d, "halfup", "2.0", 3 * MiB),
        "bulka": payload_wheel(d, "bulka", "1.0", 1 * MiB),
        "bulkb": payload_wheel(d, "bulkb", "1.0", 1 * MiB),
        "bulkc": payload_wheel(d, "bulkc", "1.0", 1 * MiB),
        "bulkd": payload_wheel(d, "bulkd", "1.0", 2 * MiB),
        "sweepdl": payload_wheel(d, "sweepdl", "1.0", 1 * MiB),
        # Same filename, other bytes and other core metadata than the upload.
        "sweepup_upstream": build_wheel(d, "sweepup", "1.0"),
        "sweepup_upload": payload_wheel(
            other, "sweepup", "1.0", MiB // 4, requires=["patched-dep"]
        ),
    }


@attrs.define
class Daemon:
    """A ``twistd -n pypicache`` subprocess and a client for it."""

    twistd: Twistd
    url: str
    client_pool: HTTPConnectionPool

    @property
    def pid(self) -> int:
        return self.twistd.process.pid

    @property
    def running(self) -> bool:
        return not self.twistd.ended.called

    async def kill(self) -> None:
        """``kill -9`` it and wait until it is gone."""
        os.kill(self.pid, signal.SIGKILL)
        await self.died()

    async def died(self) -> None:
        """Wait until the process has ended (killed by the test or by itself)."""
        await eventually(lambda: not self.running, "the daemon to end")

    async def request(
        self, method: str, path: str, body: bytes | None = None, **headers: str
    ) -> Answer:
        """One request (``webclient.send``), bounded by :data:`WAIT`."""
        return await bounded(send(self, method, path, body, headers))

    async def get(self, path: str, **headers: str) -> Answer:
        return await self.request("GET", path, **headers)

    async def listed(self, page: str) -> dict[str, dict[str, Any]]:
        """The files of a PEP 691 page (``/local/<p>/``, ``/simple/<p>/``) by name;
        empty for a 404."""
        answer = await self.get(page, Accept=JSON_TYPE)
        if answer.code == 404:
            return {}
        assert answer.code == 200, answer
        return {f["filename"]: f for f in answer.json()["files"]}

    async def fetch_listed(self, page: str, filename: str) -> Answer:
        """GET a file by the URL that ``page`` gives for it."""
        entry = (await self.listed(page))[filename]
        url = urljoin(self.url + page.lstrip("/"), entry["url"])
        return await self.get("/" + url.removeprefix(self.url))


@attrs.define
class Lab:
    """Fake upstreams and daemons of one test, all stopped at its end."""

    tmp_path: Path
    pool: HTTPConnectionPool
    upstreams: list[RunningIndex] = attrs.field(factory=list)
    daemons: list[Daemon] = attrs.field(factory=list)

    @property
    def cache(self) -> Path:
        return self.tmp_path / "cache"

    async def upstream(self, *files: Path) -> tuple[FakeIndex, RunningIndex]:
        index = FakeIndex(self.tmp_path / "upstream", "json")
        for path in files:
            index.add(path)
        running = await bounded(start_fake_index(index))
        self.upstreams.append(running)
        return index, running

    async def daemon(
        self,
        index_url: str,
        kill_at: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Daemon:
        """Start twistd on this test's cache folder (the same one every time).

        :param kill_at: run it under :data:`KILL_HOOK` with this ``KILL_AT``.
        """
        env = {**clean_env(self.tmp_path), **(env or {})}
        if kill_at is None:
            twistd = spawn_twistd(self.tmp_path, index_url, env)
        else:
            env[KILL_AT] = kill_at
            twistd = Twistd()
            args = [sys.executable, "-c", KILL_HOOK, "-n", "--pidfile=", "pypicache"]
            args += ["--cache", str(self.cache), "--index-url", index_url]
            args += ["--listen", "tcp:0:interface=127.0.0.1"]
            twistd.process = reactor.spawnProcess(
                twistd, sys.executable, args, env=env, path=str(self.tmp_path)
            )
        daemon = Daemon(twistd, "", self.pool)
        self.daemons.append(daemon)
        port = await bounded(twistd.port, STARTUP)
        daemon.url = f"http://127.0.0.1:{port}/"
        return daemon

    async def close(self) -> None:
        for daemon in self.daemons:
            if daemon.running:
                daemon.twistd.process.signalProcess("KILL")
                await daemon.died()
        for upstream in self.upstreams:
            await bounded(upstream.stop())
        await self.pool.closeCachedConnections()


@pytest_twisted.async_yield_fixture()
async def lab(tmp_path: Path) -> Any:
    lab = Lab(tmp_path, HTTPConnectionPool(reactor, persistent=False))
    yield lab
    await lab.close()


# -- what is on disk ---------------------------------------------------------


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def temporaries(cache: Path) -> list[str]:
    """Every ``.tmp-*`` file anywhere in the cache."""
    return sorted(str(p) for p in cache.rglob(".tmp-*"))


def is_archive(name: str) -> bool:
    return not name.startswith(".") and name.endswith((".whl", ".tar.gz"))


def sidecar_sha256(archive: Path) -> str:
    data = json.loads(archive.with_name(archive.name + ".json").read_text())
    assert data["file"]["size"] == archive.stat().st_size
    return data["file"]["hashes"]["sha256"]


def assert_whole(archive: Path, expected_sha256: str) -> None:
    """An archive in the store is whole: its bytes, its sidecar and upstream agree."""
    actual = sha256_of(archive)
    assert actual == expected_sha256, f"{archive} is not whole"
    assert sidecar_sha256(archive) == expected_sha256


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def streaming_get(daemon: Daemon, path: str, chunks: list[bytes]) -> int:
    """GET ``path``, appending body chunks to ``chunks`` as they come; the status.

    Not bounded: the tests kill the daemon while it runs and then bound it.
    """
    response = await Agent(reactor, pool=daemon.client_pool).request(
        b"GET", (daemon.url + path.lstrip("/")).encode(), Headers()
    )
    await treq.collect(response, chunks.append)
    return response.code


# -- 1. a download killed mid-file --------------------------------------------


STALL_AFTER = 1 * MiB


@pytest.mark.parametrize("fault", ["stall", "hold"])
@pytest_twisted.ensureDeferred
async def test_download_killed_mid_file(lab: Lab, dists: dict[str, Path], fault: str):
    """A daemon killed while a file downloads (bytes under way, or the upstream
    not answering yet) leaves only a temporary, which the next start removes:
    the file is not listed, and a GET through ``/simple/`` fetches it whole."""
    wheel = dists["big"]
    name = wheel.name
    index, upstream = await lab.upstream(wheel)
    folder = lab.cache / "mirror" / "bigdl"
    if fault == "stall":
        index.stall(name, after=STALL_AFTER)
    else:
        hold = index.hold(name)
    daemon = await lab.daemon(upstream.url)
    chunks: list[bytes] = []
    client = Deferred.fromCoroutine(
        streaming_get(daemon, f"/packages/bigdl/{name}", chunks)
    )

    def temp_sizes() -> list[int]:
        return [(folder / n).stat().st_size for n in names_in(folder) if "tmp" in n]

    if fault == "stall":
        await eventually(
            lambda: temp_sizes() == [STALL_AFTER] and chunks, "a part of the file"
        )
    else:
        await bounded(hold.wait_for(1))
        await eventually(lambda: temp_sizes() == [0], "the temporary file")
    await daemon.kill()

    with pytest.raises((ResponseFailed, ResponseNeverReceived)):
        await bounded(client)
    assert sum(map(len, chunks)) < wheel.stat().st_size
    left = names_in(folder)
    assert left and all(n.startswith(".tmp-") for n in left), left

    if fault == "stall":
        index.heal(name)
    else:
        hold.release()
    daemon = await lab.daemon(upstream.url)
    # The clean-up runs once the daemon answers, in a thread.
    await eventually(lambda: temporaries(lab.cache) == [], "the start-up clean-up")
    assert names_in(folder) == []
    assert name not in await daemon.listed("/local/bigdl/")

    answer = await daemon.fetch_listed("/simple/bigdl/", name)
    assert answer.code == 200
    assert sha256(answer.body) == index.sha256(name)
    await until_listed(daemon, "/local/bigdl/", name)
    assert_whole(folder / name, index.sha256(name))
    assert index.downloads(name) == 2


# -- 2. a download killed right after it was served ----------------------------


@pytest_twisted.ensureDeferred
async def test_served_file_survives_kill(lab: Lab, dists: dict[str, Path]):
    """A file served and listed is kept: killed at once and started again with
    the upstream gone, the daemon lists it and serves the same bytes."""
    wheel = dists["cold"]
    name = wheel.name
    index, upstream = await lab.upstream(wheel)
    daemon = await lab.daemon(upstream.url)
    answer = await daemon.get(f"/packages/cold/{name}")
    assert answer.code == 200
    assert sha256(answer.body) == index.sha256(name)
    await until_listed(daemon, "/local/cold/", name)
    await daemon.kill()
    await bounded(upstream.stop())

    daemon = await lab.daemon(upstream.url)
    listed = await daemon.listed("/local/cold/")
    assert listed[name]["hashes"]["sha256"] == index.sha256(name)
    again = await daemon.get(f"/packages/cold/{name}")
    assert again.code == 200
    assert again.body == wheel.read_bytes()
    assert_whole(lab.cache / "mirror" / "cold" / name, index.sha256(name))
    await eventually(lambda: temporaries(lab.cache) == [], "the start-up clean-up")


# -- 3. an upload acknowledged, then a kill ------------------------------------


@pytest_twisted.ensureDeferred
async def test_acknowledged_upload_survives_kill(lab: Lab, dists: dict[str, Path]):
    """An upload answered ``201`` is kept: after a kill and a restart it is
    listed and served byte for byte, and its project stays private (the
    upstream, which has the project too, is not asked)."""
    wheel = dists["priv_upload"]
    name = wheel.name
    index, upstream = await lab.upstream(dists["priv_upstream"])
    daemon = await lab.daemon(upstream.url)
    answer = await daemon.request(
        "PUT", f"/packages/crashpriv/{name}", wheel.read_bytes()
    )
    assert answer.code == 201, answer
    await daemon.kill()
    asked = index.count("crashpriv")

    daemon = await lab.daemon(upstream.url)
    assert list(await daemon.listed("/simple/crashpriv/")) == [name]
    assert list(await daemon.listed("/local/crashpriv/")) == [name]
    served = await daemon.fetch_listed("/simple/crashpriv/", name)
    assert served.code == 200
    assert served.body == wheel.read_bytes()
    assert index.count("crashpriv") == asked
    await eventually(lambda: temporaries(lab.cache) == [], "the start-up clean-up")


# -- 4. an upload killed mid-body ----------------------------------------------


class RawClient(Protocol):
    """Writes what it is told; records what comes back and when it closes."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any) -> None:
        self.closed.callback(None)


def spooled(pid: int, directory: Path) -> int:
    """The size of the largest file the process has open in ``directory``."""
    sizes = [0]
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).startswith(f"{directory}/"):
                sizes.append(os.stat(fd).st_size)
        except OSError:
            pass
    return max(sizes)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest_twisted.ensureDeferred
async def test_upload_killed_mid_body(lab: Lab, dists: dict[str, Path]):
    """An upload cut short by a kill leaves nothing: after a restart no file is
    listed, ``private/`` holds no file at all, the project is not private (its
    upstream files are still listed), and the same upload then succeeds."""
    wheel = dists["half_upload"]
    name, content = wheel.name, wheel.read_bytes()
    index, upstream = await lab.upstream(dists["half_upstream"])
    spool = lab.tmp_path / "spool"  # the daemon's TMPDIR: where Twisted spools bodies
    spool.mkdir()
    daemon = await lab.daemon(upstream.url, env={"TMPDIR": str(spool)})
    raw = RawClient()
    port = int(daemon.url.rsplit(":", 1)[1].rstrip("/"))
    await bounded(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), raw))
    raw.transport.write(
        f"PUT /packages/halfup/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/octet-stream\r\n"
        f"Content-Length: {len(content)}\r\n\r\n".encode()
    )
    part = len(content) // 3
    raw.transport.write(content[:part])
    await eventually(
        lambda: spooled(daemon.pid, spool) >= part // 2, "the body to be spooled"
    )
    await daemon.kill()
    await bounded(raw.closed)
    assert raw.received == b""

    daemon = await lab.daemon(upstream.url)
    assert names_in(lab.cache / "private" / ".incoming") == []
    assert [p for p in (lab.cache / "private").rglob("*") if not p.is_dir()] == []
    assert await daemon.listed("/local/halfup/") == {}
    assert list(await daemon.listed("/simple/halfup/")) == [dists["half_upstream"].name]
    again = await daemon.request("PUT", f"/packages/halfup/{name}", content)
    assert again.code == 201, again
    assert list(await daemon.listed("/simple/halfup/")) == [name]


# -- 5. bulk caching killed midway ---------------------------------------------


@pytest_twisted.ensureDeferred
async def test_bulk_caching_killed_midway(lab: Lab, dists: dict[str, Path]):
    """A bulk job killed with files stored, one file held upstream and one
    half-received leaves only whole files: each one listed matches its
    sidecar and the upstream; a second job fetches the rest."""
    projects = ["bulka", "bulkb", "bulkc", "bulkd"]
    wheels = {p: dists[p] for p in projects}
    index, upstream = await lab.upstream(*wheels.values())
    hold = index.hold(wheels["bulkc"].name)
    index.stall(wheels["bulkd"].name, after=MiB // 2)
    daemon = await lab.daemon(upstream.url)
    requirements = "".join(f"{p}\n" for p in projects).encode()
    job = Deferred.fromCoroutine(
        send(
            daemon,
            "POST",
            "/requirements.txt",
            requirements,
            {"Content-Type": "text/plain"},
        )
    )
    mirror = lab.cache / "mirror"

    def stored(project: str) -> bool:
        return (mirror / project / wheels[project].name).exists()

    def stalled() -> bool:
        folder = mirror / "bulkd"
        return [
            (folder / n).stat().st_size for n in names_in(folder) if "tmp" in n
        ] == [MiB // 2]

    await eventually(
        lambda: stored("bulka") and stored("bulkb") and hold.arrived and stalled(),
        "two files stored, one held, one half-received",
    )
    await daemon.kill()
    with pytest.raises((ResponseFailed, ResponseNeverReceived)):
        await bounded(job)

    def check_disk() -> set[str]:
        """Every archive on disk is whole; the projects that have one."""
        found = set()
        for folder in mirror.iterdir():
            for archive in filter(is_archive, names_in(folder)):
                assert_whole(folder / archive, index.sha256(archive))
                found.add(folder.name)
        return found

    assert check_disk() == {"bulka", "bulkb"}
    hold.release()
    index.heal(wheels["bulkd"].name)
    daemon = await lab.daemon(upstream.url)
    # The clean-up runs once the daemon answers, in a thread.
    await eventually(lambda: temporaries(lab.cache) == [], "the start-up clean-up")
    for project, wheel in wheels.items():
        listed = await daemon.listed(f"/local/{project}/")
        if project in ("bulka", "bulkb"):
            assert list(listed) == [wheel.name]
            served = await daemon.get(f"/packages/{project}/{wheel.name}")
            assert sha256(served.body) == index.sha256(wheel.name)
        else:
            assert listed == {}

    answer = await daemon.request(
        "POST", "/requirements.txt", requirements, **{"Content-Type": "text/plain"}
    )
    assert answer.code == 200, answer
    statuses = {e["filename"]: e["status"] for e in answer.json()["files"]}
    assert statuses == {
        wheels["bulka"].name: "cached",
        wheels["bulkb"].name: "cached",
        wheels["bulkc"].name: "fetched",
        wheels["bulkd"].name: "fetched",
    }
    assert check_disk() == set(projects)
    assert index.downloads(wheels["bulka"].name) == 1


# -- 6. killed inside the last steps of storing a file ------------------------


@pytest.mark.parametrize(
    "when, suffix, nth, kept",
    [
        # A wheel's own core metadata goes beside it first, its hash in the
        # sidecar, then the archive: one sidecar, written once.
        pytest.param("before", ".metadata", 1, False, id="before-metadata"),
        pytest.param("before", ".json", 1, False, id="before-sidecar"),
        pytest.param("before", "", 1, False, id="before-rename"),
        pytest.param("after", "", 1, True, id="after-rename"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_download_killed_while_storing(
    lab: Lab, dists: dict[str, Path], when: str, suffix: str, nth: int, kept: bool
):
    """Killed at each rename of storing a download, the daemon leaves either
    nothing visible (before the archive's rename) or the whole file, listed
    with its sidecar; a GET then serves it. The client (which completes once
    the file is verified, before it is stored) never takes a part of the file
    for the whole: its response completes with the file's bytes or fails."""
    wheel = dists["sweepdl"]
    name = wheel.name
    index, upstream = await lab.upstream(wheel)
    daemon = await lab.daemon(upstream.url, kill_at=f"{when}:{name}{suffix}:{nth}")
    chunks: list[bytes] = []
    client = Deferred.fromCoroutine(
        streaming_get(daemon, f"/packages/sweepdl/{name}", chunks)
    )
    await daemon.died()
    try:
        await bounded(client)
    except (ResponseFailed, ResponseNeverReceived):
        pass
    else:
        assert b"".join(chunks) == wheel.read_bytes(), "a partial file completed"

    daemon = await lab.daemon(upstream.url)
    # The clean-up runs once the daemon answers, in a thread.
    await eventually(lambda: temporaries(lab.cache) == [], "the start-up clean-up")
    folder = lab.cache / "mirror" / "sweepdl"
    listed = await daemon.listed("/local/sweepdl/")
    if kept:
        assert list(listed) == [name]
        assert_whole(folder / name, index.sha256(name))
    else:
        assert listed == {}
        assert name not in names_in(folder)
    answer = await daemon.get(f"/packages/sweepdl/{name}")
    assert answer.code == 200
    assert answer.body == wheel.read_bytes()
    assert index.downloads(name) == (1 if kept else 2)


#: A known defect: see the module docstring.


@pytest.mark.parametrize(
    "when, suffix, kept",
    [
        pytest.param("before", ".metadata", False, id="before-metadata"),
        pytest.param("before", ".json", False, id="before-sidecar"),
        pytest.param("before", "", False, id="before-rename"),
        pytest.param("after", "", True, id="after-rename"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_upload_killed_while_storing(
    lab: Lab, dists: dict[str, Path], when: str, suffix: str, kept: bool
):
    """Killed at each rename of storing an upload (before its ``201``), the
    daemon leaves either the whole upload, private and listed, or nothing that
    shows: the project is not private, and the core metadata served for the
    filename is the one its ``/simple/`` page advertises. The upload can then
    be made again."""
    wheel, upstream_wheel = dists["sweepup_upload"], dists["sweepup_upstream"]
    name = wheel.name
    assert name == upstream_wheel.name and sha256_of(wheel) != sha256_of(upstream_wheel)
    index, upstream = await lab.upstream(upstream_wheel)
    daemon = await lab.daemon(upstream.url, kill_at=f"{when}:{name}{suffix}")
    answer = Deferred.fromCoroutine(
        send(daemon, "PUT", f"/packages/sweepup/{name}", wheel.read_bytes())
    )
    await daemon.died()
    with pytest.raises((ResponseFailed, ResponseNeverReceived)):
        await bounded(answer)

    daemon = await lab.daemon(upstream.url)
    # The clean-up runs once the daemon answers, in a thread.
    await eventually(lambda: temporaries(lab.cache) == [], "the start-up clean-up")
    assert names_in(lab.cache / "private" / ".incoming") == []
    page = await daemon.listed("/simple/sweepup/")
    expected = wheel if kept else upstream_wheel
    assert page[name]["hashes"]["sha256"] == sha256_of(expected)
    # The metadata first: once the archive is mirrored, its own would be found.
    metadata = await daemon.get(f"/packages/sweepup/{name}.metadata")
    assert metadata.code == 200
    assert {"sha256": sha256(metadata.body)} == page[name]["core-metadata"]
    served = await daemon.get(f"/packages/sweepup/{name}")
    assert served.code == 200
    assert served.body == expected.read_bytes()
    private = lab.cache / "private" / "releases" / "sweepup"
    if kept:
        assert_whole(private / name, sha256_of(wheel))
        assert list(await daemon.listed("/local/sweepup/")) == [name]
    else:
        assert list(filter(is_archive, names_in(private))) == []

    again = await daemon.request("PUT", f"/packages/sweepup/{name}", wheel.read_bytes())
    assert again.code == (200 if kept else 201), again
    assert list(await daemon.listed("/simple/sweepup/")) == [name]
