# -*- test-case-name: tests.test_ui -*-
"""The search index of the web interface: per project, its newest version's
summary and keywords, so that ``/+ui/projects/?q=`` never reads metadata.

Built in a thread from the project folders (one ``stat`` per folder; a
project's folders are listed and its newest archive's core metadata read only
when a folder changed since the last build), kept in memory (one small entry
per project), and built again when the store's project list changes, at
most every :data:`MIN_INTERVAL` seconds. Requests never wait long for a
build: until the first one ends, searches match names only.
"""

import email.parser
import os
from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from pypicache.concurrency import RunBlocking
from pypicache.errors import PypicacheError
from pypicache.index.names import parse_filename
from pypicache.storage.layout import is_archive_name
from pypicache.storage.listings import folder_stamps
from pypicache.storage.records import MIRROR, PRERELEASES, RELEASES
from pypicache.web.jsonapi import read_metadata_at

log = Logger()

#: Seconds between two builds at least.
MIN_INTERVAL = 5.0

#: Characters of a summary and of the keywords kept per project.
KEPT = 300

# Its default policy is ``compat32``, the one core metadata is parsed with
# (``email.policy``, which makes the others, is not imported: 10 ms at start-up).
_HEADERS = email.parser.BytesHeaderParser()


@attrs.frozen
class Entry:
    """What the search knows of a project."""

    name: str
    private: bool
    version: str | None
    summary: str
    #: Lower-case name, summary and keywords, searched.
    text: str
    #: The ``st_mtime_ns`` of each of its folders (``None``: absent).
    stamp: tuple[int | None, ...]


def _metadata(path: str, filename: str) -> bytes | None:
    """The core metadata beside an archive, or in it (``None`` if unreadable)."""
    try:
        return read_metadata_at(path, filename)
    except (PypicacheError, OSError, ValueError):
        return None


def read_entry(name: str, folders: tuple[str, ...], private_from: int) -> Entry:
    """A project's entry from its folders (blocking).

    :param folders: the project's folders, mirror first; those from index
        ``private_from`` on hold private files.
    """
    stamp = folder_stamps(folders)
    candidates = []
    private = False
    for index, folder in enumerate(folders):
        if stamp[index] is None:
            continue
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for filename in names:
            if not is_archive_name(filename):
                continue
            try:
                _, version = parse_filename(filename)
            except PypicacheError:
                continue
            if version is None:
                continue
            private = private or index >= private_from
            key = (not version.is_prerelease, version, filename.endswith(".whl"))
            candidates.append((key, os.path.join(folder, filename), filename))
    summary = keywords = ""
    version_text = None
    if candidates:
        key, path, filename = max(candidates)
        version_text = str(key[1])
        raw = _metadata(path, filename)
        if raw:
            headers = _HEADERS.parsebytes(raw)
            summary = " ".join(str(headers.get("Summary") or "").split())[:KEPT]
            keywords = " ".join(str(headers.get("Keywords") or "").split())[:KEPT]
    text = f"{name} {summary} {keywords}".lower()
    return Entry(name, private, version_text, summary, text, stamp)


def build(
    names: list[str],
    folders_of: Callable[[str], tuple[str, ...]],
    private_from: int,
    old: dict[str, Entry],
) -> dict[str, Entry]:
    """Every project's entry, reusing those whose folders did not change (blocking)."""
    entries = {}
    for name in names:
        folders = folders_of(name)
        kept = old.get(name)
        if kept is not None and kept.stamp == folder_stamps(folders):
            entries[name] = kept
        else:
            entries[name] = read_entry(name, folders, private_from)
    return entries


def matches(entries: dict[str, Entry], names: list[str], query: str) -> list[str]:
    """The names matching every word of ``query`` (in the name, summary or
    keywords; names not yet in ``entries``: by name), best first: the name
    itself, names starting with the query, names containing it, then the rest
    (blocking: a thread searches 100,000 projects)."""
    words = query.lower().split()
    if not words:
        return list(names)
    whole = "-".join(words)
    ranked = []
    for name in names:
        entry = entries.get(name)
        text = entry.text if entry is not None else name
        if all(w in text for w in words):
            if name == whole:
                rank = 0
            elif name.startswith(whole):
                rank = 1
            elif all(w in name for w in words):
                rank = 2
            else:
                rank = 3
            ranked.append((rank, name))
    ranked.sort()
    return [name for _, name in ranked]


class Catalog:
    """The search index, built in a thread and swapped in whole.

    :ivar entries: by project name (never changed in place: a thread may be
        reading it).
    :ivar generation: counts the builds that ended.
    """

    _store: Any
    _run_blocking: RunBlocking
    _clock: Any
    entries: dict[str, Entry]
    generation: int
    #: How many of :attr:`entries` are private (``None`` before the first build).
    private_count: int | None
    _names: list[str] | None
    _started: float | None
    _building: "Deferred[None] | None"
    _later: Any

    __slots__ = (
        "_store",
        "_run_blocking",
        "_clock",
        "entries",
        "generation",
        "private_count",
        "_names",
        "_started",
        "_building",
        "_later",
        "__weakref__",
    )

    def __init__(
        self,
        store: Any,
        run_blocking: RunBlocking,
        clock: Any,
        entries: dict[str, Entry] | None = None,
        generation: int = 0,
        private_count: int | None = None,
        names: list[str] | None = None,
        started: float | None = None,
        building: "Deferred[None] | None" = None,
        later: Any = None,
    ) -> None:
        self._store = store
        self._run_blocking = run_blocking
        self._clock = clock
        self.entries = {} if entries is None else entries
        self.generation = generation
        self.private_count = private_count
        self._names = names
        self._started = started
        self._building = building
        self._later = later

    def _folders_of(self, name: str) -> tuple[str, ...]:
        return tuple(
            os.path.join(self._store.area(area).path, name)
            for area in (MIRROR, PRERELEASES, RELEASES)
        )

    def refresh(self, names: list[str]) -> "Deferred[None] | None":
        """Start a build if the project list changed (once the last build is
        :data:`MIN_INTERVAL` old: until then one is scheduled); the build
        under way, or ``None``."""
        if self._building is not None:
            return self._building
        if names is self._names:
            return None
        now = self._clock.seconds()
        if self._started is not None and now - self._started < MIN_INTERVAL:
            if self._later is None or not self._later.active():
                self._later = self._clock.callLater(
                    self._started + MIN_INTERVAL - now, self.refresh, names
                )
            return None
        self._names, self._started = names, now
        d = self._run_blocking(build, names, self._folders_of, 1, self.entries)

        def done(entries: dict[str, Entry]) -> None:
            self.entries = entries
            self.generation += 1
            self.private_count = sum(e.private for e in entries.values())

        def failed(failure: Any) -> None:
            log.failure("Could not build the search index", failure)

        d.addCallbacks(done, failed)
        d.addBoth(self._built)
        self._building = d
        return d

    def _built(self, _: object) -> None:
        self._building = None

    async def ready(self, names: list[str], wait: float) -> bool:
        """Refresh, and wait at most ``wait`` seconds for a build under way.

        :returns: whether the index covers ``names`` now.
        """
        building = self.refresh(names)
        if building is not None and wait > 0:
            waited: Deferred[None] = Deferred()

            def end(_: object = None) -> None:
                if not waited.called:
                    waited.callback(None)

            timer = self._clock.callLater(wait, end)
            building.addBoth(lambda result: (end(), result)[1])
            await waited
            if timer.active():
                timer.cancel()
        return self._names is names and self._building is None
