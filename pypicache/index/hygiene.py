# -*- test-case-name: tests.test_upload_hygiene -*-
"""What an uploaded archive must be beyond readable: one plain container, in a
format installers still take, with a Metadata-Version packaging knows.

Refused, each with its reason:

- an sdist that is not a gzip-compressed tar (PEP 625: ``.tar.gz``; a
  ``.tar.gz`` that holds bzip2, xz or zstd data, or a bare tar, is refused too);
- a wheel (or ``.zip`` sdist) with entries compressed other than deflate or
  stored (bzip2, LZMA, zstd...: uv refuses to install them, older pips cannot);
- polyglots: a zip with bytes before its first local header, between its
  entries, or after its end record, a zip whose entries' local headers
  disagree with its central directory, a zip with two entries of one name,
  and any archive whose bytes also read as another format (a tar header at
  the start of a zip, a zip end record at the end of a ``.tar.gz``, data
  after the gzip stream). Two readers that disagree about what is inside is
  how a reviewed archive installs something else.

These read a local file and block: callers run them in a thread.
"""

import struct
import tarfile
import typing
import zipfile
import zlib
from typing import IO

import packaging
from packaging.version import InvalidVersion, Version

from pypicache.errors import BadRequest

#: The zip compression methods installers all read.
PLAIN_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}

#: Names of other methods, for the reasons given.
_METHOD_NAMES = {12: "bzip2", 14: "LZMA", 93: "zstd", 95: "xz", 9: "deflate64"}

#: What the first bytes of a file say it is (for the reason given).
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x5d\x00\x00", "LZMA"),
    (b"PK\x03\x04", "zip"),
)

_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_EOCD = struct.Struct("<4sHHHHIIH")
_EOCD64_LOCATOR = struct.Struct("<4sIQI")
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")
_CHUNK = 1024 * 1024

#: What zipfile raises for bytes that are no (readable) zip.
_NOT_A_ZIP = (
    zipfile.BadZipFile,
    OSError,
    ValueError,
    EOFError,
    struct.error,
    NotImplementedError,
    RuntimeError,
)


def known_metadata_versions() -> tuple[str, ...]:
    """The Metadata-Versions the installed packaging knows, oldest first."""
    # Here: only uploads and the folder scan need packaging.metadata.
    from packaging import metadata

    literal = getattr(metadata, "_MetadataVersion", None)
    known = typing.get_args(literal) if literal is not None else ()
    return tuple(str(v) for v in known)


def check_metadata_version(value: str | None, where: str) -> None:
    """Refuse a Metadata-Version newer than the newest packaging knows, or not
    a version at all; take every one up to it (the unlisted 2.0 of old wheels
    included).

    What is newest is packaging's own list, so a new Metadata-Version is taken
    as soon as the installed packaging knows it.

    :param where: what carries it, for the reason (``alpha-1.0.tar.gz``...).
    :raises BadRequest: a missing, malformed or unknown version.
    """
    if not value or not value.strip():
        raise BadRequest(f"{where} has no Metadata-Version")
    value = value.strip()
    known = [Version(v) for v in known_metadata_versions()]
    newest = max(known) if known else None
    refusal = BadRequest(
        f"{where} has Metadata-Version {value[:20]!r}, which this server does "
        f"not know (packaging {packaging.__version__} knows up to {newest or '?'})"
    )
    try:
        version = Version(value)
    except InvalidVersion as e:
        raise refusal from e
    if newest is not None:
        if version > newest:
            raise refusal
        return
    from packaging.metadata import Metadata

    try:  # packaging no longer names its list: ask it about this one
        Metadata.from_raw(
            {"metadata_version": value, "name": "x", "version": "0"}, validate=True
        )
    except Exception as e:  # packaging raises an ExceptionGroup of InvalidMetadata
        raise refusal from e


def metadata_version_of(raw: bytes) -> str | None:
    """The Metadata-Version header of core metadata (``METADATA``/``PKG-INFO``)."""
    from packaging.metadata import parse_email

    try:
        parsed, _ = parse_email(raw)
    except Exception:  # what a header parser may raise on hostile bytes
        return None
    return parsed.get("metadata_version")


def _kind(head: bytes) -> str:
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if _is_tar_header(head):
        return "uncompressed tar"
    return "unknown"


def _is_tar_header(block: bytes) -> bool:
    """Whether 512 bytes are a valid tar header (its checksum matches)."""
    if len(block) < tarfile.BLOCKSIZE:
        return False
    try:
        tarfile.TarInfo.frombuf(block[: tarfile.BLOCKSIZE], "utf-8", "surrogateescape")
    except (tarfile.HeaderError, ValueError):
        return False
    return True


def _opens_as_zip(f: IO[bytes]) -> bool:
    f.seek(0)
    try:
        with zipfile.ZipFile(f):
            return True
    except _NOT_A_ZIP:
        return False


def check_container(path: str, filename: str) -> None:
    """Refuse what :mod:`this module <pypicache.index.hygiene>` refuses (blocking).

    :raises BadRequest: with the reason.
    """
    with open(path, "rb") as f:
        if filename.endswith((".whl", ".zip")):
            _check_zip(f, filename)
        elif filename.endswith(".tar.gz"):
            _check_gzip_tar(f, filename)
        else:
            raise BadRequest(f"{filename} is neither a wheel nor a .tar.gz sdist")


def _keep_head(head: bytearray, out: bytes) -> None:
    """Keep the first block of decompressed data (the tar header)."""
    if len(head) < tarfile.BLOCKSIZE:
        head += out[: tarfile.BLOCKSIZE - len(head)]


def _check_gzip_tar(f: IO[bytes], filename: str) -> None:
    head = f.read(tarfile.BLOCKSIZE)
    if not head.startswith(b"\x1f\x8b\x08"):
        raise BadRequest(
            f"{filename} is not gzip-compressed (it looks like {_kind(head)} data): "
            "an sdist must be a .tar.gz (PEP 625); bzip2, xz, zstd and bare tars "
            "are refused"
        )
    if _is_tar_header(head):
        raise BadRequest(f"{filename} is a polyglot: its raw bytes also read as a tar")
    f.seek(0)
    first = bytearray()
    stream = zlib.decompressobj(wbits=31)
    pending = b""
    while True:
        data = pending or f.read(_CHUNK)
        pending = b""
        if not data:
            break
        try:
            _keep_head(first, stream.decompress(data, _CHUNK))
            while stream.unconsumed_tail:
                _keep_head(first, stream.decompress(stream.unconsumed_tail, _CHUNK))
        except zlib.error as e:
            raise BadRequest(f"{filename} is not a valid gzip stream ({e})") from e
        if stream.eof:
            rest = stream.unused_data + f.read(_CHUNK)
            if not rest:
                break
            if not rest.startswith(b"\x1f\x8b\x08"):
                raise BadRequest(
                    f"{filename} is a polyglot: it has data after its gzip stream"
                )
            stream = zlib.decompressobj(wbits=31)
            pending = rest
    if not stream.eof:
        raise BadRequest(f"{filename} is a truncated gzip stream")
    if not _is_tar_header(bytes(first)):
        raise BadRequest(
            f"{filename} holds no tar archive (its gzip data does not start with a tar header)"
        )
    if _opens_as_zip(f):
        raise BadRequest(f"{filename} is a polyglot: it also reads as a zip archive")


def _end_record(f: IO[bytes], size: int, filename: str) -> tuple[int, int, int]:
    """Where the central directory starts, its size, and where it must end.

    :raises BadRequest: no end record that ends exactly at the end of the file.
    """
    tail_start = max(0, size - _EOCD.size - 0xFFFF)
    f.seek(tail_start)
    tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    while at >= 0:
        if at + _EOCD.size <= len(tail):
            fields = _EOCD.unpack_from(tail, at)
            if at + _EOCD.size + fields[7] == len(tail):
                break
        at = tail.rfind(b"PK\x05\x06", 0, at)
    else:
        raise BadRequest(
            f"{filename} is a polyglot or damaged: no zip end record ends the file "
            "(data after the end record)"
        )
    eocd = tail_start + at
    _, disk, cd_disk, _, _, cd_size, cd_offset, _ = fields
    if disk or cd_disk:
        raise BadRequest(f"{filename} is a multi-disk zip")
    locator = eocd - _EOCD64_LOCATOR.size
    if locator >= 0:
        f.seek(locator)
        raw = f.read(_EOCD64_LOCATOR.size)
        if raw.startswith(b"PK\x06\x07"):
            _, _, record_at, _ = _EOCD64_LOCATOR.unpack(raw)
            f.seek(record_at)
            record = f.read(_EOCD64.size)
            if len(record) < _EOCD64.size or not record.startswith(b"PK\x06\x06"):
                raise BadRequest(f"{filename} has a broken zip64 end record")
            values = _EOCD64.unpack(record)
            if record_at + 12 + values[1] != locator:
                raise BadRequest(
                    f"{filename} is a polyglot: data between its zip64 end records"
                )
            cd_size, cd_offset, eocd = values[8], values[9], record_at
    return cd_offset, cd_size, eocd


def _check_zip(f: IO[bytes], filename: str) -> None:
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    head = f.read(tarfile.BLOCKSIZE)
    if not head.startswith(b"PK\x03\x04"):
        raise BadRequest(
            f"{filename} is a polyglot or not a zip: data before its first local "
            f"header (it starts like {_kind(head)} data)"
        )
    if _is_tar_header(head):
        raise BadRequest(f"{filename} is a polyglot: its bytes also read as a tar")
    cd_offset, cd_size, cd_end = _end_record(f, size, filename)
    if cd_offset + cd_size != cd_end:
        raise BadRequest(
            f"{filename} is a polyglot: data before its first local header or "
            "between its central directory and its end record"
        )
    f.seek(0)
    try:
        with zipfile.ZipFile(f) as archive:
            infos = archive.infolist()
    except _NOT_A_ZIP as e:
        raise BadRequest(f"{filename} is not a readable zip ({e})") from e
    names: set[str] = set()
    for info in infos:
        if info.orig_filename in names:
            raise BadRequest(
                f"{filename} has two entries named {info.orig_filename[:200]!r}"
            )
        names.add(info.orig_filename)
        if info.compress_type not in PLAIN_METHODS:
            method = _METHOD_NAMES.get(info.compress_type, "another method")
            raise BadRequest(
                f"{info.orig_filename[:200]!r} in {filename} is compressed with "
                f"{method} (zip method {info.compress_type}): wheels must use "
                "deflate or no compression (uv refuses others)"
            )
    expected = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        expected = _check_entry(f, info, expected, filename)
    if expected != cd_offset:
        raise BadRequest(
            f"{filename} is a polyglot: data between its last entry and its "
            "central directory"
        )


def _check_entry(f: IO[bytes], info: zipfile.ZipInfo, at: int, filename: str) -> int:
    """Check the local header of an entry that must start at ``at``; the end of its data."""
    name = info.orig_filename[:200]
    if info.header_offset != at:
        where = "before its first local header" if at == 0 else f"before {name!r}"
        raise BadRequest(f"{filename} is a polyglot: data {where}")
    f.seek(at)
    raw = f.read(_LOCAL.size)
    if len(raw) < _LOCAL.size or not raw.startswith(b"PK\x03\x04"):
        raise BadRequest(f"{filename}: no local header where {name!r} starts")
    _, _, flags, method, _, _, _, _, _, name_length, extra_length = _LOCAL.unpack(raw)
    local_name = f.read(name_length).decode(
        "utf-8" if flags & 0x800 else "cp437", "replace"
    )
    if local_name != info.orig_filename or method != info.compress_type:
        raise BadRequest(
            f"{filename}: the local header of {name!r} disagrees with the central "
            "directory (name or compression)"
        )
    end = at + _LOCAL.size + name_length + extra_length + info.compress_size
    if not flags & 0x8:
        return end
    f.seek(end)
    descriptor = f.read(24)
    lengths = (16, 24) if descriptor.startswith(b"PK\x07\x08") else (12, 20)
    # The next entry (or the central directory) starts right after the
    # descriptor; which length it has is told by what follows it.
    for length in lengths:
        f.seek(end + length)
        if f.read(4) in (b"PK\x03\x04", b"PK\x01\x02"):
            return end + length
    raise BadRequest(f"{filename}: a broken data descriptor after {name!r}")
