"""The S3 store's local copies: the first read of an archive is streamed to
its client while it is fetched from the bucket, concurrent readers share one
``GET``, a copy is kept only once verified, and the copies are bounded.

A daemon built in this process (``tests/daemon.py``) on a bucket of moto's
server serves files another store committed; its bucket's reads are
wrapped to count the ``GET``s of archives and to hold the fetch half-way.
"""

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock, deferLater

from pypicache.storage.records import RELEASES
from pypicache.storage.s3 import fetching
from pypicache.storage.s3.bucket import Bucket
from pypicache.storage.s3.errors import BucketError
from pypicache.storage.s3.keys import Keys
from pypicache.storage.s3.settings import S3Settings
from tests.daemon import start_world
from tests.test_s3_store import s3_store
from tests.test_store_contract import put

WHEEL = "big-1.0-py3-none-any.whl"
KEY = Keys("pypi").archive(RELEASES, "big", WHEEL)
#: 2 MiB and 3 bytes: eight chunks of the bucket's reads, and a short one.
BIG = b"PK" + os.urandom(2 * 1024 * 1024 + 1)


class Watched:
    """A daemon's bucket, its reads of archives counted and, once
    :meth:`hold` is called, stopped after the first chunk until released."""

    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket
        self.gets: list[str] = []
        self.chunks = 0
        self.gate: Deferred[None] | None = None
        opened, read = bucket.open_object, bucket.read_body

        async def open_object(key: str, byte_range: str | None = None) -> Any:
            self.gets.append(key)
            return await opened(key, byte_range)

        async def read_body(key: str, step: Any) -> Any:
            if self.gate is not None and step.__name__ == "step":
                self.chunks += 1
                if self.chunks == 2:
                    await self.gate
            return await read(key, step)

        bucket.open_object = open_object  # type: ignore[method-assign]
        bucket.read_body = read_body  # type: ignore[method-assign]

    def hold(self) -> Deferred[None]:
        self.gate = Deferred()
        return self.gate

    def release(self) -> None:
        assert self.gate is not None
        gate, self.gate = self.gate, None
        gate.callback(None)


async def open_bucket(s3: Any, threads: Any) -> Bucket:
    settings = S3Settings.from_mapping(
        {"storage": s3.url("pypi"), "s3-endpoint-url": s3.endpoint}
    )
    return await Bucket.open(settings, threads)


@pytest_twisted.async_yield_fixture()
async def served(s3: Any, threads: Any, tmp_path: Path) -> Any:
    """``BIG`` committed by one store; a daemon on the same bucket with an
    empty local folder; its bucket :class:`Watched`."""
    writer = await s3_store(s3, threads, tmp_path / "writer")
    await put(writer, "big", WHEEL, RELEASES, BIG)
    bucket = await open_bucket(s3, threads)
    watched = Watched(bucket)
    world = await start_world(tmp_path, s3_bucket=bucket, s3_prefix="pypi")
    yield world, watched
    await world.stop()


def local_copies(world: Any) -> list[Path]:
    """The archives in the daemon's local folder (temporary files apart)."""
    return [
        p
        for p in Path(world.cache).rglob(WHEEL)
        if not p.name.startswith(".") and p.is_file()
    ]


@pytest_twisted.ensureDeferred
async def test_first_read_streams_before_the_fetch_ends(served):
    """A client of an archive with no local copy gets its first bytes while
    the daemon is still fetching it from the bucket (held after one chunk),
    before any local copy exists; it gets every byte once the fetch goes
    on, and the verified copy then appears and is served from the disk."""
    world, watched = served
    watched.hold()
    response = await world.daemon.get(f"packages/big/{WHEEL}")
    assert response.code == 200
    assert response.length == len(BIG)
    first: Deferred[None] = Deferred()
    received: list[bytes] = []

    def collect(data: bytes) -> None:
        received.append(data)
        if not first.called:
            first.callback(None)

    done = treq.collect(response, collect)
    await first
    assert 0 < len(b"".join(received)) < len(BIG)
    assert watched.gate is not None  # the fetch is still held
    assert local_copies(world) == []  # no copy until it is complete
    watched.release()
    await done
    assert b"".join(received) == BIG
    for _ in range(100):
        if local_copies(world):
            break
        await deferLater(reactor, 0.02)
    [copy] = local_copies(world)
    assert copy.read_bytes() == BIG
    again = await world.daemon.get(f"packages/big/{WHEEL}")
    assert await again.content() == BIG
    assert watched.gets == [KEY]


@pytest_twisted.ensureDeferred
async def test_concurrent_readers_share_one_get(served):
    """Three clients asking at once for an archive with no local copy get
    its bytes from one ``GET`` of the object."""
    world, watched = served
    watched.hold()
    requests = [world.daemon.get(f"packages/big/{WHEEL}") for _ in range(3)]
    await deferLater(reactor, 0.3)
    watched.release()
    responses = await gatherResults(requests)
    bodies = await gatherResults([r.content() for r in responses])
    assert [r.code for r in responses] == [200, 200, 200]
    assert all(body == BIG for body in bodies)
    assert len(watched.gets) == 1


@pytest_twisted.ensureDeferred
async def test_range_and_head_on_a_first_read(served):
    """A ``Range`` request for an archive with no local copy is answered
    ``206`` with exactly those bytes (once the shared fetch is complete and
    verified), and a ``HEAD`` meanwhile has the length and no body; one
    ``GET`` of the object in all."""
    world, watched = served
    head = await world.daemon.head(f"packages/big/{WHEEL}")
    assert head.code == 200
    assert head.length == len(BIG) or head.headers.getRawHeaders("content-length") == [
        str(len(BIG))
    ]
    assert await head.content() == b""
    ranged = await world.daemon.get(
        f"packages/big/{WHEEL}", headers={"Range": "bytes=1000-1999"}
    )
    assert ranged.code == 206
    assert ranged.headers.getRawHeaders("content-range") == [
        f"bytes 1000-1999/{len(BIG)}"
    ]
    assert await ranged.content() == BIG[1000:2000]
    assert len(watched.gets) == 1


@pytest_twisted.ensureDeferred
async def test_a_corrupt_local_copy_is_not_served(s3, threads, tmp_path):
    """A local copy that is not the file its record names (damaged on disk
    while the daemon was down) is fetched again, not served; an object in
    the bucket that is not the recorded file is refused (502) and leaves
    no local copy."""
    writer = await s3_store(s3, threads, tmp_path / "one")
    stored = await put(writer, "big", WHEEL, RELEASES, BIG)
    path = Path(stored.path.path)
    path.write_bytes(b"PK" + b"\0" * (len(BIG) - 2))
    restarted = await s3_store(s3, threads, tmp_path / "one")
    [seen] = await restarted.files("big")
    assert (await restarted.open(seen)).path.getContent() == BIG
    assert path.read_bytes() == BIG

    await restarted.bucket.put(
        restarted._key(seen), b"PK other bytes", content_type="application/zip"
    )
    other = await s3_store(s3, threads, tmp_path / "two")
    [seen] = await other.files("big")
    with pytest.raises(BucketError):
        await other.open(seen)
    assert not os.path.exists(seen.path.path)
    assert [p for p in Path(seen.path.dirname()).iterdir()] == []


@pytest_twisted.ensureDeferred
async def test_a_damaged_fetch_cuts_the_client_off(served):
    """A client streaming a first read whose bytes turn out not to be the
    recorded file (replaced in the bucket behind the record's back, with
    the same length) never receives a complete body: the last byte is held
    back and the connection is cut."""
    world, watched = served
    damaged = BIG[:-1] + bytes([BIG[-1] ^ 1])
    await watched.bucket.put(KEY, damaged, content_type="application/zip")
    response = await world.daemon.get(f"packages/big/{WHEEL}")
    with pytest.raises(Exception):
        await response.content()
    assert local_copies(world) == []


@pytest_twisted.ensureDeferred
async def test_local_copies_are_bounded(s3, threads, tmp_path):
    """With ``local_size``, the least recently served local copies go once
    they pass it, never one served in the last ``in_use_seconds``; an
    evicted copy is fetched again when asked for; copies found on disk at a
    restart count too."""
    one = await s3_store(s3, threads, tmp_path / "local", local_size=2500)
    clock = Clock()
    clock.advance(1000)
    one.copies._clock = clock
    size = 1000
    files = {}
    for n in range(3):
        name = f"f{n}-1.0-py3-none-any.whl"
        files[n] = await put(one, "f", name, RELEASES, b"PK" + bytes([n]) * size)
        clock.advance(60)
    await deferLater(reactor, 0.2)
    on_disk = lambda: sorted(  # noqa: E731
        p.name for p in (tmp_path / "local").rglob("f*.whl") if p.is_file()
    )
    assert on_disk() == [
        "f1-1.0-py3-none-any.whl",
        "f2-1.0-py3-none-any.whl",
    ]
    # f1 served again: f2 is now the least recently served.
    await one.open(files[1])
    clock.advance(60)
    files[3] = await put(one, "f", "f3-1.0-py3-none-any.whl", RELEASES, b"PK3" * 334)
    await deferLater(reactor, 0.2)
    assert on_disk() == ["f1-1.0-py3-none-any.whl", "f3-1.0-py3-none-any.whl"]
    assert one.copies.size <= 2500
    # Evicted, fetched again on demand; the rest served in the last
    # seconds stays even past the bound.
    opened = await one.open(files[0])
    assert opened.path.getContent() == b"PK" + bytes([0]) * size
    await deferLater(reactor, 0.2)
    assert "f0-1.0-py3-none-any.whl" in on_disk()

    restarted = await s3_store(s3, threads, tmp_path / "local", local_size=1500)
    restarted.copies.in_use_seconds = 0
    await restarted.open(files[0])
    await deferLater(reactor, 0.3)
    assert len(on_disk()) == 1


@pytest_twisted.ensureDeferred
async def test_open_without_stream_waits_for_the_copy(s3, threads, tmp_path):
    """``open`` without ``stream`` answers once the local copy is complete
    (readers of the whole file: metadata, bulk), sharing a fetch that
    streams meanwhile."""
    writer = await s3_store(s3, threads, tmp_path / "writer")
    await put(writer, "big", WHEEL, RELEASES, BIG)
    store = await s3_store(s3, threads, tmp_path / "reader")
    watched = Watched(store.bucket)
    [stored] = await store.files("big")
    streaming = await store.open(stored, stream=True)
    assert streaming.download is not None
    whole = await store.open(stored)
    assert whole.download is None
    assert (
        hashlib.sha256(whole.path.getContent()).hexdigest()
        == hashlib.sha256(BIG).hexdigest()
    )
    assert len(watched.gets) == 1
    assert fetching.CHUNK < len(BIG)


def test_the_local_size_option_reaches_the_store(s3, tmp_path):
    """``--s3-local-size 20G`` bounds the daemon's local copies: it goes from
    the command line to the store the daemon serves from; the daemon sweeps
    abandoned uploads every hour."""
    from twisted.application.internet import TimerService
    from twisted.application.service import MultiService

    from pypicache.storage.s3.orphans import SWEEP_EVERY, sweep
    from pypicache.tap.options import Options
    from pypicache.tap.service import _object_store
    from pypicache.tap.stores import make_store

    options = Options()
    options.parseOptions(
        [
            "--cache",
            str(tmp_path),
            "--storage",
            s3.url("pypi"),
            "--s3-local-size",
            "20G",
        ]
        + ["--s3-endpoint-url", s3.endpoint]
    )
    top = MultiService()
    made = _object_store(options, top, reactor)
    [sweeper] = [s for s in top if isinstance(s, TimerService)]
    assert sweeper.step == SWEEP_EVERY and sweeper.call[0] is sweep
    assert made["s3_local_size"] == 20 * 1024**3
    store = make_store(str(tmp_path), reactor, None, None, **made)
    assert store.copies.max_size == 20 * 1024**3


@pytest_twisted.ensureDeferred
async def test_abandoned_multipart_uploads_are_aborted(s3, threads):
    """The multipart uploads a killed daemon left open under the store's
    prefix are aborted once older than the age given (a day by default);
    younger ones and those under another prefix are left alone; the
    sweep of a daemon on S3 does it with the clock's time."""
    from pypicache.storage.s3.orphans import (
        ABANDONED_AFTER,
        abort_abandoned_uploads,
        sweep,
    )

    bucket = await open_bucket(s3, threads)
    keys = Keys("pypi")
    key = keys.archive(RELEASES, "big", WHEEL)

    def start(k: str) -> str:
        made = bucket.client.create_multipart_upload(Bucket=bucket.name, Key=k)
        return str(made["UploadId"])

    await threads(start, key)
    await threads(start, "other/files/x.whl")
    [(_, _, started), _] = sorted(await bucket.open_uploads(), reverse=True)
    assert await abort_abandoned_uploads(bucket, keys, started + 60) == []
    clock = Clock()
    clock.advance(started + ABANDONED_AFTER + 1)
    await sweep(bucket, keys, clock)
    assert [u[0] for u in await bucket.open_uploads()] == ["other/files/x.whl"]
    assert await abort_abandoned_uploads(bucket, keys, started + 1e6) == []
