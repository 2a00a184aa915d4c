# -*- test-case-name: tests.test_bulk_resolve -*-
"""resolvelib's view of the index for one target: candidates from pages, dependencies from core metadata."""

from collections import defaultdict
from typing import Any, Iterator, Mapping, Sequence

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from resolvelib import AbstractProvider
from twisted.logger import Logger

from pypicache.bulk.candidates import choose_versions, exact_pins, split_page
from pypicache.bulk.metadata import DistMetadata
from pypicache.bulk.nodes import (
    PYTHON,
    Abandoned,
    Candidate,
    NeedsPython,
    PythonCandidate,
    Source,
    Wanted,
)
from pypicache.bulk.targets import Target
from pypicache.errors import PypicacheError
from pypicache.index.model import DistFile

log = Logger()


def _reason(error: Exception) -> str:
    if isinstance(error, PypicacheError):
        return error.message
    log.error("Unexpected error during a resolution: {error!r}", error=error)
    return f"internal error: {error}"


def _is_pinned(requirement: Any) -> bool:
    return isinstance(requirement, Wanted) and bool(exact_pins(requirement.specifier))


class Provider(AbstractProvider):  # type: ignore[type-arg]
    """resolvelib's view of an index for one target.

    :ivar problems: project to why it has no candidates (no page, upstream down).
    :ivar notes: ``"name version"`` to something worth reporting (unknown dependencies).
    :ivar roots: identifier to the top-level requirements (origins) that led to it.
    """

    def __init__(
        self, source: Source, target: Target, *, pre: bool = False, deps: bool = True
    ) -> None:
        self._source = source
        self._target = target
        self._pre = pre
        self._deps = deps
        self._releases: dict[str, dict[Version, tuple[DistFile, ...]]] = {}
        self.problems: dict[str, str] = {}
        self.notes: dict[str, str] = {}
        self.roots: dict[str, set[int]] = defaultdict(set)

    @property
    def target(self) -> Target:
        return self._target

    @property
    def pre(self) -> bool:
        return self._pre

    def releases(self, project: str) -> dict[Version, tuple[DistFile, ...]]:
        if project not in self._releases:
            try:
                page = self._source.page(project)
            except Abandoned:
                raise
            except Exception as e:
                self.problems[project] = _reason(e)
                self._releases[project] = {}
            else:
                self._releases[project] = split_page(page, project)
                if not self._releases[project]:
                    self.problems[project] = f"no wheels or sdists of {project}"
        return self._releases[project]

    def identify(self, requirement_or_candidate: Any) -> str:
        return requirement_or_candidate.key  # type: ignore[no-any-return]

    def get_preference(
        self,
        identifier: str,
        resolutions: Any,
        candidates: Any,
        information: Any,
        backtrack_causes: Sequence[Any],
    ) -> Any:
        infos = list(information[identifier])
        causes = {self.identify(c.requirement) for c in backtrack_causes}
        causes.update(c.parent.key for c in backtrack_causes if c.parent is not None)
        return (
            identifier != PYTHON,
            not any(_is_pinned(i.requirement) for i in infos),
            identifier not in causes,
            not any(i.parent is None for i in infos),
            identifier,
        )

    def find_matches(
        self,
        identifier: str,
        requirements: Mapping[str, Iterator[Any]],
        incompatibilities: Mapping[str, Iterator[Any]],
    ) -> list[Any]:
        self._source.check()
        wanted = list(requirements[identifier])
        excluded = set(incompatibilities[identifier])
        if identifier == PYTHON:
            candidate = PythonCandidate(self._target.python_version)
            ok = all(
                w.specifier.contains(candidate.version, prereleases=True)
                for w in wanted
            )
            return [candidate] if ok and candidate not in excluded else []
        first = wanted[0]
        specifier = SpecifierSet()
        hashes: dict[str, frozenset[str]] = {}
        for w in wanted:
            specifier &= w.specifier
            for algorithm, digests in w.hashes.items():
                hashes[algorithm] = hashes.get(algorithm, frozenset()) | digests
        releases = self.releases(first.name)
        found = []
        for version, files, yanked in choose_versions(
            releases, self._target, specifier, pre=self._pre, hashes=hashes
        ):
            candidate = Candidate(first.name, version, first.extras, files, yanked)
            if candidate not in excluded:
                found.append(candidate)
        return found

    def is_satisfied_by(self, requirement: Any, candidate: Any) -> bool:
        return requirement.specifier.contains(candidate.version, prereleases=True)  # type: ignore[no-any-return]

    def get_dependencies(self, candidate: Any) -> list[Any]:
        if isinstance(candidate, PythonCandidate):
            return []
        self._source.check()
        dependencies: list[Any] = []
        if candidate.extras:
            dependencies.append(
                Wanted(candidate.name, specifier=SpecifierSet(f"=={candidate.version}"))
            )
        if self._deps:
            try:
                metadata = self._source.metadata(candidate.name, candidate.files[0])
            except Abandoned:
                raise
            except Exception as e:
                metadata = DistMetadata(unknown=f"dependencies unknown: {_reason(e)}")
            if metadata.requires_python:
                try:
                    dependencies.append(
                        NeedsPython(SpecifierSet(metadata.requires_python))
                    )
                except InvalidSpecifier:
                    pass
            if metadata.unknown is not None:
                self.notes[f"{candidate.name} {candidate.version}"] = metadata.unknown
            extras = candidate.extras or {""}
            for requirement in metadata.requires_dist:
                if requirement.url:
                    self.notes[f"{candidate.name} {candidate.version}"] = (
                        f"URL dependency not followed: {requirement}"
                    )
                    continue
                if self._target.evaluate(requirement.marker, extras):
                    dependencies.append(Wanted.from_requirement(requirement))
        roots = self.roots[candidate.key]
        for dependency in dependencies:
            self.roots[dependency.key] |= roots
        names = sorted(
            {
                d.name
                for d in dependencies
                if isinstance(d, Wanted) and d.name not in self._releases
            }
        )
        if names:
            self._source.prefetch(names, self._target)
        return dependencies
