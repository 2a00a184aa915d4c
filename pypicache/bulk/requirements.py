# -*- test-case-name: tests.test_bulk_resolve -*-
"""Requirements files, read with pip-requirements-parser.

:func:`parse_requirements` turns the text of a requirements file into the
requirements bulk caching can act on (a name, extras, specifiers, a marker,
``--hash`` values) and the lines it cannot act on, each with a reason. Lines
that are not requirements-file syntax at all make the file unreadable:
:class:`~pypicache.errors.BadRequest` naming the first such line.

Nothing named in the file is ever opened: ``-r``/``-c`` includes are reported,
not followed (they would name files on the server).
"""

import os
import re
import shutil
import tempfile
from typing import Any, Mapping

import attrs
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from pip_requirements_parser import (
    EditableRequirement,
    IncorrectRequirementLine,
    InstallRequirement,
    RequirementsFile,
)

from pypicache.errors import BadRequest

#: The hash algorithms pip accepts in ``--hash`` (``pip._internal.utils.hashes``).
HASH_ALGORITHMS = ("sha256", "sha384", "sha512")

#: Options (by the parser's ``dest``) that only steer where pip looks for files.
_INDEX_OPTIONS = {
    "index_url": "--index-url",
    "extra_index_urls": "--extra-index-url",
    "no_index": "--no-index",
    "find_links": "--find-links",
    "trusted_hosts": "--trusted-host",
}


@attrs.frozen
class RequirementLine:
    """A requirement bulk caching acts on.

    :ivar hashes: ``--hash`` values, algorithm to allowed hex digests; empty
        when the line has none.
    """

    line: str
    line_number: int
    requirement: Requirement
    hashes: Mapping[str, frozenset[str]] = attrs.field(factory=dict)

    @property
    def name(self) -> str:
        return canonicalize_name(self.requirement.name)

    @property
    def extras(self) -> frozenset[str]:
        return frozenset(canonicalize_name(e) for e in self.requirement.extras)


@attrs.frozen
class UnparsedLine:
    """A line that was read but is not acted on, and why."""

    line: str
    line_number: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "line_number": self.line_number,
            "reason": self.reason,
        }


@attrs.frozen
class ParsedFile:
    """A requirements file: what to act on, what not, and whether ``--pre`` was given."""

    requirements: tuple[RequirementLine, ...] = ()
    unparsed: tuple[UnparsedLine, ...] = ()
    pre: bool = False


def parse_hashes(values: list[str], where: str) -> dict[str, frozenset[str]]:
    """``--hash`` option values (``algorithm:hexdigest``) as a mapping.

    :raises BadRequest: for a malformed value or an algorithm pip refuses.
    """
    hashes: dict[str, set[str]] = {}
    for value in values:
        algorithm, sep, digest = value.partition(":")
        algorithm = algorithm.strip().lower()
        digest = digest.strip().lower()
        if not sep or not digest:
            raise BadRequest(f"{where}: --hash must be ALGORITHM:DIGEST, not {value!r}")
        if algorithm not in HASH_ALGORITHMS:
            raise BadRequest(
                f"{where}: unsupported --hash algorithm {algorithm!r} (use one of {', '.join(HASH_ALGORITHMS)})"
            )
        if any(c not in "0123456789abcdef" for c in digest):
            raise BadRequest(f"{where}: --hash digest is not hexadecimal: {value!r}")
        hashes.setdefault(algorithm, set()).add(digest)
    return {k: frozenset(v) for k, v in hashes.items()}


#: Digits a number in a version may have (real ones have at most 8, for dates).
MAX_VERSION_DIGITS = 50


def _check_versions(requirement: Requirement, where: str) -> None:
    """Refuse specifiers whose versions no index could hold.

    A version number of a million digits parses, but comparing it costs
    quadratic time or fails (Python limits integer conversions).

    :raises BadRequest: naming the line.
    """
    for spec in requirement.specifier:
        if any(len(n) > MAX_VERSION_DIGITS for n in re.findall(r"\d+", spec.version)):
            raise BadRequest(
                f"{where}: a version number in {requirement.name!r} has more than "
                f"{MAX_VERSION_DIGITS} digits"
            )


def _read(text: str) -> RequirementsFile:
    """Run the parser on ``text`` (it reads files only: a temporary one, here).

    The file starts with a UTF-8 byte order mark so the parser never falls
    back to the locale's encoding.
    """
    directory = tempfile.mkdtemp(prefix="pypicache-requirements-")
    try:
        path = os.path.join(directory, "requirements.txt")
        with open(path, "wb") as f:
            f.write(b"\xef\xbb\xbf" + text.encode("utf-8"))
        return RequirementsFile.from_file(path, include_nested=False)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _where(item: Any) -> str:
    line = item.line or ""
    shown = repr(line[:100]) + ("…" if len(line) > 100 else "")
    return f"line {item.line_number} ({shown})"


def _classify(req: InstallRequirement) -> str | None:
    """Why a parsed requirement cannot be acted on, or ``None`` if it can."""
    if isinstance(req, EditableRequirement) or req.is_editable:
        return "editable requirements (-e) are not cached"
    if req.is_vcs_url:
        return "VCS requirements are not cached"
    if req.link is not None or req.req is None:
        if req.is_local_path and not req.is_url:
            return "local path requirements are not cached"
        return "URL requirements are not cached (only index projects are)"
    return None


def parse_requirements(text: str) -> ParsedFile:
    """Read a requirements file (blocking: it goes through a temporary file).

    :raises BadRequest: naming the first line that is not requirements-file
        syntax, or has a malformed ``--hash``.
    """
    parsed = _read(text)
    unparsed: list[UnparsedLine] = []
    for invalid in parsed.invalid_lines:
        if isinstance(invalid, IncorrectRequirementLine):
            unparsed.append(
                UnparsedLine(
                    invalid.line or "", invalid.line_number or 0, invalid.error_message
                )
            )
    hard = [
        i for i in parsed.invalid_lines if not isinstance(i, IncorrectRequirementLine)
    ]
    if hard:
        first = min(hard, key=lambda i: i.line_number or 0)
        message = " ".join((first.error_message or "invalid line").split())
        raise BadRequest(
            f"Cannot read the requirements file: {_where(first)}: {message}"
        )

    pre = False
    for option in parsed.options:
        names = []
        for dest, value in option.options.items():
            if dest == "pre":
                pre = True
            elif dest == "requirements":
                names.append(
                    f"-r {' '.join(value)}: included files are not read (send their lines too)"
                )
            elif dest == "constraints":
                names.append(f"-c {' '.join(value)}: constraints files are not read")
            elif dest in _INDEX_OPTIONS:
                names.append(
                    f"{_INDEX_OPTIONS[dest]} is ignored: files come from this server's upstream"
                )
            else:
                names.append(f"option {dest.replace('_', '-')} is ignored")
        if not option.options:
            names.append(
                "options of a requirement (such as --hash) with no requirement "
                "on their line are ignored"
            )
        if names:
            unparsed.append(
                UnparsedLine(
                    option.line or "", option.line_number or 0, "; ".join(names)
                )
            )

    requirements: list[RequirementLine] = []
    for req in parsed.requirements:
        line, number = req.line or "", req.line_number or 0
        reason = _classify(req)
        if reason is not None:
            unparsed.append(UnparsedLine(line, number, reason))
            continue
        try:
            requirement = Requirement(str(req.req))
            if requirement.marker is None and req.marker is not None:
                # The parser keeps the marker apart from the requirement.
                requirement = Requirement(f"{req.req}; {req.marker}")
        except InvalidRequirement as e:  # pragma: no cover - the parser already checked
            raise BadRequest(
                f"Cannot read the requirements file: {_where(req)}: {e}"
            ) from e
        _check_versions(requirement, _where(req))
        hashes = parse_hashes(list(req.hash_options), _where(req))
        requirements.append(RequirementLine(line, number, requirement, hashes))

    unparsed.sort(key=lambda u: u.line_number)
    return ParsedFile(tuple(requirements), tuple(unparsed), pre)


__all__ = [
    "HASH_ALGORITHMS",
    "ParsedFile",
    "RequirementLine",
    "UnparsedLine",
    "parse_hashes",
    "parse_requirements",
]
