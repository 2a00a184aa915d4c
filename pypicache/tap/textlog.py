# -*- test-case-name: tests.test_textlog -*-
"""twistd's text log, the same lines written at less cost to the reactor.

twistd writes each event with :func:`~twisted.logger.textFileLogObserver`:
it formats the event's time (a time zone and ``strftime`` per line) and
its text (``string.Formatter`` through wrappers, to allow calls in
formats), then writes the line to the log file unbuffered, one system call
per line, all on the reactor's thread. :class:`TextLog` writes the same
lines: the time formatted once per second, a format of plain fields
(``"Stored {filename} ({size} bytes...)"``: pypicache's own lines)
formatted with ``str.format_map``, anything else (a traceback, a call in a
format, a legacy event's system, a flattened event) by Twisted's own
function; the lines logged on the reactor's thread written in one go at
most :data:`FLUSH_DELAY` later (or once :data:`FLUSH_SIZE` characters
wait), the others at once (after what waits, in order).

:class:`TextLogService` puts it in place of twistd's observer while the
daemon runs (it writes to twistd's log file, so rotation is twistd's as
before) and puts twistd's back, everything written, when it stops (before
the reactor does, on SIGTERM too).
"""

import string
import threading
from typing import Any, Callable

from twisted.application import service
from twisted.logger import (
    FileLogObserver,
    formatEventAsClassicLogText,
    formatTime,
    globalLogPublisher,
    textFileLogObserver,
    timeFormatRFC3339,
)

#: What a :class:`TextLog` knows of each format: whether ``str.format_map``
#: gives what Twisted's formatting would (plain named fields only).
_PLAIN: dict[str, bool] = {}

#: Formats remembered at most (then forgotten at once).
FORMATS_KEPT = 1024

#: Seconds the lines logged on the reactor's thread wait at most to be
#: written, together; and how many characters wait at most.
FLUSH_DELAY = 0.1
FLUSH_SIZE = 64 * 1024


def _plain(log_format: str) -> bool:
    """Whether every field of ``log_format`` is a plain name with a plain
    spec: what ``str.format_map`` formats as Twisted's ``formatWithCall``
    does (no call, attribute, index, positional or nested field)."""
    known = _PLAIN.get(log_format)
    if known is None:
        try:
            known = all(
                name is None or (name.isidentifier() and "{" not in (spec or ""))
                for _, name, spec, _ in string.Formatter().parse(log_format)
            )
        except ValueError:
            known = False
        if len(_PLAIN) >= FORMATS_KEPT:
            _PLAIN.clear()
        _PLAIN[log_format] = known
    return known


class ClassicText:
    """:func:`~twisted.logger.formatEventAsClassicLogText` with the RFC 3339
    time twistd uses, the same text at less cost (see the module's docstring)."""

    def __init__(self) -> None:
        #: The last second formatted, and its text (one tuple: threads share it).
        self._second: tuple[int, str] = (-1, "")

    def _time(self, when: float) -> str:
        second, stamp = self._second
        if int(when) != second or when < 0:
            # A time zone's offset changes on a second, never within one.
            stamp = formatTime(when, timeFormatRFC3339) + " "
            self._second = (int(when), stamp)
        return stamp

    def __call__(self, event: dict[str, Any]) -> str | None:
        log_format = event.get("log_format")
        when = event.get("log_time")
        level = event.get("log_level")
        if (
            type(log_format) is str
            and type(when) is float
            and level is not None
            and "log_failure" not in event
            and "log_flattened" not in event
            and "log_system" not in event
            and _plain(log_format)
        ):
            try:
                text = log_format.format_map(event)
            except Exception:
                pass  # Twisted's words for an event that does not format
            else:
                if not text:
                    return None
                system = f"[{event.get('log_namespace', '-')}#{level.name}] "
                return self._time(when) + system + text.replace("\n", "\n\t") + "\n"
        return formatEventAsClassicLogText(
            event, formatTime=lambda e: formatTime(e, timeFormatRFC3339)
        )


class TextLog:
    """A log observer writing :class:`ClassicText` lines to ``out`` (twistd's
    log file, or its standard output): those logged on the reactor's thread
    while it runs together, at most :data:`FLUSH_DELAY` later, the others at
    once."""

    def __init__(self, out: Any, reactor: Any, encoding: str | None) -> None:
        self._out = out
        self._reactor = reactor
        self._encoding = encoding
        self._thread = threading.get_ident()
        self._format: Callable[[dict[str, Any]], str | None] = ClassicText()
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._size = 0
        self._flush_called = False
        #: Lines kept for a turn's end; ``False``: each written at once.
        self.batching = True

    def __call__(self, event: dict[str, Any]) -> None:
        text = self._format(event)
        if not text:
            return
        with self._lock:
            self._pending.append(text)
            self._size += len(text)
            if (
                self.batching
                and self._size < FLUSH_SIZE
                and threading.get_ident() == self._thread
                and self._reactor.running
            ):
                if not self._flush_called:
                    self._flush_called = True
                    self._reactor.callLater(FLUSH_DELAY, self.flush)
                return
            self._write()

    def flush(self) -> None:
        """Write what waits."""
        with self._lock:
            self._write()

    def _write(self) -> None:
        self._flush_called = False
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._size = 0
        self._out.write(text if self._encoding is None else text.encode(self._encoding))
        self._out.flush()


_TWISTD_FORMAT = textFileLogObserver(None).formatEvent  # type: ignore[arg-type]


def _is_twistd_text(observer: Any) -> bool:
    """Whether ``observer`` is what :func:`~twisted.logger.textFileLogObserver`
    makes with its default (RFC 3339) time, as twistd makes its log's."""
    if type(observer) is not FileLogObserver:
        return False
    formatting = getattr(observer, "formatEvent", None)
    if getattr(formatting, "__code__", None) is not _TWISTD_FORMAT.__code__:
        return False
    cells = [c.cell_contents for c in formatting.__closure__ or ()]
    return cells == [timeFormatRFC3339] and hasattr(observer, "_outFile")


class TextLogService(service.Service):
    """Puts a :class:`TextLog` in place of twistd's text log observer while
    it runs (nothing is changed where there is none: a worker's log, tests
    that build the daemon in their process)."""

    def __init__(self, reactor: Any, publisher: Any = globalLogPublisher) -> None:
        self._reactor = reactor
        self._publisher = publisher
        self._swapped: tuple[Any, TextLog] | None = None

    def startService(self) -> None:
        super().startService()
        observers = getattr(self._publisher, "_observers", None)
        if not isinstance(observers, list):
            return
        for i, observer in enumerate(observers):
            if _is_twistd_text(observer):
                ours = TextLog(observer._outFile, self._reactor, observer._encoding)
                observers[i] = ours
                self._swapped = (observer, ours)
                return

    def stopService(self) -> None:
        super().stopService()
        if self._swapped is None:
            return
        original, ours = self._swapped
        self._swapped = None
        ours.batching = False
        ours.flush()
        observers = self._publisher._observers
        for i, observer in enumerate(observers):
            if observer is ours:
                observers[i] = original
