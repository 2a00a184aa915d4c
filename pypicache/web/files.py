# -*- test-case-name: tests.test_proxy -*-
"""Serving archives: from disk with ``static.File``, or while they download."""

import os
import re
import stat
from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web import http, pages, resource, static
from twisted.web.iweb import IRequest
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from pypicache.errors import PypicacheError
from pypicache.storage.growing import Download
from pypicache.storage.records import Opened, StoredFile
from pypicache.web.sendfile import FileSender
from pypicache.web.tailsend import DownloadSender, can_send

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


#: Most ranges answered in one request; with more, the whole file is sent
#: (RFC 9110 lets a server ignore a Range header), so a request of a few KB
#: cannot make the daemon send a file thousands of times.
MAX_RANGES = 16

_RANGE = re.compile(rb"^(\d*)-(\d*)$")


def byte_spans(value: bytes, size: int) -> list[tuple[int, int]] | None:
    """The ``(offset, length)`` spans to send for a ``Range`` header on ``size`` bytes.

    Overlapping and adjacent ranges are merged (in ascending order), so no byte
    is sent twice; a suffix range longer than the file is the whole file.

    :returns: ``None`` to ignore the header and send the whole file (it is
        malformed, not in bytes, or has more than :data:`MAX_RANGES` ranges);
        ``[]`` if no range overlaps the file (a ``416``).
    """
    unit, equals, ranges = value.partition(b"=")
    if not equals or unit.strip().lower() != b"bytes":
        return None
    count = 0
    spans: list[tuple[int, int]] = []
    for text in ranges.split(b","):
        text = text.strip()
        if not text:
            continue
        count += 1
        match = _RANGE.match(text)
        if match is None or match.group(1) == match.group(2) == b"":
            return None
        first, last = match.group(1), match.group(2)
        if first:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
            if last and int(last) < start:
                return None
        else:
            start, end = max(0, size - int(last)), size - 1
            if int(last) == 0:
                continue
        if start < size:
            spans.append((start, end))
    if count > MAX_RANGES:
        return [] if not spans else None
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end - start + 1) for start, end in merged]


class ArchiveFile(static.File):
    """A stored file: HEAD from ``static.File``, never a Content-Encoding.

    Ranges are planned by :func:`byte_spans` rather than by ``static.File``,
    which honours any number of ranges (each sent in full) and turns a suffix
    range longer than the file into a negative offset.
    """

    contentEncodings: dict[str, str] = {}
    contentTypes: dict[str, str] = {}
    isLeaf = True

    def __init__(
        self, path: str, content_type: str = "application/octet-stream"
    ) -> None:
        super().__init__(path, defaultType=content_type)

    def directoryListing(self) -> resource.IResource:
        return pages.notFound()

    def makeProducer(self, request: Any, fileForReading: Any) -> Any:
        """The producer of the body for this request's ``Range``; sets status and headers.

        One range or none: a :class:`FileSender` (``sendfile`` where the
        connection allows it). Several: ``static.File``'s multipart producer.
        """
        size = self.getFileSize()
        value = request.getHeader(b"range")
        spans = None if value is None else byte_spans(value, size)
        if spans is None:
            self._setContentHeaders(request, size)
            request.setResponseCode(http.OK)
            return FileSender(request, fileForReading, 0, size)
        if not spans:
            request.setResponseCode(http.REQUESTED_RANGE_NOT_SATISFIABLE)
            request.setHeader(b"content-range", b"bytes */%d" % (size,))
            self._setContentHeaders(request, 0)
            return FileSender(request, fileForReading, 0, 0)
        if len(spans) == 1:
            offset, length = spans[0]
            request.setResponseCode(http.PARTIAL_CONTENT)
            request.setHeader(b"content-range", self._contentRange(offset, length))
            self._setContentHeaders(request, length)
            return FileSender(request, fileForReading, offset, length)
        parts = self._doMultipleRangeRequest(
            request, [(offset, offset + length - 1) for offset, length in spans]
        )
        return static.MultipleRangeStaticProducer(request, fileForReading, parts)


class StoredArchive(resource.Resource):
    """A stored file, answered with the fewest steps when the request is plain.

    A ``GET`` or ``HEAD`` without ``Range`` sets what :class:`ArchiveFile`
    sets, in its order, from one ``open`` and one ``fstat``; anything else (a
    range, a file gone or unreadable) is :class:`ArchiveFile`'s to answer.
    """

    isLeaf = True

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def render_GET(self, request: Any) -> Any:
        if request.getHeader(b"range") is not None:
            return self._as_file(request)
        try:
            file = open(self._path, "rb", buffering=0)
        except OSError:
            return self._as_file(request)
        try:
            status = os.fstat(file.fileno())
        except OSError:
            status = None
        if status is None or not stat.S_ISREG(status.st_mode):
            file.close()
            return self._as_file(request)
        size = status.st_size
        request.setHeader(b"accept-ranges", b"bytes")
        if request.setLastModified(status.st_mtime) is http.CACHED:
            file.close()
            return b""
        request.setHeader(b"content-length", b"%d" % (size,))
        request.setHeader(b"content-type", b"application/octet-stream")
        if request.method == b"HEAD":
            file.close()
            return b""
        request.setResponseCode(http.OK)
        FileSender(request, file, 0, size).start()
        return NOT_DONE_YET

    render_HEAD = render_GET

    def _as_file(self, request: Any) -> Any:
        return ArchiveFile(self._path).render(request)


def serve_stored(request: IRequest, stored: StoredFile, opened: Opened) -> Any:
    """Answer a request for a stored archive: ``304``, the file the store
    opened (sent as it arrives, if it is still arriving), or a redirect to
    where the store says it is."""
    if set_file_headers(request, stored.info.hashes):
        return b""
    if opened.url is not None:
        request.setResponseCode(http.FOUND)
        request.setHeader(b"location", opened.url.encode())
        return b""
    if opened.download is not None and opened.download.stored is None:
        # Ranges wait for the complete, verified copy at ``path``.
        return DownloadStream(opened.download, lambda _: succeed(Opened(opened.path)))
    return StoredArchive(opened.path.path)


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
        if download.cut_off:
            assert download.error is not None
            self._fail(download.error)
            return
        if download.whole_unverified:
            # Every byte is here, the last held back until verified: all go
            # together then (a small file arrives at once: one write, not two).
            return
        while self.open and not self.paused and self.offset < download.readable:
            data = download.read(
                self.offset, min(CHUNK_SIZE, download.readable - self.offset)
            )
            if not data:
                break
            self.offset += len(data)
            self.request.write(data)
        if self.open and download.complete and self.offset >= download.written:
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

    def __init__(
        self,
        download: Download,
        open_stored: "Callable[[StoredFile], Deferred[Opened]]",
    ) -> None:
        super().__init__()
        self.download = download
        #: How the stored file is opened once complete (the store's ``open``).
        self.open_stored = open_stored

    async def _opened(self) -> Opened:
        return await self.open_stored(await self.download.stored_file())

    def render_HEAD(self, request: Any) -> bytes:
        """The headers of the file: its length if known; no body, no waiting."""
        if set_file_headers(request, self.download.info.hashes):
            return b""
        request.setHeader(b"accept-ranges", b"bytes")
        if self.download.length is not None:
            request.setHeader(b"content-length", b"%d" % (self.download.length,))
        return b""

    def render_GET(self, request: Any) -> Any:
        download = self.download
        if set_file_headers(request, download.info.hashes):
            return b""
        request.setHeader(b"accept-ranges", b"bytes")
        if request.getHeader(b"range"):
            # Ranges are answered from the stored file once it is complete and
            # verified (a part of unverified bytes could look complete).
            done = Deferred.fromCoroutine(self._opened())
            request.notifyFinish().addErrback(lambda _: done.cancel())
            done.addCallback(lambda opened: _render_stored(request, opened))
            done.addErrback(lambda f: _error(request, f))
            return NOT_DONE_YET
        if download.length is not None:
            request.setHeader(b"content-length", str(download.length).encode())
        if can_send(request, download):
            DownloadSender(request, download).start()
        else:
            _Tail(request, download)
        return NOT_DONE_YET


def _render_stored(request: Any, opened: Opened) -> None:
    """Answer from the stored file, now that the download is complete."""
    if not request.finished and not getattr(request, "_disconnected", False):
        request.render(ArchiveFile(opened.path.path))


def _error(request: Any, failure: Any) -> None:
    """Answer a failed wait for the stored file; never leave the request hanging."""
    error = failure.value
    if isinstance(error, CancelledError) or request.finished:
        return  # the client went away
    if not isinstance(error, PypicacheError):
        log.failure("Answering a range of a download failed", failure)
        error = PypicacheError("Internal error; the daemon's log has the details.")
    if request.startedWriting:
        request.transport.abortConnection()
        return
    for name in (b"etag", b"cache-control", b"accept-ranges"):
        request.responseHeaders.removeHeader(name)
    request.write(error.apply(request))
    request.finish()
