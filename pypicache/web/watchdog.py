# -*- test-case-name: tests.test_watchdog -*-
"""The reactor's own health: how late its timers run, what blocked it, and the
garbage collector's pauses.

:class:`ReactorWatchdog` schedules a tick every ``interval`` seconds on the
reactor and measures how late each one runs: a tick late by more than
``threshold`` means something held the reactor thread (a long computation, a
blocking call, a garbage collection, the GIL held by another thread). A
watcher thread looks at the reactor thread while a tick is overdue and keeps
the stack it finds there, so the late tick can log what blocked (at debug
level, at most one line a second) rather than the innocent stack that runs
after it. Each lateness goes to ``pypicache_reactor_lag_seconds``, each late
tick to ``pypicache_reactor_stalls``.

Given the reactor's :class:`~pypicache.web.turns.Turns`, it ticks only while
the reactor works: a tick that finds the reactor woke for nothing else since
the last one (an idle daemon) schedules no next tick, and the watcher thread
sleeps until the reactor's next poll returns (a request, an upstream's
answer, a thread's result, any timer), which starts the ticks again before
that poll's events are handled, so a stall in them is still caught. While
ticking, the watcher sleeps until the tick due is overdue rather than
polling. An idle daemon so costs nothing (it cost 20 ticks and 20 watcher
wakes a second: 5.5 ms of CPU a second, docs/benchmark.rst "Session 9, pip
and warm installs").

:class:`GCPauses` times every collection (``gc.callbacks``) and hands the
durations to the watchdog's next tick, which puts them in
``pypicache_gc_pause_seconds`` by generation: nothing is counted inside the
collector's callback itself, where taking a metric's lock could deadlock a
thread that was holding it when the collection started.
"""

import gc
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.logger import Logger

log = Logger()

#: Seconds between two ticks.
INTERVAL = 0.05

#: A tick later than this (seconds) is a stall: counted, and its stack logged.
THRESHOLD = 0.1

#: Seconds between two logged stalls (every stall is counted).
LOG_EVERY = 1.0

#: Innermost frames of a blocked stack logged (the reactor's own outer
#: frames, the same every time, are left out).
STACK_FRAMES = 24

#: Collections slower than this (seconds) are logged (all are counted).
GC_LOG_THRESHOLD = 0.02


class GCPauses:
    """The durations of the garbage collector's passes, kept until collected.

    :ivar pending: ``(generation, seconds)`` of the passes since the last
        :meth:`drain`, the newest last (bounded: a reactor blocked for long
        keeps the latest ``keep``).
    """

    def __init__(
        self, keep: int = 10_000, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self._clock = clock
        self._started: float | None = None
        self.pending: deque[tuple[int, float]] = deque(maxlen=keep)

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        # Called by the collector, on whichever thread allocated: only plain
        # appends here (no locks, no logging).
        if phase == "start":
            self._started = self._clock()
        elif self._started is not None:
            self.pending.append(
                (info.get("generation", -1), self._clock() - self._started)
            )
            self._started = None

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)

    def drain(self) -> list[tuple[int, float]]:
        """The passes since the last call, oldest first."""
        drained = []
        while self.pending:
            drained.append(self.pending.popleft())
        return drained


class ReactorWatchdog(service.Service):
    """Ticks on the reactor, notices late ones, and keeps what blocked it.

    :param metrics: a :class:`pypicache.web.metrics.Metrics` (its
        ``reactor_lag``, ``reactor_stalls`` and ``gc_pause``), or ``None``.
    :param watch: start the watcher thread that catches the blocking stack
        (off in tests that drive a fake clock).
    :param turns: the reactor's :class:`~pypicache.web.turns.Turns` (its
        ``polls``, ``on_wake`` and ``installed``): ticks stop while the
        reactor is idle and start again when it wakes. ``None``: tick always.
    """

    def __init__(
        self,
        reactor: Any,
        metrics: Any = None,
        interval: float = INTERVAL,
        threshold: float = THRESHOLD,
        watch: bool = True,
        gc_pauses: GCPauses | None = None,
        turns: Any = None,
    ) -> None:
        self.reactor = reactor
        self.metrics = metrics
        self.interval = interval
        self.threshold = threshold
        self.watch = watch
        self.turns = turns
        self.gc_pauses = gc_pauses if gc_pauses is not None else GCPauses()
        #: Late ticks seen, and the largest lateness (seconds).
        self.stalls = 0
        self.worst = 0.0
        #: Whether the ticks are stopped until the reactor wakes (idle).
        self.parked = False
        #: Times the watcher thread woke (its cost while the reactor idles).
        self.watcher_wakes = 0
        #: The due time of the overdue tick the watcher looked at, and the
        #: stack it found on the reactor thread then.
        self._seen: tuple[float, str] | None = None
        self._expected = 0.0
        #: When the next tick is due (``time.monotonic``); ``None`` while parked.
        self._due_monotonic: float | None = 0.0
        self._polls = 0
        self._last_logged = float("-inf")
        self._call: Any = None
        self._stop = threading.Event()
        #: Set while ticking (and to stop): the watcher sleeps on it when parked.
        self._active = threading.Event()
        self._watcher: threading.Thread | None = None
        self._reactor_thread: int | None = None

    def startService(self) -> None:
        super().startService()
        # A timer, not callWhenRunning: it runs on the reactor thread once
        # the reactor runs, as a test's Clock does when advanced.
        self._call = self.reactor.callLater(0, self._begin)

    def stopService(self) -> Any:
        super().stopService()
        self._stop.set()
        self._active.set()
        if self.turns is not None and self.turns.on_wake == self._wake:
            self.turns.on_wake = None
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.gc_pauses.uninstall()
        return None

    def _begin(self) -> None:
        if not self.running:
            return
        self._reactor_thread = threading.get_ident()
        self.gc_pauses.install()
        self.parked = False
        self._active.set()
        if self.turns is not None:
            self._polls = self.turns.polls
        self._schedule(self.reactor.seconds())
        if self.watch:
            self._stop.clear()
            self._watcher = threading.Thread(
                target=self._watch, name="pypicache-watchdog", daemon=True
            )
            self._watcher.start()

    def _schedule(self, now: float) -> None:
        self._expected = now + self.interval
        self._due_monotonic = time.monotonic() + self.interval
        self._call = self.reactor.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        now = self.reactor.seconds()
        late = max(0.0, now - self._expected)
        self.observe(late, now)
        if self._idle(late):
            self._park()
        else:
            self._schedule(now)

    def _idle(self, late: float) -> bool:
        """Whether the reactor woke for nothing but this tick since the last
        one (counted by the turns' polls)."""
        turns = self.turns
        if turns is None or not turns.installed:
            return False
        polls, self._polls = self._polls, turns.polls
        return turns.polls - polls <= 1 and late <= self.threshold

    def _park(self) -> None:
        """No next tick until the reactor's next poll returns (:meth:`_wake`)."""
        self.parked = True
        self._call = None
        self._active.clear()  # before the due goes: the watcher never spins
        self._due_monotonic = None
        self.turns.on_wake = self._wake

    def _wake(self) -> None:
        """The reactor's poll returned (on its thread, before the events are
        handled): tick again, and wake the watcher."""
        self.turns.on_wake = None
        if not self.parked or not self.running:
            return
        self.parked = False
        self._polls = self.turns.polls
        self._schedule(self.reactor.seconds())
        self._active.set()

    def observe(self, late: float, now: float) -> None:
        """Count a tick ``late`` seconds late, and the collections since the last."""
        pauses = self.gc_pauses.drain()
        if self.metrics is not None:
            self.metrics.reactor_lag.observe(late)
            if late > self.threshold:
                self.metrics.reactor_stalls.inc()
            for generation, seconds in pauses:
                self.metrics.gc_pause.labels(str(generation)).observe(seconds)
        slow = [(g, s) for g, s in pauses if s > GC_LOG_THRESHOLD]
        if slow:
            log.debug(
                "Garbage collection paused the reactor: {pauses}",
                pauses=", ".join(f"generation {g} {s * 1000:.0f} ms" for g, s in slow),
            )
        if late <= self.threshold:
            return
        self.stalls += 1
        self.worst = max(self.worst, late)
        if now - self._last_logged < LOG_EVERY:
            return
        self._last_logged = now
        log.debug(
            "The reactor ran {late_ms:.0f} ms late; it was blocked in:\n{stack}",
            late_ms=late * 1000,
            stack=self.blocked_stack()
            or "(not seen: the blocking call held the GIL throughout)\n",
        )

    def blocked_stack(self) -> str | None:
        """The stack the watcher found on the reactor thread while the
        current tick was overdue (``None``: none seen)."""
        seen = self._seen
        if seen is None or seen[0] != self._due_monotonic:
            return None
        return seen[1]

    def _watch(self) -> None:
        """The watcher thread: while a tick is overdue, keep the reactor
        thread's stack (the first one seen: what started the stall). It
        sleeps until the tick due is overdue, and while parked until the
        reactor wakes."""
        step = max(self.threshold / 2, 0.005)
        while not self._stop.is_set():
            self.watcher_wakes += 1
            due = self._due_monotonic
            if due is None:
                self._active.wait()
                continue
            left = due + self.threshold - time.monotonic()
            if left > 0:
                self._stop.wait(left)
                continue
            if self._seen is None or self._seen[0] != due:
                frame = sys._current_frames().get(self._reactor_thread or -1)
                if frame is not None:
                    self._seen = (due, _format(frame))
            self._stop.wait(step)  # still overdue: look again in a while


def _format(frame: Any) -> str:
    """The innermost frames of a stack, one line each, without their source
    lines (reading them would keep every source file in ``linecache``: a
    megabyte that grew in a soak)."""
    summary = traceback.StackSummary.extract(
        traceback.walk_stack(frame), limit=STACK_FRAMES, lookup_lines=False
    )
    return "".join(
        f"  {f.filename}:{f.lineno} in {f.name}\n" for f in reversed(summary)
    )
