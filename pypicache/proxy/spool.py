# -*- test-case-name: tests.test_spool -*-
"""Writing and hashing a download's bytes, in a thread once it is large.

The reactor receives a file's chunks; writing them to the temporary file (the
kernel may make a writer wait while it flushes dirty pages to a slow disk) and
hashing them take a core's worth of work for a large file. The first
:data:`INLINE_BYTES` of a file are written and hashed at once on the reactor
thread (a small wheel never pays for a trip to a thread); past that, the
chunks that arrive meanwhile are written and hashed together, in order, in
the threads that sync files, one batch at a time, while the reactor goes on
receiving and serving. Waiting clients read only what is written
(:attr:`~pypicache.storage.growing.Download.written`). More than
:data:`MAX_PENDING` bytes waiting pauses the upstream until they are written:
a file is never held in memory. The bytes written are flushed to the disk
every :data:`SYNC_EVERY` bytes, so that the final ``fsync`` (before the file
is listed) has little left to do: in a thread of its own, beside the writes,
never in their way (a flush of 64 MB takes a tenth of a second or more, and
the upstream, paused behind it, used to stall for as long).

Past :data:`INLINE_BYTES`, each chunk is copied at once into one of a few
buffers of :data:`BUFFER_SIZE` bytes that the spool reuses from one batch to
the next, and the chunk itself is let go: the upstream connection reads into
a new bytes object each time, and chunks held until a thread had written
them, then freed a batch at a time, made the heap shrink and grow again, so
that most pages of a large file were faulted in afresh by the read (52,000
faults, an eighth of the daemon's CPU, on a cold 300 MB file; 10,000 with
the copy, which costs less), while a chunk let go at once leaves its memory
to the next read. The hash stays beside the write of each chunk, in the
same thread: hashed in a thread of its own, so that clients had the bytes
before the hash, the daemon took a fifth more CPU (the bytes read again
from memory rather than from the cache) and the file came no faster.
"""

import hashlib
import os
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from pypicache.concurrency import RunBlocking
from pypicache.errors import HashMismatch, UpstreamError
from pypicache.index.model import DistFile
from pypicache.proxy.bodies import BodyReader
from pypicache.proxy.upstream import mask_url
from pypicache.storage.atomic import TempFile, full_disk_is_507
from pypicache.storage.growing import Download

log = Logger()

#: Bytes of a file written and hashed on the reactor thread, before threads.
INLINE_BYTES = 1024 * 1024
#: Bytes received and not yet written past which the upstream is paused.
MAX_PENDING = 16 * 1024 * 1024
#: Bytes written between two flushes to the disk.
SYNC_EVERY = 64 * 1024 * 1024
#: Size of the reused buffers the chunks past INLINE_BYTES are copied into.
BUFFER_SIZE = 1024 * 1024


class Hashes:
    """The digest the index gives for a file (``algorithm``) and the sha256
    that pypicache records, in one pass."""

    def __init__(self, algorithm: str | None) -> None:
        self.checked = hashlib.new(algorithm) if algorithm else hashlib.sha256()
        self.sha256 = (
            hashlib.sha256() if algorithm not in (None, "sha256") else self.checked
        )

    def update(self, data: bytes) -> None:
        self.checked.update(data)
        if self.sha256 is not self.checked:
            self.sha256.update(data)


Chunk = bytes | memoryview


def _write(temp: TempFile, hashes: Hashes, chunks: list[Chunk]) -> int:
    """Write and hash ``chunks`` (blocking)."""
    size = 0
    for chunk in chunks:
        temp.write(chunk)
        hashes.update(chunk)
        size += len(chunk)
    return size


def _flush(temp: TempFile) -> None:
    """Flush what is written of ``temp`` to the disk (blocking)."""
    with full_disk_is_507(temp.what):
        os.fdatasync(temp.file.fileno())


class Spool:
    """Writes and hashes a download's chunks as they arrive (see the module).

    :meth:`received` takes the chunks of a :class:`~pypicache.proxy.bodies.BodyReader`
    given to :meth:`attach`, which it pauses and resumes.
    """

    def __init__(
        self, download: Download, hashes: Hashes, run_sync: RunBlocking
    ) -> None:
        self._download = download
        self._hashes = hashes
        self._run_sync = run_sync
        self._flow: Callable[[bool], Any] = lambda on: None
        #: Taken, not yet written: chunks and parts of buffers, in order.
        self._pending: list[Chunk] = []
        self._pending_size = 0
        #: The buffer the next chunks are copied into, and how full it is.
        self._buffer: memoryview | None = None
        self._filled = 0
        #: Buffers behind the pending parts, and the batch being written.
        self._pending_buffers: list[memoryview] = []
        self._writing_buffers: list[memoryview] = []
        self._free: list[memoryview] = []
        self._received = 0
        self._unsynced = 0
        self._busy = False
        #: A flush to the disk under way (beside the writes).
        self._syncing = False
        self._paused = False
        self.error: Exception | None = None
        self._drained: list[Deferred[None]] = []
        self._written_waits: list[Deferred[None]] = []

    def attach(self, reader: BodyReader) -> None:
        """Pause and resume ``reader`` (whose chunks this takes) as writes lag."""
        self._flow = reader.flow

    def received(self, chunk: bytes) -> None:
        """Take a chunk; raises the error of an earlier write (the disk is full)."""
        if self.error is not None:
            raise self.error
        self._received += len(chunk)
        if not self._busy and self._received <= INLINE_BYTES:
            _write(self._download.temp, self._hashes, [chunk])
            self._wrote(len(chunk))
            return
        self._take(chunk)
        self._pending_size += len(chunk)
        if self._pending_size > MAX_PENDING and not self._paused:
            self._paused = True
            self._flow(False)
        self._next()

    def _take(self, chunk: bytes) -> None:
        """Copy ``chunk`` into the buffer being filled (see the module)."""
        size = len(chunk)
        if size > BUFFER_SIZE:
            self._seal()
            self._pending.append(chunk)
            return
        if self._buffer is None or self._filled + size > BUFFER_SIZE:
            self._seal()
            self._buffer = (
                self._free.pop() if self._free else memoryview(bytearray(BUFFER_SIZE))
            )
        end = self._filled + size
        # Through a memoryview: a bytearray's own slice assignment copies
        # the bytes into a new bytearray first.
        self._buffer[self._filled : end] = chunk
        self._filled = end

    def _seal(self) -> None:
        """Add what the buffer being filled holds to the pending chunks."""
        if self._buffer is None:
            return
        if self._filled:
            self._pending.append(self._buffer[: self._filled])
            self._pending_buffers.append(self._buffer)
        else:
            self._free.append(self._buffer)
        self._buffer, self._filled = None, 0

    def _next(self) -> None:
        if self.error is None and not self._syncing and self._unsynced >= SYNC_EVERY:
            self._syncing = True
            self._unsynced = 0
            synced = self._run_sync(_flush, self._download.temp)
            synced.addCallbacks(self._synced, self._sync_failed)
        if self._busy or not self._pending_size:
            self._release()
            return
        self._seal()
        chunks, self._pending, self._pending_size = self._pending, [], 0
        self._writing_buffers, self._pending_buffers = self._pending_buffers, []
        self._busy = True
        d = self._run_sync(_write, self._download.temp, self._hashes, chunks)
        d.addCallbacks(self._written, self._write_failed)

    def _written(self, size: int) -> None:
        self._busy = False
        self._free.extend(self._writing_buffers)
        self._writing_buffers = []
        self._unsynced += size
        self._wrote(size)
        if self._paused and self._pending_size <= MAX_PENDING // 2:
            self._paused = False
            self._flow(True)
        self._next()

    def _synced(self, _: None) -> None:
        self._syncing = False
        self._next()

    def _wrote(self, size: int) -> None:
        self._download.written += size
        self._download._notify()

    def _write_failed(self, failure: Any) -> None:
        self._busy = False
        self._writing_buffers = []
        self._failed(failure)

    def _sync_failed(self, failure: Any) -> None:
        self._syncing = False
        self._failed(failure)

    def _failed(self, failure: Any) -> None:
        if self.error is None:
            self.error = failure.value
        self._pending, self._pending_size = [], 0
        self._pending_buffers, self._buffer, self._filled = [], None, 0
        self._free = []
        if self._paused:
            self._paused = False
            self._flow(True)
        self._release()

    def _release(self) -> None:
        """Fire the waits of :meth:`written` once no chunk waits to be written,
        and those of :meth:`drained` once no thread writes or flushes either."""
        if not self._busy and not self._pending_size:
            written, self._written_waits = self._written_waits, []
            for d in written:
                d.callback(None)
        if not self._busy and not self._syncing:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    async def written(self) -> None:
        """Wait until every chunk taken is written (a flush may still be under
        way: :meth:`drained` waits for it); raise a write's or a flush's error."""
        if self._busy or self._pending_size:
            d: Deferred[None] = Deferred()
            self._written_waits.append(d)
            await d
        if self.error is not None:
            raise self.error

    async def drained(self, quietly: bool = False) -> None:
        """Wait until every chunk taken is written and no flush is under way;
        raise a write's or a flush's error (unless ``quietly``: the download
        failed anyway, and its temporary file may only be discarded once no
        thread writes to it or flushes it)."""
        if self._busy or self._pending_size or self._syncing:
            d: Deferred[None] = Deferred()
            self._drained.append(d)
            await d
        if self.error is not None and not quietly:
            raise self.error


def verified(
    download: Download, hashes: Hashes, expected: tuple[str, str] | None
) -> DistFile:
    """The record of a download whose every byte is written, once its size
    and hash match what the index says.

    :raises UpstreamError: the size is not the one announced.
    :raises HashMismatch: the bytes do not match the index's hash.
    """
    info = download.info
    if info.size is not None and download.written != info.size:
        raise UpstreamError(
            f"Upstream sent {download.written} bytes of {info.filename}, the index says {info.size}"
        )
    if download.length is not None and download.written != download.length:
        raise UpstreamError(
            f"Upstream sent {download.written} of {download.length} bytes of {info.filename}"
        )
    if expected and hashes.checked.hexdigest() != expected[1]:
        log.warn(
            "Hash mismatch for {filename} from {url}: expected {algorithm} {expected}, got {actual}",
            filename=info.filename,
            url=mask_url(info.url or ""),
            algorithm=expected[0],
            expected=expected[1],
            actual=hashes.checked.hexdigest(),
        )
        raise HashMismatch(
            f"Hash mismatch for {info.filename}: upstream bytes do not match the index"
        )
    if expected is None:
        log.warn("No hash to verify {filename} against", filename=info.filename)
    digests = {**info.hashes, "sha256": hashes.sha256.hexdigest()}
    return attrs.evolve(info, hashes=digests, size=download.written)
