# -*- test-case-name: tests.test_warm_locks -*-
"""What a lock file says, as :mod:`pypicache.bulk.locks` reads it: packages,
files, hashes, and the checks every format shares (file names parsed with
packaging and matched to their entry, hashes, entries named by their line).
"""

import re
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit

import attrs
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from pypicache.bulk.requirements import HASH_ALGORITHMS, UnparsedLine, parse_hashes
from pypicache.errors import BadRequest, UnprocessableEntity

Hashes = Mapping[str, frozenset[str]]

#: The longest file name or version taken (no file system holds longer names;
#: longer version numbers are only costly to compare).
MAX_NAME = 255


@attrs.frozen
class LockedFile:
    """A file a lock names: its name, where it was locked from, its hashes."""

    filename: str
    url: str | None
    hashes: Hashes


@attrs.frozen
class LockedPackage:
    """A pinned project of a lock and the files it lists.

    :ivar line: how reports show it (``name==version``, or the requirement line).
    :ivar files: the files named; empty for a hashed requirement, whose files
        are those of the version on the index page that match ``hashes``.
    :ivar hashes: for a hashed requirement, its ``--hash`` values.
    """

    name: str
    version: str
    line: str
    line_number: int | None
    files: tuple[LockedFile, ...] = ()
    hashes: Hashes = attrs.field(factory=dict)


@attrs.frozen
class LockFile:
    """What a lock file asks for, and the entries read but not acted on."""

    format: str
    requirements: tuple[LockedPackage, ...] = ()
    unparsed: tuple[UnparsedLine, ...] = ()
    pre: bool = False


class Where:
    """Names the n-th ``[[package]]`` entry of a TOML lock by its line."""

    def __init__(self, text: str, table: str) -> None:
        header = re.compile(rf"^[ \t]*\[\[[ \t]*{re.escape(table)}[ \t]*\]\]", re.M)
        self.table = table
        self.lines = [text.count("\n", 0, m.start()) + 1 for m in header.finditer(text)]

    def line(self, index: int) -> int | None:
        return self.lines[index] if index < len(self.lines) else None

    def __call__(self, index: int, name: Any = None) -> str:
        line = self.line(index)
        shown = f"[[{self.table}]] entry {index + 1}"
        if line is not None:
            shown = f"line {line}: {shown}"
        if isinstance(name, str):
            shown += f" ({name[:100]!r})"
        return shown


def fail(where: str, message: str) -> UnprocessableEntity:
    return UnprocessableEntity(f"Cannot read the lock file: {where}: {message}")


def string(value: Any, where: str, what: str, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise fail(where, f"{what} must be a non-empty string")
    return value.strip()


def hash_string(value: Any, where: str) -> Hashes:
    """``sha256:hexdigest`` (uv.lock, poetry.lock) as a mapping."""
    if not isinstance(value, str):
        raise fail(where, "hash must be a string 'ALGORITHM:DIGEST'")
    return hash_list([value], where)


def hash_table(value: Any, where: str) -> Hashes:
    """A PEP 751 ``hashes`` table (``{sha256 = "..."}``) as a mapping; other
    algorithms than pip's are left out, as pip leaves them."""
    if not isinstance(value, dict) or not value:
        raise fail(where, "hashes must be a table of algorithm = digest")
    values = [f"{k}:{v}" for k, v in value.items() if str(k).lower() in HASH_ALGORITHMS]
    if not values:
        raise fail(where, f"no hash in {', '.join(HASH_ALGORITHMS)}")
    return hash_list(values, where)


def hash_list(values: list[str], where: str) -> Hashes:
    try:
        return parse_hashes(values, where)
    except BadRequest as e:
        raise UnprocessableEntity(f"Cannot read the lock file: {e.message}") from e


def filename_of(url: str | None, path: str | None, name: str | None) -> str | None:
    """The file name a lock gives, or the last segment of its URL or path."""
    if name:
        return name
    source = url if url else path
    if not source:
        return None
    segment = urlsplit(source).path if url else source
    return unquote(segment.rstrip("/").rsplit("/", 1)[-1])


def dist_name(filename: str) -> tuple[str, Version] | None:
    """A wheel's or sdist's project and version, or ``None`` for other names."""
    try:
        name, version, *_ = parse_wheel_filename(filename)
        return canonicalize_name(name), version
    except InvalidWheelFilename:
        pass
    try:
        name, version = parse_sdist_filename(filename)
        return canonicalize_name(name), version
    except InvalidSdistFilename:
        return None


class Builder:
    """Collects packages and unparsed entries, checking each file against its entry."""

    def __init__(self, fmt: str) -> None:
        self.format = fmt
        self.packages: list[LockedPackage] = []
        self.unparsed: list[UnparsedLine] = []

    def skip(self, line: str, number: int | None, reason: str) -> None:
        self.unparsed.append(UnparsedLine(line, number or 0, reason))

    def file(
        self,
        name: str,
        version: str | None,
        where: str,
        filename: str | None,
        url: str | None,
        hashes: Hashes,
        line: int | None,
    ) -> LockedFile | None:
        """A file of package ``name``; ``None`` (reported) if it is no wheel or sdist."""
        if (
            not isinstance(filename, str)
            or not filename
            or len(filename) > MAX_NAME
            or any(c in filename for c in "/\\\0")
        ):
            raise fail(where, f"a file has no usable name ({str(filename)[:100]!r})")
        if url is not None and urlsplit(url).scheme not in ("http", "https"):
            url = None  # a local path or file URL: the index page's URL is used
        parsed = dist_name(filename)
        if parsed is None:
            self.skip(filename, line, "not a wheel or sdist file name: not cached")
            return None
        if parsed[0] != name:
            raise fail(where, f"file {filename!r} is not of project {name!r}")
        if version is not None:
            try:
                same = Version(version) == parsed[1]
            except InvalidVersion:
                same = True  # a legacy version string: the file name decides
            if not same:
                raise fail(where, f"file {filename!r} is not of version {version}")
        if not hashes:
            raise fail(where, f"file {filename!r} has no hash")
        return LockedFile(filename, url, hashes)

    def done(self) -> LockFile:
        self.unparsed.sort(key=lambda u: u.line_number)
        return LockFile(self.format, tuple(self.packages), tuple(self.unparsed))


def entries(data: dict[str, Any], key: str, where: Where) -> list[dict[str, Any]]:
    entries = data.get(key, [])
    if not isinstance(entries, list):
        raise fail(f"[[{key}]]", "must be an array of tables")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise fail(where(i), "must be a table")
    return entries


def name_version(entry: dict[str, Any], where: str) -> tuple[str, str | None]:
    name = string(entry.get("name"), where, "name")
    version = string(entry.get("version"), where, "version", required=False)
    if version is not None and len(version) > MAX_NAME:
        raise fail(where, f"version is longer than {MAX_NAME} characters")
    return canonicalize_name(name or ""), version
