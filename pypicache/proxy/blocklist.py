# -*- test-case-name: tests.test_blocklist -*-
"""The block list (``block``, ``--block``) as a rule: projects and versions the
team decided must never be installed through this server.

Each entry is a requirement (PEP 508, read by ``packaging``): a name alone
blocks the whole project (its pages answer ``404`` with the reason), a name
with a specifier blocks the versions it matches, pre-releases included
(``requests==2.99.0``, ``evil-pkg>=1.3``): their files leave every page and
the PEP 700 ``versions`` list, and their URLs (and ``.metadata``) answer
``404`` with the reason. Markers, extras and URLs mean nothing here and are
refused. It applies to private projects too: it names what must not be
installed here, wherever it comes from.
"""

from collections.abc import Iterable
from typing import TYPE_CHECKING, Hashable

import attrs
from packaging.version import InvalidVersion, Version

from pypicache.errors import BadRequest, NotFound
from pypicache.index.model import DistFile, ProjectPage
from pypicache.index.names import normalize, parse_filename
from pypicache.proxy.rules import Area, Rules

if TYPE_CHECKING:  # imported with packaging.requirements, by parse_entry
    from packaging.specifiers import SpecifierSet


def parse_entry(entry: str) -> "tuple[str, SpecifierSet, str]":
    """One entry of the block list: its normalized name, its specifier (empty
    for the whole project) and the entry as given.

    :raises ValueError: not a requirement, or one with markers, extras or a URL
        (the message names the entry).
    """
    # Only with a block list: packaging's requirements load its markers.
    from packaging.requirements import InvalidRequirement, Requirement

    text = entry.strip()
    try:
        requirement = Requirement(text)
    except InvalidRequirement as e:
        raise ValueError(f"block entry {entry!r} is not a requirement: {e}") from e
    if requirement.marker is not None or requirement.extras or requirement.url:
        raise ValueError(
            f"block entry {entry!r}: only a name and an optional version "
            "specifier are allowed (no markers, extras or URLs)"
        )
    return normalize(requirement.name), requirement.specifier, text


def _version_of(filename: str) -> Version | None:
    try:
        return parse_filename(filename)[1]
    except BadRequest:
        return None


@attrs.frozen
class BlockList:
    """The rule; build it with :meth:`of`. Replaced whole on reload."""

    #: Per normalized name, its entries: ``(specifier, entry as given)``.
    entries: "dict[str, tuple[tuple[SpecifierSet, str], ...]]"
    _hidden: frozenset[str] = attrs.field(init=False)

    @_hidden.default
    def _blocked_whole(self) -> frozenset[str]:
        return frozenset(p for p in self.entries if self._whole(p) is not None)

    @classmethod
    def of(cls, entries: Iterable[str]) -> "BlockList":
        """The block list of these entries.

        :raises ValueError: an entry is refused (see :func:`parse_entry`).
        """
        by_name: dict[str, list[tuple[SpecifierSet, str]]] = {}
        for entry in entries:
            name, specifier, text = parse_entry(entry)
            by_name.setdefault(name, []).append((specifier, text))
        return cls({n: tuple(e) for n, e in by_name.items()})

    def __bool__(self) -> bool:
        return bool(self.entries)

    def hidden(self) -> frozenset[str]:
        """The projects blocked whole (left out of the project lists)."""
        return self._hidden

    def version(self, area: Area, project: str) -> Hashable:
        entries = self.entries.get(project)
        return None if entries is None else tuple(text for _, text in entries)

    def _whole(self, project: str) -> str | None:
        for specifier, text in self.entries.get(project, ()):
            if not specifier:
                return text
        return None

    def _matching(self, project: str, version: Version | str | None) -> str | None:
        """The entry that blocks this version of ``project``, if any."""
        if version is None:
            return self._whole(project)
        for specifier, text in self.entries.get(project, ()):
            if not specifier or specifier.contains(version, prereleases=True):
                return text
        return None

    def page(self, area: Area, project: str, page: ProjectPage) -> ProjectPage:
        if project not in self.entries:
            return page
        whole = self._whole(project)
        if whole is not None:
            raise NotFound(f"{project} is blocked on this server (block list: {whole})")
        files = tuple(
            f
            for f in page.files
            if self._matching(project, _version_of(f.filename)) is None
        )
        versions = page.versions
        if versions is not None:
            versions = tuple(v for v in versions if not self._blocks_text(project, v))
        return attrs.evolve(page, files=files, versions=versions)

    def _blocks_text(self, project: str, text: str) -> bool:
        try:
            version = Version(text)
        except InvalidVersion:
            return False
        return self._matching(project, version) is not None

    def refusal(self, project: str, filename: str, info: DistFile | None) -> str | None:
        if project not in self.entries:
            return None
        entry = self._matching(project, _version_of(filename))
        if entry is None:
            return None
        return f"{filename} is blocked on this server (block list: {entry})"


def with_block_list(rules: Rules, entries: Iterable[str]) -> Rules:
    """``rules`` with the block list of ``entries`` in place of any block list
    they had (none for no entries); for start-up and ``SIGHUP``.

    :raises ValueError: an entry is refused (see :func:`parse_entry`).
    """
    block = BlockList.of(entries)
    kept = tuple(r for r in rules.rules if not isinstance(r, BlockList))
    return Rules(((block,) if block else ()) + kept)
