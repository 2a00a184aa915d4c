# -*- test-case-name: tests.test_hostile_archives -*-
"""Reading distribution archives within bounds: a wheel's METADATA, an sdist's
PKG-INFO, and the checks and metadata of an uploaded archive.

Every read of a member goes through :class:`Archive`, which refuses what an
installer must never trust: members that are not regular files, paths that
are absolute or climb out with ``..``, zip entries that are encrypted or use
a compression zipfile cannot read, corrupt streams, and members larger than
a limit (checked against the declared size first, then by reading at most the
limit plus one byte, so that a lying header cannot make it hold more).

These read a local file they are given and block: callers run them in a thread.
"""

import lzma
import os
import posixpath
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from typing import IO, Any, Callable, Iterator

import attrs
from twisted.logger import Logger

from pypicache.errors import BadRequest
from pypicache.index.hygiene import (
    check_container,
    check_metadata_version,
    metadata_version_of,
)

log = Logger()

#: Largest ``METADATA`` or ``PKG-INFO`` read from an archive (or taken in an upload).
MAX_METADATA = 4 * 1024 * 1024

#: Members an archive may have (a tar keeps each header in memory as it is read).
MAX_MEMBERS = 100_000

#: The zip compression methods zipfile can read (deflate64, 9, is not one of them).
ZIP_METHODS = frozenset(
    {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
)

#: What reading a broken archive raises (zipfile raises NotImplementedError and
#: RuntimeError for methods and encryption it cannot handle).
BROKEN = (
    OSError,
    EOFError,
    ValueError,
    zlib.error,
    lzma.LZMAError,
    struct.error,
    zipfile.BadZipFile,
    tarfile.TarError,
    NotImplementedError,
    RuntimeError,
)

_CHUNK = 64 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
_MODE_KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "FIFO",
    stat.S_IFCHR: "device",
    stat.S_IFBLK: "device",
    stat.S_IFSOCK: "socket",
}


@attrs.frozen
class Member:
    """One entry of an archive, as its header describes it.

    :ivar path: the segments of its name (no empty or ``.`` segments).
    :ivar kind: ``file`` (a regular file), ``directory``, ``symlink``,
        ``hardlink``, ``FIFO``, ``device``, ``socket`` or ``special file``.
    :ivar size: the size its header declares.
    :ivar entry: the ``ZipInfo`` or ``TarInfo``.
    """

    name: str
    path: tuple[str, ...]
    kind: str
    size: int
    entry: Any


def _segments(name: str, filename: str) -> tuple[str, ...]:
    """The segments of a member name.

    :raises BadRequest: for an absolute name or one with a ``..`` segment.
    """
    unified = name.replace("\\", "/")
    parts = tuple(p for p in unified.split("/") if p not in ("", "."))
    if unified.startswith("/") or _DRIVE.match(unified) or ".." in parts:
        raise BadRequest(
            f"{filename} has a member outside the archive's folder: {name[:200]!r}"
        )
    return parts


def _zip_kind(info: zipfile.ZipInfo) -> str:
    if info.is_dir():
        return "directory"
    kind = stat.S_IFMT(info.external_attr >> 16)
    return _MODE_KINDS.get(kind, "special file") if kind else "file"


def _tar_kind(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return "file"
    for test, kind in (
        (info.isdir, "directory"),
        (info.issym, "symlink"),
        (info.islnk, "hardlink"),
        (info.isfifo, "FIFO"),
        (info.ischr, "device"),
        (info.isblk, "device"),
    ):
        if test():
            return kind
    return "special file"


def _read_at_most(stream: IO[bytes], limit: int) -> bytes:
    """Up to ``limit`` bytes of a stream, read in chunks."""
    chunks = []
    left = limit
    while left > 0:
        chunk = stream.read(min(_CHUNK, left))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _reason(error: BaseException) -> str:
    """A short reason for a broken archive that never shows a server path."""
    if isinstance(error, OSError) and error.filename is not None:
        text = error.strerror or ""
    else:
        text = str(error).splitlines()[0] if str(error) else ""
    name = error.__class__.__name__
    return f"{name}: {text[:120]}" if text else name


class Archive:
    """A wheel or sdist opened for bounded reads (a context manager; blocking).

    The format follows the filename: ``.whl`` and ``.zip`` are zips, anything
    else a tar (compressed or not). ``path`` is a path or a seekable file.

    :raises BadRequest: if it does not open.
    """

    def __init__(self, path: str | IO[bytes], filename: str) -> None:
        self.filename = filename
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        with self._errors():
            if filename.endswith((".whl", ".zip")):
                self._zip = zipfile.ZipFile(path)
            elif isinstance(path, str):
                self._tar = tarfile.open(path, "r:*")
            else:
                self._tar = tarfile.open(fileobj=path, mode="r:*")

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for archive in (self._zip, self._tar):
            if archive is not None:
                try:
                    archive.close()
                except BROKEN:
                    pass

    @contextmanager
    def _errors(self, member: Member | None = None) -> Iterator[None]:
        """Turn what a broken archive raises into a :class:`BadRequest` with a reason."""
        try:
            yield
        except BROKEN as e:
            where = f"{member.name[:200]!r} in " if member is not None else ""
            raise BadRequest(
                f"{where}{self.filename} is not a readable archive ({_reason(e)})"
            ) from e

    def members(self) -> Iterator[Member]:
        """Every member, in archive order.

        :raises BadRequest: for a member outside the archive's folder (an
            absolute path, ``..``, or a link that points out), or a broken archive.
        """
        with self._errors():
            if self._zip is not None:
                self._check_count(len(self._zip.infolist()))
                for info in self._zip.infolist():
                    path = _segments(info.filename, self.filename)
                    yield Member(
                        info.filename, path, _zip_kind(info), info.file_size, info
                    )
            else:
                assert self._tar is not None
                for count, entry in enumerate(self._tar, 1):
                    self._check_count(count)
                    path = _segments(entry.name, self.filename)
                    kind = _tar_kind(entry)
                    if kind == "hardlink":
                        _segments(entry.linkname, self.filename)
                    elif kind == "symlink":
                        target = posixpath.join(*path[:-1], entry.linkname)
                        _segments(posixpath.normpath(target), self.filename)
                    yield Member(entry.name, path, kind, entry.size, entry)

    def _check_count(self, count: int) -> None:
        if count > MAX_MEMBERS:
            raise BadRequest(f"{self.filename} has more than {MAX_MEMBERS} members")

    def read(self, member: Member, limit: int = MAX_METADATA) -> bytes:
        """The content of a regular file member, at most ``limit`` bytes.

        :raises BadRequest: it is not a regular file, is encrypted or compressed
            with a method zipfile cannot read, is larger than ``limit``, or its
            stream is corrupt.
        """
        what = f"{member.name[:200]!r} in {self.filename}"
        if member.kind != "file":
            raise BadRequest(f"{what} is a {member.kind}, not a regular file")
        too_large = f"{what} is larger than {limit} bytes"
        if member.size > limit:
            raise BadRequest(f"{too_large} ({member.size} bytes)")
        with self._errors(member):
            if self._zip is not None:
                info = member.entry
                if info.flag_bits & 0x1:
                    raise BadRequest(f"{what} is encrypted")
                if info.compress_type not in ZIP_METHODS:
                    raise BadRequest(
                        f"{what} uses zip compression method {info.compress_type}, "
                        "which cannot be read"
                    )
                stream: IO[bytes] | None = self._zip.open(info)
            else:
                assert self._tar is not None
                stream = self._tar.extractfile(member.entry)
            if stream is None:
                raise BadRequest(f"{what} is not a regular file")
            with stream:
                content = _read_at_most(stream, limit + 1)
        if len(content) > limit:
            raise BadRequest(too_large)
        return content


def wheel_metadata(path: str | IO[bytes], filename: str) -> bytes:
    """The ``METADATA`` of a wheel's one ``.dist-info`` folder (blocking).

    ``path`` may be an open file (the ranges of a remote wheel read so far).

    :raises BadRequest: not exactly one ``.dist-info`` folder, no ``METADATA``,
        a member outside the archive, or a ``METADATA`` that cannot be read.
    """
    with Archive(path, filename) as archive:
        members = list(archive.members())
        folders = {
            m.path[0]
            for m in members
            if m.path
            and m.path[0].endswith(".dist-info")
            and (len(m.path) > 1 or m.kind == "directory")
        }
        if len(folders) != 1:
            raise BadRequest(
                f"{filename} has {len(folders)} .dist-info folders; a wheel has one"
            )
        folder = folders.pop()
        found = [m for m in members if m.path == (folder, "METADATA")]
        if not found:
            raise BadRequest(f"{filename} is not a wheel with a {folder}/METADATA")
        if len(found) > 1:
            raise BadRequest(f"{filename} has {len(found)} {folder}/METADATA entries")
        return archive.read(found[0], MAX_METADATA)


def sdist_members(path: str, filename: str, limits: dict[str, int]) -> dict[str, bytes]:
    """Files of an sdist's top folder (``<top>/PKG-INFO``, ...), each within its limit.

    Every member is walked, so a member outside the archive is refused even
    after the wanted files were found.

    :param limits: the wanted file names, and the most bytes to read of each.
    :raises BadRequest: a wanted file found twice or unreadable, a member
        outside the archive, or a broken archive.
    """
    found: dict[str, bytes] = {}
    with Archive(path, filename) as archive:
        for member in archive.members():
            if len(member.path) == 2 and member.path[1] in limits:
                name = member.path[1]
                if name in found:
                    raise BadRequest(f"{filename} has more than one top-level {name}")
                found[name] = archive.read(member, limits[name])
    return found


def _best_effort(
    path: str, read: Callable[[str, str], bytes | None], filename: str | None = None
) -> bytes | None:
    filename = filename or os.path.basename(path)
    try:
        return read(path, filename)
    except BadRequest as e:
        log.warn(
            "No core metadata from {filename}: {reason}",
            filename=filename,
            reason=e.message,
        )
        return None


def read_wheel_metadata(path: str, filename: str | None = None) -> bytes | None:
    """The ``METADATA`` of a stored wheel, or ``None`` (logged) if it cannot be read safely.

    Best effort, for caching and the JSON API (blocking: run it in a thread).

    :param filename: the wheel's name, when ``path`` is a temporary file.
    """
    return _best_effort(path, wheel_metadata, filename)


def read_sdist_metadata(path: str) -> bytes | None:
    """The ``PKG-INFO`` of a stored sdist, or ``None`` (logged): best effort (blocking)."""
    return _best_effort(
        path,
        lambda p, f: sdist_members(p, f, {"PKG-INFO": MAX_METADATA}).get("PKG-INFO"),
    )


@attrs.frozen
class ArchiveMetadata:
    """What an archive says of itself."""

    name: str
    version: str
    requires_python: str | None
    core_metadata: bytes | None


def inspect_archive(path: str, filename: str) -> ArchiveMetadata:
    """Check an uploaded archive and read its metadata (blocking: run it in a thread).

    :raises BadRequest: if it does not open, holds a member outside its folder,
        has no readable metadata (see :class:`Archive`), or is refused by
        :mod:`~pypicache.index.hygiene` (format, polyglot, Metadata-Version).
    """
    if filename.endswith(".whl"):
        raw = wheel_metadata(path, filename)
        core: bytes | None = raw
    else:
        pkg_info = sdist_members(path, filename, {"PKG-INFO": MAX_METADATA})
        if "PKG-INFO" not in pkg_info:
            raise BadRequest(f"{filename} has no PKG-INFO in its top folder")
        raw, core = pkg_info["PKG-INFO"], None
    check_container(path, filename)
    check_metadata_version(metadata_version_of(raw), f"The metadata of {filename}")
    import pkginfo  # here: only uploads and the folder scan need it

    dist: Any = pkginfo.Distribution()
    try:
        dist.parse(raw)
    except BROKEN as e:
        raise BadRequest(
            f"The metadata of {filename} cannot be read ({_reason(e)})"
        ) from e
    if not dist.name or not dist.version:
        raise BadRequest(f"{filename} has no Name or Version in its metadata")
    return ArchiveMetadata(dist.name, dist.version, dist.requires_python or None, core)
