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

from typing import Any, Callable

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from pypicache.bulk.lockfiles import (
    Builder,
    LockedPackage,
    LockFile,
    Where,
    dist_name,
    entries,
    fail,
    filename_of,
    hash_string,
    hash_table,
    name_version,
    string,
)
from pypicache.bulk.requirements import parse_requirements
from pypicache.errors import BadRequest

FORMATS = ("uv", "pylock", "poetry", "requirements")


#: What a format's entries are read with: why an entry is not acted on (or
#: ``None``), its file tables, and a file table's name, URL and hashes.
Skip = Callable[[dict[str, Any]], "str | None"]
Items = Callable[[dict[str, Any], str], list[Any]]
FileOf = Callable[[dict[str, Any], str], tuple["str | None", "str | None", Any]]


def _read(
    fmt: str,
    text: str,
    data: dict[str, Any],
    table: str,
    skip: Skip,
    items: Items,
    file_of: FileOf,
) -> LockFile:
    """The packages of the array of tables ``table``, each with its files."""
    where = Where(text, table)
    out = Builder(fmt)
    for i, entry in enumerate(entries(data, table, where)):
        name, version = name_version(entry, where(i, entry.get("name")))
        at = where(i, name)
        reason = skip(entry)
        if reason is not None:
            out.skip(name, where.line(i), f"{reason}, not from an index: not cached")
            continue
        files = []
        for item in items(entry, at):
            if not isinstance(item, dict):
                raise fail(at, "each file must be a table")
            filename, url, hashes = file_of(item, at)
            locked = out.file(name, version, at, filename, url, hashes, where.line(i))
            if locked is not None:
                files.append(locked)
        if version is None and files:
            version = str(dist_name(files[0].filename)[1])  # type: ignore[index]
        out.packages.append(
            LockedPackage(
                name, version or "", f"{name}=={version}", where.line(i), tuple(files)
            )
        )
    return out.done()


def _sdist_and_wheels(entry: dict[str, Any], at: str) -> list[Any]:
    sdist = entry.get("sdist")
    wheels = entry.get("wheels", [])
    if not isinstance(wheels, list) or (
        sdist is not None and not isinstance(sdist, dict)
    ):
        raise fail(at, "sdist must be a table and wheels an array of tables")
    if sdist is None and not wheels:
        raise fail(at, "no sdist and no wheels")
    return ([sdist] if sdist is not None else []) + wheels


def _uv_source(entry: dict[str, Any]) -> str | None:
    source = entry.get("source", {})
    if not isinstance(source, dict):
        return "a source that is not a table"
    return None if "registry" in source else f"a {next(iter(source), 'unknown')} source"


def _uv_file(item: dict[str, Any], at: str) -> tuple[str | None, str | None, Any]:
    url = string(item.get("url"), at, "url", required=False)
    path = string(item.get("path"), at, "path", required=False)
    hashes = hash_string(item["hash"], at) if "hash" in item else {}
    name = string(item.get("filename"), at, "filename", required=False)
    return filename_of(url, path, name), url, hashes


def parse_uv(text: str, data: dict[str, Any]) -> LockFile:
    """A ``uv.lock``: every ``[[package]]`` from a registry, its ``sdist`` and ``wheels``."""
    return _read("uv", text, data, "package", _uv_source, _sdist_and_wheels, _uv_file)


def _pylock_other(entry: dict[str, Any]) -> str | None:
    other = [k for k in ("vcs", "directory", "archive") if k in entry]
    return f"a {other[0]} entry" if other else None


def _pylock_file(item: dict[str, Any], at: str) -> tuple[str | None, str | None, Any]:
    url = string(item.get("url"), at, "url", required=False)
    path = string(item.get("path"), at, "path", required=False)
    name = string(item.get("name"), at, "name", required=False)
    return filename_of(url, path, name), url, hash_table(item.get("hashes"), at)


def parse_pylock(text: str, data: dict[str, Any]) -> LockFile:
    """A PEP 751 ``pylock.toml``: every ``[[packages]]`` with an ``sdist`` or ``wheels``."""
    return _read(
        "pylock", text, data, "packages", _pylock_other, _sdist_and_wheels, _pylock_file
    )


#: Poetry's source types that are package indexes.
POETRY_INDEXES = ("legacy", "pypi", "explicit", "supplemental", "primary")


def _poetry_source(entry: dict[str, Any]) -> str | None:
    source = entry.get("source", {})
    kind = source.get("type", "legacy") if isinstance(source, dict) else None
    return None if kind in POETRY_INDEXES else f"a {kind} source"


def _poetry_file(item: dict[str, Any], at: str) -> tuple[str | None, str | None, Any]:
    hashes = hash_string(item.get("hash"), at) if "hash" in item else {}
    return string(item.get("file"), at, "file"), None, hashes


def parse_poetry(text: str, data: dict[str, Any]) -> LockFile:
    """A ``poetry.lock``: every ``[[package]]``'s ``files`` (or, in lock
    version 1, ``[metadata.files]``), by file name."""
    metadata = data.get("metadata", {})
    old_files = metadata.get("files", {}) if isinstance(metadata, dict) else {}

    def items(entry: dict[str, Any], at: str) -> list[Any]:
        found = entry.get("files")
        if found is None and isinstance(old_files, dict):
            found = old_files.get(entry.get("name"), [])
        if not isinstance(found, list):
            raise fail(at, "files must be an array of tables")
        return found

    return _read("poetry", text, data, "package", _poetry_source, items, _poetry_file)


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
        if (
            len(specs) != 1
            or specs[0].operator not in ("==", "===")
            or "*" in specs[0].version
        ):
            raise fail(where, "not pinned to one version with ==")
        if not line.hashes:
            raise fail(
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
    if isinstance(metadata, dict) and (
        "lock-version" in metadata or "content-hash" in metadata
    ):
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
    "LockedPackage",
    "parse_lock",
]
