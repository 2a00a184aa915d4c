# -*- test-case-name: tests.test_bulk,tests.test_bulk_resolve -*-
"""Bulk caching: ``POST /requirements.txt`` fills the cache with all a project needs.

The parts, from pure to Twisted:

- :func:`parse_bulk_params`: query parameters to :class:`BulkParams`, whose
  :class:`Target`\\ s are interpreters and platforms (tags and a marker
  environment each), in the manner of ``pip download``.
- Selection (pure): :func:`split_page` groups a project page by version,
  :func:`usable_files` keeps the files a target can install (best first),
  :func:`choose_versions` applies specifiers, pre-release and yanked rules.
- Resolution (synchronous, run in a thread): :class:`Provider` is a resolvelib
  provider over a :class:`Source` (pages and core metadata); :func:`resolve`
  runs resolvelib and, when some requirements cannot be satisfied, drops the
  requirements that led to the conflict and resolves the rest again.
- :class:`BulkCacher` (the reactor side): parses the file in a thread, runs one
  resolution per target in its own thread (which asks the reactor for pages
  and metadata through ``blockingCallFromThread``, prefetched concurrently),
  then downloads the chosen files through the proxy with a bound on
  concurrency, checks ``--hash`` values, caches the build requirements of
  every sdist, and reports.
"""

import hashlib
import re
import sys
import tarfile
import threading
import zipfile
from collections import defaultdict
from functools import partial
from typing import Any, Callable, Coroutine, Hashable, Iterable, Iterator, Mapping, Protocol, Sequence, TypeVar

import attrs
from packaging.markers import Marker, default_environment
from packaging.metadata import parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import (
    Tag,
    compatible_tags,
    cpython_tags,
    generic_tags,
    interpreter_name,
    mac_platforms,
    sys_tags,
)
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version
from resolvelib import AbstractProvider, BaseReporter, Resolver
from resolvelib.resolvers import ResolutionImpossible, ResolutionTooDeep
from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore, fail, succeed
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from .cache import RunBlocking, read_wheel_metadata
from .errors import BadRequest, PypicacheError
from .model import DistFile, ProjectPage
from .names import parse_filename
from .requirements import ParsedFile, RequirementLine, parse_requirements
from .shared import SingleFlight
from .store import StoredFile

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

log = Logger()

T = TypeVar("T")

#: Identifier of the target interpreter in resolutions (for Requires-Python).
PYTHON = "<python>"

#: pip's build requirements for an sdist without ``[build-system]``.
DEFAULT_BUILD_REQUIRES = ("setuptools>=40.8.0",)

#: Largest PKG-INFO or pyproject.toml read from an sdist.
MAX_MEMBER_SIZE = 1024 * 1024

#: The most targets one request may ask for.
MAX_TARGETS = 16

#: How many rounds of build requirements (build requirements of build requirements…).
MAX_BUILD_ROUNDS = 4

STATUSES = ("fetched", "cached", "failed")


# -- targets -------------------------------------------------------------------


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
            return SpecifierSet(requires_python).contains(self.python_version, prereleases=True)
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
_LEGACY_MANYLINUX = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}
_LEGACY_MANYLINUX_NAMES = {v: k for k, v in _LEGACY_MANYLINUX.items()}
_LEGACY_MANYLINUX_ARCHES = {
    "manylinux2014": {"x86_64", "i686", "aarch64", "armv7l", "ppc64", "ppc64le", "s390x"},
    "manylinux2010": {"x86_64", "i686"},
    "manylinux1": {"x86_64", "i686"},
}
_WINDOWS_MACHINES = {"win32": "x86", "win_amd64": "AMD64", "win_arm64": "ARM64", "win_ia64": "ia64"}
_PLATFORM = re.compile(r"^[a-z0-9][a-z0-9_.]*$")


def _manylinux_parts(platform: str) -> tuple[int, int, str] | None:
    match = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", platform)
    if match:
        return int(match[1]), int(match[2]), match[3]
    for legacy, (major, minor) in _LEGACY_MANYLINUX.items():
        if platform.startswith(legacy + "_"):
            return major, minor, platform[len(legacy) + 1 :]
    return None


def expand_platform(platform: str) -> list[str]:
    """The platform tags a machine of ``platform`` installs, most specific first.

    ``manylinux_2_28_x86_64`` also installs older manylinux wheels (and their
    legacy aliases, and ``linux_x86_64``); ``macosx_11_0_arm64`` older macOS
    and universal2 wheels (as :func:`packaging.tags.mac_platforms` lists them).
    """
    manylinux = _manylinux_parts(platform)
    if manylinux is not None:
        major, minor, arch = manylinux
        lowest = 5 if arch in ("x86_64", "i686") else 17
        platforms = []
        for m in range(minor, lowest - 1, -1):
            platforms.append(f"manylinux_{major}_{m}_{arch}")
            legacy = _LEGACY_MANYLINUX_NAMES.get((major, m))
            if legacy is not None and arch in _LEGACY_MANYLINUX_ARCHES[legacy]:
                platforms.append(f"{legacy}_{arch}")
        if platform not in platforms:
            platforms.insert(0, platform)
        platforms.append(f"linux_{arch}")
        return platforms
    musl = re.fullmatch(r"musllinux_(\d+)_(\d+)_(\w+)", platform)
    if musl:
        major, minor, arch = int(musl[1]), int(musl[2]), musl[3]
        return [f"musllinux_{major}_{m}_{arch}" for m in range(minor, -1, -1)] + [f"linux_{arch}"]
    mac = re.fullmatch(r"macosx_(\d+)_(\d+)_(\w+)", platform)
    if mac:
        return list(mac_platforms((int(mac[1]), int(mac[2])), mac[3]))
    return [platform]


def platform_environment(platform: str) -> dict[str, str]:
    """The marker variables a platform tag decides.

    :raises BadRequest: for a platform family whose markers are unknown.
    """
    if platform in _WINDOWS_MACHINES:
        return {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt",
                "platform_machine": _WINDOWS_MACHINES[platform]}
    mac = re.fullmatch(r"macosx_\d+_\d+_(\w+)", platform)
    if mac:
        arch = mac[1]
        machine = "arm64" if arch in ("arm64", "universal2") else "x86_64" if arch in ("intel", "fat64", "fat3", "universal") else arch
        return {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix", "platform_machine": machine}
    linux = _manylinux_parts(platform)
    arch = linux[2] if linux else None
    if arch is None:
        match = re.fullmatch(r"(?:musllinux_\d+_\d+|linux)_(\w+)", platform)
        arch = match[1] if match else None
    if arch is not None:
        return {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "platform_machine": arch}
    raise BadRequest(
        f"Unknown platform {platform!r}: use a wheel platform tag such as manylinux_2_17_x86_64, "
        "musllinux_1_2_aarch64, macosx_11_0_arm64, win_amd64 or win32"
    )


def parse_python_version(value: str) -> tuple[int, ...]:
    """``3.9``, ``39``, ``3.11.4`` or ``311`` as a version tuple (as ``pip download`` reads it).

    :raises BadRequest: otherwise.
    """
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+){1,2}", text):
        parts = tuple(int(p) for p in text.split("."))
    elif re.fullmatch(r"\d{2,3}", text):
        parts = (int(text[0]), int(text[1:]))
    else:
        raise BadRequest(f"Invalid python-version {value!r}: use e.g. 3.9 or 39")
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
    if python_version is None and platform is None and implementation is None and not abis:
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
        environment["implementation_name"], environment["platform_python_implementation"] = _IMPLEMENTATIONS[implementation]
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
            if key in ("platform", "abi"):  # pip takes comma-separated lists of these too
                values[key].extend(t.strip() for t in text.split(","))
            else:
                values[key].append(text)
    deps = _boolean("deps", values["deps"], True)
    all_files = _boolean("all-files", values["all-files"], False)
    versions = [parse_python_version(v) for v in values["python-version"] if v] or [None]
    platforms: list[str | None] = []
    for platform in values["platform"]:
        platform = platform.lower().replace("-", "_").replace(".", "_")
        if not platform:
            continue
        if not _PLATFORM.fullmatch(platform):
            raise BadRequest(f"Invalid platform {platform!r}")
        platform_environment(platform)
        platforms.append(platform)
    implementations = [v.lower() for v in values["implementation"] if v]
    if len(implementations) > 1:
        raise BadRequest("implementation given more than once")
    implementation = implementations[0] if implementations else None
    if implementation is not None and not re.fullmatch(r"[a-z]{2}", implementation):
        raise BadRequest(f"Invalid implementation {implementation!r}: use cp, pp, py…")
    abis = [a.lower() for a in values["abi"] if a]
    for abi in abis:
        if not re.fullmatch(r"[a-z0-9_]+", abi):
            raise BadRequest(f"Invalid abi {abi!r}")
    combinations = [(v, p) for v in versions for p in (platforms or [None])]
    if len(combinations) > MAX_TARGETS:
        raise BadRequest(f"Too many targets ({len(combinations)}); at most {MAX_TARGETS}")
    targets: dict[str, Target] = {}
    for version, platform in combinations:
        target = make_target(version, platform, implementation, abis or None)
        targets.setdefault(target.label, target)
    return BulkParams(deps=deps, all_files=all_files, targets=tuple(targets.values()))


# -- selection (pure) ------------------------------------------------------------


def is_sdist(filename: str) -> bool:
    return filename.endswith((".tar.gz", ".zip"))


def split_page(page: ProjectPage, project: str) -> dict[Version, tuple[DistFile, ...]]:
    """The wheels and sdists of ``project`` on ``page`` by version (other files are left out)."""
    releases: dict[Version, list[DistFile]] = defaultdict(list)
    for f in page.files:
        if not (f.filename.endswith(".whl") or is_sdist(f.filename)):
            continue
        try:
            name, version = parse_filename(f.filename)
        except BadRequest:
            continue
        if version is not None and name == project:
            releases[version].append(f)
    return {v: tuple(files) for v, files in releases.items()}


def usable_files(files: Iterable[DistFile], target: Target) -> list[DistFile]:
    """The files ``target`` can install, best first: wheels by tag preference, then sdists.

    Files whose Requires-Python excludes the target's interpreter are left out.
    """
    wheels: list[tuple[int, str, DistFile]] = []
    sdists: list[tuple[int, str, DistFile]] = []
    for f in files:
        if not target.allows_python(f.requires_python):
            continue
        if f.filename.endswith(".whl"):
            rank = target.wheel_rank(f.filename)
            if rank is not None:
                wheels.append((rank, f.filename, f))
        elif is_sdist(f.filename):
            sdists.append((0 if f.filename.endswith(".tar.gz") else 1, f.filename, f))
    return [f for *_, f in sorted(wheels, key=lambda t: t[:2])] + [f for *_, f in sorted(sdists, key=lambda t: t[:2])]


def matches_hashes(f: DistFile, hashes: Mapping[str, frozenset[str]]) -> bool:
    """Whether the index's hashes of ``f`` are among ``hashes``."""
    return any(f.hashes.get(algorithm, "").lower() in digests for algorithm, digests in hashes.items())


def exact_pins(specifier: SpecifierSet) -> set[str]:
    """The versions ``specifier`` pins with ``==`` (no wildcard) or ``===``, as strings."""
    pins = set()
    for spec in specifier:
        if spec.operator == "===" or (spec.operator == "==" and not spec.version.endswith(".*")):
            try:
                pins.add(str(Version(spec.version)))
            except InvalidVersion:
                pins.add(spec.version)
    return pins


def choose_versions(
    releases: Mapping[Version, Sequence[DistFile]],
    target: Target,
    specifier: SpecifierSet | None = None,
    *,
    pre: bool = False,
    hashes: Mapping[str, frozenset[str]] | None = None,
) -> list[tuple[Version, tuple[DistFile, ...], bool]]:
    """The versions pip would consider, newest first, with their usable files and whether yanked.

    A version needs a file the target can install. Yanked files count only
    for a version pinned with ``==``/``===``. Pre-releases are considered with
    ``pre``, when the specifier names one, or when nothing else satisfies it.
    With ``hashes``, files whose index hashes match are preferred.
    """
    specifier = specifier if specifier is not None else SpecifierSet()
    pinned = exact_pins(specifier)
    usable: dict[Version, tuple[tuple[DistFile, ...], bool]] = {}
    for version, files in releases.items():
        found = usable_files(files, target)
        if hashes:
            matching = [f for f in found if matches_hashes(f, hashes)]
            found = matching or found
        live = [f for f in found if not f.yanked]
        if live:
            usable[version] = (tuple(live), False)
        elif found and str(version) in pinned:
            usable[version] = (tuple(found), True)
    allowed = specifier.filter(list(usable), prereleases=True if pre else None)
    return [(v, *usable[v]) for v in sorted(allowed, reverse=True)]


# -- core metadata -------------------------------------------------------------------


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
            return DistMetadata(requires_python=requires_python,
                                unknown=f"dependencies unknown: PKG-INFO is Metadata-Version {version}, before 2.2")
        if "requires-dist" in dynamic:
            return DistMetadata(requires_python=requires_python,
                                unknown="dependencies unknown: PKG-INFO declares Requires-Dist dynamic")
    requires = []
    for text in fields.get("requires_dist", []):
        try:
            requires.append(Requirement(text))
        except InvalidRequirement:
            log.warn("Ignoring invalid Requires-Dist {text!r}", text=text)
    return DistMetadata(tuple(requires), requires_python)


def read_sdist(path: str) -> dict[str, bytes]:
    """``PKG-INFO`` and ``pyproject.toml`` from the top folder of an sdist (blocking).

    :raises ValueError: if the archive cannot be read.
    """
    wanted = {"PKG-INFO", "pyproject.toml"}
    found: dict[str, bytes] = {}
    try:
        if path.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    parts = info.filename.strip("/").split("/")
                    if len(parts) == 2 and parts[1] in wanted and parts[1] not in found and info.file_size <= MAX_MEMBER_SIZE:
                        found[parts[1]] = archive.read(info)
        else:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:
                    parts = member.name.removeprefix("./").strip("/").split("/")
                    if len(parts) == 2 and parts[1] in wanted and parts[1] not in found and member.isfile() and member.size <= MAX_MEMBER_SIZE:
                        content = tar.extractfile(member)
                        if content is not None:
                            found[parts[1]] = content.read()
                    if len(found) == len(wanted):
                        break
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile) as e:
        raise ValueError(f"cannot read {path.rsplit('/', 1)[-1]}: {e}") from e
    return found


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
        return DistMetadata(unknown=f"dependencies unknown: {e}", build_requires=DEFAULT_BUILD_REQUIRES)
    build = build_requirements(members.get("pyproject.toml"))
    if "PKG-INFO" not in members:
        return DistMetadata(unknown="dependencies unknown: no PKG-INFO in the sdist", build_requires=build)
    return attrs.evolve(parse_core_metadata(members["PKG-INFO"], sdist=True), build_requires=build)


def file_digest(path: str, algorithm: str) -> str:
    """The hex digest of a file (blocking)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- resolution (synchronous) ---------------------------------------------------------------


class Abandoned(Exception):
    """The request that started a resolution has gone away."""


class Source(Protocol):
    """Where a resolution gets pages and metadata (synchronously, from its thread)."""

    def page(self, project: str) -> ProjectPage:
        """The project's page; raises :class:`PypicacheError` if there is none."""

    def metadata(self, project: str, file: DistFile) -> DistMetadata:
        """Core metadata of a file; raises :class:`PypicacheError` if unavailable."""

    def prefetch(self, projects: Sequence[str], target: Target) -> None:
        """A hint: these pages (and their newest files' metadata) will be needed."""

    def check(self) -> None:
        """Raise :class:`Abandoned` if the resolution should stop."""


def _key(name: str, extras: frozenset[str]) -> str:
    return f"{name}[{','.join(sorted(extras))}]" if extras else name


@attrs.frozen(eq=False)
class Wanted:
    """A requirement in a resolution.

    :ivar origin: index of the top-level requirement it is (``None`` for dependencies).
    :ivar parent: who asked for it, for messages.
    """

    name: str
    extras: frozenset[str] = frozenset()
    specifier: SpecifierSet = SpecifierSet()
    hashes: Mapping[str, frozenset[str]] = attrs.field(factory=dict)
    origin: int | None = None

    @property
    def key(self) -> str:
        return _key(self.name, self.extras)

    @classmethod
    def from_requirement(cls, requirement: Requirement, origin: int | None = None,
                         hashes: Mapping[str, frozenset[str]] | None = None, extras: bool = True) -> "Wanted":
        return cls(
            canonicalize_name(requirement.name),
            frozenset(canonicalize_name(e) for e in requirement.extras) if extras else frozenset(),
            requirement.specifier,
            hashes or {},
            origin,
        )

    def __str__(self) -> str:
        return f"{self.key}{self.specifier}"


@attrs.frozen(eq=False)
class NeedsPython:
    """A Requires-Python from core metadata, as a requirement on the target interpreter."""

    specifier: SpecifierSet
    key = PYTHON

    def __str__(self) -> str:
        return f"Requires-Python {self.specifier}"


@attrs.frozen
class Candidate:
    """A version of a project (with extras) and the files a target would use, best first."""

    name: str
    version: Version
    extras: frozenset[str] = frozenset()
    files: tuple[DistFile, ...] = attrs.field(default=(), eq=False)
    yanked: bool = attrs.field(default=False, eq=False)

    @property
    def key(self) -> str:
        return _key(self.name, self.extras)

    def __str__(self) -> str:
        return f"{self.key} {self.version}"


@attrs.frozen
class PythonCandidate:
    version: Version
    key = PYTHON


def _reason(error: Exception) -> str:
    if isinstance(error, PypicacheError):
        return error.message
    log.error("Unexpected error during a resolution: {error!r}", error=error)
    return f"internal error: {error}"


def _is_pinned(requirement: Any) -> bool:
    return isinstance(requirement, Wanted) and bool(exact_pins(requirement.specifier))


class Provider(AbstractProvider):  # type: ignore[type-arg]
    """resolvelib's view of an index for one target.

    :ivar problems: project to why it has no candidates (no page, upstream down).
    :ivar notes: ``"name version"`` to something worth reporting (unknown dependencies).
    :ivar roots: identifier to the top-level requirements (origins) that led to it.
    """

    def __init__(self, source: Source, target: Target, *, pre: bool = False, deps: bool = True) -> None:
        self._source = source
        self._target = target
        self._pre = pre
        self._deps = deps
        self._releases: dict[str, dict[Version, tuple[DistFile, ...]]] = {}
        self.problems: dict[str, str] = {}
        self.notes: dict[str, str] = {}
        self.roots: dict[str, set[int]] = defaultdict(set)

    @property
    def target(self) -> Target:
        return self._target

    def releases(self, project: str) -> dict[Version, tuple[DistFile, ...]]:
        if project not in self._releases:
            try:
                page = self._source.page(project)
            except Abandoned:
                raise
            except Exception as e:
                self.problems[project] = _reason(e)
                self._releases[project] = {}
            else:
                self._releases[project] = split_page(page, project)
                if not self._releases[project]:
                    self.problems[project] = f"no wheels or sdists of {project}"
        return self._releases[project]

    def identify(self, requirement_or_candidate: Any) -> str:
        return requirement_or_candidate.key  # type: ignore[no-any-return]

    def get_preference(self, identifier: str, resolutions: Any, candidates: Any, information: Any,
                       backtrack_causes: Sequence[Any]) -> Any:
        infos = list(information[identifier])
        causes = {self.identify(c.requirement) for c in backtrack_causes}
        causes.update(c.parent.key for c in backtrack_causes if c.parent is not None)
        return (
            identifier != PYTHON,
            not any(_is_pinned(i.requirement) for i in infos),
            identifier not in causes,
            not any(i.parent is None for i in infos),
            identifier,
        )

    def find_matches(self, identifier: str, requirements: Mapping[str, Iterator[Any]],
                     incompatibilities: Mapping[str, Iterator[Any]]) -> list[Any]:
        self._source.check()
        wanted = list(requirements[identifier])
        excluded = set(incompatibilities[identifier])
        if identifier == PYTHON:
            candidate = PythonCandidate(self._target.python_version)
            ok = all(w.specifier.contains(candidate.version, prereleases=True) for w in wanted)
            return [candidate] if ok and candidate not in excluded else []
        first = wanted[0]
        specifier = SpecifierSet()
        hashes: dict[str, frozenset[str]] = {}
        for w in wanted:
            specifier &= w.specifier
            for algorithm, digests in w.hashes.items():
                hashes[algorithm] = hashes.get(algorithm, frozenset()) | digests
        releases = self.releases(first.name)
        found = []
        for version, files, yanked in choose_versions(releases, self._target, specifier, pre=self._pre, hashes=hashes):
            candidate = Candidate(first.name, version, first.extras, files, yanked)
            if candidate not in excluded:
                found.append(candidate)
        return found

    def is_satisfied_by(self, requirement: Any, candidate: Any) -> bool:
        return requirement.specifier.contains(candidate.version, prereleases=True)  # type: ignore[no-any-return]

    def get_dependencies(self, candidate: Any) -> list[Any]:
        if isinstance(candidate, PythonCandidate):
            return []
        self._source.check()
        dependencies: list[Any] = []
        if candidate.extras:
            dependencies.append(Wanted(candidate.name, specifier=SpecifierSet(f"=={candidate.version}")))
        if self._deps:
            try:
                metadata = self._source.metadata(candidate.name, candidate.files[0])
            except Abandoned:
                raise
            except Exception as e:
                metadata = DistMetadata(unknown=f"dependencies unknown: {_reason(e)}")
            if metadata.requires_python:
                try:
                    dependencies.append(NeedsPython(SpecifierSet(metadata.requires_python)))
                except InvalidSpecifier:
                    pass
            if metadata.unknown is not None:
                self.notes[f"{candidate.name} {candidate.version}"] = metadata.unknown
            extras = candidate.extras or {""}
            for requirement in metadata.requires_dist:
                if requirement.url:
                    self.notes[f"{candidate.name} {candidate.version}"] = f"URL dependency not followed: {requirement}"
                    continue
                if self._target.evaluate(requirement.marker, extras):
                    dependencies.append(Wanted.from_requirement(requirement))
        roots = self.roots[candidate.key]
        for dependency in dependencies:
            self.roots[dependency.key] |= roots
        names = sorted({d.name for d in dependencies if isinstance(d, Wanted) and d.name not in self._releases})
        if names:
            self._source.prefetch(names, self._target)
        return dependencies


@attrs.frozen
class Resolution:
    """The outcome for one target.

    :ivar pins: project to the chosen candidate (base projects, no extras).
    :ivar unresolved: origin of each top-level requirement left out, to why.
    """

    pins: Mapping[str, Candidate]
    unresolved: Mapping[int, str]
    notes: Mapping[str, str]


def describe_conflict(causes: Iterable[Any], provider: Provider) -> str:
    """A one-line reason from resolvelib's causes."""
    parts: list[str] = []
    for cause in causes:
        requirement, parent = cause.requirement, cause.parent
        text = str(requirement)
        if parent is not None:
            text += f" (required by {parent})"
        elif isinstance(requirement, Wanted) and requirement.origin is not None:
            text += " (requested)"
        if isinstance(requirement, NeedsPython):
            text += f", but the target is Python {provider.target.python_version}"
        elif isinstance(requirement, Wanted) and requirement.name in provider.problems:
            text += f": {provider.problems[requirement.name]}"
        if text not in parts:
            parts.append(text)
    return "no version satisfies " + "; ".join(parts)


def resolve(
    source: Source,
    target: Target,
    wanted: Sequence[Wanted],
    *,
    pre: bool = False,
    deps: bool = True,
    max_rounds: int = 20000,
) -> Resolution:
    """Resolve ``wanted`` (top-level requirements with origins) for ``target`` (blocking).

    When no solution exists, the top-level requirements that led to the
    conflict are set aside with the reason and the rest is resolved again, so
    one bad line does not keep the others from being cached.
    """
    remaining = list(wanted)
    unresolved: dict[int, str] = {}
    notes: dict[str, str] = {}
    while remaining:
        provider = Provider(source, target, pre=pre, deps=deps)
        for w in remaining:
            if w.origin is not None:
                provider.roots[w.key].add(w.origin)
        try:
            result = Resolver(provider, BaseReporter()).resolve(remaining, max_rounds=max_rounds)
        except ResolutionImpossible as e:
            notes.update(provider.notes)
            reason = describe_conflict(e.causes, provider)
            culprits: set[int] = set()
            for cause in e.causes:
                requirement = cause.requirement
                if cause.parent is None and isinstance(requirement, Wanted) and requirement.origin is not None:
                    culprits.add(requirement.origin)
                elif cause.parent is not None:
                    culprits |= provider.roots.get(cause.parent.key, set())
                culprits |= provider.roots.get(requirement.key, set())
            if not culprits:
                culprits = {w.origin for w in remaining if w.origin is not None}
            for origin in culprits:
                unresolved.setdefault(origin, reason)
            left = [w for w in remaining if w.origin not in culprits]
            if len(left) == len(remaining):
                break
            remaining = left
            continue
        except ResolutionTooDeep as e:
            for w in remaining:
                if w.origin is not None:
                    unresolved.setdefault(w.origin, f"resolution gave up after {e.round_count} rounds")
            break
        notes.update(provider.notes)
        pins = {c.name: c for key, c in result.mapping.items() if isinstance(c, Candidate) and not c.extras}
        return Resolution(pins, unresolved, notes)
    return Resolution({}, unresolved, notes)


# -- the reactor side -------------------------------------------------------------------------


def _in_thread(reactor: Any, f: Callable[..., T], *args: Any) -> "Deferred[T]":
    """Run ``f`` in a new daemon thread; its result fires the returned Deferred.

    Resolutions wait on the reactor, which may in turn need the daemon's
    thread pool (to read archives): so they never take a thread from that
    pool, where a few of them could deadlock it. Cancelling the Deferred
    leaves the thread to stop at its next :meth:`Source.check`.
    """
    d: Deferred[T] = Deferred()

    def work() -> None:
        try:
            result = f(*args)
        except BaseException:
            failure = Failure()
            reactor.callFromThread(lambda: d.called or d.errback(failure))
        else:
            reactor.callFromThread(lambda: d.called or d.callback(result))

    threading.Thread(target=work, name="pypicache-bulk-resolver", daemon=True).start()
    return d


def _shield(d: "Deferred[T]") -> "Deferred[T]":
    """A Deferred for ``d``'s result whose cancellation leaves ``d`` alone."""
    out: Deferred[T] = Deferred()

    def forward(result: Any) -> Any:
        if not out.called:
            out.callback(result) if not isinstance(result, Failure) else out.errback(result)
        return None if isinstance(result, Failure) else result

    d.addBoth(forward)
    return out


class _ThreadSource:
    """A :class:`Source` for a resolver thread: every call is answered by the reactor."""

    def __init__(self, reactor: Any, job: "_Job") -> None:
        self._reactor = reactor
        self._job = job

    def check(self) -> None:
        if self._job.abandoned:
            raise Abandoned()

    def _ask(self, key: Hashable, f: Callable[..., "Deferred[T]"], *args: Any) -> T:
        self.check()
        # Answers already in (most are, thanks to prefetching) are immutable
        # and read without a round trip: a dict lookup is atomic.
        known = self._job.known(key)
        if known is not None:
            ok, value = known
            if ok:
                return value  # type: ignore[no-any-return]
            raise value
        return blockingCallFromThread(self._reactor, f, *args)  # type: ignore[no-any-return]

    def page(self, project: str) -> ProjectPage:
        return self._ask(("page", project), self._job.page, project)

    def metadata(self, project: str, file: DistFile) -> DistMetadata:
        return self._ask(("metadata", file.filename), self._job.metadata, project, file)

    def prefetch(self, projects: Sequence[str], target: Target) -> None:
        self._reactor.callFromThread(self._job.prefetch, list(projects), target)


@attrs.define(eq=False)
class _FileTask:
    """A file this job caches, and its report entry once done."""

    project: str
    version: str
    info: DistFile
    targets: list[str]
    hashes: dict[str, frozenset[str]]
    notes: list[str]
    done: "Deferred[dict[str, Any] | None]" = attrs.field(default=None)
    entry: dict[str, Any] | None = None
    finished: bool = False


class _Job:
    """One ``POST /requirements.txt``: resolutions, downloads and the report."""

    def __init__(self, cacher: "BulkCacher", params: BulkParams, parsed: ParsedFile,
                 emit: Callable[[dict[str, Any]], None] | None) -> None:
        self._cacher = cacher
        self._params = params
        self._parsed = parsed
        self._emit = emit
        self.abandoned = False
        self._results: dict[Hashable, tuple[bool, Any]] = {}
        self._flights: SingleFlight[Any] = SingleFlight()
        self._prefetching: set[Hashable] = set()
        self._prefetch_limit = DeferredSemaphore(cacher.concurrency)
        self._downloads = DeferredSemaphore(cacher.concurrency)
        self._before: dict[str, bool] = {}
        self._files: dict[str, _FileTask] = {}
        self._requirements: list[dict[str, Any]] = []
        self._targets: list[dict[str, Any]] = []

    # -- what the resolver threads ask (on the reactor) ---------------------------

    def _memo(self, key: Hashable, work: Callable[[], Coroutine[Any, Any, T]]) -> "Deferred[T]":
        """The result of ``work()``, computed once per job; each caller gets its own Deferred."""
        if key in self._results:
            ok, value = self._results[key]
            return succeed(value) if ok else fail(value)

        async def remembered() -> T:
            try:
                value = await work()
            except Exception as e:
                self._results[key] = (False, e)
                raise
            self._results[key] = (True, value)
            return value

        return self._flights.run(key, remembered)

    def known(self, key: Hashable) -> tuple[bool, Any] | None:
        """A result already computed (safe from any thread), or ``None``."""
        return self._results.get(key)

    def page(self, project: str) -> "Deferred[ProjectPage]":
        async def work() -> ProjectPage:
            _, page = await self._cacher.views.simple(project)
            return page

        return self._memo(("page", project), work)

    def metadata(self, project: str, file: DistFile) -> "Deferred[DistMetadata]":
        return self._memo(("metadata", file.filename), lambda: self._read_metadata(project, file))

    async def _read_metadata(self, project: str, file: DistFile) -> DistMetadata:
        cacher = self._cacher
        if file.filename.endswith(".whl"):
            try:
                raw = await cacher.mirror.metadata(project, file.filename)
            except PypicacheError:
                # No PEP 658 metadata: read it from the wheel itself.
                stored = await self._fetch(project, file.filename)
                raw = await cacher.run_blocking(read_wheel_metadata, stored.path.path)
                if raw is None:
                    return DistMetadata(unknown="dependencies unknown: the wheel has no METADATA")
            return parse_core_metadata(raw)
        stored = await self._fetch(project, file.filename)
        return await cacher.run_blocking(sdist_metadata, stored.path.path)  # type: ignore[no-any-return]

    def prefetch(self, projects: list[str], target: Target) -> None:
        """Fetch pages (and the likely metadata) ahead of the resolver, a few at a time."""
        for project in projects:
            key = ("prefetch", project, target.label)
            if self.abandoned or key in self._prefetching:
                continue
            self._prefetching.add(key)
            d = self._prefetch_limit.run(lambda p=project: Deferred.fromCoroutine(self._prefetch_one(p, target)))
            d.addErrback(lambda _: None)

    async def _prefetch_one(self, project: str, target: Target) -> None:
        if self.abandoned:
            return
        page = await self.page(project)
        for _, files, _ in choose_versions(split_page(page, project), target)[:1]:
            # Only metadata that needs no download of the archive itself.
            if files[0].filename.endswith(".whl") and files[0].core_metadata:
                await self.metadata(project, files[0])

    # -- downloads ----------------------------------------------------------------

    def _remember_before(self, project: str, filename: str) -> None:
        if filename not in self._before:
            self._before[filename] = self._cacher.store.find(project, filename) is not None

    async def _fetch(self, project: str, filename: str) -> StoredFile:
        self._remember_before(project, filename)
        return await self._cacher.views.fetch(project, filename)

    def _want(self, project: str, version: str, info: DistFile, target: Target,
              hashes: Mapping[str, frozenset[str]] | None = None, note: str | None = None) -> _FileTask:
        task = self._files.get(info.filename)
        if task is None:
            task = _FileTask(project, version, info, [], dict(hashes or {}), [])
            self._files[info.filename] = task
            task.done = self._downloads.run(lambda: Deferred.fromCoroutine(self._cache_file(task)))
        if target.label not in task.targets:
            task.targets.append(target.label)
        if note and note not in task.notes:
            task.notes.append(note)
        return task

    async def _cache_file(self, task: _FileTask) -> dict[str, Any] | None:
        try:
            return await self._cache_one(task)
        finally:
            task.finished = True

    async def _cache_one(self, task: _FileTask) -> dict[str, Any] | None:
        if self.abandoned:
            return None
        filename = task.info.filename
        entry: dict[str, Any] = {"project": task.project, "version": task.version, "filename": filename}
        try:
            stored = await self._fetch(task.project, filename)
            entry.update(sha256=stored.info.hashes.get("sha256"), size=stored.info.size,
                         status="cached" if self._before.get(filename) else "fetched")
            mismatch = await self._check_hashes(stored, task.hashes) if task.hashes else None
            if mismatch is not None:
                entry.update(status="failed", reason=mismatch)
        except PypicacheError as e:
            entry.setdefault("sha256", task.info.hashes.get("sha256"))
            entry.update(status="failed", reason=e.message)
        except Exception as e:
            log.failure("Bulk caching of {filename} failed", filename=filename)
            entry.setdefault("sha256", task.info.hashes.get("sha256"))
            entry.update(status="failed", reason=f"internal error: {e}")
        entry["targets"] = task.targets
        if task.notes:
            entry["notes"] = task.notes
        task.entry = entry
        if self._emit is not None and not self.abandoned:
            try:
                self._emit(entry)
            except Exception:
                log.failure("Could not send progress for {filename}", filename=filename)
        return entry

    async def _check_hashes(self, stored: StoredFile, allowed: Mapping[str, frozenset[str]]) -> str | None:
        """Why ``stored`` fails its ``--hash`` values, or ``None`` if it matches one."""
        actual: dict[str, str] = {}
        for algorithm in allowed:
            digest = stored.info.hashes.get(algorithm)
            if digest is None:
                digest = await self._cacher.run_blocking(file_digest, stored.path.path, algorithm)
            actual[algorithm] = digest.lower()
            if actual[algorithm] in allowed[algorithm]:
                return None
        shown = ", ".join(f"{a}:{d}" for a, d in actual.items())
        return f"hash mismatch: the file has {shown}, not one of the --hash values"

    # -- the run ------------------------------------------------------------------

    async def _resolve(self, target: Target, wanted: Sequence[Wanted], pre: bool, deps: bool) -> Resolution:
        source = _ThreadSource(self._cacher.reactor, self)
        return await self._cacher.resolutions.run(  # type: ignore[no-any-return]
            self._cacher.run_resolver, partial(resolve, source, target, list(wanted), pre=pre, deps=deps),
        )

    async def run(self) -> dict[str, Any]:
        try:
            return await self._run()
        except CancelledError:
            self.abandoned = True
            log.info("Bulk caching abandoned by its client; downloads under way go on")
            raise

    async def _run(self) -> dict[str, Any]:
        parsed, params = self._parsed, self._params
        for target in params.targets:
            self.prefetch(sorted({r.name for r in parsed.requirements}), target)
        for target in params.targets:
            await self._run_target(target, parsed.requirements)
        await self._all_done()
        return self._report()

    async def _run_target(self, target: Target, lines: Sequence[RequirementLine]) -> None:
        params = self._params
        wanted: list[Wanted] = []
        entries: dict[int, dict[str, Any]] = {}
        hashed: dict[str, dict[str, frozenset[str]]] = defaultdict(dict)
        for origin, line in enumerate(lines):
            entry: dict[str, Any] = {"line": line.line, "line_number": line.line_number, "name": line.name,
                                     "target": target.label, "version": None}
            entries[origin] = entry
            self._requirements.append(entry)
            if not target.evaluate(line.requirement.marker):
                entry.update(status="skipped", reason=f"marker {line.requirement.marker} is false for this target")
                continue
            wanted.append(Wanted.from_requirement(line.requirement, origin, line.hashes, extras=params.deps))
            for algorithm, digests in line.hashes.items():
                hashed[line.name][algorithm] = hashed[line.name].get(algorithm, frozenset()) | digests
        resolution = await self._resolve(target, wanted, self._parsed.pre, params.deps) if wanted else Resolution({}, {}, {})
        for origin, entry in entries.items():
            if "status" in entry:
                continue
            pin = resolution.pins.get(entry["name"])
            if origin in resolution.unresolved or pin is None:
                entry.update(status="unresolved", reason=resolution.unresolved.get(origin, "not resolved"))
            else:
                entry.update(status="resolved", version=str(pin.version))
                note = resolution.notes.get(f"{pin.name} {pin.version}")
                if note:
                    entry["note"] = note
        tasks = self._want_pins(target, resolution, hashed)
        summary: dict[str, Any] = {
            "target": target.label,
            "resolved": {name: str(c.version) for name, c in sorted(resolution.pins.items())},
        }
        if resolution.notes:
            summary["notes"] = dict(sorted(resolution.notes.items()))
        self._targets.append(summary)
        summary["build"] = await self._build_requirements(target, [t for t in tasks if is_sdist(t.info.filename)])

    def _want_pins(self, target: Target, resolution: Resolution,
                   hashed: Mapping[str, Mapping[str, frozenset[str]]] | None = None,
                   note: str | None = None) -> list[_FileTask]:
        """Start caching the files of each pinned version: the target's best, or all of them."""
        tasks = []
        for name, candidate in sorted(resolution.pins.items()):
            version = str(candidate.version)
            files: Sequence[DistFile] = candidate.files[:1]
            if self._params.all_files:
                ok, page = self._results.get(("page", name), (False, None))
                if ok:
                    files = split_page(page, name).get(candidate.version, files)
            unknown = resolution.notes.get(f"{name} {version}")
            for f in files:
                notes = [note] if note else []
                if unknown and f.filename == candidate.files[0].filename:
                    notes.append(unknown)
                task = self._want(name, version, f, target, (hashed or {}).get(name))
                task.notes.extend(n for n in notes if n not in task.notes)
                tasks.append(task)
        return tasks

    async def _build_requirements(self, target: Target, sdists: list[_FileTask]) -> list[dict[str, Any]]:
        """Cache the build requirements of the sdists cached for ``target`` (and theirs)."""
        summaries: list[dict[str, Any]] = []
        seen: set[str] = set()
        handled: set[tuple[str, ...]] = set()
        pending = sdists
        for _ in range(MAX_BUILD_ROUNDS):
            groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
            for task in pending:
                if task.info.filename in seen:
                    continue
                seen.add(task.info.filename)
                entry = await _shield(task.done)
                if entry is None or entry["status"] == "failed":
                    continue
                try:
                    metadata = await _shield(self.metadata(task.project, task.info))
                except PypicacheError as e:
                    log.warn("No build requirements for {filename}: {reason}", filename=task.info.filename, reason=e.message)
                    metadata = DistMetadata()
                requires = metadata.build_requires if metadata.build_requires is not None else DEFAULT_BUILD_REQUIRES
                groups[tuple(sorted(set(requires)))].append(task.info.filename)
            pending = []
            for requires, owners in groups.items():
                if not requires or requires in handled:
                    continue
                handled.add(requires)
                wanted = []
                for origin, text in enumerate(requires):
                    requirement = Requirement(text)
                    if target.evaluate(requirement.marker):
                        wanted.append(Wanted.from_requirement(requirement, origin))
                resolution = await self._resolve(target, wanted, False, self._params.deps) if wanted else Resolution({}, {}, {})
                note = "build requirement of " + ", ".join(owners)
                tasks = self._want_pins(target, resolution, note=note)
                summary: dict[str, Any] = {
                    "for": owners,
                    "requires": list(requires),
                    "resolved": {name: str(c.version) for name, c in sorted(resolution.pins.items())},
                }
                if resolution.unresolved:
                    summary["unresolved"] = {requires[i]: reason for i, reason in sorted(resolution.unresolved.items())}
                summaries.append(summary)
                pending.extend(t for t in tasks if is_sdist(t.info.filename))
            if not pending:
                break
        return summaries

    async def _all_done(self) -> None:
        while True:
            waiting = [t for t in self._files.values() if not t.finished]
            if not waiting:
                return
            for task in waiting:
                await _shield(task.done)

    def _report(self) -> dict[str, Any]:
        files = []
        for task in sorted(self._files.values(), key=lambda t: (t.project, t.version, t.info.filename)):
            if task.entry is not None:
                task.entry["targets"] = task.targets
                files.append(task.entry)
        totals = {status: 0 for status in STATUSES}
        for entry in files:
            totals[entry["status"]] += 1
        for status in ("resolved", "unresolved", "skipped"):
            totals[status] = sum(1 for r in self._requirements if r.get("status") == status)
        totals["unparsed"] = len(self._parsed.unparsed)
        return {
            "requirements": self._requirements,
            "files": files,
            "unparsed": [u.to_json() for u in self._parsed.unparsed],
            "totals": totals,
            "targets": self._targets,
        }


@attrs.define
class BulkCacher:
    """``POST /requirements.txt``: resolve a requirements file and cache all it needs.

    :ivar views: the combined pages and the proxy's downloads.
    :ivar mirror: core metadata (PEP 658, or from the archive).
    :ivar run_blocking: the daemon's thread pool, for parsing and archive reads.
    :ivar concurrency: downloads (and page prefetches) under way at once, per request.
    :ivar run_resolver: how a resolution is run in a thread (default: a thread of its own).
    :ivar max_resolutions: resolutions running at once across requests.
    """

    views: Any
    mirror: Any
    store: Any
    run_blocking: RunBlocking
    reactor: Any
    concurrency: int = 8
    run_resolver: Callable[..., "Deferred[Any]"] | None = None
    max_resolutions: int = 4
    resolutions: DeferredSemaphore = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.resolutions = DeferredSemaphore(self.max_resolutions)
        if self.run_resolver is None:
            reactor = self.reactor
            self.run_resolver = lambda f, *args: _in_thread(reactor, f, *args)

    async def run(self, text: str, params: BulkParams,
                  emit: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Cache everything ``text`` (a requirements file) needs; return the report.

        ``emit`` is called with each file's entry as it completes. Cancelling
        (the client went away) stops the resolutions; downloads under way
        finish and are kept.

        :raises BadRequest: if the file cannot be read, naming the line.
        """
        parsed = await self.run_blocking(parse_requirements, text)
        job = _Job(self, params, parsed, emit)
        return await job.run()


__all__ = [
    "BulkCacher",
    "BulkParams",
    "Candidate",
    "DistMetadata",
    "Provider",
    "Resolution",
    "Source",
    "Target",
    "Wanted",
    "choose_versions",
    "make_target",
    "native_target",
    "parse_bulk_params",
    "parse_core_metadata",
    "resolve",
    "split_page",
    "usable_files",
]
