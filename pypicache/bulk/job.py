# -*- test-case-name: tests.test_bulk -*-
"""Bulk caching: ``POST /requirements.txt`` fills the cache with all a project needs.

The targets and query parameters are in :mod:`pypicache.targets`; choosing
versions and files, and the resolvelib resolution, in :mod:`pypicache.resolve`.
This module is the reactor side: :class:`BulkCacher` parses the file in a
thread, runs one resolution per target in its own thread (which asks the
reactor for pages and metadata through ``blockingCallFromThread``, prefetched
concurrently), then downloads the chosen files through the proxy with a bound
on concurrency, checks ``--hash`` values, caches the build requirements of
every sdist, and reports.
"""

import threading
from collections import defaultdict
from functools import partial
from typing import Any, Callable, Coroutine, Hashable, Mapping, Sequence, TypeVar

import attrs
from packaging.requirements import Requirement
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredSemaphore,
    fail,
    succeed,
)
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from pypicache.bulk.candidates import choose_versions, is_sdist, split_page
from pypicache.bulk.metadata import (
    DEFAULT_BUILD_REQUIRES,
    DistMetadata,
    file_digest,
    parse_core_metadata,
    sdist_metadata,
)
from pypicache.bulk.requirements import ParsedFile, RequirementLine, parse_requirements
from pypicache.bulk.resolve import Abandoned, Resolution, Wanted, resolve
from pypicache.bulk.targets import BulkParams, Target
from pypicache.concurrency import RunBlocking, SingleFlight
from pypicache.errors import PypicacheError
from pypicache.index.archives import read_wheel_metadata
from pypicache.index.model import DistFile, ProjectPage
from pypicache.storage.records import StoredFile

log = Logger()

T = TypeVar("T")

#: How many rounds of build requirements (build requirements of build requirements…).
MAX_BUILD_ROUNDS = 4

STATUSES = ("fetched", "cached", "failed")


# -- the reactor side -------------------------------------------------------------------------


def _in_thread(reactor: Any, f: Callable[..., T], *args: Any) -> "Deferred[T]":
    """Run ``f`` in a new daemon thread; its result fires the returned Deferred.

    Resolutions wait on the reactor, which may in turn need the daemon's
    thread pool (to read archives): so they never take a thread from that
    pool, where a few of them could deadlock it. Cancelling the Deferred
    leaves the thread to stop at its next :meth:`Source.check`.
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


def _shield(d: "Deferred[T]") -> "Deferred[T]":
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


class _ThreadSource:
    """A :class:`Source` for a resolver thread: every call is answered by the reactor."""

    def __init__(self, reactor: Any, job: "_Job") -> None:
        self._reactor = reactor
        self._job = job

    def check(self) -> None:
        if self._job.abandoned:
            raise Abandoned()

    def _ask(self, key: Hashable, f: Callable[..., "Deferred[T]"], *args: Any) -> T:
        self.check()
        # Answers already in (most are, thanks to prefetching) are immutable
        # and read without a round trip: a dict lookup is atomic.
        known = self._job.known(key)
        if known is not None:
            ok, value = known
            if ok:
                return value  # type: ignore[no-any-return]
            raise value
        return blockingCallFromThread(self._reactor, f, *args)  # type: ignore[no-any-return]

    def page(self, project: str) -> ProjectPage:
        return self._ask(("page", project), self._job.page, project)

    def metadata(self, project: str, file: DistFile) -> DistMetadata:
        return self._ask(("metadata", file.filename), self._job.metadata, project, file)

    def prefetch(self, projects: Sequence[str], target: Target) -> None:
        self._reactor.callFromThread(self._job.prefetch, list(projects), target)


@attrs.define(eq=False)
class _FileTask:
    """A file this job caches, and its report entry once done."""

    project: str
    version: str
    info: DistFile
    targets: list[str]
    hashes: dict[str, frozenset[str]]
    notes: list[str]
    done: "Deferred[dict[str, Any] | None]" = attrs.field(default=None)
    entry: dict[str, Any] | None = None
    finished: bool = False


class _Job:
    """One ``POST /requirements.txt``: resolutions, downloads and the report."""

    def __init__(
        self,
        cacher: "BulkCacher",
        params: BulkParams,
        parsed: ParsedFile,
        emit: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self._cacher = cacher
        self._params = params
        self._parsed = parsed
        self._emit = emit
        self.abandoned = False
        self._results: dict[Hashable, tuple[bool, Any]] = {}
        self._flights: SingleFlight[Any] = SingleFlight()
        self._prefetching: set[Hashable] = set()
        self._prefetch_limit = DeferredSemaphore(cacher.concurrency)
        self._downloads = DeferredSemaphore(cacher.concurrency)
        self._before: dict[str, bool] = {}
        self._files: dict[str, _FileTask] = {}
        self._requirements: list[dict[str, Any]] = []
        self._targets: list[dict[str, Any]] = []

    # -- what the resolver threads ask (on the reactor) ---------------------------

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
                self._results[key] = (False, e)
                raise
            self._results[key] = (True, value)
            return value

        return self._flights.run(key, remembered)

    def known(self, key: Hashable) -> tuple[bool, Any] | None:
        """A result already computed (safe from any thread), or ``None``."""
        return self._results.get(key)

    def page(self, project: str) -> "Deferred[ProjectPage]":
        async def work() -> ProjectPage:
            _, page = await self._cacher.views.simple(project)
            return page

        return self._memo(("page", project), work)

    def metadata(self, project: str, file: DistFile) -> "Deferred[DistMetadata]":
        return self._memo(
            ("metadata", file.filename), lambda: self._read_metadata(project, file)
        )

    async def _read_metadata(self, project: str, file: DistFile) -> DistMetadata:
        cacher = self._cacher
        if file.filename.endswith(".whl"):
            try:
                raw = await cacher.mirror.metadata(project, file.filename)
            except PypicacheError:
                # No PEP 658 metadata: read it from the wheel itself.
                stored = await self._fetch(project, file.filename)
                raw = await cacher.run_blocking(read_wheel_metadata, stored.path.path)
                if raw is None:
                    return DistMetadata(
                        unknown="dependencies unknown: the wheel has no METADATA"
                    )
            return parse_core_metadata(raw)
        stored = await self._fetch(project, file.filename)
        return await cacher.run_blocking(sdist_metadata, stored.path.path)  # type: ignore[no-any-return]

    def prefetch(self, projects: list[str], target: Target) -> None:
        """Fetch pages (and the likely metadata) ahead of the resolver, a few at a time."""
        for project in projects:
            key = ("prefetch", project, target.label)
            if self.abandoned or key in self._prefetching:
                continue
            self._prefetching.add(key)
            d = self._prefetch_limit.run(
                lambda p=project: Deferred.fromCoroutine(self._prefetch_one(p, target))
            )
            d.addErrback(lambda _: None)

    async def _prefetch_one(self, project: str, target: Target) -> None:
        if self.abandoned:
            return
        page = await self.page(project)
        for _, files, _ in choose_versions(split_page(page, project), target)[:1]:
            # Only metadata that needs no download of the archive itself.
            if files[0].filename.endswith(".whl") and files[0].core_metadata:
                await self.metadata(project, files[0])

    # -- downloads ----------------------------------------------------------------

    def _remember_before(self, project: str, filename: str) -> None:
        if filename not in self._before:
            self._before[filename] = (
                self._cacher.store.find(project, filename) is not None
            )

    async def _fetch(self, project: str, filename: str) -> StoredFile:
        self._remember_before(project, filename)
        return await self._cacher.views.fetch(project, filename)

    def _want(
        self,
        project: str,
        version: str,
        info: DistFile,
        target: Target,
        hashes: Mapping[str, frozenset[str]] | None = None,
        note: str | None = None,
    ) -> _FileTask:
        task = self._files.get(info.filename)
        if task is None:
            task = _FileTask(project, version, info, [], dict(hashes or {}), [])
            self._files[info.filename] = task
            task.done = self._downloads.run(
                lambda: Deferred.fromCoroutine(self._cache_file(task))
            )
        if target.label not in task.targets:
            task.targets.append(target.label)
        if note and note not in task.notes:
            task.notes.append(note)
        return task

    async def _cache_file(self, task: _FileTask) -> dict[str, Any] | None:
        try:
            return await self._cache_one(task)
        finally:
            task.finished = True

    async def _cache_one(self, task: _FileTask) -> dict[str, Any] | None:
        if self.abandoned:
            return None
        filename = task.info.filename
        entry: dict[str, Any] = {
            "project": task.project,
            "version": task.version,
            "filename": filename,
        }
        try:
            stored = await self._fetch(task.project, filename)
            entry.update(
                sha256=stored.info.hashes.get("sha256"),
                size=stored.info.size,
                status="cached" if self._before.get(filename) else "fetched",
            )
            mismatch = (
                await self._check_hashes(stored, task.hashes) if task.hashes else None
            )
            if mismatch is not None:
                entry.update(status="failed", reason=mismatch)
        except PypicacheError as e:
            entry.setdefault("sha256", task.info.hashes.get("sha256"))
            entry.update(status="failed", reason=e.message)
        except Exception as e:
            log.failure("Bulk caching of {filename} failed", filename=filename)
            entry.setdefault("sha256", task.info.hashes.get("sha256"))
            entry.update(status="failed", reason=f"internal error: {e}")
        entry["targets"] = task.targets
        if task.notes:
            entry["notes"] = task.notes
        task.entry = entry
        if self._emit is not None and not self.abandoned:
            try:
                self._emit(entry)
            except Exception:
                log.failure("Could not send progress for {filename}", filename=filename)
        return entry

    async def _check_hashes(
        self, stored: StoredFile, allowed: Mapping[str, frozenset[str]]
    ) -> str | None:
        """Why ``stored`` fails its ``--hash`` values, or ``None`` if it matches one."""
        actual: dict[str, str] = {}
        for algorithm in allowed:
            digest = stored.info.hashes.get(algorithm)
            if digest is None:
                digest = await self._cacher.run_blocking(
                    file_digest, stored.path.path, algorithm
                )
            actual[algorithm] = digest.lower()
            if actual[algorithm] in allowed[algorithm]:
                return None
        shown = ", ".join(f"{a}:{d}" for a, d in actual.items())
        return f"hash mismatch: the file has {shown}, not one of the --hash values"

    # -- the run ------------------------------------------------------------------

    async def _resolve(
        self, target: Target, wanted: Sequence[Wanted], pre: bool, deps: bool
    ) -> Resolution:
        source = _ThreadSource(self._cacher.reactor, self)
        return await self._cacher.resolutions.run(  # type: ignore[no-any-return]
            self._cacher.run_resolver,
            partial(resolve, source, target, list(wanted), pre=pre, deps=deps),
        )

    async def run(self) -> dict[str, Any]:
        try:
            return await self._run()
        except CancelledError:
            self.abandoned = True
            log.info("Bulk caching abandoned by its client; downloads under way go on")
            raise

    async def _run(self) -> dict[str, Any]:
        parsed, params = self._parsed, self._params
        for target in params.targets:
            self.prefetch(sorted({r.name for r in parsed.requirements}), target)
        for target in params.targets:
            await self._run_target(target, parsed.requirements)
        await self._all_done()
        return self._report()

    async def _run_target(
        self, target: Target, lines: Sequence[RequirementLine]
    ) -> None:
        params = self._params
        wanted: list[Wanted] = []
        entries: dict[int, dict[str, Any]] = {}
        hashed: dict[str, dict[str, frozenset[str]]] = defaultdict(dict)
        for origin, line in enumerate(lines):
            entry: dict[str, Any] = {
                "line": line.line,
                "line_number": line.line_number,
                "name": line.name,
                "target": target.label,
                "version": None,
            }
            entries[origin] = entry
            self._requirements.append(entry)
            if not target.evaluate(line.requirement.marker):
                entry.update(
                    status="skipped",
                    reason=f"marker {line.requirement.marker} is false for this target",
                )
                continue
            wanted.append(
                Wanted.from_requirement(
                    line.requirement, origin, line.hashes, extras=params.deps
                )
            )
            for algorithm, digests in line.hashes.items():
                hashed[line.name][algorithm] = (
                    hashed[line.name].get(algorithm, frozenset()) | digests
                )
        resolution = (
            await self._resolve(target, wanted, self._parsed.pre, params.deps)
            if wanted
            else Resolution({}, {}, {})
        )
        for origin, entry in entries.items():
            if "status" in entry:
                continue
            pin = resolution.pins.get(entry["name"])
            if origin in resolution.unresolved or pin is None:
                entry.update(
                    status="unresolved",
                    reason=resolution.unresolved.get(origin, "not resolved"),
                )
            else:
                entry.update(status="resolved", version=str(pin.version))
                note = resolution.notes.get(f"{pin.name} {pin.version}")
                if note:
                    entry["note"] = note
        tasks = self._want_pins(target, resolution, hashed)
        summary: dict[str, Any] = {
            "target": target.label,
            "resolved": {
                name: str(c.version) for name, c in sorted(resolution.pins.items())
            },
        }
        if resolution.notes:
            summary["notes"] = dict(sorted(resolution.notes.items()))
        self._targets.append(summary)
        summary["build"] = await self._build_requirements(
            target, [t for t in tasks if is_sdist(t.info.filename)]
        )

    def _want_pins(
        self,
        target: Target,
        resolution: Resolution,
        hashed: Mapping[str, Mapping[str, frozenset[str]]] | None = None,
        note: str | None = None,
    ) -> list[_FileTask]:
        """Start caching the files of each pinned version: the target's best, or all of them."""
        tasks = []
        for name, candidate in sorted(resolution.pins.items()):
            version = str(candidate.version)
            files: Sequence[DistFile] = candidate.files[:1]
            if self._params.all_files:
                ok, page = self._results.get(("page", name), (False, None))
                if ok:
                    files = split_page(page, name).get(candidate.version, files)
            unknown = resolution.notes.get(f"{name} {version}")
            for f in files:
                notes = [note] if note else []
                if unknown and f.filename == candidate.files[0].filename:
                    notes.append(unknown)
                task = self._want(name, version, f, target, (hashed or {}).get(name))
                task.notes.extend(n for n in notes if n not in task.notes)
                tasks.append(task)
        return tasks

    async def _build_requirements(
        self, target: Target, sdists: list[_FileTask]
    ) -> list[dict[str, Any]]:
        """Cache the build requirements of the sdists cached for ``target`` (and theirs)."""
        summaries: list[dict[str, Any]] = []
        seen: set[str] = set()
        handled: set[tuple[str, ...]] = set()
        pending = sdists
        for _ in range(MAX_BUILD_ROUNDS):
            groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
            for task in pending:
                if task.info.filename in seen:
                    continue
                seen.add(task.info.filename)
                entry = await _shield(task.done)
                if entry is None or entry["status"] == "failed":
                    continue
                try:
                    metadata = await _shield(self.metadata(task.project, task.info))
                except PypicacheError as e:
                    log.warn(
                        "No build requirements for {filename}: {reason}",
                        filename=task.info.filename,
                        reason=e.message,
                    )
                    metadata = DistMetadata()
                requires = (
                    metadata.build_requires
                    if metadata.build_requires is not None
                    else DEFAULT_BUILD_REQUIRES
                )
                groups[tuple(sorted(set(requires)))].append(task.info.filename)
            pending = []
            for requires, owners in groups.items():
                if not requires or requires in handled:
                    continue
                handled.add(requires)
                wanted = []
                for origin, text in enumerate(requires):
                    requirement = Requirement(text)
                    if target.evaluate(requirement.marker):
                        wanted.append(Wanted.from_requirement(requirement, origin))
                resolution = (
                    await self._resolve(target, wanted, False, self._params.deps)
                    if wanted
                    else Resolution({}, {}, {})
                )
                note = "build requirement of " + ", ".join(owners)
                tasks = self._want_pins(target, resolution, note=note)
                summary: dict[str, Any] = {
                    "for": owners,
                    "requires": list(requires),
                    "resolved": {
                        name: str(c.version)
                        for name, c in sorted(resolution.pins.items())
                    },
                }
                if resolution.unresolved:
                    summary["unresolved"] = {
                        requires[i]: reason
                        for i, reason in sorted(resolution.unresolved.items())
                    }
                summaries.append(summary)
                pending.extend(t for t in tasks if is_sdist(t.info.filename))
            if not pending:
                break
        return summaries

    async def _all_done(self) -> None:
        while True:
            waiting = [t for t in self._files.values() if not t.finished]
            if not waiting:
                return
            for task in waiting:
                await _shield(task.done)

    def _report(self) -> dict[str, Any]:
        files = []
        for task in sorted(
            self._files.values(), key=lambda t: (t.project, t.version, t.info.filename)
        ):
            if task.entry is not None:
                task.entry["targets"] = task.targets
                files.append(task.entry)
        totals = {status: 0 for status in STATUSES}
        for entry in files:
            totals[entry["status"]] += 1
        for status in ("resolved", "unresolved", "skipped"):
            totals[status] = sum(
                1 for r in self._requirements if r.get("status") == status
            )
        totals["unparsed"] = len(self._parsed.unparsed)
        return {
            "requirements": self._requirements,
            "files": files,
            "unparsed": [u.to_json() for u in self._parsed.unparsed],
            "totals": totals,
            "targets": self._targets,
        }


@attrs.define
class BulkCacher:
    """``POST /requirements.txt``: resolve a requirements file and cache all it needs.

    :ivar views: the combined pages and the proxy's downloads.
    :ivar mirror: core metadata (PEP 658, or from the archive).
    :ivar run_blocking: the daemon's thread pool, for parsing and archive reads.
    :ivar concurrency: downloads (and page prefetches) under way at once, per request.
    :ivar run_resolver: how a resolution is run in a thread (default: a thread of its own).
    :ivar max_resolutions: resolutions running at once across requests.
    """

    views: Any
    mirror: Any
    store: Any
    run_blocking: RunBlocking
    reactor: Any
    concurrency: int = 8
    run_resolver: Callable[..., "Deferred[Any]"] | None = None
    max_resolutions: int = 4
    resolutions: DeferredSemaphore = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.resolutions = DeferredSemaphore(self.max_resolutions)
        if self.run_resolver is None:
            reactor = self.reactor
            self.run_resolver = lambda f, *args: _in_thread(reactor, f, *args)

    async def run(
        self,
        text: str,
        params: BulkParams,
        emit: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Cache everything ``text`` (a requirements file) needs; return the report.

        ``emit`` is called with each file's entry as it completes. Cancelling
        (the client went away) stops the resolutions; downloads under way
        finish and are kept.

        :raises BadRequest: if the file cannot be read, naming the line.
        """
        parsed = await self.run_blocking(parse_requirements, text)
        job = _Job(self, params, parsed, emit)
        return await job.run()


__all__ = [
    "BulkCacher",
]
