# -*- test-case-name: tests.test_sendfile -*-
"""A file still downloading, sent with ``os.sendfile`` as its bytes are written.

On a plain TCP connection, with the length known, the bytes of a download go
from the page cache to the client's socket as the download writes them, as
:class:`~pypicache.web.sendfile.FileSender` sends a stored file: no read into
Python, no copy through the transport's buffer, as much per call as the socket
takes (Twisted's transport sends at most 128 KB per turn of the reactor, which
capped a cold large file). The last byte still waits until the whole file is
verified (not until it is stored); a download failed before that cuts the
client off.
"""

from typing import Any

from pypicache.errors import PypicacheError
from pypicache.storage.growing import Download
from pypicache.web.sendfile import FIRST_CHUNK, FileSender, plain_socket


def can_send(request: Any, download: Download) -> bool:
    """Whether :class:`DownloadSender` serves this client: a plain TCP socket,
    a known length worth it, and this process's own temporary file (one
    followed from another process may be swapped for ours while empty)."""
    return (
        download.length is not None
        and download.length > FIRST_CHUNK
        and not download.following
        and plain_socket(request) is not None
    )


class DownloadSender(FileSender):
    """Sends a download's bytes as they are written (see the module)."""

    def __init__(self, request: Any, download: Download) -> None:
        assert download.length is not None
        super().__init__(request, download.reader(), 0, download.length)
        self._download = download
        self._unwatch = download.watch(self._grew)

    def start(self) -> None:
        if getattr(self._request, "_disconnected", False):
            self._close()
            return
        self._request.notifyFinish().addErrback(lambda _: self._close())
        self._request.registerProducer(self, True)
        self._registered = True
        self._pump()

    def _grew(self) -> None:
        if self._open:
            self._pump()

    def _pump(self) -> None:
        download = self._download
        while self._open and not self._paused and not self._blocked:
            if download.cut_off:
                assert download.error is not None
                self._failed(download.error)
                return
            left = download.readable - self._offset
            if left <= 0:
                if download.complete and self._offset >= self._end:
                    self._finish()
                elif self._writable is not None:
                    # Until the download writes more (:meth:`_grew`): a
                    # socket with room would wake the reactor without end.
                    self._writable.unwatch()
                return
            if self._socket is not None and self._flushed:
                self._sendfile(min(left, 16 * 1024 * 1024))
            else:
                self._copy(min(left, FIRST_CHUNK))

    def _failed(self, error: PypicacheError) -> None:
        request = self._request
        if request.startedWriting:
            # The client holds part of the body: cut it off so that it can
            # never take what it has for a complete file.
            self._abort()
            return
        self._close()
        request.unregisterProducer()
        for name in (b"content-length", b"etag", b"cache-control"):
            request.responseHeaders.removeHeader(name)
        request.write(error.apply(request))
        request.finish()

    def _close(self) -> None:
        was_open = self._open
        super()._close()
        if was_open:
            self._unwatch()
