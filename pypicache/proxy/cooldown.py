# -*- test-case-name: tests.test_cooldown -*-
"""The cooldown (minimum age): files younger than ``min-age`` are not offered.

A :class:`Cooldown` is a :class:`~pypicache.proxy.rules.Rule`: it leaves
files out of the pages as they are served and refuses their URLs with a
``404`` and a reason (a ``403`` would stop uv's first-index strategy). What is
stored is never filtered, so lowering or removing the cooldown shows the files
at once. A file's age is counted from its upstream ``upload-time`` (PEP 700),
from when pypicache first saw it, or from the later of both
(``min-age-clock``). The rule's version changes when the next held-back file
comes of age, so rendered pages are kept until then and no longer.

The same rule, with a fixed cut-off, filters the index for one client under
``/+as-of/<time>/`` and ``/+min-age/<duration>/``.
"""

import datetime
import fnmatch
import functools
import itertools
import re
from typing import Any, Callable, Hashable

import attrs
from packaging.version import InvalidVersion, Version
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pypicache.concurrency import result_now
from pypicache.errors import BadRequest
from pypicache.index.model import DistFile, ProjectPage
from pypicache.index.names import parse_filename
from pypicache.proxy.firstseen import FirstSeen
from pypicache.proxy.rules import Rules
from pypicache.storage.interface import IStore

log = Logger()

MODES = ("enforce", "observe")
CLOCKS = ("upstream", "first-seen", "later-of-both")
UNKNOWN = ("include", "exclude")

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_TOKENS = itertools.count(1)


def parse_duration(text: str) -> float:
    """Seconds in ``"7d"``, ``"12h"``, ``"30m"``, ``"90s"``, ``"2w"`` or a
    plain number of seconds; ``0`` turns a cooldown off.

    :raises ValueError: for anything else.
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration (a number with s, m, h, d or w: 7d, 12h)"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_time(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time (``2026-11-01T00:00:00Z``,
    ``2026-11-01T01:00:00+01:00``) or a date (midnight UTC).

    :raises ValueError: for anything else, or a time without its time zone.
    """
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time") from None
    if len(text.strip()) == 10:
        when = when.replace(tzinfo=datetime.timezone.utc)
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (end it with Z or +HH:MM)")
    return when.timestamp()


def iso(seconds: float) -> str:
    """An RFC 3339 time in UTC, to the second."""
    when = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def spelled(seconds: float) -> str:
    """A duration as people write it (``7d``, ``36h``, ``90s``)."""
    for unit in ("d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


def _upload_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


@attrs.frozen
class CooldownSettings:
    """What the operator (or a client) asked for.

    :ivar min_age: seconds a file must have been public (``None``: no cooldown).
    :ivar upstream_ages: a named upstream's own ``min-age`` (``None``: none),
        for the projects routed to it.
    :ivar exempt: globs of normalized project names never held back.
    :ivar private: whether private uploads are held back too.
    :ivar as_of: a fixed cut-off (seconds since the epoch) instead of ``min_age``.
    """

    min_age: float | None = None
    upstream_ages: tuple[tuple[str, float | None], ...] = ()
    exempt: tuple[str, ...] = ()
    unknown: str = "include"
    clock: str = "upstream"
    private: bool = False
    mode: str = "enforce"
    as_of: float | None = None

    @property
    def active(self) -> bool:
        """Whether anything may be held back."""
        return bool(
            self.min_age
            or self.as_of is not None
            or any(age for _, age in self.upstream_ages)
        )


@attrs.define
class _State:
    """What the last page of a project built under this rule held back."""

    generation: int = 0
    #: When the next held-back file comes of age (``None``: none will).
    due: float | None = None
    held: tuple[str, ...] = ()


class Cooldown:
    """The cooldown rule (see the module's docstring).

    :ivar routed: the named upstream a project is routed to (``None``: the default).
    :ivar on_held: told ``(kind, mode)`` of each request held back (or that
        would be, in ``observe`` mode): ``kind`` is ``"page"`` or ``"file"``.
    """

    settings: CooldownSettings
    _clock: IReactorTime
    _first_seen: FirstSeen
    _store: IStore
    routed: Callable[[str], str | None]
    on_held: Callable[[str, str], None] | None
    _token: int
    _states: dict[tuple[str, str], _State]

    __slots__ = (
        "settings",
        "_clock",
        "_first_seen",
        "_store",
        "routed",
        "on_held",
        "_token",
        "_states",
        "__weakref__",
    )

    def __init__(
        self,
        settings: CooldownSettings,
        clock: IReactorTime,
        first_seen: FirstSeen,
        store: IStore,
        routed: Callable[[str], str | None] = lambda project: None,
        on_held: Callable[[str, str], None] | None = None,
        token: int | None = None,
        states: dict[tuple[str, str], _State] | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._first_seen = first_seen
        self._store = store
        self.routed = routed
        self.on_held = on_held
        self._token = next(_TOKENS) if token is None else token
        self._states = {} if states is None else states

    def age_of(self, project: str) -> float | None:
        """The minimum age for ``project``'s files, or ``None``."""
        settings = self.settings
        if any(fnmatch.fnmatchcase(project, glob) for glob in settings.exempt):
            return None
        name = self.routed(project)
        if name is not None:
            for upstream, age in settings.upstream_ages:
                if upstream == name:
                    return age or None
        return settings.min_age or None

    def _private(self, project: str, filename: str) -> bool:
        # Rules are applied as pages are built: the store answers at once
        # (from memory) there.
        if not result_now(self._store.is_private(project)):
            return False
        stored = result_now(self._store.find(project, filename))
        return stored is not None and stored.private

    def _time(
        self, f: DistFile | None, seen: Callable[[], float | None]
    ) -> float | None:
        """When the file's age counts from; ``seen`` is asked only if needed."""
        upstream = _upload_time(f.upload_time) if f is not None else None
        clock = self.settings.clock
        if clock == "upstream":
            return upstream
        first = seen()
        if clock == "first-seen" or upstream is None:
            return first
        return upstream if first is None else max(upstream, first)

    def _cutoff(self, project: str, now: float) -> tuple[float, float | None] | None:
        """Files younger than the cut-off are held back: it, and the minimum
        age it comes from (``None`` for a fixed time); ``None``: no cut-off."""
        if self.settings.as_of is not None:
            return self.settings.as_of, None
        age = self.age_of(project)
        return None if age is None else (now - age, age)

    def _verdict(
        self,
        filename: str,
        f: DistFile | None,
        seen: Callable[[], float | None],
        cut: tuple[float, float | None] | None,
        private: bool,
    ) -> tuple[str | None, float | None]:
        """Why the file is held back (or ``None``), and when it comes of age."""
        settings = self.settings
        if cut is None or (private and not settings.private):
            return None, None
        cutoff, age = cut
        when = self._time(f, seen)
        if when is None:
            if settings.unknown == "exclude":
                return (
                    f"{filename} has no known upload time (min-age-unknown = exclude)",
                    None,
                )
            return None, None
        if when <= cutoff:
            return None, None
        if age is None:
            return f"{filename} was uploaded at {iso(when)}, after {iso(cutoff)}", None
        return (
            f"{filename} is held back by the cooldown (min-age {spelled(age)}): "
            f"uploaded at {iso(when)}, served from {iso(when + age)}",
            when + age,
        )

    def _count(self, kind: str, project: str, what: Any) -> None:
        mode = self.settings.mode
        if mode == "observe":
            log.info(
                "Cooldown (observe): {project}: would hold back {what}",
                project=project,
                what=what,
            )
        if self.on_held is not None:
            self.on_held(kind, mode)

    # -- the Rule -------------------------------------------------------------

    def version(self, area: str, project: str) -> Hashable:
        state = self._states.get((area, project))
        if state is None:
            return (self._token, 0)
        if state.due is not None and self._clock.seconds() >= state.due:
            state.generation += 1
            state.due = None  # the page built next says when the next one is due
        if state.held:
            self._count("page", project, ", ".join(state.held))
        return (self._token, state.generation)

    def ready(self, area: str, project: str) -> "Deferred[None] | None":
        """The first-seen times of ``project`` revalidated, when they count."""
        if self.settings.clock == "upstream" or self._cutoff(project, 0) is None:
            return None
        return self._first_seen.ready(project)

    def page(self, area: str, project: str, page: ProjectPage) -> ProjectPage:
        seen = self._first_seen.see(project, (f.filename for f in page.files))
        cut = self._cutoff(project, self._clock.seconds())
        some_private = area == "private" or result_now(self._store.is_private(project))
        kept, held, unknown = [], [], 0
        due: float | None = None
        for f in page.files:
            private = some_private and (
                area == "private" or self._private(project, f.filename)
            )
            first = functools.partial(seen.get, f.filename)
            reason, comes = self._verdict(f.filename, f, first, cut, private)
            if reason is None:
                kept.append(f)
                unknown += cut is not None and self._time(f, first) is None
                continue
            held.append(f)
            if comes is not None:
                due = comes if due is None else min(due, comes)
        key = (area, project)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State()
            counted = False
        else:
            counted = bool(state.held)  # this request's version() counted it
        state.due, state.held = due, tuple(f.filename for f in held)
        if held and not counted:
            self._count("page", project, ", ".join(state.held))
        if unknown and self.settings.unknown == "include":
            log.info(
                "Cooldown: {count} files of {project} have no known upload time; "
                "offered (min-age-unknown = include)",
                count=unknown,
                project=project,
            )
        if not held or self.settings.mode == "observe":
            return page
        return attrs.evolve(
            page, files=tuple(kept), versions=_versions(page.versions, kept, held)
        )

    def refusal(self, project: str, filename: str, info: DistFile | None) -> str | None:
        cut = self._cutoff(project, self._clock.seconds())
        if cut is None:
            return None
        reason, _ = self._verdict(
            filename,
            info,
            # A file asked for before any page showing it: first seen now.
            lambda: self._first_seen.see(project, (filename,)).get(filename),
            cut,
            self._private(project, filename),
        )
        if reason is None:
            return None
        self._count("file", project, filename)
        return None if self.settings.mode == "observe" else reason


def _version(filename: str) -> Version | None:
    try:
        return parse_filename(filename)[1]
    except BadRequest:
        return None


def _versions(
    versions: tuple[str, ...] | None, kept: list[DistFile], held: list[DistFile]
) -> tuple[str, ...] | None:
    """The PEP 700 ``versions`` without those whose every file is held back."""
    if versions is None:
        return None
    gone = {_version(f.filename) for f in held} - {_version(f.filename) for f in kept}
    gone.discard(None)

    def shown(text: str) -> bool:
        try:
            return Version(text) not in gone
        except InvalidVersion:
            return True

    return tuple(v for v in versions if shown(v))


def replaced(rules: Rules, rule: "Cooldown | None") -> Rules:
    """``rules`` (a :class:`~pypicache.proxy.rules.Rules`) with its cooldown
    replaced by ``rule`` (appended if it had none; removed if ``rule`` is ``None``)."""
    others = tuple(r for r in rules.rules if not isinstance(r, Cooldown))
    return Rules(others + ((rule,) if rule is not None else ()))
