# -*- test-case-name: tests.test_bigpage -*-
"""Large pre-built bodies kept in an anonymous memory file, sent with ``sendfile``.

A large rendered page sent from Python bytes costs a ``send`` that copies it
from the interpreter's memory for every answer. :class:`BodyFile` keeps a
copy of such a body in a ``memfd`` (written once, when the page is rendered),
and :class:`~pypicache.web.sendfile.FileSender` sends it from there with
``os.sendfile`` on plain TCP connections, as it sends stored files. Behind TLS
(or on any other transport) the body's bytes are written as before.

Each answer sends from its own duplicate of the descriptor (:meth:`BodyFile.open`),
so the cache may close the file at any time (:meth:`BodyFile.close`) without
cutting an answer short.
"""

import os
from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred
from twisted.web.server import NOT_DONE_YET
from twisted.web.resource import Resource

from pypicache.web.sendfile import FIRST_CHUNK, FileSender, plain_socket

#: Bodies at least this large are kept in a memory file. Below it, most of the
#: body goes with the headers (the first :data:`FIRST_CHUNK` bytes always do),
#: and ``sendfile`` would save little for its extra system calls.
FILE_MIN = 2 * FIRST_CHUNK


class BodyFile:
    """A body's bytes in an anonymous memory file (``os.memfd_create``)."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self.size = size

    @classmethod
    def of(cls, pieces: Iterable[bytes]) -> "BodyFile | None":
        """A memory file holding ``pieces``, or ``None`` where there is none to be had."""
        memfd_create = getattr(os, "memfd_create", None)
        if memfd_create is None:
            return None
        try:
            fd = memfd_create("pypicache-body", os.MFD_CLOEXEC)
        except OSError:
            return None
        size = 0
        try:
            for piece in pieces:
                view = memoryview(piece)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                    size += written
        except OSError:
            os.close(fd)
            return None
        return cls(fd, size)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def open(self) -> "_Opened | None":
        """A file object for one answer (its own descriptor), or ``None`` once closed."""
        if self._fd < 0:
            return None
        try:
            return _Opened(os.dup(self._fd))
        except OSError:
            return None

    def close(self) -> None:
        """Close the cache's descriptor; answers under way keep their own."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class _Opened:
    """One answer's descriptor of a :class:`BodyFile`, closed by the sender."""

    name = "<rendered body>"

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class FileBodyResource(Resource):
    """twisted.web's answer with a body kept in a :class:`BodyFile`: the headers
    are set; the body goes by ``sendfile`` on a plain TCP connection, else as
    ``fallback`` (a resource writing the bytes) sends it."""

    isLeaf = True

    def __init__(self, file: BodyFile, length: int, fallback: Resource) -> None:
        super().__init__()
        self._file = file
        self._length = length
        self._fallback = fallback

    def render(self, request: Any) -> Any:
        opened = self._file.open() if plain_socket(request) is not None else None
        if opened is None:
            return self._fallback.render(request)
        FileSender(request, opened, 0, self._length).start()  # type: ignore[arg-type]
        return NOT_DONE_YET


class LaneRequest:
    """What :class:`FileSender` needs of a request, for an answer of the fast lane.

    :param channel: the connection's ``HTTPChannel``; :param prefix: the status
        line and headers, sent with the first bytes of the body.
    :ivar sent: called once the whole body is written.
    """

    def __init__(self, channel: Any, prefix: bytes) -> None:
        self.channel = channel
        self.transport = channel.transport
        self.sentLength = 0
        self.sent: Callable[[], None] = lambda: None
        self._prefix = prefix
        self._finished: Deferred[None] = Deferred()

    def notifyFinish(self) -> "Deferred[None]":
        return self._finished

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.channel.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.channel.unregisterProducer()

    def write(self, data: bytes) -> None:
        if self._prefix:
            data, self._prefix = self._prefix + data, b""
        self.transport.write(data)

    def finish(self) -> None:
        self.sent()
