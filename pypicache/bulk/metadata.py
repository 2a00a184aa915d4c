# -*- test-case-name: tests.test_bulk_resolve -*-
"""What the resolver needs from core metadata: dependencies of wheels, static dependencies and build requirements of sdists."""

import hashlib
import os

import attrs
from packaging.metadata import parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version
from twisted.logger import Logger

from pypicache.errors import BadRequest
from pypicache.index.archives import MAX_METADATA, sdist_members

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

log = Logger()

#: pip's build requirements for an sdist without ``[build-system]``.
DEFAULT_BUILD_REQUIRES = ("setuptools>=40.8.0",)


#: Largest pyproject.toml read from an sdist (PKG-INFO: ``MAX_METADATA``).
MAX_MEMBER_SIZE = 1024 * 1024


@attrs.frozen
class DistMetadata:
    """What the resolver needs from a file's core metadata.

    :ivar unknown: why the dependencies are not known (``None`` if they are).
    :ivar build_requires: for sdists, the build requirements.
    """

    requires_dist: tuple[Requirement, ...] = ()
    requires_python: str | None = None
    unknown: str | None = None
    build_requires: tuple[str, ...] | None = None


def parse_core_metadata(raw: bytes, *, sdist: bool = False) -> DistMetadata:
    """Read ``METADATA``/``PKG-INFO``; an sdist's dependencies count only if static (2.2+)."""
    fields, _ = parse_email(raw)
    requires_python = fields.get("requires_python")
    if sdist:
        try:
            version = Version(fields.get("metadata_version", "1.0"))
        except InvalidVersion:
            version = Version("1.0")
        dynamic = {d.strip().lower() for d in fields.get("dynamic", [])}
        if version < Version("2.2"):
            return DistMetadata(
                requires_python=requires_python,
                unknown=f"dependencies unknown: PKG-INFO is Metadata-Version {version}, before 2.2",
            )
        if "requires-dist" in dynamic:
            return DistMetadata(
                requires_python=requires_python,
                unknown="dependencies unknown: PKG-INFO declares Requires-Dist dynamic",
            )
    requires = []
    for text in fields.get("requires_dist", []):
        try:
            requires.append(Requirement(text))
        except InvalidRequirement:
            log.warn("Ignoring invalid Requires-Dist {text!r}", text=text)
    return DistMetadata(tuple(requires), requires_python)


def read_sdist(path: str) -> dict[str, bytes]:
    """``PKG-INFO`` and ``pyproject.toml`` from the top folder of an sdist (blocking).

    Read through :class:`pypicache.index.archives.Archive`: bounded, regular
    files only, and refused if any member lies outside the archive.

    :raises ValueError: if the archive cannot be read.
    """
    limits = {"PKG-INFO": MAX_METADATA, "pyproject.toml": MAX_MEMBER_SIZE}
    try:
        return sdist_members(path, os.path.basename(path), limits)
    except BadRequest as e:
        raise ValueError(f"cannot read the sdist: {e.message}") from e


def build_requirements(pyproject: bytes | None) -> tuple[str, ...]:
    """``[build-system].requires`` of a pyproject.toml; pip's default without one."""
    if pyproject is None:
        return DEFAULT_BUILD_REQUIRES
    try:
        data = tomllib.loads(pyproject.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return DEFAULT_BUILD_REQUIRES
    system = data.get("build-system")
    if not isinstance(system, dict) or not isinstance(system.get("requires"), list):
        return DEFAULT_BUILD_REQUIRES
    requires = []
    for text in system["requires"]:
        if isinstance(text, str):
            try:
                Requirement(text)
            except InvalidRequirement:
                continue
            requires.append(text)
    return tuple(requires)


def sdist_metadata(path: str) -> DistMetadata:
    """Dependencies (if static) and build requirements of an sdist on disk (blocking)."""
    try:
        members = read_sdist(path)
    except ValueError as e:
        return DistMetadata(
            unknown=f"dependencies unknown: {e}", build_requires=DEFAULT_BUILD_REQUIRES
        )
    build = build_requirements(members.get("pyproject.toml"))
    if "PKG-INFO" not in members:
        return DistMetadata(
            unknown="dependencies unknown: no PKG-INFO in the sdist",
            build_requires=build,
        )
    return attrs.evolve(
        parse_core_metadata(members["PKG-INFO"], sdist=True), build_requires=build
    )


def file_digest(path: str, algorithm: str) -> str:
    """The hex digest of a file (blocking)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
