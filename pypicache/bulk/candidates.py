# -*- test-case-name: tests.test_bulk_resolve -*-
"""Choosing versions and files for a target (pure): group a page by version, keep what a target can install, apply specifiers, pre-release and yanked rules."""

from collections import defaultdict
from typing import Iterable, Mapping, Sequence

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from pypicache.bulk.targets import Target
from pypicache.errors import BadRequest
from pypicache.index.model import DistFile, ProjectPage
from pypicache.index.names import parse_filename


def is_sdist(filename: str) -> bool:
    return filename.endswith((".tar.gz", ".zip"))


def split_page(page: ProjectPage, project: str) -> dict[Version, tuple[DistFile, ...]]:
    """The wheels and sdists of ``project`` on ``page`` by version (other files are left out)."""
    releases: dict[Version, list[DistFile]] = defaultdict(list)
    for f in page.files:
        if not (f.filename.endswith(".whl") or is_sdist(f.filename)):
            continue
        try:
            name, version = parse_filename(f.filename)
        except BadRequest:
            continue
        if version is not None and name == project:
            releases[version].append(f)
    return {v: tuple(files) for v, files in releases.items()}


def usable_files(files: Iterable[DistFile], target: Target) -> list[DistFile]:
    """The files ``target`` can install, best first: wheels by tag preference, then sdists.

    Files whose Requires-Python excludes the target's interpreter are left out.
    """
    wheels: list[tuple[int, str, DistFile]] = []
    sdists: list[tuple[int, str, DistFile]] = []
    for f in files:
        if not target.allows_python(f.requires_python):
            continue
        if f.filename.endswith(".whl"):
            rank = target.wheel_rank(f.filename)
            if rank is not None:
                wheels.append((rank, f.filename, f))
        elif is_sdist(f.filename):
            sdists.append((0 if f.filename.endswith(".tar.gz") else 1, f.filename, f))
    return [f for *_, f in sorted(wheels, key=lambda t: t[:2])] + [
        f for *_, f in sorted(sdists, key=lambda t: t[:2])
    ]


def matches_hashes(f: DistFile, hashes: Mapping[str, frozenset[str]]) -> bool:
    """Whether the index's hashes of ``f`` are among ``hashes``."""
    return any(
        f.hashes.get(algorithm, "").lower() in digests
        for algorithm, digests in hashes.items()
    )


def exact_pins(specifier: SpecifierSet) -> set[str]:
    """The versions ``specifier`` pins with ``==`` (no wildcard) or ``===``, as strings."""
    pins = set()
    for spec in specifier:
        if spec.operator == "===" or (
            spec.operator == "==" and not spec.version.endswith(".*")
        ):
            try:
                pins.add(str(Version(spec.version)))
            except InvalidVersion:
                pins.add(spec.version)
    return pins


def choose_versions(
    releases: Mapping[Version, Sequence[DistFile]],
    target: Target,
    specifier: SpecifierSet | None = None,
    *,
    pre: bool = False,
    hashes: Mapping[str, frozenset[str]] | None = None,
) -> list[tuple[Version, tuple[DistFile, ...], bool]]:
    """The versions pip would consider, newest first, with their usable files and whether yanked.

    A version needs a file the target can install. Yanked files count only
    for a version pinned with ``==``/``===``. Pre-releases are considered with
    ``pre``, when the specifier names one, or when nothing else satisfies it.
    With ``hashes``, files whose index hashes match are preferred.
    """
    specifier = specifier if specifier is not None else SpecifierSet()
    pinned = exact_pins(specifier)
    usable: dict[Version, tuple[tuple[DistFile, ...], bool]] = {}
    for version, files in releases.items():
        found = usable_files(files, target)
        if hashes:
            matching = [f for f in found if matches_hashes(f, hashes)]
            found = matching or found
        live = [f for f in found if not f.yanked]
        if live:
            usable[version] = (tuple(live), False)
        elif found and str(version) in pinned:
            usable[version] = (tuple(found), True)
    allowed = specifier.filter(list(usable), prereleases=True if pre else None)
    return [(v, *usable[v]) for v in sorted(allowed, reverse=True)]
