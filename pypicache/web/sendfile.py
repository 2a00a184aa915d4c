# -*- test-case-name: tests.test_sendfile -*-
"""A stored file as a response body, without copying it through Python where possible.

On a plain TCP connection the bytes go from the page cache to the socket with
``os.sendfile``; behind TLS (or where ``sendfile`` is refused) they are read and
written through the transport in large chunks. Either way the client's pace
sets ours: nothing is buffered beyond one chunk.
"""

import errno
import os
from typing import Any, BinaryIO

from twisted.internet import tcp
from twisted.internet.interfaces import (
    IPushProducer,
    IReactorFDSet,
    ISSLTransport,
    IWriteDescriptor,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger()

KB = 1024
MB = 1024 * KB

#: The most one ``os.sendfile`` call is asked for; the kernel takes what fits.
SENDFILE_COUNT = 16 * MB

#: The first bytes of a body, written through the transport with the headers.
#: More than the transport's buffer (64 KB), so that the transport pauses the
#: sender and resumes it once the headers and these bytes are all on the wire:
#: only then may ``sendfile`` add bytes behind them. A file this small is sent
#: whole this way, in one write.
FIRST_CHUNK = 128 * KB

#: The chunk read and written through the transport where ``sendfile`` is out.
COPY_CHUNK = 256 * KB

#: ``sendfile`` errors that mean "not for this file or socket": copy instead.
_UNSUPPORTED = frozenset(
    {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSOCK, errno.EOVERFLOW}
)

#: Errors that only say the client went away: no log.
_GONE = frozenset(
    {
        errno.EPIPE,
        errno.ECONNRESET,
        errno.ENOTCONN,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EBADF,
    }
)


def plain_socket(request: Any) -> int | None:
    """The descriptor of the request's TCP socket if its bytes go to it unchanged.

    ``None`` behind TLS (where the channel's transport is a
    ``TLSMemoryBIOProtocol``, or a TCP transport after ``startTLS``), over
    HTTP/2, or on a transport that is not a socket watched by an
    :class:`IReactorFDSet` reactor.
    """
    channel = getattr(request, "channel", None)
    transport = getattr(channel, "transport", None)
    if (
        not isinstance(transport, tcp.Connection)
        or getattr(transport, "TLS", False)
        or ISSLTransport.providedBy(transport)
        or not IReactorFDSet.providedBy(getattr(transport, "reactor", None))
    ):
        return None
    try:
        return int(transport.getHandle().fileno())
    except (AttributeError, OSError, ValueError):
        return None


@implementer(IPushProducer)
class FileSender:
    """Sends ``length`` bytes of an open file from ``offset`` as a request's body.

    Sets no header: the caller has set the status, ``Content-Length`` and the
    rest. ``start()`` sends, then finishes the request; the file is closed once
    the body is sent or the client is gone.

    With ``sendfile``: the headers and :data:`FIRST_CHUNK` go through the
    transport; once it has flushed them (it resumes this push producer), the
    rest goes by ``sendfile`` straight to the socket. When the socket is full,
    a duplicate of its descriptor is watched for writability (the reactor takes
    one watcher per descriptor, and the transport is the socket's).
    """

    def __init__(self, request: Any, file: BinaryIO, offset: int, length: int) -> None:
        self._request = request
        self._file = file
        self._fd = file.fileno()
        self._offset = offset
        self._end = offset + length
        # A body sent whole with the headers never needs the socket.
        self._socket = plain_socket(request) if length > FIRST_CHUNK else None
        #: The transport's buffer is known to be empty: sendfile's bytes may follow.
        self._flushed = False
        self._paused = False
        self._blocked = False
        self._registered = False
        self._open = True
        self._writable: _Writable | None = None

    def start(self) -> None:
        """Send the body (at once if it is small, else as the client reads it)."""
        if getattr(self._request, "_disconnected", False):
            self._close()
            return
        if self._end - self._offset <= FIRST_CHUNK:
            if self._end > self._offset:
                self._copy(self._end - self._offset)
            if self._open:
                self._finish()
            return
        self._request.notifyFinish().addErrback(lambda _: self._close())
        self._request.registerProducer(self, True)
        self._registered = True
        self._pump()

    # IPushProducer, driven by the transport through the HTTP channel.

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        if self._paused:
            # A paused producer is resumed when the transport's buffer is empty.
            self._flushed = True
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        self._close()

    def _pump(self) -> None:
        while self._open and not self._paused and not self._blocked:
            left = self._end - self._offset
            if left <= 0:
                self._finish()
            elif self._socket is not None and self._flushed:
                self._sendfile(min(left, SENDFILE_COUNT))
            else:
                chunk = FIRST_CHUNK if self._socket is not None else COPY_CHUNK
                self._copy(min(left, chunk))

    def _copy(self, count: int) -> None:
        """Read ``count`` bytes and write them through the transport."""
        data = os.pread(self._fd, count, self._offset)
        if not data:
            self._truncated()
            return
        self._offset += len(data)
        self._flushed = False
        self._request.write(data)

    def _sendfile(self, count: int) -> None:
        """Send up to ``count`` bytes with ``sendfile``; wait if the socket is full."""
        sendfile = getattr(os, "sendfile", None)
        if sendfile is None:
            self._copy_from_now_on()
            return
        assert self._socket is not None
        try:
            sent = sendfile(self._socket, self._fd, self._offset, count)
        except BlockingIOError:
            self._wait_writable()
            return
        except OSError as error:
            if error.errno in _UNSUPPORTED:
                self._copy_from_now_on()
            else:
                self._lost(error)
            return
        if sent == 0:
            self._truncated()
            return
        self._offset += sent
        self._request.sentLength += sent
        if sent < count:
            self._wait_writable()  # the socket took what it had room for

    def _wait_writable(self) -> None:
        self._blocked = True
        if self._writable is None:
            assert self._socket is not None
            reactor = self._request.channel.transport.reactor
            self._writable = _Writable(reactor, os.dup(self._socket), self)
        self._writable.watch()

    def writable(self) -> None:
        """The socket has room again."""
        self._blocked = False
        self._pump()

    def writer_lost(self, reason: Failure) -> None:
        """The reactor saw the socket fail while waiting for room: the client is gone."""
        self._abort()

    def _copy_from_now_on(self) -> None:
        self._socket = None
        self._blocked = False
        self._drop_writable()

    def _finish(self) -> None:
        request = self._request
        self._close()
        if self._registered:
            request.unregisterProducer()
        request.finish()

    def _truncated(self) -> None:
        """The file ended before ``Content-Length``: cut the client off."""
        log.warn(
            "Stored file {name} ended early at byte {offset}",
            name=getattr(self._file, "name", "?"),
            offset=self._offset,
        )
        self._abort()

    def _lost(self, error: BaseException) -> None:
        if getattr(error, "errno", None) not in _GONE:
            log.warn("Sending a file failed: {error}", error=error)
        self._abort()

    def _abort(self) -> None:
        transport = self._request.transport
        self._close()
        if transport is not None:
            transport.abortConnection()

    def _drop_writable(self) -> None:
        if self._writable is not None:
            self._writable.close()
            self._writable = None

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._drop_writable()
            self._file.close()


@implementer(IPushProducer)
class FileRest:
    """Sends bytes ``offset`` to ``end`` of an open file to a plain TCP
    transport's socket by ``sendfile`` as the socket drains (the rest of an
    answer the socket did not take at once), as nginx does, instead of
    copying them through the transport; ``sent()`` once all are sent.

    Uses duplicates of the file's and the socket's descriptors (the file may
    be closed by its owner meanwhile). On an error the connection is aborted.
    As a push producer of the connection, it stops when the client is gone.
    """

    def __init__(
        self, transport: Any, file: int, offset: int, end: int, sent: Any
    ) -> None:
        self._transport = transport
        self._file = os.dup(file)
        self._offset = offset
        self._end = end
        self._sent = sent
        self._paused = False
        self._open = True
        self._writable = _Writable(
            transport.reactor, os.dup(transport.socket.fileno()), self
        )

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def pauseProducing(self) -> None:
        self._paused = True

    def stopProducing(self) -> None:
        self._close()

    def _pump(self) -> None:
        while self._open and not self._paused:
            if self._offset >= self._end:
                self._close()
                self._sent()
                return
            try:
                done = os.sendfile(
                    self._writable.fileno(),
                    self._file,
                    self._offset,
                    min(self._end - self._offset, SENDFILE_COUNT),
                )
            except BlockingIOError:
                self._writable.watch()  # until the body is sent
                return
            except OSError as error:
                self._lost(error)
                return
            if not done:
                self._lost(None)  # the file is shorter than it was
                return
            self._offset += done

    def writable(self) -> None:
        """The socket has room again."""
        self._pump()

    def writer_lost(self, reason: Failure) -> None:
        self._lost(None)

    def _lost(self, error: BaseException | None) -> None:
        if error is not None and getattr(error, "errno", None) not in _GONE:
            log.warn("Sending a page failed: {error}", error=error)
        self._close()
        self._transport.abortConnection()

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._writable.close()
            os.close(self._file)


@implementer(IWriteDescriptor)
class _Writable:
    """A duplicate of a socket's descriptor, watched for room by the reactor."""

    def __init__(self, reactor: Any, fd: int, sender: FileSender) -> None:
        self._reactor = reactor
        self._fd = fd
        self._sender = sender
        self._watched = False

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "FileSender"

    def watch(self) -> None:
        if not self._watched and self._fd >= 0:
            self._watched = True
            self._reactor.addWriter(self)

    def doWrite(self) -> None:
        # Stay watched (level-triggered) until the body is sent: the next
        # partial send comes soon, and each add/remove is a system call.
        self._sender.writable()
        return None

    def connectionLost(self, reason: Failure) -> None:
        self._watched = False
        self._sender.writer_lost(reason)

    def unwatch(self) -> None:
        """Stop watching (a sender with nothing to send yet must not be told
        of room over and over: the socket has room, and the reactor would spin)."""
        if self._watched:
            self._watched = False
            self._reactor.removeWriter(self)

    def close(self) -> None:
        self.unwatch()
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
