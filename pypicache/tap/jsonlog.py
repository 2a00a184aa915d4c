# -*- test-case-name: tests.test_config -*-
"""``--json-log FILE``: every log event as one JSON object per line.

twisted.logger's own JSON form (:func:`~twisted.logger.eventAsJSON`, as
:func:`~twisted.logger.jsonFileLogObserver` writes it; read back with
:func:`~twisted.logger.eventsFromJSONLogFile`), one object a line, written
in batches and reopened after rotation as the access log is
(:class:`~pypicache.web.accesslog.BufferedLogFile`). The site adds one
access event per request (:func:`~pypicache.web.accesslog.access_event`).
"""

import json
import threading
from typing import Any

from twisted.application import service
from twisted.logger import LogLevel, eventAsJSON, globalLogPublisher

from pypicache.web.accesslog import BufferedLogFile

#: The event key by which the twistd process of ``--workers`` marks the
#: events it relays: each worker writes its own to the file.
RELAYED = "pypicache_relayed"
#: The event key that says an event is in the file already.
WRITTEN = "pypicache_json_logged"

#: ``LogLevel.info`` as the JSON log holds it (read back as ``LogLevel.info``).
_INFO = json.loads(eventAsJSON({"log_level": LogLevel.info}))["log_level"]


class JsonLog(service.Service):
    """Writes the log events of this process (but relayed ones) to ``path``
    from its making (so that what is logged while the daemon is built is
    there too) until the service stops; :attr:`observe` takes events from
    elsewhere too.

    Made on the reactor's thread: events logged in other threads are
    written by it.
    """

    def __init__(self, path: str, reactor: Any) -> None:
        self._reactor = reactor
        self._thread = threading.get_ident()
        self._file: BufferedLogFile | None = BufferedLogFile(path, reactor)
        globalLogPublisher.addObserver(self.observe)

    def observe(self, event: dict[str, Any]) -> None:
        """Write ``event`` (nothing once stopped), once.

        Events logged before twistd begins its log are published again when
        it does (``globalLogBeginner`` replays them): the mark set once one is
        written keeps it from being written twice.
        """
        if self._file is None or event.get(RELAYED) or event.get(WRITTEN):
            return
        line = eventAsJSON(event) + "\n"
        event[WRITTEN] = True
        if threading.get_ident() == self._thread:
            self._file.write(line)
        else:
            self._reactor.callFromThread(self._write, line)

    def access(self, event: dict[str, Any]) -> None:
        """Write an access event (on the reactor's thread): as :meth:`observe`
        would, but with ``json.dumps`` alone. Its format is not flattened, which
        would cost more than the request: its fields are all in the event."""
        if self._file is not None:
            self._file.write(json.dumps({**event, "log_level": _INFO}) + "\n")

    def _write(self, line: str) -> None:
        if self._file is not None:
            self._file.write(line)

    def stopService(self) -> None:
        super().stopService()
        globalLogPublisher.removeObserver(self.observe)
        if self._file is not None:
            self._file.close()
            self._file = None
