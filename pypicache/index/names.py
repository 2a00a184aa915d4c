# -*- test-case-name: tests.test_names -*-
"""Project names and distribution filenames (wrapping ``packaging.utils``)."""

import functools
import re

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from pypicache.errors import BadRequest

#: PEP 508 project names (before normalization).
_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)

#: What a filename we store or serve may contain: no separators, no NUL, no
#: percent signs, no leading dot (temporary files and sidecars start with one).
_SAFE_FILENAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+!-]*$")

#: Archive suffixes of sdists and of older formats the public index still lists.
_LEGACY_SUFFIXES = (
    ".tar.gz",
    ".tar.bz2",
    ".tar.xz",
    ".tgz",
    ".zip",
    ".egg",
    ".exe",
    ".msi",
    ".rpm",
    ".dmg",
)

#: Suffixes of the files we keep beside an archive.
METADATA_SUFFIX = ".metadata"

#: Longest filename we store: with ``.metadata`` after it, it must still fit
#: the 255 bytes filesystems allow a name.
MAX_FILENAME = 240


@functools.lru_cache(maxsize=4096)
def normalize(name: str) -> str:
    """Return the PEP 503 normalized form of a project name (remembered: every
    page and file request normalizes its project).

    :raises BadRequest: if ``name`` is not a valid project name.
    """
    if not _NAME.fullmatch(name):
        raise BadRequest(f"Invalid project name: {name!r}")
    return canonicalize_name(name)


def check_filename(filename: str) -> str:
    """Return ``filename`` if it is safe to use as a single path segment.

    :raises BadRequest: for separators, ``..``, NUL, percent signs, leading
        dots, and names longer than :data:`MAX_FILENAME`.
    """
    if len(filename) > MAX_FILENAME:
        raise BadRequest(
            f"Filename too long: {len(filename)} characters, at most {MAX_FILENAME}"
        )
    if not _SAFE_FILENAME.fullmatch(filename) or ".." in filename:
        raise BadRequest(f"Invalid filename: {filename!r}")
    return filename


def parse_filename(filename: str) -> tuple[str, Version | None]:
    """Return the normalized project name and the version of a distribution file.

    Wheels and sdists are parsed with ``packaging``; older formats (eggs,
    installers, ``.tar.bz2``) by their leading ``name-version`` part, with the
    version ``None`` when it does not parse.

    :raises BadRequest: if the filename is unsafe or names no project.
    """
    check_filename(filename)
    try:
        if filename.endswith(".whl"):
            name, version, _, _ = parse_wheel_filename(filename)
            return name, version
        if filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
            return name, version
    except (InvalidWheelFilename, InvalidSdistFilename):
        pass
    for suffix in _LEGACY_SUFFIXES:
        if filename.endswith(suffix):
            parts = filename[: -len(suffix)].split("-")
            for i in range(1, len(parts)):
                name = "-".join(parts[:i])
                if parts[i][:1].isdigit() and _NAME.fullmatch(name):
                    try:
                        version: Version | None = Version(parts[i])
                    except InvalidVersion:
                        version = None
                    return canonicalize_name(name), version
            break
    raise BadRequest(f"Not a distribution filename: {filename!r}")


def is_distribution(filename: str) -> bool:
    """Return whether ``filename`` looks like a distribution we may store."""
    try:
        parse_filename(filename)
    except BadRequest:
        return False
    return True
