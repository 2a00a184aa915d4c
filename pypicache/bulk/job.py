# -*- test-case-name: tests.test_bulk -*-
"""One ``POST /requirements.txt``: a resolution per target, the files, their build requirements, the report.

Resolutions run in threads of their own (:mod:`pypicache.bulk.source` answers
what they ask on the reactor); the chosen files are cached through the proxy
(:mod:`pypicache.bulk.downloads`), then the build requirements of every sdist,
for a few rounds.
"""

from collections import defaultdict
from functools import partial
from typing import Any, Callable, Mapping, Sequence

from packaging.requirements import Requirement
from twisted.internet.defer import CancelledError
from twisted.logger import Logger

from pypicache.bulk.candidates import is_sdist, split_page
from pypicache.bulk.downloads import FileTask, JobFiles
from pypicache.bulk.metadata import DEFAULT_BUILD_REQUIRES, DistMetadata
from pypicache.bulk.nodes import Wanted
from pypicache.bulk.requirements import ParsedFile, RequirementLine
from pypicache.bulk.resolve import Resolution, resolve
from pypicache.bulk.source import Lookups, ThreadSource, shield
from pypicache.bulk.targets import BulkParams, Target
from pypicache.errors import PypicacheError
from pypicache.index.model import DistFile

log = Logger()

#: How many rounds of build requirements (build requirements of build requirements…).
MAX_BUILD_ROUNDS = 4

STATUSES = ("fetched", "cached", "failed")


class Job:
    """One ``POST /requirements.txt``: resolutions, downloads and the report."""

    #: Whether a file the index page says is not one the hashes allow is left
    #: unfetched (see :class:`~pypicache.bulk.downloads.JobFiles`).
    strict_hashes = False
    #: How reports name the hashes a file must match.
    hash_source = "the --hash values"

    def __init__(
        self,
        cacher: Any,
        params: BulkParams,
        parsed: ParsedFile,
        emit: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self._cacher = cacher
        self._params = params
        self._parsed = parsed
        self.abandoned = False
        #: The job's files stay cached until it ends (see storage/pins.py).
        self._pins = cacher.pins.open() if cacher.pins is not None else None
        self._files = JobFiles(
            cacher.store,
            cacher.views,
            cacher.run_blocking,
            emit,
            lambda: self.abandoned,
            cacher.concurrency,
            self._pins,
            strict=self.strict_hashes,
            hash_source=self.hash_source,
        )
        self._lookups = Lookups(
            cacher.views,
            cacher.mirror,
            cacher.run_blocking,
            self._files.fetch,
            lambda: self.abandoned,
            cacher.concurrency,
        )
        self._requirements: list[dict[str, Any]] = []
        self._targets: list[dict[str, Any]] = []

    async def _resolve(
        self, target: Target, wanted: Sequence[Wanted], pre: bool, deps: bool
    ) -> Resolution:
        source = ThreadSource(self._cacher.reactor, self._lookups)
        return await self._cacher.resolutions.run(  # type: ignore[no-any-return]
            self._cacher.run_resolver,
            partial(
                resolve,
                source,
                target,
                list(wanted),
                pre=pre,
                deps=deps,
                max_rounds=self._cacher.max_rounds,
            ),
        )

    async def run(self) -> dict[str, Any]:
        try:
            return await self._run()
        except CancelledError:
            self.abandoned = True
            log.info("Bulk caching abandoned by its client; downloads under way go on")
            raise
        finally:
            if self._pins is not None:
                self._pins.close()

    async def _run(self) -> dict[str, Any]:
        parsed, params = self._parsed, self._params
        for target in params.targets:
            self._lookups.prefetch(
                sorted({r.name for r in parsed.requirements}), target
            )
        for target in params.targets:
            await self._run_target(target, parsed.requirements)
        await self._files.all_done()
        return self._report()

    async def _run_target(
        self, target: Target, lines: Sequence[RequirementLine]
    ) -> None:
        params = self._params
        wanted: list[Wanted] = []
        entries: dict[int, dict[str, Any]] = {}
        hashed: dict[str, dict[str, frozenset[str]]] = defaultdict(dict)
        # Identical lines are resolved once, as the first of them.
        first_of: dict[str, int] = {}
        same_as: dict[int, int] = {}
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
            key = f"{line.requirement} {sorted(line.hashes.items())}"
            same_as[origin] = first_of.setdefault(key, origin)
            if same_as[origin] != origin:
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
            first = same_as[origin]
            if first in resolution.unresolved or pin is None:
                entry.update(
                    status="unresolved",
                    reason=resolution.unresolved.get(first, "not resolved"),
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
    ) -> list[FileTask]:
        """Start caching the files of each pinned version: the target's best, or all of them."""
        tasks = []
        for name, candidate in sorted(resolution.pins.items()):
            version = str(candidate.version)
            files: Sequence[DistFile] = candidate.files[:1]
            if self._params.all_files:
                ok, page = self._lookups.known(("page", name)) or (False, None)
                if ok:
                    files = split_page(page, name).get(candidate.version, files)
            unknown = resolution.notes.get(f"{name} {version}")
            for f in files:
                notes = [note] if note else []
                if unknown and f.filename == candidate.files[0].filename:
                    notes.append(unknown)
                task = self._files.want(
                    name, version, f, target, (hashed or {}).get(name)
                )
                task.notes.extend(n for n in notes if n not in task.notes)
                tasks.append(task)
        return tasks

    async def _build_requirements(
        self, target: Target, sdists: list[FileTask]
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
                entry = await shield(task.done)
                if entry is None or entry["status"] == "failed":
                    continue
                try:
                    metadata = await shield(
                        self._lookups.metadata(task.project, task.info)
                    )
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

    def _report(self) -> dict[str, Any]:
        files = self._files.entries()
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
