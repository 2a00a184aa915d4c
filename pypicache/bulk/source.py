# -*- test-case-name: tests.test_bulk -*-
"""What a resolution asks for, answered on the reactor for resolver threads.

A resolution runs in a thread of its own and asks for pages and core metadata
synchronously (:class:`ThreadSource`); :class:`Lookups` answers on the reactor,
once per job for each page and file, and fetches them ahead of the resolver.
"""

import threading
from typing import Any, Awaitable, Callable, Coroutine, Hashable, Sequence, TypeVar

from twisted.internet.defer import Deferred, DeferredSemaphore, fail, succeed
from twisted.internet.threads import blockingCallFromThread
from twisted.python.failure import Failure

from pypicache.bulk.candidates import choose_versions, split_page
from pypicache.bulk.metadata import DistMetadata, parse_core_metadata, sdist_metadata
from pypicache.bulk.nodes import Abandoned
from pypicache.bulk.targets import Target
from pypicache.concurrency import RunBlocking, SingleFlight
from pypicache.errors import PypicacheError
from pypicache.index.archives import read_wheel_metadata
from pypicache.index.model import DistFile, ProjectPage
from pypicache.proxy.mirror import Mirror
from pypicache.proxy.views import Views
from pypicache.storage.records import StoredFile

T = TypeVar("T")


def in_thread(reactor: Any, f: Callable[..., T], *args: Any) -> "Deferred[T]":
    """Run ``f`` in a new daemon thread; its result fires the returned Deferred.

    Resolutions wait on the reactor, which may in turn need the daemon's
    thread pool (to read archives): so they never take a thread from that
    pool, where a few of them could deadlock it. Cancelling the Deferred
    leaves the thread to stop at its next :meth:`ThreadSource.check`.
    """
    d: Deferred[T] = Deferred()

    def work() -> None:
        try:
            result = f(*args)
        except BaseException:
            failure = Failure()
            reactor.callFromThread(lambda: d.called or d.errback(failure))
        else:
            reactor.callFromThread(lambda: d.called or d.callback(result))

    threading.Thread(target=work, name="pypicache-bulk-resolver", daemon=True).start()
    return d


def shield(d: "Deferred[T]") -> "Deferred[T]":
    """A Deferred for ``d``'s result whose cancellation leaves ``d`` alone."""
    out: Deferred[T] = Deferred()

    def forward(result: Any) -> Any:
        if not out.called:
            (
                out.callback(result)
                if not isinstance(result, Failure)
                else out.errback(result)
            )
        return None if isinstance(result, Failure) else result

    d.addBoth(forward)
    return out


class Lookups:
    """Pages and core metadata for one job's resolutions (on the reactor).

    Each is computed once per job and kept, failures included, so that a
    resolver thread can read answers already in without a round trip.
    """

    def __init__(
        self,
        views: Views,
        mirror: Mirror,
        run_blocking: RunBlocking,
        fetch: Callable[[str, str], Awaitable[StoredFile]],
        abandoned: Callable[[], bool],
        concurrency: int,
    ) -> None:
        self._views = views
        self._mirror = mirror
        self._run_blocking = run_blocking
        self._fetch = fetch
        self.abandoned = abandoned
        self._results: dict[Hashable, tuple[bool, Any]] = {}
        self._flights: SingleFlight[Any] = SingleFlight()
        self._prefetching: set[Hashable] = set()
        self._prefetch_limit = DeferredSemaphore(concurrency)

    def _memo(
        self, key: Hashable, work: Callable[[], Coroutine[Any, Any, T]]
    ) -> "Deferred[T]":
        """The result of ``work()``, computed once per job; each caller gets its own Deferred."""
        if key in self._results:
            ok, value = self._results[key]
            return succeed(value) if ok else fail(value)

        async def remembered() -> T:
            try:
                value = await work()
            except Exception as e:
                # Kept for the job's life: without the frames its traceback holds.
                self._results[key] = (False, e.with_traceback(None))
                raise
            self._results[key] = (True, value)
            return value

        return self._flights.run(key, remembered)

    def known(self, key: Hashable) -> tuple[bool, Any] | None:
        """A result already computed (safe from any thread), or ``None``."""
        return self._results.get(key)

    def page(self, project: str) -> "Deferred[ProjectPage]":
        async def work() -> ProjectPage:
            return (await self._views.simple(project)).page

        return self._memo(("page", project), work)

    def metadata(self, project: str, file: DistFile) -> "Deferred[DistMetadata]":
        return self._memo(
            ("metadata", file.filename), lambda: self._read_metadata(project, file)
        )

    async def _read_metadata(self, project: str, file: DistFile) -> DistMetadata:
        if file.filename.endswith(".whl"):
            try:
                raw = await self._mirror.metadata(project, file.filename, whole=False)
            except PypicacheError:
                # No PEP 658 metadata, no ranges: read it from the wheel itself.
                opened = await self._views.open(
                    await self._fetch(project, file.filename)
                )
                raw = await self._run_blocking(read_wheel_metadata, opened.path.path)
                if raw is None:
                    return DistMetadata(
                        unknown="dependencies unknown: the wheel has no METADATA"
                    )
            return parse_core_metadata(raw)
        opened = await self._views.open(await self._fetch(project, file.filename))
        return await self._run_blocking(sdist_metadata, opened.path.path)  # type: ignore[no-any-return]

    def prefetch(self, projects: list[str], target: Target) -> None:
        """Fetch pages (and the likely metadata) ahead of the resolver, a few at a time."""
        for project in projects:
            key = ("prefetch", project, target.label)
            if self.abandoned() or key in self._prefetching:
                continue
            self._prefetching.add(key)
            d = self._prefetch_limit.run(
                lambda p=project: Deferred.fromCoroutine(self._prefetch_one(p, target))
            )
            d.addErrback(lambda _: None)

    async def _prefetch_one(self, project: str, target: Target) -> None:
        if self.abandoned():
            return
        page = await self.page(project)
        for _, files, _ in choose_versions(split_page(page, project), target)[:1]:
            # Only metadata that needs no download of the archive itself.
            if files[0].filename.endswith(".whl") and files[0].core_metadata:
                await self.metadata(project, files[0])


class ThreadSource:
    """A resolution's :class:`~pypicache.bulk.resolve.Source` in its thread: every call is answered by the reactor."""

    def __init__(self, reactor: Any, lookups: Lookups) -> None:
        self._reactor = reactor
        self._lookups = lookups

    def check(self) -> None:
        if self._lookups.abandoned():
            raise Abandoned()

    def _ask(self, key: Hashable, f: Callable[..., "Deferred[T]"], *args: Any) -> T:
        self.check()
        # Answers already in (most are, thanks to prefetching) are immutable
        # and read without a round trip: a dict lookup is atomic.
        known = self._lookups.known(key)
        if known is not None:
            ok, value = known
            if ok:
                return value  # type: ignore[no-any-return]
            raise value
        return blockingCallFromThread(self._reactor, f, *args)  # type: ignore[no-any-return]

    def page(self, project: str) -> ProjectPage:
        return self._ask(("page", project), self._lookups.page, project)

    def metadata(self, project: str, file: DistFile) -> DistMetadata:
        return self._ask(
            ("metadata", file.filename), self._lookups.metadata, project, file
        )

    def prefetch(self, projects: Sequence[str], target: Target) -> None:
        self._reactor.callFromThread(self._lookups.prefetch, list(projects), target)
