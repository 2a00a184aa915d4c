# -*- test-case-name: tests.test_proxy -*-
"""Serving archives: from disk with ``static.File``, or while they download."""

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web import http, pages, resource, static
from twisted.web.iweb import IRequest
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from pypicache.errors import PypicacheError
from pypicache.proxy.download import Download
from pypicache.storage.records import StoredFile

log = Logger()

CHUNK_SIZE = 64 * 1024
IMMUTABLE = b"public, max-age=31536000, immutable"


def etag_of(hashes: dict[str, str]) -> bytes | None:
    """The ETag of a file: its sha256, quoted."""
    digest = hashes.get("sha256")
    return f'"{digest}"'.encode() if digest else None


def set_file_headers(request: IRequest, hashes: dict[str, str]) -> bool:
    """Set the caching headers of an archive; return True if the client's copy is current."""
    request.setHeader(b"cache-control", IMMUTABLE)
    request.setHeader(b"content-type", b"application/octet-stream")
    tag = etag_of(hashes)
    return tag is not None and request.setETag(tag) is http.CACHED


class ArchiveFile(static.File):
    """A stored file: Range and HEAD from ``static.File``, never a Content-Encoding."""

    contentEncodings: dict[str, str] = {}
    contentTypes: dict[str, str] = {}
    isLeaf = True

    def __init__(
        self, path: str, content_type: str = "application/octet-stream"
    ) -> None:
        super().__init__(path, defaultType=content_type)

    def directoryListing(self) -> resource.IResource:
        return pages.notFound()


def serve_stored(request: IRequest, stored: StoredFile) -> Any:
    """Answer a request for a stored archive: ``304``, or the file."""
    if set_file_headers(request, stored.info.hashes):
        return b""
    return ArchiveFile(stored.path.path)


@implementer(IPushProducer)
class _Tail:
    """Sends one client the bytes of a download as they reach the temporary file.

    A push producer: it writes whatever is readable until the transport pauses
    it, then waits to be resumed, or for the download to make progress.
    """

    def __init__(self, request: Any, download: Download) -> None:
        self.request = request
        self.download = download
        self.offset = 0
        self.paused = False
        self.open = True
        self.unwatch = download.watch(self._pump)
        request.notifyFinish().addErrback(lambda _: self._close())
        request.registerProducer(self, True)
        self._pump()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._pump()

    def stopProducing(self) -> None:
        self._close()

    def _pump(self) -> None:
        download = self.download
        if not self.open:
            return
        if download.error is not None:
            self._fail(download.error)
            return
        while self.open and not self.paused and self.offset < download.readable:
            data = download.read(
                self.offset, min(CHUNK_SIZE, download.readable - self.offset)
            )
            if not data:
                break
            self.offset += len(data)
            self.request.write(data)
        if (
            self.open
            and download.stored is not None
            and self.offset >= download.written
        ):
            self._close()
            self.request.unregisterProducer()
            self.request.finish()

    def _close(self) -> None:
        if self.open:
            self.open = False
            self.unwatch()

    def _fail(self, error: PypicacheError) -> None:
        self._close()
        self.request.unregisterProducer()
        if not self.request.startedWriting:
            for name in (b"content-length", b"etag", b"cache-control"):
                self.request.responseHeaders.removeHeader(name)
            self.request.write(error.apply(self.request))
            self.request.finish()
        else:
            # The client holds part of the body: cut it off so that it can never
            # take what it has for a complete file.
            self.request.transport.abortConnection()


class DownloadStream(resource.Resource):
    """A file still downloading: streamed to this client at its own pace."""

    isLeaf = True

    def __init__(self, download: Download) -> None:
        super().__init__()
        self.download = download

    def render_GET(self, request: Any) -> Any:
        download = self.download
        if set_file_headers(request, download.info.hashes):
            return b""
        if request.getHeader(b"range"):
            # Ranges are answered from the stored file, once it is complete.
            done = Deferred.fromCoroutine(download.stored_file())
            request.notifyFinish().addErrback(lambda _: done.cancel())
            done.addCallbacks(
                lambda stored: request.render(ArchiveFile(stored.path.path)),
                lambda f: _error(request, f),
            )
            done.addErrback(lambda f: None)  # the client went away
            return NOT_DONE_YET
        if download.length is not None:
            request.setHeader(b"content-length", str(download.length).encode())
        _Tail(request, download)
        return NOT_DONE_YET


def _error(request: Any, failure: Any) -> None:
    error = failure.value
    if not isinstance(error, PypicacheError):
        failure.raiseException()
    for name in (b"etag", b"cache-control"):
        request.responseHeaders.removeHeader(name)
    request.write(error.apply(request))
    request.finish()
