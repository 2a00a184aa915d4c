"""The reactor watchdog (``pypicache/web/watchdog.py``): late ticks counted and
logged with the stack that blocked the reactor, and garbage collections timed."""

import gc
import time

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import capturedLogs, formatEvent

from pypicache.web.metrics import Metrics
from pypicache.web.turns import Turns
from pypicache.web.watchdog import GCPauses, ReactorWatchdog


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.values().get((name, tuple(sorted(labels.items()))), 0.0)


def test_late_tick_counted_and_logged() -> None:
    """A tick on time is a lag of 0 and no stall; one 300 ms late is a stall,
    in the metrics and in a debug line."""
    clock = Clock()
    metrics = Metrics()
    dog = ReactorWatchdog(clock, metrics, interval=0.05, threshold=0.1, watch=False)
    dog.startService()
    clock.advance(0)
    with capturedLogs() as events:
        clock.advance(0.05)
        assert dog.stalls == 0
        clock.advance(0.35)
    assert dog.stalls == 1
    assert abs(dog.worst - 0.3) < 1e-6
    assert _value(metrics, "pypicache_reactor_stalls_total") == 1
    assert _value(metrics, "pypicache_reactor_lag_seconds_count") == 2
    lines = [formatEvent(e) for e in events if e["log_level"].name == "debug"]
    assert any("300 ms late" in line for line in lines), lines
    dog.stopService()
    assert not clock.getDelayedCalls()


def test_stalls_logged_at_most_once_a_second() -> None:
    """Every stall is counted, but a reactor that keeps stalling logs one line
    a second, not one per tick."""
    clock = Clock()
    dog = ReactorWatchdog(clock, interval=0.05, threshold=0.1, watch=False)
    dog.startService()
    clock.advance(0)
    with capturedLogs() as events:
        for _ in range(4):  # stalls at 0.25, 0.5, 0.75 and 1.0 s
            clock.advance(0.25)
    dog.stopService()
    assert dog.stalls == 4
    assert len([e for e in events if "ms late" in formatEvent(e)]) == 1


def _hold_the_reactor() -> None:
    time.sleep(0.4)


@pytest_twisted.ensureDeferred
async def test_blocked_stack_is_what_blocked() -> None:
    """On the real reactor, the stall's line names the function that held the
    reactor (caught by the watcher thread while it blocked), not the tick."""
    dog = ReactorWatchdog(reactor, interval=0.02, threshold=0.1)
    dog.startService()
    try:
        await deferLater(reactor, 0.1, lambda: None)
        with capturedLogs() as events:
            await deferLater(reactor, 0, _hold_the_reactor)
            await deferLater(reactor, 0.1, lambda: None)
    finally:
        dog.stopService()
    assert dog.stalls >= 1
    lines = [formatEvent(e) for e in events if "ms late" in formatEvent(e)]
    assert lines and "_hold_the_reactor" in lines[0], lines


def test_gc_pauses_timed_and_counted() -> None:
    """A full collection is timed by the collector's callback and counted, by
    generation, at the next tick (not inside the callback)."""
    clock = Clock()
    metrics = Metrics()
    pauses = GCPauses()
    dog = ReactorWatchdog(clock, metrics, watch=False, gc_pauses=pauses)
    dog.startService()
    clock.advance(0)
    try:
        assert pauses in gc.callbacks
        gc.collect()
        assert any(g == 2 and s >= 0 for g, s in pauses.pending)
        assert _value(metrics, "pypicache_gc_pause_seconds_count", generation="2") == 0
        clock.advance(0.05)
        assert _value(metrics, "pypicache_gc_pause_seconds_count", generation="2") >= 1
        assert not pauses.pending
    finally:
        dog.stopService()
    assert pauses not in gc.callbacks


def test_gc_pauses_bounded() -> None:
    """Pauses not yet collected are bounded (a reactor blocked for long keeps
    the latest)."""
    pauses = GCPauses(keep=3)
    for i in range(10):
        pauses("start", {"generation": 0})
        pauses("stop", {"generation": i})
    assert [g for g, _ in pauses.drain()] == [7, 8, 9]


def test_blocked_stack_reads_no_source() -> None:
    """The stack is formatted from code objects alone: no source file is read
    into ``linecache`` (which kept a megabyte of source in a soak)."""
    import linecache
    import sys

    from pypicache.web.watchdog import _format

    linecache.clearcache()
    text = _format(sys._getframe())
    assert "test_blocked_stack_reads_no_source" in text.splitlines()[-1]
    # Only lazy entries (a loader, no lines), as StackSummary leaves them.
    assert all(len(entry) == 1 for entry in linecache.cache.values())


class _Turns:
    """What the watchdog reads of :class:`~pypicache.web.turns.Turns`."""

    installed = True

    def __init__(self) -> None:
        self.polls = 0
        self.on_wake = None

    def poll(self) -> None:
        """A poll returns, as ``Turns.do_poll`` counts it and wakes the watchdog."""
        self.polls += 1
        if self.on_wake is not None:
            self.on_wake()


def test_parks_while_idle_and_wakes_with_the_reactor() -> None:
    """A tick that finds the reactor woke for nothing else schedules no next
    one (an idle daemon costs nothing); the reactor's next poll starts the
    ticks again before its events are handled, so a stall in them is still
    counted; a busy reactor keeps ticking."""
    clock = Clock()
    metrics = Metrics()
    turns = _Turns()
    dog = ReactorWatchdog(
        clock, metrics, interval=0.05, threshold=0.1, watch=False, turns=turns
    )
    dog.startService()
    clock.advance(0)
    turns.poll()  # the poll that returned for the tick
    clock.advance(0.05)
    assert dog.parked and not clock.getDelayedCalls()
    clock.advance(10)  # idle: no tick
    assert _value(metrics, "pypicache_reactor_lag_seconds_count") == 1
    turns.poll()  # a request arrives
    assert not dog.parked and turns.on_wake is None
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0.35)  # its events held the reactor 300 ms
    assert dog.stalls == 1 and abs(dog.worst - 0.3) < 1e-6
    assert not dog.parked  # a late tick is not idle
    for _ in range(3):  # busy: polls between the ticks
        turns.poll()
        turns.poll()
        clock.advance(0.05)
        assert not dog.parked
    turns.poll()
    clock.advance(0.05)
    assert dog.parked
    assert _value(metrics, "pypicache_reactor_lag_seconds_count") == 6
    dog.stopService()
    assert turns.on_wake is None and not clock.getDelayedCalls()


def test_ticks_always_without_turns_installed() -> None:
    """Turns that are not the reactor's (not an epoll reactor) count no
    polls: the watchdog never parks then."""
    clock = Clock()
    turns = _Turns()
    turns.installed = False
    dog = ReactorWatchdog(clock, interval=0.05, watch=False, turns=turns)
    dog.startService()
    clock.advance(0)
    for _ in range(5):
        clock.advance(0.05)
    assert not dog.parked and len(clock.getDelayedCalls()) == 1
    dog.stopService()


@pytest_twisted.ensureDeferred
async def test_idle_reactor_sleeps_and_stall_after_idle_is_caught() -> None:
    """On the real reactor with its turns split: idle for a second, the
    watchdog parks and its watcher thread sleeps (a few wakes, not the 20 a
    second of polling); a stall that starts as the reactor wakes is still
    counted and logged with the function that held the reactor."""
    turns = Turns(reactor)
    assert turns.install()
    dog = ReactorWatchdog(reactor, interval=0.02, threshold=0.1, turns=turns)
    dog.startService()
    try:
        await deferLater(reactor, 0.1, lambda: None)
        wakes, ticks = dog.watcher_wakes, turns.polls
        await deferLater(reactor, 1.0, lambda: None)
        assert dog.watcher_wakes - wakes < 8, dog.watcher_wakes - wakes
        assert turns.polls - ticks < 15, turns.polls - ticks  # 50 at 20 ms ticks
        with capturedLogs() as events:
            await deferLater(reactor, 0, _hold_the_reactor)
            await deferLater(reactor, 0.1, lambda: None)
    finally:
        dog.stopService()
        turns.uninstall()
    assert dog.stalls >= 1
    lines = [formatEvent(e) for e in events if "ms late" in formatEvent(e)]
    assert lines and "_hold_the_reactor" in lines[0], lines
