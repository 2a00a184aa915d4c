# -*- test-case-name: tests.test_warm_locks -*-
"""Lock files for ``POST /+warm``: ``uv.lock``, ``pylock.toml``, ``poetry.lock``, hashed requirements.

:func:`parse_lock` reads one (the format told, or sniffed from the content)
into the packages it pins and the files it lists, each with the lock's
hashes. Nothing is resolved: a lock names its files. Entries that do not come
from an index (a git checkout, a local directory, the project itself) are
read but not acted on, and reported with the reason. Files are named by URL
and/or file name; the project and version come from the file name
(:func:`packaging.utils.parse_wheel_filename`, ``parse_sdist_filename``),
which must agree with the entry.

Unreadable input (not TOML, not a requirements file) is a
:class:`~pypicache.errors.BadRequest`; readable input that does not make a lock
(a package without a name, a file of another project, a malformed hash) is an
:class:`~pypicache.errors.UnprocessableEntity`; both name the line or entry.
"""

import re
import tomllib
from typing import Any, Callable, Mapping
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

from pypicache.bulk.requirements import (
    HASH_ALGORITHMS,
    UnparsedLine,
    parse_hashes,
    parse_requirements,
)
from pypicache.errors import BadRequest, UnprocessableEntity

FORMATS = ("uv", "pylock", "poetry", "requirements")

Hashes = Mapping[str, frozenset[str]]


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


class _Where:
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


def _fail(where: str, message: str) -> UnprocessableEntity:
    return UnprocessableEntity(f"Cannot read the lock file: {where}: {message}")


def _str(value: Any, where: str, what: str, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, f"{what} must be a non-empty string")
    return value.strip()


def _hash_string(value: Any, where: str) -> Hashes:
    """``sha256:hexdigest`` (uv.lock, poetry.lock) as a mapping."""
    if not isinstance(value, str):
        raise _fail(where, "hash must be a string 'ALGORITHM:DIGEST'")
    try:
        return parse_hashes([value], where)
    except BadRequest as e:
        raise UnprocessableEntity(f"Cannot read the lock file: {e.message}") from e


def _hash_table(value: Any, where: str) -> Hashes:
    """A PEP 751 ``hashes`` table (``{sha256 = "..."}``) as a mapping; other
    algorithms than pip's are left out, as pip leaves them."""
    if not isinstance(value, dict) or not value:
        raise _fail(where, "hashes must be a table of algorithm = digest")
    values = [f"{k}:{v}" for k, v in value.items() if str(k).lower() in HASH_ALGORITHMS]
    if not values:
        raise _fail(where, f"no hash in {', '.join(HASH_ALGORITHMS)}")
    return _hash_string_list(values, where)


def _hash_string_list(values: list[str], where: str) -> Hashes:
    try:
        return parse_hashes(values, where)
    except BadRequest as e:
        raise UnprocessableEntity(f"Cannot read the lock file: {e.message}") from e


def _filename_of(url: str | None, path: str | None, name: str | None) -> str | None:
    """The file name a lock gives, or the last segment of its URL or path."""
    if name:
        return name
    source = url if url else path
    if not source:
        return None
    segment = urlsplit(source).path if url else source
    return unquote(segment.rstrip("/").rsplit("/", 1)[-1])


def _dist_name(filename: str) -> tuple[str, Version] | None:
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


class _Builder:
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
        if not filename or "/" in filename or "\\" in filename or "\0" in filename:
            raise _fail(where, f"a file has no usable name ({filename!r})")
        if url is not None and urlsplit(url).scheme not in ("http", "https"):
            url = None  # a local path or file URL: the index page's URL is used
        parsed = _dist_name(filename)
        if parsed is None:
            self.skip(filename, line, "not a wheel or sdist file name: not cached")
            return None
        if parsed[0] != name:
            raise _fail(where, f"file {filename!r} is not of project {name!r}")
        if version is not None:
            try:
                same = Version(version) == parsed[1]
            except InvalidVersion:
                same = True  # a legacy version string: the file name decides
            if not same:
                raise _fail(where, f"file {filename!r} is not of version {version}")
        if not hashes:
            raise _fail(where, f"file {filename!r} has no hash")
        return LockedFile(filename, url, hashes)

    def done(self) -> LockFile:
        self.unparsed.sort(key=lambda u: u.line_number)
        return LockFile(self.format, tuple(self.packages), tuple(self.unparsed))


def _entries(data: dict[str, Any], key: str, where: _Where) -> list[dict[str, Any]]:
    entries = data.get(key, [])
    if not isinstance(entries, list):
        raise _fail(f"[[{key}]]", "must be an array of tables")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _fail(where(i), "must be a table")
    return entries


def _name_version(entry: dict[str, Any], where: str) -> tuple[str, str | None]:
    name = _str(entry.get("name"), where, "name")
    version = _str(entry.get("version"), where, "version", required=False)
    return canonicalize_name(name or ""), version


def parse_uv(text: str, data: dict[str, Any]) -> LockFile:
    """A ``uv.lock``: every ``[[package]]`` from a registry, its ``sdist`` and ``wheels``."""
    where = _Where(text, "package")
    out = _Builder("uv")
    for i, entry in enumerate(_entries(data, "package", where)):
        name, version = _name_version(entry, where(i, entry.get("name")))
        at = where(i, name)
        source = entry.get("source", {})
        if not isinstance(source, dict):
            raise _fail(at, "source must be a table")
        if "registry" not in source:
            kind = next(iter(source), "unknown")
            out.skip(f"{name}", where.line(i), f"a {kind} source, not an index: not cached")
            continue
        files = []
        sdist = entry.get("sdist")
        wheels = entry.get("wheels", [])
        if not isinstance(wheels, list) or (sdist is not None and not isinstance(sdist, dict)):
            raise _fail(at, "sdist must be a table and wheels an array of tables")
        for item in ([sdist] if sdist is not None else []) + wheels:
            if not isinstance(item, dict):
                raise _fail(at, "each wheel must be a table")
            url = _str(item.get("url"), at, "url", required=False)
            path = _str(item.get("path"), at, "path", required=False)
            filename = _filename_of(url, path, item.get("filename"))
            hashes = _hash_string(item["hash"], at) if "hash" in item else {}
            locked = out.file(name, version, at, filename, url, hashes, where.line(i))
            if locked is not None:
                files.append(locked)
        out.packages.append(
            LockedPackage(name, version or "", f"{name}=={version}", where.line(i), tuple(files))
        )
    return out.done()


def parse_pylock(text: str, data: dict[str, Any]) -> LockFile:
    """A PEP 751 ``pylock.toml``: every ``[[packages]]`` with an ``sdist`` or ``wheels``."""
    where = _Where(text, "packages")
    out = _Builder("pylock")
    for i, entry in enumerate(_entries(data, "packages", where)):
        name, version = _name_version(entry, where(i, entry.get("name")))
        at = where(i, name)
        other = [k for k in ("vcs", "directory", "archive") if k in entry]
        if other:
            out.skip(name, where.line(i), f"a {other[0]} entry, not from an index: not cached")
            continue
        sdist = entry.get("sdist")
        wheels = entry.get("wheels", [])
        if not isinstance(wheels, list) or (sdist is not None and not isinstance(sdist, dict)):
            raise _fail(at, "sdist must be a table and wheels an array of tables")
        if sdist is None and not wheels:
            raise _fail(at, "no sdist, wheels, vcs, directory or archive")
        files = []
        for item in ([sdist] if sdist is not None else []) + wheels:
            if not isinstance(item, dict):
                raise _fail(at, "each wheel must be a table")
            url = _str(item.get("url"), at, "url", required=False)
            path = _str(item.get("path"), at, "path", required=False)
            filename = _filename_of(url, path, _str(item.get("name"), at, "name", False))
            hashes = _hash_table(item.get("hashes"), at)
            locked = out.file(name, version, at, filename, url, hashes, where.line(i))
            if locked is not None:
                files.append(locked)
        if version is None and files:
            version = str(_dist_name(files[0].filename)[1])  # type: ignore[index]
        out.packages.append(
            LockedPackage(name, version or "", f"{name}=={version}", where.line(i), tuple(files))
        )
    return out.done()


def parse_poetry(text: str, data: dict[str, Any]) -> LockFile:
    """A ``poetry.lock``: every ``[[package]]``'s ``files`` (or, in lock
    version 1, ``[metadata.files]``), by file name."""
    where = _Where(text, "package")
    out = _Builder("poetry")
    metadata = data.get("metadata", {})
    old_files = metadata.get("files", {}) if isinstance(metadata, dict) else {}
    for i, entry in enumerate(_entries(data, "package", where)):
        name, version = _name_version(entry, where(i, entry.get("name")))
        at = where(i, name)
        source = entry.get("source", {})
        kind = source.get("type", "legacy") if isinstance(source, dict) else None
        if kind not in ("legacy", "pypi", "explicit", "supplemental", "primary"):
            out.skip(name, where.line(i), f"a {kind} source, not an index: not cached")
            continue
        items = entry.get("files")
        if items is None and isinstance(old_files, dict):
            items = old_files.get(entry.get("name"), old_files.get(name, []))
        if not isinstance(items, list):
            raise _fail(at, "files must be an array of tables")
        files = []
        for item in items:
            if not isinstance(item, dict):
                raise _fail(at, "each file must be a table")
            filename = _str(item.get("file"), at, "file")
            hashes = _hash_string(item.get("hash"), at) if "hash" in item else {}
            locked = out.file(name, version, at, filename, None, hashes, where.line(i))
            if locked is not None:
                files.append(locked)
        out.packages.append(
            LockedPackage(name, version or "", f"{name}=={version}", where.line(i), tuple(files))
        )
    return out.done()


def parse_hashed_requirements(text: str) -> LockFile:
    """A requirements file in which every requirement is pinned with ``==``
    and carries ``--hash`` values (``uv pip compile --generate-hashes``,
    ``pip-compile --generate-hashes``); markers are not evaluated."""
    try:
        parsed = parse_requirements(text)
    except BadRequest as e:
        raise BadRequest(e.message.replace("requirements file", "lock file", 1)) from e
    packages = []
    for line in parsed.requirements:
        where = f"line {line.line_number} ({line.line[:100]!r})"
        specs = list(line.requirement.specifier)
        if len(specs) != 1 or specs[0].operator not in ("==", "===") or "*" in specs[0].version:
            raise _fail(where, "not pinned to one version with ==")
        if not line.hashes:
            raise _fail(
                where,
                "no --hash: POST /+warm caches the files a lock names "
                "(POST /requirements.txt resolves requirements)",
            )
        packages.append(
            LockedPackage(
                line.name,
                specs[0].version,
                line.line,
                line.line_number,
                hashes=line.hashes,
            )
        )
    return LockFile("requirements", tuple(packages), parsed.unparsed, parsed.pre)


def _toml_format(data: dict[str, Any]) -> str | None:
    """Which lock a TOML document is, by its keys."""
    if "lock-version" in data:
        return "pylock"
    metadata = data.get("metadata")
    if isinstance(metadata, dict) and ("lock-version" in metadata or "content-hash" in metadata):
        return "poetry"
    if "package" in data and ("version" in data or "requires-python" in data):
        return "uv"
    return None


_TOML_PARSERS: dict[str, Callable[[str, dict[str, Any]], LockFile]] = {
    "uv": parse_uv,
    "pylock": parse_pylock,
    "poetry": parse_poetry,
}


def parse_lock(text: str, fmt: str | None = None) -> LockFile:
    """Read a lock file of format ``fmt`` (one of :data:`FORMATS`), or the
    format its content shows (blocking: a requirements file goes through a
    temporary file).

    :raises BadRequest: unreadable, or of no format known.
    :raises UnprocessableEntity: readable but not a lock, naming the entry.
    """
    if fmt == "requirements":
        return parse_hashed_requirements(text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        if fmt is None and "--hash" in text:
            return parse_hashed_requirements(text)
        if fmt is None:
            raise BadRequest(
                "Not a lock file: neither TOML (uv.lock, pylock.toml, poetry.lock: "
                f"{e}) nor a requirements file with --hash values"
            ) from e
        raise BadRequest(f"Cannot read the lock file as TOML: {e}") from e
    found = _toml_format(data)
    if fmt is None:
        if found is None:
            raise BadRequest(
                "Not a lock file: a TOML document, but not a uv.lock, pylock.toml "
                "or poetry.lock (use ?format= to say which)"
            )
        fmt = found
    return _TOML_PARSERS[fmt](text, data)


__all__ = [
    "FORMATS",
    "LockFile",
    "LockedFile",
    "LockedPackage",
    "parse_lock",
]
