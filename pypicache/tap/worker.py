# -*- test-case-name: tests.test_workers -*-
"""One ``--workers`` process: ``python -m pypicache.tap.worker N OPTIONS...``.

Started by the twistd process (:mod:`pypicache.tap.workers`) with the
listening sockets as descriptors 3, 4, ... in ``--listen`` order. It serves
them as a one-process daemon would, writes its log to its standard output
as JSON for the twistd process to relay, stops on SIGTERM (SIGINT is the
twistd process's to act on), and stops by itself when that process is gone.
"""

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from twisted.application import service
from twisted.application.internet import TimerService
from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.logger import Logger, eventAsText, globalLogBeginner
from twisted.web.server import Site

from pypicache.tap.listeners import adopt, worker_factory
from pypicache.tap.options import Options
from pypicache.tap.service import serving
from pypicache.tap.workers import FIRST_FD, RECORD_END

log = Logger()


def relayed_log(out: TextIO, reactor: Any) -> Callable[[dict[str, Any]], None]:
    """A log observer writing events as the twistd process relays them: one
    record per event, ``time TAB level TAB namespace TAB text``, then
    :data:`RECORD_END`. The text is formatted here, in the worker, as twistd
    would (tracebacks included), so relaying costs the twistd process little.

    Records logged on the reactor thread are flushed once per turn of the
    reactor, so a busy worker writes many in one go; others at once.
    """
    reactor_thread = threading.get_ident()
    pending = False

    def flush() -> None:
        nonlocal pending
        pending = False
        out.flush()

    def observe(event: dict[str, Any]) -> None:
        nonlocal pending
        text = eventAsText(
            event, includeTraceback=True, includeTimestamp=False, includeSystem=False
        )
        if not text:
            return
        level = event.get("log_level")
        out.write(
            f"{event.get('log_time', 0.0)!r}\t{getattr(level, 'name', 'info')}\t"
            f"{event.get('log_namespace', '-')}\t{text.replace(RECORD_END, ' ')}{RECORD_END}"
        )
        if threading.get_ident() != reactor_thread or not reactor.running:
            out.flush()
        elif not pending:
            pending = True
            reactor.callLater(0, flush)

    return observe


class _Adopted(service.Service):
    """Serves the sockets the twistd process listens on."""

    def __init__(
        self, reactor: Any, descriptions: list[str], site: Site, index: int
    ) -> None:
        self.reactor = reactor
        self.descriptions = descriptions
        self.site = site
        self.index = index
        self.ports: list[Any] = []

    def startService(self) -> None:
        super().startService()
        for k, description in enumerate(self.descriptions):
            factory = worker_factory(description, self.site)
            self.ports.append(adopt(self.reactor, FIRST_FD + k, factory))
        log.info("Worker {index} ready (pid {pid})", index=self.index, pid=os.getpid())

    def stopService(self) -> Any:
        super().stopService()
        return DeferredList([maybeDeferred(p.stopListening) for p in self.ports])


def main(argv: list[str]) -> None:
    """Run worker ``argv[0]`` with the daemon's options ``argv[1:]`` until stopped."""
    index = int(argv[0])
    options = Options()
    options.parseOptions(argv[1:])
    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([relayed_log(sys.stdout, reactor)])

    top, site = serving(options, reactor)
    _Adopted(reactor, options["listen"], site, index).setServiceParent(top)
    parent = os.getppid()

    def orphaned() -> None:
        if os.getppid() != parent:
            log.warn("The twistd process is gone: stopping")
            stop()

    TimerService(1.0, orphaned).setServiceParent(top)

    def stop() -> None:
        if reactor.running:
            reactor.stop()

    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(stop))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    top.privilegedStartService()
    top.startService()
    reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    main(sys.argv[1:])
