# -*- test-case-name: tests.test_bulk_resolve -*-
"""Target environments and the query parameters of ``POST /requirements.txt``.

A :class:`Target` is an interpreter and platform (wheel tags and a PEP 508
marker environment), in the manner of ``pip download``;
:func:`parse_bulk_params` reads the query parameters into :class:`BulkParams`.
"""

import re
import sys
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

import attrs
from packaging.markers import Marker, default_environment
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import (
    Tag,
    compatible_tags,
    cpython_tags,
    generic_tags,
    interpreter_name,
    sys_tags,
)
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import Version

from pypicache.bulk.platforms import (
    MAX_VERSION_NUMBER,
    PLATFORM_TAG,
    check_version_numbers,
    expand_platform,
    platform_environment,
)
from pypicache.errors import BadRequest

#: The most targets one request may ask for.
MAX_TARGETS = 16


@attrs.frozen
class Target:
    """An interpreter and platform to cache files for.

    :ivar label: how reports name it (its most specific tag).
    :ivar tags: the wheel tags it installs, most preferred first.
    :ivar environment: its PEP 508 marker environment.
    """

    label: str
    tags: tuple[Tag, ...]
    environment: Mapping[str, str]
    _priority: Mapping[Tag, int] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        priority: dict[Tag, int] = {}
        for i, tag in enumerate(self.tags):
            priority.setdefault(tag, i)
        object.__setattr__(self, "_priority", priority)

    @property
    def python_version(self) -> Version:
        """The interpreter version Requires-Python is checked against."""
        return Version(self.environment["python_full_version"].rstrip("+"))

    def wheel_rank(self, filename: str) -> int | None:
        """How much this target prefers a wheel (lower is better); ``None`` if it cannot install it."""
        try:
            tags = parse_wheel_filename(filename)[3]
        except InvalidWheelFilename:
            return None
        ranks = [self._priority[t] for t in tags if t in self._priority]
        return min(ranks) if ranks else None

    def allows_python(self, requires_python: str | None) -> bool:
        """Whether ``requires_python`` admits this target's interpreter (unparsable: yes)."""
        if not requires_python:
            return True
        try:
            return SpecifierSet(requires_python).contains(
                self.python_version, prereleases=True
            )
        except InvalidSpecifier:
            return True

    def evaluate(self, marker: Marker | None, extras: Iterable[str] = ("",)) -> bool:
        """Whether ``marker`` holds here for any of ``extras`` (an unevaluable marker does not)."""
        if marker is None:
            return True
        for extra in extras:
            try:
                if marker.evaluate({**self.environment, "extra": extra}):
                    return True
            except Exception:
                return False
        return False

    def to_json(self) -> dict[str, Any]:
        return {"target": self.label, "environment": dict(self.environment)}


def native_target() -> Target:
    """The daemon's own interpreter and platform."""
    tags = tuple(sys_tags())
    return Target(str(tags[0]), tags, dict(default_environment()))


_IMPLEMENTATIONS = {
    "cp": ("cpython", "CPython"),
    "pp": ("pypy", "PyPy"),
    "ip": ("ironpython", "IronPython"),
    "jy": ("jython", "Jython"),
    "gp": ("graalpy", "GraalVM"),
}


def parse_python_version(value: str) -> tuple[int, ...]:
    """``3.9``, ``39``, ``3.11.4`` or ``311`` as a version tuple (as ``pip download`` reads it).

    :raises BadRequest: otherwise.
    """
    text = value.strip()[:100]
    if re.fullmatch(r"\d+(\.\d+){1,2}", text):
        parts = tuple(int(p) for p in text.split("."))
    elif re.fullmatch(r"\d{2,3}", text):
        parts = (int(text[0]), int(text[1:]))
    else:
        raise BadRequest(f"Invalid python-version {value!r}: use e.g. 3.9 or 39")
    if any(part > MAX_VERSION_NUMBER for part in parts):
        raise BadRequest(
            f"Invalid python-version {text!r}: version numbers go up to {MAX_VERSION_NUMBER}"
        )
    if parts[0] not in (2, 3):
        raise BadRequest(f"Invalid python-version {value!r}: only Python 2 and 3 exist")
    return parts


def make_target(
    python_version: tuple[int, ...] | None = None,
    platform: str | None = None,
    implementation: str | None = None,
    abis: Sequence[str] | None = None,
) -> Target:
    """A target as ``pip download --python-version --platform --implementation --abi`` sees it.

    What is not given is the daemon's own; the marker environment follows what is.
    """
    if (
        python_version is None
        and platform is None
        and implementation is None
        and not abis
    ):
        return native_target()
    running = sys.version_info[:2]
    version = python_version[:2] if python_version is not None else running
    impl = implementation or interpreter_name()
    interpreter = f"{impl}{version[0]}{version[1]}"
    platforms = expand_platform(platform) if platform is not None else None
    abi_list = list(abis) if abis else None
    tags: list[Tag] = []
    if impl == "cp":
        tags.extend(cpython_tags(version, abis=abi_list, platforms=platforms))
    else:
        if abi_list is None and (impl != interpreter_name() or version != running):
            abi_list = []
        tags.extend(generic_tags(interpreter, abis=abi_list, platforms=platforms))
    tags.extend(compatible_tags(version, interpreter, platforms))
    environment = dict(default_environment())
    if python_version is not None:
        full = python_version if len(python_version) == 3 else (*python_version[:2], 0)
        environment["python_version"] = f"{full[0]}.{full[1]}"
        environment["python_full_version"] = ".".join(map(str, full))
        environment["implementation_version"] = environment["python_full_version"]
    if implementation is not None and implementation in _IMPLEMENTATIONS:
        (
            environment["implementation_name"],
            environment["platform_python_implementation"],
        ) = _IMPLEMENTATIONS[implementation]
    if platform is not None:
        environment.update(platform_environment(platform))
        environment["platform_release"] = ""
        environment["platform_version"] = ""
    return Target(str(tags[0]), tuple(tags), environment)


@attrs.frozen
class BulkParams:
    """What ``POST /requirements.txt`` was asked to do."""

    deps: bool = True
    all_files: bool = False
    targets: tuple[Target, ...] = attrs.field(factory=lambda: (native_target(),))


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_PARAMS = ("deps", "all-files", "python-version", "platform", "implementation", "abi")


def _boolean(name: str, values: list[str], default: bool) -> bool:
    if not values:
        return default
    if len(values) > 1:
        raise BadRequest(f"{name} given more than once")
    value = values[0].strip().lower()
    if value in _TRUE or value == "":
        return True
    if value in _FALSE:
        return False
    raise BadRequest(f"{name} must be true or false, not {values[0]!r}")


def parse_bulk_params(args: Mapping[bytes, list[bytes]]) -> BulkParams:
    """Read the query parameters of ``POST /requirements.txt``.

    ``deps`` (default true), ``all-files`` (default false), and the target
    selectors of ``pip download``: ``python-version`` (repeatable),
    ``platform`` (repeatable), ``implementation``, ``abi`` (repeatable). Each
    python-version and platform combination is a target resolved on its own;
    with none given, the daemon's own interpreter and platform.

    :raises BadRequest: for unknown parameters and bad values.
    """
    values: dict[str, list[str]] = defaultdict(list)
    for raw_key, raw_values in args.items():
        key = raw_key.decode("utf-8", "replace").strip().lower().replace("_", "-")
        if key not in _PARAMS:
            raise BadRequest(f"Unknown parameter {key!r}; known: {', '.join(_PARAMS)}")
        for raw in raw_values:
            text = raw.decode("utf-8", "replace").strip()
            if key in (
                "platform",
                "abi",
            ):  # pip takes comma-separated lists of these too
                values[key].extend(t.strip() for t in text.split(","))
            else:
                values[key].append(text)
    deps = _boolean("deps", values["deps"], True)
    all_files = _boolean("all-files", values["all-files"], False)
    versions = [parse_python_version(v) for v in values["python-version"] if v] or [
        None
    ]
    platforms: list[str | None] = []
    for platform in values["platform"]:
        platform = platform.lower().replace("-", "_").replace(".", "_")
        if not platform:
            continue
        if not PLATFORM_TAG.fullmatch(platform):
            raise BadRequest(f"Invalid platform {platform[:100]!r}")
        check_version_numbers(platform, "platform")
        platform_environment(platform)
        platforms.append(platform)
    implementations = [v.lower() for v in values["implementation"] if v]
    if len(implementations) > 1:
        raise BadRequest("implementation given more than once")
    implementation = implementations[0] if implementations else None
    if implementation is not None and not re.fullmatch(r"[a-z]{2}", implementation):
        raise BadRequest(f"Invalid implementation {implementation!r}: use cp, pp, py…")
    abis = [a.lower() for a in values["abi"] if a]
    if len(abis) > MAX_TARGETS:
        raise BadRequest(f"Too many abi values ({len(abis)}); at most {MAX_TARGETS}")
    for abi in abis:
        if not re.fullmatch(r"[a-z0-9_]+", abi):
            raise BadRequest(f"Invalid abi {abi!r}")
    combinations = [(v, p) for v in versions for p in (platforms or [None])]
    if len(combinations) > MAX_TARGETS:
        raise BadRequest(
            f"Too many targets ({len(combinations)}); at most {MAX_TARGETS}"
        )
    targets: dict[str, Target] = {}
    for version, platform in combinations:
        target = make_target(version, platform, implementation, abis or None)
        targets.setdefault(target.label, target)
    return BulkParams(deps=deps, all_files=all_files, targets=tuple(targets.values()))
