# -*- test-case-name: tests.test_splicing -*-
"""A large file's body taken off the upstream's socket by a thread: spliced
into the temporary file, hashed from the page cache.

On the cold path of a large file most of the daemon's CPU went into work per
byte: the upstream read into Python bytes (a copy), the HTTP client's and the
spool's Python per chunk, the write into the page cache (a copy), the hash.
Where the upstream's answer allows it (a plain TCP connection, not TLS; an
identity body of a known ``Content-Length``, neither chunked nor encoded; at
least :data:`SPLICE_MIN` bytes still to come), once Twisted's HTTP client has
parsed the headers (the connection is paused by it until a body protocol is
given), :func:`take_body` takes the rest of the body off the socket itself:
what the client already buffered first, then, in a thread of its own,
``splice`` from the socket into a pipe and from the pipe into the file (no
copy through Python), each step hashed from the file (mapped: the page
cache's pages themselves; hashlib releases the GIL), and only then counted
as written, so that the waiting clients' ``sendfile`` senders
(:class:`~pypicache.storage.growing.Download`) follow it as they follow the
spool. Everything else is as on the spool's path: the last byte withheld
from clients until the size and hash are verified, a flush to the disk every
:data:`~pypicache.proxy.spool.SYNC_EVERY` bytes beside the writes, the final
``fsync`` and rename before the file is listed, a broken, short, slow or
stalled body (the upstream's time limits) discarded and its clients cut off.

The connection is never given back to the pool: it is aborted once the body
is read or given up (its parser never saw the body). Memory: a pipe of
:data:`PIPE_SIZE` bytes in the kernel, a mapping of at most :data:`STEP`
bytes at a time; the disk is the buffer, so the upstream is never paused.
A daemon that stops cancels the threads (a wake-up pipe) and waits for
them. Anything else (TLS, chunked, encoded, small, not Linux) goes through
Twisted and the spool. ``ENABLED`` switches it off (tests compare both).
"""

import fcntl
import os
import select
import socket
import threading
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IResponse

from pypicache.concurrency import RunBlocking
from pypicache.errors import UpstreamError
from pypicache.proxy.splicetools import LOW_WATER, Limits, hash_mapped, low_water
from pypicache.proxy.spool import SYNC_EVERY, Hashes, _flush
from pypicache.storage.atomic import full_disk_is_507
from pypicache.storage.growing import Download

log = Logger()

#: Whether large bodies are spliced at all (tests turn it off to compare).
ENABLED = hasattr(os, "splice")
#: Bytes still to come on the socket below which the body goes through Twisted.
SPLICE_MIN = 4 * 1024 * 1024
#: Bytes the pipe between the socket and the file holds (the most Linux
#: gives an unprivileged process by default).
PIPE_SIZE = 1024 * 1024
#: Bytes spliced into the file, hashed and counted as written at most at once.
STEP = 1024 * 1024
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def _plain_transport(response: IResponse) -> Any:
    """The TCP transport under ``response`` if it is a plain one (not TLS)."""
    proxy = getattr(response, "_transport", None)
    transport = getattr(proxy, "_producer", None)
    if type(transport) is not tcp.Client or getattr(transport, "TLS", False):
        return None
    if transport.disconnecting or transport.disconnected:
        return None
    return transport


def _remaining(response: IResponse, transport: Any) -> int | None:
    """Bytes of ``response``'s identity body still on the socket, or ``None``."""
    if response.code != 200 or not isinstance(response.length, int):
        return None
    encodings = response.headers.getRawHeaders(b"content-encoding") or []
    if any(e.strip().lower() not in (b"", b"identity") for e in encodings):
        return None
    if getattr(response, "_state", None) != "INITIAL":
        return None
    protocol = getattr(transport, "protocol", None)
    # An endpoint's connection wraps the HTTP client's protocol.
    protocol = getattr(protocol, "_wrappedProtocol", protocol)
    parser = getattr(protocol, "_parser", None)
    decoder = getattr(parser, "bodyDecoder", None)
    left = getattr(decoder, "contentLength", None)
    buffered = getattr(response, "_bodyBuffer", None)
    if not isinstance(left, int) or not isinstance(buffered, list):
        return None
    if left + sum(len(b) for b in buffered) != response.length:
        return None
    return left


async def take_body(
    response: IResponse,
    download: Download,
    hashes: Hashes,
    run_sync: RunBlocking,
    upstream: Any,
    url: str,
    reactor: Any = None,
) -> "SplicedBody | None":
    """The body of ``response`` to splice into ``download`` (not started: see
    :meth:`SplicedBody.read`), or ``None`` where it must go through Twisted.

    :param upstream: the :class:`~pypicache.proxy.upstream.Upstream` (or the
        ``FileClient`` choosing one by ``url``) whose time limits apply.
    """
    if not ENABLED or _plain_transport(response) is None:
        return None
    if not isinstance(response.length, int) or response.length < SPLICE_MIN:
        return None
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    # The response fired while its parser was still in the read that held
    # the headers: the rest of that read (body bytes) is buffered once it is
    # over. The connection stays paused meanwhile.
    await deferLater(reactor, 0, lambda: None)
    transport = _plain_transport(response)
    left = None if transport is None else _remaining(response, transport)
    if left is None or left < SPLICE_MIN:
        return None
    chosen = getattr(upstream, "upstream_of", None)
    if chosen is not None:
        upstream = chosen(url)
    limits = (upstream.timeout, upstream.min_rate)
    buffered: list[bytes] = response._bodyBuffer  # type: ignore[attr-defined]
    response._bodyBuffer = []  # type: ignore[attr-defined]
    return SplicedBody(
        download, hashes, run_sync, transport, b"".join(buffered), left, limits, reactor
    )


class SplicedBody:
    """The rest of one upstream body, spliced by a thread (see the module)."""

    def __init__(
        self,
        download: Download,
        hashes: Hashes,
        run_sync: RunBlocking,
        transport: Any,
        prefix: bytes,
        left: int,
        limits: tuple[float, float],
        reactor: Any,
    ) -> None:
        self._download = download
        self._hashes = hashes
        self._run_sync = run_sync
        self._transport = transport
        self._prefix = prefix
        self._left = left
        self._idle, self._min_rate = limits
        self._reactor = reactor
        self._unsynced = 0
        self._syncing = False
        self._running = False
        self.error: Exception | None = None
        self._drained: list[Deferred[None]] = []
        self._stopped: list[Deferred[None]] = []
        #: Times bytes were taken off the socket, written, hashed and counted.
        self.steps = 0
        self._cancelled = False

    async def read(self) -> None:
        """Read the whole body into the file, in a thread; raise what broke it."""
        done: Deferred[None] = Deferred()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._running = True
        trigger = self._reactor.addSystemEventTrigger(
            "before", "shutdown", self._stopping
        )
        conn: socket.socket | None = None
        try:
            # A descriptor of its own: the transport's may be closed under it.
            conn = socket.fromfd(
                self._transport.fileno(), socket.AF_INET, socket.SOCK_STREAM
            )
        except OSError as e:
            done.errback(
                Failure(UpstreamError(f"Cannot read the upstream's body: {e}"))
            )

        def run() -> None:
            assert conn is not None
            try:
                self._pump(conn)
            except BaseException as e:
                failure = Failure(e)
                self._reactor.callFromThread(done.errback, failure)
            else:
                self._reactor.callFromThread(done.callback, None)
            finally:
                conn.close()

        try:
            if conn is not None:
                thread = threading.Thread(
                    target=run, name="pypicache-splice", daemon=True
                )
                try:
                    thread.start()
                except BaseException:
                    conn.close()
                    raise
            try:
                await done
            except Exception:
                if self.error is not None:  # a flush failed: the thread was stopped
                    raise self.error from None
                raise
            log.info(
                "Spliced {size} bytes of {filename} in {steps} steps",
                size=self._left,
                filename=self._download.info.filename,
                steps=self.steps,
            )
        finally:
            self._running = False
            self._reactor.removeSystemEventTrigger(trigger)
            # Its parser never saw the body: never back to the pool.
            self._transport.abortConnection()
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
            self._release()
            stopped, self._stopped = self._stopped, []
            for d in stopped:
                d.callback(None)

    def _stopping(self) -> "Deferred[None]":
        """The daemon stops: wake the thread up, and wait for it to give up."""
        self.cancel()
        d: Deferred[None] = Deferred()
        self._stopped.append(d)
        return d

    def cancel(self) -> None:
        """Make the thread give up (the download fails)."""
        self._cancelled = True
        if self._running:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    # In the thread.

    def _pump(self, conn: socket.socket) -> None:
        sock = conn.fileno()
        temp = self._download.temp
        out = temp.file.fileno()
        written = 0
        if self._prefix:
            temp.write(self._prefix)
            self._hashes.update(self._prefix)
            written = len(self._prefix)
            self._reactor.callFromThread(self._wrote, written)
        read_fd = os.open(temp.path.path, os.O_RDONLY | os.O_CLOEXEC)
        pipe_r, pipe_w = os.pipe2(os.O_CLOEXEC)
        try:
            try:
                fcntl.fcntl(pipe_w, _F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass  # the pipe's default size: smaller steps
            clock = Limits(self._idle, self._min_rate, self._left)
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLPRI)
            poller.register(self._wake_r, select.POLLIN)
            left = self._left
            flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
            lowat = 1
            while left:
                if self._cancelled:
                    raise self._given_up(written)
                self.steps += 1
                in_pipe = 0
                while left and in_pipe < STEP:
                    try:
                        n = os.splice(
                            sock, pipe_w, min(left, STEP - in_pipe), flags=flags
                        )
                    except BlockingIOError:
                        if in_pipe:
                            break  # the pipe is full, or nothing more yet
                        lowat = low_water(conn, min(LOW_WATER, left), lowat)
                        self._wait(poller, clock, written)
                        continue
                    except OSError as e:  # reset by the upstream
                        raise UpstreamError(
                            f"Upstream connection broke mid-body ({written} bytes "
                            f"read): {e.strerror}"
                        ) from e
                    if n == 0:
                        raise UpstreamError(
                            f"Upstream connection broke mid-body ({written} bytes read)"
                        )
                    in_pipe += n
                    left -= n
                    clock.got(n)
                with full_disk_is_507(temp.what):
                    while in_pipe:
                        k = os.splice(pipe_r, out, in_pipe, flags=os.SPLICE_F_MOVE)
                        hash_mapped(self._hashes, read_fd, written, k)
                        in_pipe -= k
                        written += k
                self._reactor.callFromThread(self._wrote, written)
                clock.check(written)
        finally:
            for fd in (pipe_r, pipe_w, read_fd):
                os.close(fd)

    def _given_up(self, written: int) -> Exception:
        return UpstreamError(
            f"Download given up: the daemon is stopping ({written} bytes read)"
        )

    def _wait(self, poller: Any, clock: Limits, written: int) -> None:
        """Wait until the socket has bytes (or is closed); raise on a time
        limit or when cancelled."""
        while True:
            timeout = clock.check(written)
            events = poller.poll(max(1, int(timeout * 1000) + 1))
            for fd, _ in events:
                if fd == self._wake_r:
                    raise self._given_up(written)
            if events:
                return

    # On the reactor.

    def _wrote(self, written: int) -> None:
        if not self._running:
            return
        grown = written - self._download.written
        self._unsynced += grown
        self._download.written = written
        self._download._notify()
        if not self._syncing and self._unsynced >= SYNC_EVERY:
            self._syncing, self._unsynced = True, 0
            d = self._run_sync(_flush, self._download.temp)
            d.addCallbacks(self._synced, self._sync_failed)

    def _synced(self, _: None) -> None:
        self._syncing = False
        self._release()

    def _sync_failed(self, failure: Failure) -> None:
        self._syncing = False
        if self.error is None:
            self.error = failure.value  # type: ignore[assignment]
        self.cancel()
        self._release()

    def _release(self) -> None:
        if not self._running and not self._syncing:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    async def written(self) -> None:
        """Raise a flush's error (the body is read by :meth:`read`)."""
        if self.error is not None:
            raise self.error

    async def drained(self, quietly: bool = False) -> None:
        """Wait until no thread reads into the file or flushes it; raise a
        flush's error unless ``quietly`` (see :meth:`~pypicache.proxy.spool.Spool.drained`).
        """
        if self._running or self._syncing:
            d: Deferred[None] = Deferred()
            self._drained.append(d)
            await d
        if self.error is not None and not quietly:
            raise self.error
