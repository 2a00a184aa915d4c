# -*- test-case-name: tests.test_warm -*-
"""One ``POST /+warm``: cache exactly the files a lock file names, checked against its hashes.

A :class:`LockJob` is a :class:`~pypicache.bulk.job.Job` without the
resolution: each project's page is read (through the views, so private
projects stay private and routed projects go to their upstream), each file
the lock names is looked up on it, and cached through the proxy by the job's
:class:`~pypicache.bulk.downloads.JobFiles` (same downloads, pins, report
entries). A file whose page digest is not the lock's is not fetched; one whose
bytes do not match the page is not stored (the proxy's own check); either is
reported ``failed`` with the reason.
"""

from typing import Any, Callable

from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore

from pypicache.bulk.job import Job
from pypicache.bulk.lockfiles import LockedPackage, LockFile
from pypicache.bulk.targets import BulkParams
from pypicache.errors import PypicacheError
from pypicache.index.model import DistFile, ProjectPage


class LockJob(Job):
    """Caches the files of a :class:`~pypicache.bulk.locks.LockFile`."""

    strict_hashes = True
    hash_source = "the lock's hashes"

    def __init__(
        self,
        cacher: Any,
        lock: LockFile,
        emit: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        super().__init__(cacher, BulkParams(targets=()), lock, emit)  # type: ignore[arg-type]
        self._lock = lock
        self._pages: dict[str, ProjectPage | PypicacheError] = {}

    async def _page(self, project: str) -> None:
        try:
            self._pages[project] = (await self._cacher.views.simple(project)).page
        except PypicacheError as e:
            self._pages[project] = e

    async def _run(self) -> dict[str, Any]:
        pages = DeferredSemaphore(self._cacher.concurrency)
        projects = sorted({p.name for p in self._lock.requirements})
        await DeferredList(
            [
                pages.run(lambda p=p: Deferred.fromCoroutine(self._page(p)))
                for p in projects
            ],
            consumeErrors=True,
        )
        for package in self._lock.requirements:
            self._want(package)
        await self._files.all_done()
        report = self._report()
        report["format"] = self._lock.format
        return report

    def _want(self, package: LockedPackage) -> None:
        """Start caching the files of one locked package; record its entry."""
        page = self._pages.get(package.name)
        entry: dict[str, Any] = {
            "line": package.line,
            "line_number": package.line_number,
            "name": package.name,
            "target": None,
            "version": package.version,
        }
        self._requirements.append(entry)
        if package.files:
            entry["status"] = "resolved"
            for locked in package.files:
                info = (
                    page.file(locked.filename)
                    if isinstance(page, ProjectPage)
                    else None
                )
                if info is None:
                    # Not on the page (or no page): the fetch says why.
                    info = DistFile(locked.filename, locked.url)
                self._files.want(
                    package.name, package.version, info, None, locked.hashes
                )
            return
        # A hashed requirement: the files of its version whose digests it allows.
        if not isinstance(page, ProjectPage):
            reason = page.message if page is not None else "no page"
            entry.update(status="unresolved", reason=reason)
            return
        matching = [f for f in page.files if _allowed(f, package)]
        if not matching:
            entry.update(
                status="unresolved",
                reason=(
                    f"no file of {package.name} {package.version} on the index page "
                    "has a digest the --hash values allow"
                ),
            )
            return
        entry["status"] = "resolved"
        unmatched = sorted(
            f"{a}:{d}"
            for a, digests in package.hashes.items()
            for d in digests
            if not any(f.hashes.get(a, "").lower() == d for f in page.files)
        )
        if unmatched:
            entry["note"] = "no file on the index page has " + ", ".join(unmatched)
        for info in matching:
            self._files.want(package.name, package.version, info, None, package.hashes)


def _allowed(info: DistFile, package: LockedPackage) -> bool:
    return any(
        info.hashes.get(a, "").lower() in digests
        for a, digests in package.hashes.items()
    )
