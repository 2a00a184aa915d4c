# -*- test-case-name: tests.test_access_log -*-
"""The access log: one line per request, in Apache's combined log format.

Without ``--access-log``, the lines go to twistd's log, gathered for
:data:`BATCH_WINDOW` seconds into one log event (:class:`AccessLines`): a log
event costs twistd's observer far more than the line (its time stamp and
format, about a third of the CPU of a small cached page), and one event per
request was the largest single cost of the hot reads. With ``--access-log
FILE``, the lines go to ``FILE`` alone (what log analysers read), kept in
memory and written at most once a second (and when :data:`BUFFER_LIMIT` is
reached, and at stop).

Rotation: at each write the file is checked, and reopened when it was moved or
removed (as ``logrotate`` does, with or without ``create``), so no signal is
needed; twistd already uses ``SIGUSR1`` for its own log file.
"""

import functools
import os
from typing import Any, Callable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.web.http import HTTPFactory, _genericHTTPChannelProtocolFactory
from twisted.web.iweb import IRequest
from twisted.web.server import Site

from pypicache.web.fastlane import COLD_CALL, fast_protocol
from pypicache.web.hits import CACHE_HIT
from pypicache.web.metrics import Metrics, route_kind
from pypicache.web.ready import ReadyAnswers

log = Logger()

#: Seconds between writes of the lines kept in memory.
FLUSH_INTERVAL = 1.0

#: Bytes of lines kept before they are written at once.
BUFFER_LIMIT = 64 * 1024

#: Seconds the access lines of twistd's log are gathered into one event.
BATCH_WINDOW = 0.2

#: Access lines of one event of twistd's log at most.
BATCH_LINES = 500


def _field(value: bytes | None) -> str:
    """A request header as a quoted field's text: ``-`` if missing, quotes and
    backslashes escaped, control characters as ``\\xNN``."""
    if not value:
        return "-"
    text = value.decode("latin-1")
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return _escaped(text)


@functools.lru_cache(maxsize=64)
def _escaped(text: str) -> str:
    """:func:`_field`'s escaping, remembered: a client sends the same
    ``User-Agent`` with every request, and uv's (JSON, quotes and all) took
    half a millisecond per request, a character at a time."""
    return "".join(
        (
            "\\" + c
            if c in '"\\'
            else (c if c.isprintable() and ord(c) < 0x7F else f"\\x{ord(c):02x}")
        )
        for c in text
    )


def combined_formatter(
    client_address: Callable[[IRequest], str],
) -> Callable[[str, IRequest], str]:
    """A twisted.web log formatter of Apache's combined log format.

    ``host - - [time] "METHOD URI PROTOCOL" status bytes "referer" "user-agent"``;
    ``bytes`` is what was sent of the body (``-`` for none).

    :param client_address: the client's address for a request (as the access
        policy sees it: with ``--trust-proxy``, the one the proxy reports).
    """

    def format_line(timestamp: str, request: Any) -> str:
        length = request.sentLength
        return '%s - - %s "%s %s %s" %d %s "%s" "%s"' % (
            client_address(request) or "-",
            timestamp,
            _field(request.method),
            _field(request.uri),
            _field(request.clientproto),
            request.code,
            length if length else "-",
            _field(request.getHeader(b"referer")),
            _field(request.getHeader(b"user-agent")),
        )

    return format_line


class BufferedLogFile:
    """An append-only text file written in batches, reopened when rotated away.

    Has what twisted.web needs of a log file: ``write(str)`` and ``close()``.
    """

    def __init__(
        self,
        path: str,
        clock: IReactorTime,
        interval: float = FLUSH_INTERVAL,
        limit: int = BUFFER_LIMIT,
    ) -> None:
        self.path = path
        self._limit = limit
        self._lines: list[str] = []
        self._size = 0
        self._fd = -1
        self._identity: tuple[int, int] | None = None
        self._open()
        self._timer = LoopingCall(self.flush)
        self._timer.clock = clock
        self._timer.start(interval, now=False)

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        stat = os.fstat(fd)
        self._fd, self._identity = fd, (stat.st_dev, stat.st_ino)

    def _reopen_if_rotated(self) -> None:
        """Open the path again if the file there is no longer ours (moved, removed)."""
        try:
            stat = os.stat(self.path)
            current: tuple[int, int] | None = (stat.st_dev, stat.st_ino)
        except FileNotFoundError:
            current = None
        if current != self._identity:
            os.close(self._fd)
            self._fd = -1
            self._open()

    def write(self, line: str) -> None:
        """Keep a line (with its newline) for the next write."""
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self._limit:
            self.flush()

    def flush(self) -> None:
        """Write the lines kept so far (to a new file if the old one was rotated)."""
        if not self._lines or self._fd < 0:
            return
        data = "".join(self._lines).encode("utf-8", "backslashreplace")
        self._lines.clear()
        self._size = 0
        try:
            self._reopen_if_rotated()
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as e:
            log.error(
                "Writing the access log {path} failed: {error}",
                path=self.path,
                error=e,
            )

    def close(self) -> None:
        """Write what is kept and close the file."""
        if self._timer.running:
            self._timer.stop()
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class AccessLines:
    """The access log without ``--access-log``: lines gathered and given to
    twistd's log as one event (namespace ``pypicache.web.accesslog``) per
    ``window`` seconds, or per ``limit`` lines, and when the site stops.

    The event's text is the lines, one a line: twistd's log shows the first
    after the event's time stamp, the others on the lines below it, indented
    by a tab (each line holds its own time). Has what twisted.web needs of a
    log file: ``write(str)`` and ``close()``.
    """

    def __init__(
        self,
        clock: IReactorTime,
        window: float = BATCH_WINDOW,
        limit: int = BATCH_LINES,
    ) -> None:
        self._clock = clock
        self._window = window
        self._limit = limit
        self._lines: list[str] = []
        self._call: Any = None

    def write(self, line: str) -> None:
        """Keep a line (its newline dropped) for the next event."""
        self._lines.append(line[:-1] if line.endswith("\n") else line)
        if len(self._lines) >= self._limit:
            self.flush()
        elif self._call is None:
            self._call = self._clock.callLater(self._window, self.flush)

    def flush(self) -> None:
        """Log the lines kept so far as one event."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._lines:
            lines, self._lines = self._lines, []
            log.info("{access_lines}", access_lines="\n".join(lines))

    def close(self) -> None:
        self.flush()


def access_event(
    request: Any, client_address: Callable[[IRequest], str], now: float
) -> dict[str, Any]:
    """The ``--json-log`` event of a finished request.

    ``duration`` is in seconds from the request's arrival (its headers and
    body read) to now; ``bytes`` is what was sent of the body; ``cache_hit``
    is ``None`` for requests that are neither pages nor files.
    """
    started = getattr(request, "pypicache_started", now)
    return {
        "log_namespace": "pypicache.access",
        "log_level": LogLevel.info,
        "log_time": now,
        "log_format": '{client} "{method} {uri}" {status} {bytes}',
        "access": True,
        "client": client_address(request) or "-",
        "method": request.method.decode("latin-1"),
        "uri": request.uri.decode("latin-1"),
        "status": request.code,
        "bytes": request.sentLength,
        "duration": round(now - started, 6),
        "cache_hit": getattr(request, CACHE_HIT, None),
        "user_agent": (request.getHeader(b"user-agent") or b"").decode("latin-1"),
    }


def count_request(metrics: Metrics, request: Any, now: float) -> None:
    """Count a finished request in ``metrics``: its route kind, status,
    duration, body bytes and whether it was a hit."""
    metrics.count_request(
        route_kind(request.method, request.path),
        request.code,
        now - getattr(request, "pypicache_started", now),
        request.sentLength,
        getattr(request, CACHE_HIT, None),
    )


def account(site: "PypicacheSite", request: Any) -> None:
    """What is done once for every answered request, whichever way it was
    answered (twisted.web's ``Request.finish`` or the fast lane, both through
    ``site.log``): its access log line, its count in the metrics, and its
    access event (``--json-log``)."""
    HTTPFactory.log(site, request)
    metrics, events = site.metrics, site.access_events
    if metrics is None and events is None:
        return
    now = site.reactor.seconds()
    if metrics is not None:
        count_request(metrics, request, now)
    if events is not None:
        events(access_event(request, site.client_address, now))


class PypicacheSite(Site):
    """The daemon's ``Site``: hot reads through the fast lane when it has one.

    :ivar ready: the fast lane's answers (:mod:`pypicache.web.fastlane`), or
        ``None`` for twisted.web's own ``HTTPChannel``.
    """

    ready: ReadyAnswers | None = None
    #: Given an :func:`access_event` per request (``--json-log``), if set.
    access_events: Callable[[dict[str, Any]], None] | None = None
    #: Where each request is counted (``/metrics``), if anywhere.
    metrics: Metrics | None = None
    client_address: Callable[[IRequest], str] = staticmethod(lambda r: _peer(r))
    #: The ``Strict-Transport-Security`` value of answers over TLS, if any.
    hsts: bytes | None = None

    def getResourceFor(self, request: Any) -> Any:
        if self.access_events is not None or self.metrics is not None:
            request.pypicache_started = self.reactor.seconds()
        if self.hsts is not None and request.isSecure():
            request.setHeader(b"strict-transport-security", self.hsts)
        cold = request.__dict__.pop(COLD_CALL, None)
        if cold is not None:  # the fast lane's cold read: its route, below Klein
            request.site = self
            request.sitepath = []
            return cold
        return super().getResourceFor(request)

    def startFactory(self) -> None:
        super().startFactory()
        if not self.logPath:  # twistd's log, one event per batch of lines
            self._logFile = AccessLines(self.reactor)

    def protocol(self) -> Any:  # type: ignore[override]
        if self.ready is None:
            return _genericHTTPChannelProtocolFactory(self)
        return fast_protocol(self)

    def log(self, request: Any) -> None:
        account(self, request)


class AccessLoggedSite(PypicacheSite):
    """A ``Site`` that writes its access log to a :class:`BufferedLogFile`."""

    def _openLogFile(self, path: Any) -> BufferedLogFile:
        return BufferedLogFile(os.fsdecode(path), self.reactor)


def make_site(
    resource: Any,
    request_factory: Any,
    reactor: IReactorTime,
    access_log: str | None = None,
    client_address: Callable[[IRequest], str] | None = None,
    access_events: Callable[[dict[str, Any]], None] | None = None,
    ready: ReadyAnswers | None = None,
    metrics: Metrics | None = None,
    hsts: float | None = None,
) -> Site:
    """The daemon's ``Site``: access lines to ``access_log`` if given, else to
    twistd's log (:class:`AccessLines`), in the combined format either way.

    :param client_address: for the access log's host field (default: the peer).
    :param access_events: given an :func:`access_event` per request (``--json-log``).
    :param ready: the fast lane's answers; ``None``: no fast lane.
    :param metrics: where each request is counted (:func:`account`).
    :param hsts: seconds of ``Strict-Transport-Security`` on answers over TLS.
    """
    site: PypicacheSite
    formatter = combined_formatter(client_address or _peer)
    if access_log is None:
        site = PypicacheSite(
            resource,
            requestFactory=request_factory,
            reactor=reactor,
            logFormatter=formatter,
        )
    else:
        site = AccessLoggedSite(
            resource,
            requestFactory=request_factory,
            reactor=reactor,
            logPath=access_log,
            logFormatter=formatter,
        )
    site.ready = ready
    if access_events is not None:
        site.access_events = access_events
        if client_address is not None:
            site.client_address = client_address
    site.metrics = metrics
    if hsts is not None:
        site.hsts = b"max-age=%d" % int(hsts)
    site.displayTracebacks = False
    return site


def _peer(request: IRequest) -> str:
    return str(getattr(request.getClientAddress(), "host", "") or "")
