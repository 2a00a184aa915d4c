# -*- test-case-name: tests.test_turns -*-
"""The reactor's turns: the clients' connections first, costly work within a budget.

Twisted's epoll reactor handles every socket that is ready in one turn, in the
order the kernel lists them, so a cached page that the fast lane answers in
a tenth of a millisecond waits, in the same turn, behind every cold page,
cold file and upload whose request or upstream answer arrived with it: with
64 busy clients a turn took tens of milliseconds, and a cheap read waited up
to two of them (docs/benchmark.rst, "Soak").

:class:`Turns` replaces the reactor's ``doIteration`` (its ``doPoll``) with
one that splits each turn in two:

1. every event of the connections clients made to us (the listening ports,
   the clients' sockets, the thread waker): the fast lane answers what it
   can as it reads them; a request it cannot answer is not handed to
   ``twisted.web`` there but queued (:meth:`Turns.later`, see
   :class:`~pypicache.web.fastlane.FastChannel`);
2. then, until :data:`BUDGET` seconds have gone, the events of the
   connections we made (the upstream's, the object store's: cold pages
   parsed, cold files streamed), the results the thread pools hand back
   (:meth:`Turns.finish`: work under way is finished before more is
   started) and the queued requests, each oldest first; at least one of
   each kind that waits, so nothing starves. What is left waits for the
   next turn: epoll reports a socket again as long as it is ready, and
   queued work keeps its place.

So a turn's cheap reads are answered before its costly work, and the costly
work of one turn is bounded; none of it is dropped or reordered within its
kind, and the next poll does not wait while work is queued.
"""

import errno
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import tcp
from twisted.logger import Logger
from twisted.python import log as legacy_log

log = Logger()

#: Seconds of a turn's costly work (after the clients' reads) before the rest
#: waits for the next turn.
BUDGET = 0.010


class Turns:
    """The split turn, for a reactor with an epoll poller (others are left
    alone: :meth:`install` says whether it took).

    :param budget: seconds of costly work per turn.
    :param clock: the timer the budget is measured with.
    """

    def __init__(
        self,
        reactor: Any,
        budget: float = BUDGET,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.reactor = reactor
        self.budget = budget
        self._clock = clock
        self._queue: deque[Callable[[], None]] = deque()
        self._finishing: deque[Callable[[], None]] = deque()
        #: Whether queued work runs at once: outside a split turn's first
        #: part (or when the turns are not split).
        self.now = True
        self._installed = False
        #: Polls that returned (each a turn of the reactor: events, a timer
        #: due, or the thread waker), and what to call when the next one
        #: returns, before its events are handled (the reactor watchdog's
        #: wake-up while it sleeps: :mod:`pypicache.web.watchdog`).
        self.polls = 0
        self.on_wake: Callable[[], None] | None = None

    def install(self) -> bool:
        """Take over the reactor's turns; ``False`` (and nothing done) for a
        reactor without an epoll poller."""
        reactor = self.reactor
        poller = getattr(reactor, "_poller", None)
        if not hasattr(poller, "poll") or not hasattr(reactor, "_selectables"):
            return False
        if not self._installed:
            reactor.doIteration = self.do_poll  # the class's doPoll, on this instance
            self._installed = True
            self.now = False
        return True

    def uninstall(self) -> None:
        """Give the reactor its own turns back (what is queued runs first)."""
        if not self._installed:
            return
        self.reactor.__dict__.pop("doIteration", None)
        self._installed = False
        self.now = True
        self._run(self._finishing, float("inf"), everything=True)
        self._run(self._queue, float("inf"), everything=True)

    def later(self, work: Callable[[], None]) -> None:
        """Run ``work()`` in the costly part of this turn or a later one
        (at once when the turns are not split)."""
        if self.now:
            work()
        else:
            self._queue.append(work)

    def finish(self, work: Callable[[], None]) -> None:
        """As :meth:`later`, for work that finishes what is under way (a
        thread's result): it runs before the requests queued to start."""
        if self.now:
            work()
        else:
            self._finishing.append(work)

    @property
    def installed(self) -> bool:
        """Whether the reactor's turns are these (its polls counted)."""
        return self._installed

    @property
    def waiting(self) -> int:
        """Calls queued for the costly part of a turn."""
        return len(self._queue) + len(self._finishing)

    def do_poll(self, timeout: float | None) -> None:
        """One turn: poll, the clients' events, then the costly ones."""
        reactor = self.reactor
        if self._queue or self._finishing:
            timeout = 0
        elif timeout is None:
            timeout = -1
        try:
            events = reactor._poller.poll(timeout, len(reactor._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        self.polls += 1
        if self.on_wake is not None:
            self.on_wake()
        selectables = reactor._selectables
        handle = reactor._doReadOrWrite
        costly = []
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            if isinstance(selectable, tcp.Server):
                # A client's connection: read without callWithLogger's log
                # context (a tenth of a cached answer's Python CPU: the
                # context copied per call); only legacy log calls (log.msg,
                # log.err) would show its prefix, and _doReadOrWrite logs
                # and drops what a read raises.
                try:
                    handle(selectable, fd, event)
                except Exception:
                    legacy_log.err(system=selectable.logstr)
            elif isinstance(selectable, tcp.BaseClient):
                costly.append((fd, event, selectable))
            else:
                legacy_log.callWithLogger(selectable, handle, selectable, fd, event)
        deadline = self._clock() + self.budget
        self.now = True
        try:
            for fd, event, selectable in costly:
                if selectables.get(fd) is selectable:  # not closed meanwhile
                    legacy_log.callWithLogger(selectable, handle, selectable, fd, event)
                if self._clock() >= deadline:
                    break  # reported again by the next poll
            self._run(self._finishing, deadline)
            self._run(self._queue, deadline)
        finally:
            self.now = False

    def _run(
        self,
        queue: "deque[Callable[[], None]]",
        deadline: float,
        everything: bool = False,
    ) -> None:
        """Work from ``queue`` until ``deadline`` (at least one), oldest
        first; only what was queued before (work queued meanwhile waits a
        turn)."""
        for _ in range(len(queue)):
            work = queue.popleft()
            try:
                work()
            except Exception:
                log.failure("Work queued for the costly part of a turn failed")
            if not everything and self._clock() >= deadline:
                break


class TurnsService(service.Service):
    """Splits the reactor's turns while running (see :class:`Turns`)."""

    def __init__(self, turns: Turns) -> None:
        self.turns = turns

    def startService(self) -> None:
        super().startService()
        if not self.turns.install():
            log.info("Reactor turns left as they are: not an epoll reactor")

    def stopService(self) -> Any:
        super().stopService()
        self.turns.uninstall()
