"""A download's bytes are written and hashed in order, in a thread once the
file is large, with the upstream paused while writes lag; a large cold file
goes to its clients by ``sendfile`` as it is written.

The daemon runs in this process (``tests.daemon``), so ``os.sendfile`` is
wrapped here to see which path sent the bytes.
"""

import hashlib
import os
import sys
import zipfile

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.threads import deferToThread
from twisted.python.filepath import FilePath

from pypicache.errors import InsufficientStorage
from pypicache.index.model import DistFile
from pypicache.proxy import spool as spooling
from pypicache.proxy.spool import INLINE_BYTES, MAX_PENDING, Hashes, Spool
from pypicache.storage.atomic import TempFile
from pypicache.storage.growing import Download
from tests.daemon import start_world
from tests.packages import build_wheel

CHUNK = 256 * 1024


def new_download(tmp_path) -> Download:
    temp = TempFile(FilePath(str(tmp_path)), "proj", "mirror")
    return Download("proj", DistFile(filename="proj-1.0.tar.gz"), temp)


def chunks(total: int) -> list[bytes]:
    return [os.urandom(CHUNK) for _ in range(total // CHUNK)]


class Flow:
    """Records the pauses and resumes a spool asks of its upstream."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def flow(self, on: bool) -> None:
        self.calls.append(on)


@pytest_twisted.ensureDeferred
async def test_large_file_written_in_order_in_threads(tmp_path):
    """Past the first INLINE_BYTES, chunks go to the sync threads in batches;
    the temporary file holds every byte in order, both digests are right, and
    ``written`` counts only what is on disk."""
    download = new_download(tmp_path)
    hashes = Hashes("md5")
    trips = []

    def run_sync(f, *args):
        trips.append(sum(map(len, args[2])))
        return deferToThread(f, *args)

    spool = Spool(download, hashes, run_sync)
    data = chunks(INLINE_BYTES * 4)
    for chunk in data:
        spool.received(chunk)
        assert download.written <= sum(map(len, data))
    await spool.drained()
    whole = b"".join(data)
    assert download.written == len(whole)
    with open(download.temp.path.path, "rb") as f:
        assert f.read() == whole
    assert hashes.checked.hexdigest() == hashlib.md5(whole).hexdigest()
    assert hashes.sha256.hexdigest() == hashlib.sha256(whole).hexdigest()
    assert trips and sum(trips) == len(whole) - INLINE_BYTES
    download.temp.discard()


@pytest_twisted.ensureDeferred
async def test_chunks_copied_into_reused_buffers(tmp_path):
    """Past INLINE_BYTES each chunk is copied into one of a few buffers reused
    from batch to batch, and the spool keeps no reference to the chunk: held
    until written, the upstream's new 1 MB chunks made the heap shrink and
    grow, every page of a large file faulted in afresh by the read."""
    download = new_download(tmp_path)
    hashes = Hashes("sha256")
    buffers = set()
    held: list[Deferred] = []

    def run_sync(f, *args):
        if f is spooling._write:
            for chunk in args[2]:
                assert isinstance(chunk, memoryview)
                assert isinstance(chunk.obj, bytearray)
                buffers.add(id(chunk.obj))
        d = Deferred()
        held.append(d)
        return d.addCallback(lambda _: f(*args))

    spool = Spool(download, hashes, run_sync)
    data = [os.urandom(1024 * 1024) for _ in range(48)]
    for n, chunk in enumerate(data):
        before = sys.getrefcount(chunk)
        spool.received(chunk)
        assert sys.getrefcount(chunk) == before
        if n % 3 == 2:  # the thread writes a batch now and then
            while held:
                held.pop(0).callback(None)
    while held:
        held.pop(0).callback(None)
    await spool.drained()
    whole = b"".join(data)
    with open(download.temp.path.path, "rb") as f:
        assert f.read() == whole
    assert hashes.sha256.hexdigest() == hashlib.sha256(whole).hexdigest()
    assert 0 < len(buffers) <= 8  # of 47 chunks
    download.temp.discard()


def test_small_file_written_at_once(tmp_path):
    """A file of at most INLINE_BYTES is written and hashed on the reactor
    thread as it arrives: no trip to a thread."""

    def run_sync(f, *args):
        raise AssertionError("a small file went to a thread")

    download = new_download(tmp_path)
    spool = Spool(download, Hashes("sha256"), run_sync)
    data = chunks(INLINE_BYTES)
    for chunk in data:
        spool.received(chunk)
        assert download.written == len(chunk) * (data.index(chunk) + 1)
    download.temp.discard()


@pytest_twisted.ensureDeferred
async def test_upstream_paused_while_writes_lag(tmp_path):
    """More than MAX_PENDING bytes waiting for a write pauses the upstream; it
    resumes once they are written, and nothing is lost."""
    download = new_download(tmp_path)
    held: list[Deferred] = []

    def run_sync(f, *args):
        d = Deferred()
        held.append(d)
        d.addCallback(lambda _: f(*args))
        return d

    flow = Flow()
    spool = Spool(download, Hashes("sha256"), run_sync)
    spool.attach(flow)  # as it would a BodyReader
    data = chunks(INLINE_BYTES + MAX_PENDING + 2 * CHUNK)
    for chunk in data:
        spool.received(chunk)
    assert flow.calls == [False]
    while held:
        held.pop(0).callback(None)
    await spool.drained()
    assert flow.calls == [False, True]
    assert download.written == sum(map(len, data))
    download.temp.discard()


@pytest_twisted.ensureDeferred
async def test_failed_write_fails_the_download(tmp_path):
    """A write that fails in a thread (a full disk) is raised to the next
    chunk, which stops the upstream, and by ``drained``."""
    download = new_download(tmp_path)

    def run_sync(f, *args):
        return deferToThread(_full)

    def _full():
        raise InsufficientStorage("Insufficient storage: no space left")

    spool = Spool(download, Hashes("sha256"), run_sync)
    for chunk in chunks(INLINE_BYTES + CHUNK):
        spool.received(chunk)
    with pytest.raises(InsufficientStorage):
        await spool.drained()
    with pytest.raises(InsufficientStorage):
        spool.received(b"more")
    await spool.drained(quietly=True)
    download.temp.discard()


def test_flushed_to_disk_as_it_goes(tmp_path, monkeypatch):
    """Every SYNC_EVERY bytes written, the batch is flushed to the disk, so
    that the final fsync, which the last byte waits for, has little to do."""
    synced = []
    monkeypatch.setattr(spooling, "SYNC_EVERY", 2 * CHUNK)
    monkeypatch.setattr(os, "fdatasync", lambda fd: synced.append(fd))
    download = new_download(tmp_path)
    spool = Spool(download, Hashes("sha256"), lambda f, *a: succeed(f(*a)))
    for chunk in chunks(INLINE_BYTES + 8 * CHUNK):
        spool.received(chunk)
    assert len(synced) >= 3
    download.temp.discard()


@pytest_twisted.ensureDeferred
async def test_flush_beside_the_writes(tmp_path, monkeypatch):
    """A flush to the disk runs beside the writes, never before them: while
    one is under way the next chunks are still written (and the upstream not
    paused), ``written`` fires without it, and ``drained`` (before the file
    is stored or discarded) waits for it."""
    monkeypatch.setattr(spooling, "SYNC_EVERY", 2 * CHUNK)
    flushes: list[Deferred] = []

    def run_sync(f, *args):
        if f is spooling._flush:
            d = Deferred()
            flushes.append(d)
            return d.addCallback(lambda _: f(*args))
        return succeed(f(*args))

    download = new_download(tmp_path)
    flow = Flow()
    spool = Spool(download, Hashes("sha256"), run_sync)
    spool.attach(flow)
    data = chunks(INLINE_BYTES + 8 * CHUNK)
    for chunk in data:
        spool.received(chunk)
    assert len(flushes) == 1  # one at a time
    assert download.written == sum(map(len, data))  # not held behind it
    assert flow.calls == []
    await spool.written()
    drained = Deferred.fromCoroutine(spool.drained())
    assert not drained.called
    flushes.pop().callback(None)  # done: the bytes written since call for another
    assert not drained.called
    flushes.pop().callback(None)
    await drained
    assert not flushes
    download.temp.discard()


@pytest_twisted.ensureDeferred
async def test_failed_flush_fails_the_download(tmp_path, monkeypatch):
    """A flush that fails (a full disk) is raised by ``written`` and ``drained``."""
    monkeypatch.setattr(spooling, "SYNC_EVERY", 2 * CHUNK)

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", full)
    download = new_download(tmp_path)
    spool = Spool(download, Hashes("sha256"), deferToThread)
    for chunk in chunks(INLINE_BYTES + 4 * CHUNK):
        spool.received(chunk)
    await spool.drained(quietly=True)
    with pytest.raises(InsufficientStorage):
        await spool.written()
    with pytest.raises(InsufficientStorage):
        await spool.drained()
    download.temp.discard()


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A wheel with 12 MB of random bytes stored uncompressed."""
    path = build_wheel(tmp_path_factory.mktemp("dists"), "bigcold", "1.0")
    with zipfile.ZipFile(path, "a", zipfile.ZIP_STORED) as archive:
        archive.writestr("bigcold/payload.bin", os.urandom(12 * 1024 * 1024))
    return path


@pytest_twisted.ensureDeferred
async def test_cold_large_file_by_sendfile_to_every_client(tmp_path, big, monkeypatch):
    """Three clients asking for a large file nobody has cached get it whole,
    mostly by ``sendfile`` from the temporary file as it is written; it is
    downloaded from upstream once and stored."""
    sent = []
    real_sendfile = os.sendfile

    def sendfile(out_fd, in_fd, offset, count):
        n = real_sendfile(out_fd, in_fd, offset, count)
        sent.append(n)
        return n

    monkeypatch.setattr(os, "sendfile", sendfile)
    world = await start_world(tmp_path, [big], timeout=10)
    try:
        url = world.daemon.url + f"packages/bigcold/{big.name}"
        answers = await DeferredList(
            [treq.get(url) for _ in range(3)], fireOnOneErrback=True
        )
        bodies = await DeferredList(
            [treq.content(r) for _, r in answers], fireOnOneErrback=True
        )
        expected = big.read_bytes()
        assert all(r.code == 200 for _, r in answers)
        assert all(body == expected for _, body in bodies)
        assert sum(sent) > 3 * len(expected) // 2
        assert world.index.downloads(big.name) == 1
        assert big.name in world.mirror_files("bigcold")
    finally:
        await world.stop()


def read_late(url: str, wait: float) -> bytes:
    """GET ``url`` over a blocking socket, reading nothing for ``wait``
    seconds (the daemon's socket fills up), then all of it: the body."""
    import socket
    import time
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.socket() as s:
        # A small window: the daemon's socket fills up within the wait.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.connect((parts.hostname, parts.port))
        s.sendall(
            f"GET {parts.path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        time.sleep(wait)
        received = []
        while data := s.recv(1024 * 1024):
            received.append(data)
    return b"".join(received).partition(b"\r\n\r\n")[2]


@pytest_twisted.ensureDeferred
async def test_sender_ahead_of_download_does_not_spin(tmp_path, big, monkeypatch):
    """A client sent every byte written so far stops watching its socket for
    room until the download writes more: a socket with room, watched while
    there is nothing to send, woke the reactor thousands of times a second
    (a busy loop that slowed the very download it waited for)."""
    from pypicache.web import sendfile as sending

    wakes = []
    real = sending._Writable.doWrite

    def do_write(self):
        wakes.append(1)
        return real(self)

    monkeypatch.setattr(sending._Writable, "doWrite", do_write)
    world = await start_world(tmp_path, [big], timeout=10)
    world.index.rate = 6 * 1024 * 1024  # two seconds for the 12 MB
    try:
        url = world.daemon.url + f"packages/bigcold/{big.name}"
        # The client fills its socket first (the sender waits for room),
        # then reads faster than the upstream sends.
        body = await deferToThread(read_late, url, 1.0)
        assert body == big.read_bytes()
        # One wake per time the socket filled up, at most: a few dozen
        # (thousands when it spun). None at all is right too: on a loaded
        # machine the download can be too slow to fill the socket in the wait.
        assert len(wakes) < 100
    finally:
        await world.stop()
