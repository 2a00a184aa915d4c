# -*- test-case-name: tests.test_upstream_faults -*-
"""Reading upstream bodies: time limits while they arrive, and decoding pages.

:class:`BodyReader` hands each chunk on as it comes, and gives up on an
upstream that stops sending (an idle timeout), that sends slower than a
minimum rate, or that takes longer than a deadline in all. :func:`read_page`
turns a page body into a :class:`~pypicache.index.model.ProjectPage` (gunzip
with a size limit, then parse): it is CPU work, run in a thread.
"""

import zlib
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from pypicache.errors import UpstreamError, UpstreamTimeout
from pypicache.index.model import ProjectPage
from pypicache.index.simple import parse_page


class BodyReader(Protocol):
    """Hands each chunk of a body to a callback, within time limits.

    :param idle: seconds without a byte before giving up; also the window over
        which ``min_rate`` is measured.
    :param deadline: seconds the whole body may take (``None``: no limit).
    :param min_rate: bytes per second the body must average over each window.
    """

    def __init__(
        self,
        on_chunk: Callable[[bytes], Any],
        clock: IReactorTime,
        idle: float,
        deadline: float | None = None,
        min_rate: float = 0,
    ) -> None:
        self.on_chunk = on_chunk
        self.size = 0
        self.error: Exception | None = None
        self.done: Deferred[None] = Deferred()
        self.idle = idle
        self.min_rate = min_rate
        self._clock = clock
        self._window_start = 0
        self._timers: list[IDelayedCall] = [clock.callLater(idle, self._stalled)]
        if deadline is not None:
            # Already past it (the headers took it all): give up at once.
            self._timers.append(
                clock.callLater(max(0.0, deadline), self._too_long, deadline)
            )
        if min_rate > 0:
            self._timers.append(clock.callLater(idle, self._check_rate))

    def _abort(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
            if self.transport is not None:
                self.transport.stopProducing()

    def _stalled(self) -> None:
        self._abort(UpstreamTimeout(f"Upstream stalled for {self.idle:g}s mid-body"))

    def _too_long(self, deadline: float) -> None:
        self._abort(
            UpstreamTimeout(
                f"Upstream took longer than {max(0.0, deadline):g}s "
                f"({self.size} bytes read)"
            )
        )

    def _check_rate(self) -> None:
        received = self.size - self._window_start
        if received < self.min_rate * self.idle:
            self._abort(
                UpstreamTimeout(
                    f"Upstream too slow: {received} bytes in {self.idle:g}s, "
                    f"below {self.min_rate:g} bytes/s"
                )
            )
            return
        self._window_start = self.size
        self._timers.append(self._clock.callLater(self.idle, self._check_rate))

    def flow(self, on: bool) -> None:
        """Pause (``False``) or resume (``True``) the body: while its bytes
        cannot be taken as fast as they come (the disk lags)."""
        if self.transport is None or self.error is not None:
            return
        if on:
            self.transport.resumeProducing()
            # Paused by us, not stalled upstream: its idle time starts again.
            if self._timers[0].active():
                self._timers[0].reset(self.idle)
        else:
            self.transport.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.error is not None:
            return
        self._timers[0].reset(self.idle)
        self.size += len(data)
        try:
            self.on_chunk(data)
        except Exception as e:
            self._abort(e)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        if self.error is not None:
            self.done.errback(self.error)
        elif reason.check(ResponseDone, PotentialDataLoss):
            # PotentialDataLoss: no Content-Length; hashes and sizes tell.
            self.done.callback(None)
        else:
            self.done.errback(
                UpstreamError(
                    f"Upstream connection broke mid-body ({self.size} bytes read)"
                )
            )


def discard() -> Protocol:
    """A body protocol that drops everything (to release unused responses)."""
    return Protocol()


class _Abort(Protocol):
    def connectionMade(self) -> None:
        self.transport.stopProducing()


def abort() -> Protocol:
    """A body protocol that drops the connection at once (for unwanted large bodies)."""
    return _Abort()


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a whole gzip body, refusing more than ``limit`` bytes out.

    :raises ValueError: corrupt or truncated data, or too large once decompressed.
    """
    decoder = zlib.decompressobj(wbits=31)
    try:
        out = decoder.decompress(body, limit + 1)
    except zlib.error as e:
        raise ValueError(f"corrupt gzip body: {e}") from e
    if len(out) > limit:
        raise ValueError(f"larger than {limit} bytes once decompressed")
    if not decoder.eof:
        raise ValueError("truncated gzip body")
    return out


#: Pages up to this size (decoded) are parsed on the reactor thread: a few
#: dozen files, well under a millisecond, less than handing them to a thread
#: and back costs (parsing holds the GIL anyway: a thread adds no parallelism).
SMALL_PAGE = 8 * 1024


def read_small_page(
    body: bytes,
    encoding: str | None,
    content_type: str,
    page_url: str,
    project: str,
    limit: int,
) -> ProjectPage | None:
    """:func:`read_page` for a page of at most :data:`SMALL_PAGE` bytes decoded;
    ``None`` for a larger one (or one that does not decompress), to be read in
    a thread."""
    if len(body) > SMALL_PAGE:
        return None
    if encoding in ("gzip", "x-gzip"):
        decoder = zlib.decompressobj(wbits=31)
        try:
            decoded = decoder.decompress(body, SMALL_PAGE + 1)
        except zlib.error:
            return None
        if len(decoded) > SMALL_PAGE or not decoder.eof:
            return None
        body, encoding = decoded, None
    return read_page(body, encoding, content_type, page_url, project, limit)


def read_page(
    body: bytes,
    encoding: str | None,
    content_type: str,
    page_url: str,
    project: str,
    limit: int,
) -> ProjectPage:
    """Decode and parse an upstream project page (CPU work: run it in a thread).

    :raises UpstreamError: an encoding we did not ask for, a corrupt or
        oversized body, or a page that is not a simple API page.
    """
    try:
        if encoding in ("gzip", "x-gzip"):
            body = gunzip(body, limit)
        elif encoding not in (None, "", "identity"):
            raise ValueError(f"Content-Encoding {encoding!r}, which we did not ask for")
        if not body.strip():
            raise ValueError("empty body")
        return parse_page(body, content_type, page_url, project)
    except Exception as e:
        # Whatever the parsers make of hostile bytes (html.parser raises
        # AssertionError on "<![ x ]>") is the upstream's fault, never a 500.
        raise UpstreamError(
            f"Unreadable page from upstream for {project!r}: "
            f"{type(e).__name__}: {str(e)[:200]}"
        ) from e
