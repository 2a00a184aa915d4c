# -*- test-case-name: tests.test_uploads -*-
"""Reading distribution archives: a wheel's METADATA, and the checks and metadata of an uploaded archive.

These read a local file they are given and block: callers run them in a thread.
"""

import tarfile
import zipfile
from typing import Any

import attrs
import pkginfo

from pypicache.errors import BadRequest


def read_wheel_metadata(path: str) -> bytes | None:
    """Return the ``METADATA`` of a wheel (blocking: run it in a thread)."""
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                parts = name.split("/")
                if (
                    len(parts) == 2
                    and parts[0].endswith(".dist-info")
                    and parts[1] == "METADATA"
                ):
                    return archive.read(name)
    except (OSError, zipfile.BadZipFile, KeyError):
        return None
    return None


@attrs.frozen
class ArchiveMetadata:
    """What an archive says of itself."""

    name: str
    version: str
    requires_python: str | None
    core_metadata: bytes | None


def inspect_archive(path: str, filename: str) -> ArchiveMetadata:
    """Open an archive and read its metadata with pkginfo (blocking: run it in a thread).

    :raises BadRequest: if it does not open or has no readable metadata.
    """
    try:
        if filename.endswith(".whl"):
            raw = read_wheel_metadata(path)
            if raw is None:
                raise BadRequest(
                    f"{filename} is not a wheel with a .dist-info/METADATA"
                )
            dist: Any = pkginfo.Distribution()
            dist.parse(raw)
        else:
            dist = pkginfo.SDist(path)
            raw = None
    except BadRequest:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, tarfile.TarError) as e:
        raise BadRequest(
            f"{filename} is not a readable archive: {e.__class__.__name__}"
        ) from e
    if not dist.name or not dist.version:
        raise BadRequest(f"{filename} has no Name or Version in its metadata")
    return ArchiveMetadata(dist.name, dist.version, dist.requires_python or None, raw)
