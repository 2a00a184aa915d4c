# -*- test-case-name: tests.test_eviction -*-
"""Keeping the mirror within ``--max-cache-size`` and ``--evict-unused-after``.

:class:`Capacity` runs on the reactor: it flushes the usage record now and
then, keeps the size of the mirrored files (``mirror/`` and each named
upstream's ``upstreams/<name>/mirror/``, under one cap: recounted in a
thread once the daemon answers, then kept up to date by each stored
download and each pass), and
runs an eviction pass (:func:`evict_pass`, in a thread) periodically and when
a download pushes the size over the cap. One process at a time evicts (a
lock), so ``--workers`` and ``pypicache-admin cleanup`` take turns.

The passes go through an :class:`Evictor`: :class:`FolderEvictor` on the
cache folder, or the bucket's
(:class:`~pypicache.storage.s3.eviction.BucketEvictor`, one pass at a time
on the whole bucket under a lease), whose mirror other daemons change too:
it is recounted periodically even without limits, for the metrics.
"""

from collections.abc import Callable
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from pypicache.concurrency import RunBlocking
from pypicache.storage.eviction import Entry, choose, evict, scan_mirror
from pypicache.storage.locks import try_lock
from pypicache.storage.pins import read_pins
from pypicache.storage.records import LOCKS, StoredFile
from pypicache.storage.usage import Usage, UsageMap

log = Logger()

#: Seconds between two flushes of the usage record.
FLUSH_INTERVAL = 60.0

#: Seconds between two periodic eviction passes.
PASS_INTERVAL = 600.0

#: Seconds after a pass that could not get under the cap (all recently
#: used) before a download over the cap starts another.
MIN_PASS_GAP = 10.0

LockPath = Callable[[str, str | None, str], str]


@attrs.frozen
class PassResult:
    """What an eviction pass found and did."""

    #: Bytes in ``mirror/`` after the pass.
    total: int
    evicted: list[Entry]
    #: Whether another process held the eviction lock (nothing was evicted).
    busy: bool = False
    #: Files in ``mirror/`` after the pass.
    files: int = 0


def evict_pass(
    root: FilePath,
    lock_path: LockPath,
    usage: Usage,
    recorded: UsageMap,
    now: float,
    max_size: int | None,
    unused_after: float | None,
    dry_run: bool = False,
    progress: Callable[[Entry], None] | None = None,
    planned: Callable[[int], None] | None = None,
) -> PassResult:
    """Flush ``recorded``, count the mirror and evict what :func:`choose`
    picks (blocking). The record forgets what is no longer in the mirror.

    :param progress: called after each file chosen, evicted or skipped.
    :param planned: called with how many files were chosen, before any goes.
    """
    merged = usage.flush(recorded)
    held = try_lock(lock_path(LOCKS, None, "evict"))
    if held is None:
        scan = scan_mirror(root)
        return PassResult(scan.total, [], busy=True, files=len(scan.entries))
    try:
        scan = scan_mirror(root)
        chosen = choose(
            scan, merged, now, max_size, unused_after, pinned=read_pins(root)
        )
        if dry_run:
            return PassResult(scan.total, chosen, files=len(scan.entries))
        if planned is not None:
            planned(len(chosen))
        evicted = []
        total = scan.total
        for entry in chosen:
            if evict(root, entry, lock_path):
                evicted.append(entry)
                total -= entry.size
            if progress is not None:
                progress(entry)
        present = {e.key for e in scan.entries}
        gone = frozenset(k for k in merged if k not in present)
        usage.flush({}, gone | frozenset(e.key for e in evicted))
        return PassResult(total, evicted, files=len(scan.entries) - len(evicted))
    finally:
        held.release()


@attrs.frozen
class EvictionPass:
    """What one eviction pass is asked to do (see :func:`evict_pass`)."""

    #: The usage record to flush and read (``None``: none, on a bucket).
    usage: Usage | None
    #: Uses recorded since the last flush.
    recorded: UsageMap
    now: float
    max_size: int | None
    unused_after: float | None
    dry_run: bool = False
    progress: Callable[[Entry], None] | None = None
    planned: Callable[[int], None] | None = None


class Evictor(Protocol):
    """Runs eviction passes over one kind of store (:class:`FolderEvictor`,
    :class:`~pypicache.storage.s3.eviction.BucketEvictor`)."""

    #: Whether other daemons change the same mirror (its size is then
    #: counted again now and then, limits or not).
    shared: bool

    def run(self, asked: EvictionPass) -> "Deferred[PassResult]":
        """One pass (nothing is evicted without limits: it counts); never
        blocks the reactor."""


@attrs.frozen
class FolderEvictor:
    """Eviction passes over the cache folder ``root`` (:func:`evict_pass`, in a thread)."""

    root: FilePath
    lock_path: LockPath
    run_blocking: RunBlocking
    shared = False

    def run(self, asked: EvictionPass) -> "Deferred[PassResult]":
        assert asked.usage is not None
        return self.run_blocking(
            evict_pass,
            self.root,
            self.lock_path,
            *attrs.astuple(asked, recurse=False),
        )


@attrs.define
class Capacity:
    """The reactor's half of bounded disk: usage flushes, size, eviction passes."""

    root: FilePath
    usage: Usage
    lock_path: LockPath
    clock: Any
    run_blocking: RunBlocking
    #: Called with the store (``""`` or ``"upstreams/<name>"``) and project of
    #: each evicted file (its listing is read again).
    forget: Callable[[str, str], None]
    max_size: int | None = None
    unused_after: float | None = None
    #: Bytes in ``mirror/``; ``None`` until the first count.
    total: int | None = None
    #: Files in ``mirror/`` (as :attr:`total`).
    files: int = 0
    #: Told of each pass's evictions (files, bytes), for the metrics.
    on_evicted: Callable[[int, int], None] | None = attrs.field(
        default=None, kw_only=True
    )
    #: Told of the mirror's size and file count when they change.
    on_size: Callable[[int, int], None] | None = attrs.field(default=None, kw_only=True)
    #: What runs the passes (default: :class:`FolderEvictor` on ``root``).
    evictor: Evictor | None = attrs.field(default=None, kw_only=True)
    _running: bool = False
    _again: bool = False
    _added: int = 0
    _quiet_until: float = float("-inf")
    _loops: list[LoopingCall] = attrs.field(factory=list)
    _passes: LoopingCall | None = None
    _started: bool = False

    def __attrs_post_init__(self) -> None:
        if self.evictor is None:
            self.evictor = FolderEvictor(self.root, self.lock_path, self.run_blocking)

    @property
    def evicts(self) -> bool:
        return self.max_size is not None or self.unused_after is not None

    def start(self) -> None:
        """Flush now and then; with limits, count and evict now and then
        (the first pass, right away, is the start-up count)."""
        self._every(FLUSH_INTERVAL, self.flush, now=False)
        self._started = True
        assert self.evictor is not None
        if self.evicts or (self.on_size is not None and self.evictor.shared):
            # A shared mirror (a bucket) changes under every daemon: recounted.
            self._passes = self._every(PASS_INTERVAL, self.run_pass, now=True)
        elif self.on_size is not None:
            self._logged(self.run_pass())  # counts the mirror, evicts nothing

    def set_limit(self, name: str, value: Any) -> None:
        """Change ``max_size`` or ``unused_after`` while running (``SIGHUP``);
        limits set where there were none start the periodic passes."""
        setattr(self, name, value)
        if self._started and self.evicts and self._passes is None:
            self._passes = self._every(PASS_INTERVAL, self.run_pass, now=True)

    def _every(self, interval: float, f: Callable[[], Any], now: bool) -> LoopingCall:
        loop = LoopingCall(lambda: self._logged(f()))
        loop.clock = self.clock
        loop.start(interval, now=now)
        self._loops.append(loop)
        return loop

    def _logged(self, d: "Deferred[Any]") -> None:
        d.addErrback(lambda f: log.failure("Disk upkeep failed", f))

    def stop(self) -> "Deferred[Any]":
        """Stop the periodic work and merge what was recorded into the record
        (the log is empty at rest)."""
        for loop in self._loops:
            if loop.running:
                loop.stop()
        return self.run_blocking(self.usage.flush, self.usage.take())

    def flush(self) -> "Deferred[Any]":
        """Append what was recorded since the last flush to the log (in a
        thread), if anything."""
        recorded = self.usage.take()
        if not recorded:
            return succeed(None)
        return self.run_blocking(self.usage.append, recorded)

    def stored(self, stored: StoredFile) -> None:
        """A download was stored: count it, and evict if that went over the cap."""
        size = stored.info.size or 0
        self._added += size
        if self.total is not None:
            self.total += size
            self.files += 1
            if self.on_size is not None:
                self.on_size(self.total, self.files)
        if (
            self.max_size is not None
            and self.total is not None
            and self.total > self.max_size
            and self.clock.seconds() >= self._quiet_until
        ):
            self._logged(self.run_pass())

    def removed(self, stored: StoredFile) -> None:
        """A mirrored file was removed on request (``DELETE /+cache/``): uncount it."""
        if self.total is not None:
            self.total = max(0, self.total - (stored.info.size or 0))
            self.files = max(0, self.files - 1)

    def run_pass(self) -> "Deferred[Any]":
        """One eviction pass in a thread (or one more after the current one)."""
        if self._running:
            self._again = True
            return succeed(None)
        return Deferred.fromCoroutine(self._pass())

    async def _pass(self) -> None:
        self._running = True
        self._added = 0
        assert self.evictor is not None
        try:
            result = await self.evictor.run(
                EvictionPass(
                    self.usage,
                    self.usage.take(),
                    self.clock.seconds(),
                    self.max_size,
                    self.unused_after,
                )
            )
        finally:
            self._running = False
        self.total = result.total + self._added
        self.files = result.files
        if self.on_size is not None:
            self.on_size(self.total, self.files)
        if self.on_evicted is not None and result.evicted:
            self.on_evicted(len(result.evicted), sum(e.size for e in result.evicted))
        if self.max_size is not None and self.total > self.max_size:
            self._quiet_until = self.clock.seconds() + MIN_PASS_GAP
        for store, project in {(e.store, e.project) for e in result.evicted}:
            self.forget(store, project)
        if result.evicted:
            log.info(
                "Evicted {count} mirrored files ({size} bytes); the mirror "
                "holds {total} bytes",
                count=len(result.evicted),
                size=sum(e.size for e in result.evicted),
                total=self.total,
            )
        if self._again:
            self._again = False
            if self.max_size is not None and self.total > self.max_size:
                await self._pass()
