# -*- test-case-name: tests.test_bulk -*-
"""The files one bulk job caches: bounded concurrent downloads, ``--hash`` checks, report entries."""

from typing import Any, Callable, Mapping

import attrs
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.logger import Logger

from pypicache.bulk.metadata import file_digest
from pypicache.bulk.source import shield
from pypicache.bulk.targets import Target
from pypicache.concurrency import RunBlocking
from pypicache.errors import PypicacheError
from pypicache.index.model import DistFile
from pypicache.proxy.views import Views
from pypicache.storage.interface import IStore
from pypicache.storage.pins import PinSet
from pypicache.storage.records import StoredFile

log = Logger()


@attrs.define(eq=False)
class FileTask:
    """A file a job caches, and its report entry once done."""

    project: str
    version: str
    info: DistFile
    targets: list[str]
    hashes: dict[str, frozenset[str]]
    notes: list[str]
    done: "Deferred[dict[str, Any] | None]" = attrs.field(default=None)
    entry: dict[str, Any] | None = None
    finished: bool = False


class JobFiles:
    """Downloads for one job through the proxy, at most ``concurrency`` at once.

    Each file is cached once per job whatever asks for it (several targets, a
    resolution and its build requirements); ``emit`` gets each entry as it
    completes.
    """

    def __init__(
        self,
        store: IStore,
        views: Views,
        run_blocking: RunBlocking,
        emit: Callable[[dict[str, Any]], None] | None,
        abandoned: Callable[[], bool],
        concurrency: int,
        pins: PinSet | None = None,
        strict: bool = False,
        hash_source: str = "the --hash values",
    ) -> None:
        """
        :param strict: a file whose index page gives a digest that none of its
            hashes allow fails without being fetched (else it is fetched, as the
            proxy would serve it, then reported).
        :param hash_source: how reports name the hashes asked for.
        """
        self._pins = pins
        self._strict = strict
        self._hash_source = hash_source
        self._store = store
        self._views = views
        self._run_blocking = run_blocking
        self._emit = emit
        self._abandoned = abandoned
        self._downloads = DeferredSemaphore(concurrency)
        self._before: dict[str, bool] = {}
        self._files: dict[str, FileTask] = {}

    async def fetch(self, project: str, filename: str) -> StoredFile:
        """The stored file, fetched through the proxy unless it was there."""
        if filename not in self._before:
            self._before[filename] = (
                await self._store.find(project, filename) is not None
            )
        stored = await self._views.fetch(project, filename)
        if self._pins is not None and not self._pins.pin(stored):
            # Evicted between its fetch and its pin: fetched again, now pinned.
            stored = await self._views.fetch(project, filename)
        return stored

    def want(
        self,
        project: str,
        version: str,
        info: DistFile,
        target: Target | None,
        hashes: Mapping[str, frozenset[str]] | None = None,
    ) -> FileTask:
        """Start caching a file for ``target`` (once per job; ``None``: for no
        target in particular, as a lock's files); its task."""
        task = self._files.get(info.filename)
        if task is None:
            task = FileTask(project, version, info, [], dict(hashes or {}), [])
            self._files[info.filename] = task
            task.done = self._downloads.run(
                lambda: Deferred.fromCoroutine(self._cache_file(task))
            )
        if target is not None and target.label not in task.targets:
            task.targets.append(target.label)
        return task

    async def _cache_file(self, task: FileTask) -> dict[str, Any] | None:
        try:
            return await self._cache_one(task)
        finally:
            task.finished = True

    async def _cache_one(self, task: FileTask) -> dict[str, Any] | None:
        if self._abandoned():
            return None
        filename = task.info.filename
        entry: dict[str, Any] = {
            "project": task.project,
            "version": task.version,
            "filename": filename,
        }
        try:
            refused = await self._refused_by_page(task)
            if refused is not None:
                entry.update(
                    sha256=task.info.hashes.get("sha256"),
                    size=task.info.size,
                    status="failed",
                    reason=refused,
                )
                return self._done(task, entry)
            stored = await self.fetch(task.project, filename)
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
        return self._done(task, entry)

    def _done(self, task: FileTask, entry: dict[str, Any]) -> dict[str, Any]:
        filename = task.info.filename
        entry["targets"] = task.targets
        if task.notes:
            entry["notes"] = task.notes
        task.entry = entry
        if self._emit is not None and not self._abandoned():
            try:
                self._emit(entry)
            except Exception:
                log.failure("Could not send progress for {filename}", filename=filename)
        return entry

    async def _refused_by_page(self, task: FileTask) -> str | None:
        """In strict mode, why a file not stored yet is not fetched: its index
        page gives a digest none of the wanted hashes allow."""
        if not self._strict or not task.hashes:
            return None
        if await self._store.find(task.project, task.info.filename) is not None:
            return None
        given = {
            a: task.info.hashes[a].lower() for a in task.hashes if a in task.info.hashes
        }
        if not given or any(d in task.hashes[a] for a, d in given.items()):
            return None
        shown = ", ".join(f"{a}:{d}" for a, d in given.items())
        return (
            f"hash mismatch: the index page gives {shown}, not one of "
            f"{self._hash_source}; not fetched"
        )

    async def _check_hashes(
        self, stored: StoredFile, allowed: Mapping[str, frozenset[str]]
    ) -> str | None:
        """Why ``stored`` fails its ``--hash`` values, or ``None`` if it matches one."""
        actual: dict[str, str] = {}
        for algorithm in allowed:
            digest = stored.info.hashes.get(algorithm)
            if digest is None:
                opened = await self._store.open(stored)
                digest = await self._run_blocking(
                    file_digest, opened.path.path, algorithm
                )
            actual[algorithm] = digest.lower()
            if actual[algorithm] in allowed[algorithm]:
                return None
        shown = ", ".join(f"{a}:{d}" for a, d in actual.items())
        return f"hash mismatch: the file has {shown}, not one of {self._hash_source}"

    async def all_done(self) -> None:
        """Wait until every file wanted so far (and any wanted meanwhile) is done."""
        while True:
            waiting = [t for t in self._files.values() if not t.finished]
            if not waiting:
                return
            for task in waiting:
                await shield(task.done)

    def entries(self) -> list[dict[str, Any]]:
        """The report entries of the files done, by project, version and filename."""
        files = []
        for task in sorted(
            self._files.values(), key=lambda t: (t.project, t.version, t.info.filename)
        ):
            if task.entry is not None:
                task.entry["targets"] = task.targets
                files.append(task.entry)
        return files
