# -*- test-case-name: tests.test_bulk_resolve -*-
"""Resolving requirements for one target with resolvelib (synchronous, run in a thread).

:class:`Provider` is a resolvelib provider over a :class:`Source` (pages and
core metadata); :func:`resolve` runs resolvelib and, when some requirements
cannot be satisfied, drops the requirements that led to the conflict and
resolves the rest again. Choosing versions and files is in
:mod:`pypicache.bulk.candidates`, reading core metadata in
:mod:`pypicache.bulk.metadata`.
"""

from collections import defaultdict
from typing import Any, Iterable, Iterator, Mapping, Protocol, Sequence

import attrs
from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from resolvelib import AbstractProvider, BaseReporter, Resolver
from resolvelib.resolvers import ResolutionImpossible, ResolutionTooDeep
from twisted.logger import Logger

from pypicache.bulk.candidates import choose_versions, exact_pins, split_page
from pypicache.bulk.metadata import DistMetadata
from pypicache.bulk.targets import Target
from pypicache.errors import PypicacheError
from pypicache.index.model import DistFile, ProjectPage

log = Logger()

#: Identifier of the target interpreter in resolutions (for Requires-Python).
PYTHON = "<python>"


class Abandoned(Exception):
    """The request that started a resolution has gone away."""


class Source(Protocol):
    """Where a resolution gets pages and metadata (synchronously, from its thread)."""

    def page(self, project: str) -> ProjectPage:
        """The project's page; raises :class:`PypicacheError` if there is none."""

    def metadata(self, project: str, file: DistFile) -> DistMetadata:
        """Core metadata of a file; raises :class:`PypicacheError` if unavailable."""

    def prefetch(self, projects: Sequence[str], target: Target) -> None:
        """A hint: these pages (and their newest files' metadata) will be needed."""

    def check(self) -> None:
        """Raise :class:`Abandoned` if the resolution should stop."""


def _key(name: str, extras: frozenset[str]) -> str:
    return f"{name}[{','.join(sorted(extras))}]" if extras else name


@attrs.frozen(eq=False)
class Wanted:
    """A requirement in a resolution.

    :ivar origin: index of the top-level requirement it is (``None`` for dependencies).
    :ivar parent: who asked for it, for messages.
    """

    name: str
    extras: frozenset[str] = frozenset()
    specifier: SpecifierSet = SpecifierSet()
    hashes: Mapping[str, frozenset[str]] = attrs.field(factory=dict)
    origin: int | None = None

    @property
    def key(self) -> str:
        return _key(self.name, self.extras)

    @classmethod
    def from_requirement(
        cls,
        requirement: Requirement,
        origin: int | None = None,
        hashes: Mapping[str, frozenset[str]] | None = None,
        extras: bool = True,
    ) -> "Wanted":
        return cls(
            canonicalize_name(requirement.name),
            (
                frozenset(canonicalize_name(e) for e in requirement.extras)
                if extras
                else frozenset()
            ),
            requirement.specifier,
            hashes or {},
            origin,
        )

    def __str__(self) -> str:
        return f"{self.key}{self.specifier}"


@attrs.frozen(eq=False)
class NeedsPython:
    """A Requires-Python from core metadata, as a requirement on the target interpreter."""

    specifier: SpecifierSet
    key = PYTHON

    def __str__(self) -> str:
        return f"Requires-Python {self.specifier}"


@attrs.frozen
class Candidate:
    """A version of a project (with extras) and the files a target would use, best first."""

    name: str
    version: Version
    extras: frozenset[str] = frozenset()
    files: tuple[DistFile, ...] = attrs.field(default=(), eq=False)
    yanked: bool = attrs.field(default=False, eq=False)

    @property
    def key(self) -> str:
        return _key(self.name, self.extras)

    def __str__(self) -> str:
        return f"{self.key} {self.version}"


@attrs.frozen
class PythonCandidate:
    version: Version
    key = PYTHON


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


@attrs.frozen
class Resolution:
    """The outcome for one target.

    :ivar pins: project to the chosen candidate (base projects, no extras).
    :ivar unresolved: origin of each top-level requirement left out, to why.
    """

    pins: Mapping[str, Candidate]
    unresolved: Mapping[int, str]
    notes: Mapping[str, str]


def describe_conflict(causes: Iterable[Any], provider: Provider) -> str:
    """A one-line reason from resolvelib's causes."""
    parts: list[str] = []
    for cause in causes:
        requirement, parent = cause.requirement, cause.parent
        text = str(requirement)
        if parent is not None:
            text += f" (required by {parent})"
        elif isinstance(requirement, Wanted) and requirement.origin is not None:
            text += " (requested)"
        if isinstance(requirement, NeedsPython):
            text += f", but the target is Python {provider.target.python_version}"
        elif isinstance(requirement, Wanted) and requirement.name in provider.problems:
            text += f": {provider.problems[requirement.name]}"
        if text not in parts:
            parts.append(text)
    return "no version satisfies " + "; ".join(parts)


def resolve(
    source: Source,
    target: Target,
    wanted: Sequence[Wanted],
    *,
    pre: bool = False,
    deps: bool = True,
    max_rounds: int = 20000,
) -> Resolution:
    """Resolve ``wanted`` (top-level requirements with origins) for ``target`` (blocking).

    When no solution exists, the top-level requirements that led to the
    conflict are set aside with the reason and the rest is resolved again, so
    one bad line does not keep the others from being cached.
    """
    remaining = list(wanted)
    unresolved: dict[int, str] = {}
    notes: dict[str, str] = {}
    while remaining:
        provider = Provider(source, target, pre=pre, deps=deps)
        for w in remaining:
            if w.origin is not None:
                provider.roots[w.key].add(w.origin)
        try:
            result = Resolver(provider, BaseReporter()).resolve(
                remaining, max_rounds=max_rounds
            )
        except ResolutionImpossible as e:
            notes.update(provider.notes)
            reason = describe_conflict(e.causes, provider)
            culprits: set[int] = set()
            for cause in e.causes:
                requirement = cause.requirement
                if (
                    cause.parent is None
                    and isinstance(requirement, Wanted)
                    and requirement.origin is not None
                ):
                    culprits.add(requirement.origin)
                elif cause.parent is not None:
                    culprits |= provider.roots.get(cause.parent.key, set())
                culprits |= provider.roots.get(requirement.key, set())
            if not culprits:
                culprits = {w.origin for w in remaining if w.origin is not None}
            for origin in culprits:
                unresolved.setdefault(origin, reason)
            left = [w for w in remaining if w.origin not in culprits]
            if len(left) == len(remaining):
                break
            remaining = left
            continue
        except ResolutionTooDeep as e:
            for w in remaining:
                if w.origin is not None:
                    unresolved.setdefault(
                        w.origin, f"resolution gave up after {e.round_count} rounds"
                    )
            break
        notes.update(provider.notes)
        pins = {
            c.name: c
            for key, c in result.mapping.items()
            if isinstance(c, Candidate) and not c.extras
        }
        return Resolution(pins, unresolved, notes)
    return Resolution({}, unresolved, notes)
