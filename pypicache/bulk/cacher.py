# -*- test-case-name: tests.test_bulk -*-
"""Bulk caching: ``POST /requirements.txt`` fills the cache with all a project needs.

The targets and query parameters are in :mod:`pypicache.bulk.targets`; choosing
versions and files in :mod:`pypicache.bulk.candidates`; the resolvelib
resolution in :mod:`pypicache.bulk.resolve`. :class:`BulkCacher` parses the
file in a thread and runs a :class:`~pypicache.bulk.job.Job`: one resolution
per target in its own thread (which asks the reactor for pages and metadata
through ``blockingCallFromThread``, prefetched concurrently), then downloads
of the chosen files through the proxy with a bound on concurrency, ``--hash``
checks, the build requirements of every sdist, and a report.
"""

from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore

from pypicache.concurrency import RunBlocking
from pypicache.errors import PayloadTooLarge, UnprocessableEntity
from pypicache.proxy.mirror import Mirror
from pypicache.proxy.views import Views
from pypicache.storage.interface import IStore
from pypicache.storage.pins import Pins

if TYPE_CHECKING:
    from pypicache.bulk.targets import BulkParams

#: Lines a requirements file may have (hash continuation lines count).
DEFAULT_MAX_LINES = 20000
#: Distinct projects a requirements file may name.
DEFAULT_MAX_PROJECTS = 1000
#: Rounds one resolution may take (resolvelib's measure of backtracking).
DEFAULT_MAX_ROUNDS = 5000


class BulkCacher:
    """``POST /requirements.txt``: resolve a requirements file and cache all it needs.

    :ivar views: the combined pages and the proxy's downloads.
    :ivar mirror: core metadata (PEP 658, or from the archive).
    :ivar run_blocking: the daemon's thread pool, for parsing and archive reads.
    :ivar concurrency: downloads (and page prefetches) under way at once, per request.
    :ivar run_resolver: how a resolution is run in a thread (default: a thread of its own).
    :ivar max_resolutions: resolutions running at once across requests.
    :ivar max_lines: lines a requirements file may have.
    :ivar max_projects: distinct projects it may name.
    :ivar max_rounds: rounds one resolution may take before it gives up.
    """

    views: Views
    mirror: Mirror
    store: IStore
    run_blocking: RunBlocking
    reactor: Any
    concurrency: int
    run_resolver: Callable[..., "Deferred[Any]"] | None
    max_resolutions: int
    max_lines: int
    max_projects: int
    max_rounds: int
    #: Keeps the files of open jobs from eviction (``None``: nothing evicts).
    pins: Pins | None
    #: Told of each job's outcome (done, failed, cancelled), for the metrics.
    on_job: Callable[[str], None] | None
    resolutions: DeferredSemaphore

    __slots__ = (
        "views",
        "mirror",
        "store",
        "run_blocking",
        "reactor",
        "concurrency",
        "run_resolver",
        "max_resolutions",
        "max_lines",
        "max_projects",
        "max_rounds",
        "pins",
        "on_job",
        "resolutions",
        "__weakref__",
    )

    def __init__(
        self,
        views: Views,
        mirror: Mirror,
        store: IStore,
        run_blocking: RunBlocking,
        reactor: Any,
        concurrency: int = 8,
        run_resolver: Callable[..., "Deferred[Any]"] | None = None,
        max_resolutions: int = 4,
        max_lines: int = DEFAULT_MAX_LINES,
        max_projects: int = DEFAULT_MAX_PROJECTS,
        max_rounds: int = DEFAULT_MAX_ROUNDS,
        pins: Pins | None = None,
        *,
        on_job: Callable[[str], None] | None = None,
    ) -> None:
        self.views = views
        self.mirror = mirror
        self.store = store
        self.run_blocking = run_blocking
        self.reactor = reactor
        self.concurrency = concurrency
        self.run_resolver = run_resolver
        self.max_resolutions = max_resolutions
        self.max_lines = max_lines
        self.max_projects = max_projects
        self.max_rounds = max_rounds
        self.pins = pins
        self.on_job = on_job
        self.__attrs_post_init__()

    def __attrs_post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.resolutions = DeferredSemaphore(self.max_resolutions)
        if self.run_resolver is None:
            self.run_resolver = self._in_own_thread

    def _in_own_thread(self, f: Callable[..., Any], *args: Any) -> "Deferred[Any]":
        from pypicache.bulk.source import in_thread

        return in_thread(self.reactor, f, *args)

    async def run(
        self,
        text: str,
        params: "BulkParams",
        emit: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Cache everything ``text`` (a requirements file) needs; return the report.

        ``emit`` is called with each file's entry as it completes. Cancelling
        (the client went away) stops the resolutions; downloads under way
        finish and are kept.

        :raises BadRequest: if the file cannot be read, naming the line.
        :raises PayloadTooLarge: more than :attr:`max_lines` lines.
        :raises UnprocessableEntity: more than :attr:`max_projects` projects.
        """
        # Imported here (as the targets, the page and metadata readers of
        # source.py): the resolver, the requirements parser and packaging's
        # markers, tags and metadata cost the daemon's start-up a tenth of a
        # second and megabytes of memory, and most daemons never need them.
        from pypicache.bulk.job import Job
        from pypicache.bulk.requirements import parse_requirements

        self._check_lines(text, "requirements file")
        parsed = await self.run_blocking(parse_requirements, text)
        self._check_projects(parsed.requirements, "requirements file")
        return await self._run_job(Job(self, params, parsed, emit))

    async def warm(
        self,
        text: str,
        fmt: str | None = None,
        emit: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Cache exactly the files the lock file ``text`` names (``POST /+warm``).

        :param fmt: one of :data:`pypicache.bulk.locks.FORMATS`, or ``None``
            to tell by the content.
        :raises BadRequest: unreadable, naming the line.
        :raises UnprocessableEntity: not a lock (naming the entry), or more
            than :attr:`max_projects` projects.
        :raises PayloadTooLarge: more than :attr:`max_lines` lines.
        """
        from pypicache.bulk.locks import parse_lock
        from pypicache.bulk.warm import LockJob

        self._check_lines(text, "lock file")
        lock = await self.run_blocking(parse_lock, text, fmt)
        self._check_projects(lock.requirements, "lock file")
        return await self._run_job(LockJob(self, lock, emit))

    def _check_lines(self, text: str, what: str) -> None:
        lines = text.count("\n") + 1
        if lines > self.max_lines:
            raise PayloadTooLarge(
                f"The {what} has {lines} lines; at most {self.max_lines} "
                "are accepted (--bulk-max-lines)"
            )

    def _check_projects(self, requirements: Any, what: str) -> None:
        projects = len({r.name for r in requirements})
        if projects > self.max_projects:
            raise UnprocessableEntity(
                f"The {what} names {projects} projects; at most "
                f"{self.max_projects} are accepted (--bulk-max-projects)"
            )

    async def _run_job(self, job: Any) -> dict[str, Any]:
        outcome = "failed"
        try:
            report: dict[str, Any] = await job.run()
            outcome = "done"
            return report
        except CancelledError:
            outcome = "cancelled"
            raise
        finally:
            if self.on_job is not None:
                self.on_job(outcome)
