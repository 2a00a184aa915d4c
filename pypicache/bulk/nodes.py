# -*- test-case-name: tests.test_bulk_resolve -*-
"""What a resolution works with: requirements and candidates, and the source it asks."""

from typing import Mapping, Protocol, Sequence

import attrs
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from pypicache.bulk.metadata import DistMetadata
from pypicache.bulk.targets import Target
from pypicache.index.model import DistFile, ProjectPage

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


def key_of(name: str, extras: frozenset[str]) -> str:
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
        return key_of(self.name, self.extras)

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
        return key_of(self.name, self.extras)

    def __str__(self) -> str:
        return f"{self.key} {self.version}"


@attrs.frozen
class PythonCandidate:
    version: Version
    key = PYTHON
