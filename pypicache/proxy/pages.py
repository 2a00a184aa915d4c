# -*- test-case-name: tests.test_proxy -*-
"""Upstream project pages: a time-to-live, revalidation, stale-if-error and a negative cache."""

from collections import OrderedDict
from typing import Callable

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pypicache.concurrency import NotReady, RunBlocking, SingleFlight, result_now
from pypicache.errors import NotFound, UpstreamError
from pypicache.proxy.upstream import Upstream
from pypicache.storage.interface import IStore
from pypicache.storage.locks import HeldLock, Locks
from pypicache.storage.marks import Watch, slot_of
from pypicache.storage.records import CachedPage
from pypicache.storage.sharedmarks import SharedMarks

log = Logger()


@attrs.define
class ProjectPages:
    """Upstream project pages: fresh for ``ttl``, then revalidated; stale on errors.

    Pages are kept by the store, so they survive restarts; the ``memory_size``
    most recently used are also kept in memory. An upstream ``404``
    is remembered for ``negative_ttl``; after an upstream failure the stale page
    is served without retrying for ``retry_after`` seconds.
    """

    _upstream: Upstream
    _store: IStore
    _clock: IReactorTime
    ttl: float = 600.0
    negative_ttl: float = 60.0
    retry_after: float = 30.0
    memory_size: int = 1000
    _run_blocking: "RunBlocking | None" = None
    #: One fetch per page across the processes on the cache folder (``None``:
    #: this process is the only one).
    _locks: Locks | None = None
    #: The marks of refreshes and purges made by any process on the cache
    #: folder (``None``: this process is the only one).
    marks: Watch | None = None
    #: The marks of refreshes and purges made through any daemon on the
    #: store (:mod:`pypicache.storage.sharedmarks`; ``None``: none kept).
    shared_marks: SharedMarks | None = None
    _memory: "OrderedDict[str, CachedPage]" = attrs.field(factory=OrderedDict)
    _missing: dict[str, float] = attrs.field(factory=dict)
    _failing: dict[str, float] = attrs.field(factory=dict)
    _flights: SingleFlight[CachedPage] = attrs.field(factory=SingleFlight)
    #: How many answers hold back the write of a page fetched for them
    #: (:meth:`hold_write`), and the writes held back.
    _holding: dict[str, int] = attrs.field(factory=dict)
    _held: dict[str, Callable[[], None]] = attrs.field(factory=dict)

    def _in_memory(self, project: str) -> CachedPage | None:
        if self.marks is not None and self.marks.moved():
            self._drop_marked()
        if self.shared_marks is not None:
            for gone in self.shared_marks.marked():
                for table in (self._memory, self._missing, self._failing):
                    table.pop(gone, None)
        cached = self._memory.get(project)
        if cached is not None:
            self._memory.move_to_end(project)
        return cached

    async def cached(self, project: str) -> CachedPage | None:
        """The cached page of ``project`` however old, without asking upstream."""
        if self.shared_marks is not None:
            waiting = self.shared_marks.ready()
            if waiting is not None:
                await waiting
        cached = self._in_memory(project)
        if cached is None:
            cached = await self._store.read_page(project)
            if cached is not None:
                self._remember(project, cached)
        return cached

    def cached_now(self, project: str) -> CachedPage | None:
        """:meth:`cached`, if the store answers at once.

        :raises NotReady: it does not.
        """
        if self.shared_marks is not None and self.shared_marks.ready() is not None:
            raise NotReady()
        cached = self._in_memory(project)
        if cached is None:
            cached = result_now(self._store.read_page(project))
            if cached is not None:
                self._remember(project, cached)
        return cached

    def fresh_now(self, project: str) -> CachedPage | None:
        """The cached page of ``project`` if it is younger than ``ttl`` (and
        the store answers at once), else ``None``."""
        try:
            cached = self.cached_now(project)
        except NotReady:
            return None
        if cached is not None and self._clock.seconds() - cached.fetched_at < self.ttl:
            return cached
        return None

    async def forget(self, project: str) -> None:
        """Drop the cached page of ``project``, here and in the store: the
        next request fetches it (unconditionally)."""
        self._memory.pop(project, None)
        self._missing.pop(project, None)
        self._failing.pop(project, None)
        await self._store.drop_page(project)

    def _drop_marked(self) -> None:
        """Forget what this process keeps of the projects another process
        refreshed or purged: their pages are read again from the disk (or
        fetched, once the refresh dropped them there too)."""
        assert self.marks is not None
        slots = self.marks.marked()
        for table in (self._memory, self._missing, self._failing):
            for project in [p for p in table if slot_of(p) in slots]:
                del table[project]

    def _remember(self, project: str, cached: CachedPage) -> None:
        """Keep a page in memory, forgetting the least recently used past ``memory_size``."""
        self._memory[project] = cached
        self._memory.move_to_end(project)
        while len(self._memory) > self.memory_size:
            self._memory.popitem(last=False)

    def _remember_until(
        self, table: dict[str, float], project: str, until: float
    ) -> None:
        """Note ``project`` in ``table`` until ``until``, keeping it bounded.

        Each table has one lifetime, so insertion order is expiry order: expired
        entries, and past ``memory_size`` the oldest, leave from the front.
        """
        table.pop(project, None)
        table[project] = until
        now = self._clock.seconds()
        while table:
            oldest = next(iter(table))
            if table[oldest] > now and len(table) <= self.memory_size:
                break
            del table[oldest]

    async def get(self, project: str) -> CachedPage:
        """Return the project page, asking upstream only when the cached one is not fresh.

        :raises NotFound: the upstream has no such project.
        :raises UpstreamError: upstream failed and nothing is cached.
        """
        now = self._clock.seconds()
        cached = await self.cached(project)
        if cached is not None and now - cached.fetched_at < self.ttl:
            return cached
        if self._missing.get(project, 0) > now:
            raise NotFound(f"No project {project!r} upstream")
        if cached is not None and self._failing.get(project, 0) > now:
            return cached
        return await self._flights.run(project, lambda: self._refresh(project, cached))

    async def _refresh(self, project: str, cached: CachedPage | None) -> CachedPage:
        """Fetch the page under its lock; another process may have fetched it meanwhile."""
        if self._locks is None:
            return await self._fetch(project, cached, None)
        try:
            lock = await self._locks.acquire(
                self._store.lock_path("pages", None, project),
                lambda: log.info(
                    "Waiting for another process's fetch of the page of {project}",
                    project=project,
                ),
            )
        except OSError as e:  # a full disk: pages are still served
            log.warn(
                "No lock for the page of {project} ({reason}): fetching it anyway",
                project=project,
                reason=e,
            )
            return await self._fetch(project, cached, None)
        try:
            # Another process may have fetched it while this one waited: read
            # it back if it was written since.
            stamp = await self._store.page_stamp(project)
            on_disk = None
            if stamp is not None and (cached is None or stamp > cached.fetched_at):
                on_disk = await self._store.read_page(project)
            if on_disk is not None and (
                cached is None or on_disk.fetched_at > cached.fetched_at
            ):
                self._remember(project, on_disk)
                cached = on_disk
                if self._clock.seconds() - on_disk.fetched_at < self.ttl:
                    return on_disk
            return await self._fetch(project, cached, lock)
        finally:
            lock.release()  # a no-op once _fetch handed it to the page's write

    async def _fetch(
        self, project: str, cached: CachedPage | None, lock: HeldLock | None
    ) -> CachedPage:
        try:
            response = await self._upstream.fetch_page(
                project,
                cached.etag if cached else None,
                cached.last_modified if cached else None,
            )
            if (
                response.page is not None
                and not response.page.files
                and response.page.status != "quarantined"
                and cached is not None
                and cached.page.files
            ):
                # A captive portal or a broken mirror answers 200 with no
                # links; a project that really lost every file answers 404
                # (or is quarantined: PEP 792 offers none of its files).
                raise UpstreamError(
                    f"Upstream sent an empty page for {project!r}, which had files"
                )
        except NotFound:
            self._remember_until(
                self._missing, project, self._clock.seconds() + self.negative_ttl
            )
            raise
        except UpstreamError as e:
            if cached is None:
                raise
            self._remember_until(
                self._failing, project, self._clock.seconds() + self.retry_after
            )
            log.warn(
                "Serving stale page of {project}: {reason}",
                project=project,
                reason=e.message,
            )
            return cached
        if response.page is None and cached is None:
            # Not Modified, to a request that named no version: a broken upstream.
            raise UpstreamError(
                f"Upstream answered 304 to an unconditional request for {project!r}"
            )
        self._failing.pop(project, None)
        self._missing.pop(project, None)
        page = response.page if response.page is not None else cached.page  # type: ignore[union-attr]
        fresh = CachedPage(
            page, self._clock.seconds(), response.etag, response.last_modified
        )
        self._remember(project, fresh)
        # Written without making the client wait; other processes wait for
        # the page in the store, not for this client.
        held = lock.handover() if lock is not None else None
        if self._holding.get(project):
            # Once the answer being made of it is (:meth:`hold_write`); one
            # held before (the page fetched again meanwhile) goes first.
            earlier = self._held.pop(project, None)
            if earlier is not None:
                earlier()
            self._held[project] = lambda: self._write(project, fresh, held)
        else:
            self._write(project, fresh, held)
        return fresh

    def _write(self, project: str, fresh: CachedPage, lock: HeldLock | None) -> None:
        """Store ``fresh``, then release ``lock`` (the page's, if held)."""
        written = self._store.write_page(project, fresh)
        written.addErrback(
            lambda failure: log.failure(
                "Could not store the page of {project}", failure, project=project
            )
        )
        if lock is not None:
            written.addBoth(lambda _: lock.release())

    def hold_write(self, project: str) -> Callable[[], None]:
        """Hold back the write of ``project``'s page if one is fetched from
        now on, until the function returned is called (once, in any case:
        the write then starts if one was held, and no other holds it).

        For a client whose answer is made from the page fetched for it: the
        store's serialization of a large page (holding the GIL) would run
        beside the answer's rendering, in the client's time.
        The page is in memory meanwhile; other processes wait for its
        lock (handed to the write) a little longer.
        """
        self._holding[project] = self._holding.get(project, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self._holding.pop(project) - 1
            if left:
                self._holding[project] = left
                return
            write = self._held.pop(project, None)
            if write is not None:
                write()

        return release
