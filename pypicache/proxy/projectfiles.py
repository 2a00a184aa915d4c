# -*- test-case-name: tests.test_withdrawn -*-
"""Small per-project records kept as JSON files (one per project in a folder),
shared with the other processes on the cache folder.

A project's file is looked at again at most every ``recheck`` seconds (one
``stat``), so what another process wrote shows within that time; what this
process puts shows at once, and is written atomically in a thread, one write
per project at a time.
"""

import json
import os
from collections import OrderedDict
from typing import Any, Hashable

import attrs
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from pypicache.concurrency import RunBlocking
from pypicache.index.names import normalize
from pypicache.storage.atomic import write_atomically

log = Logger()

Record = dict[str, Any]


def read_record(path: str) -> Record:
    """The JSON object in ``path`` (``{}`` if it is not there or is damaged)."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_folder(folder: str) -> dict[str, Record]:
    """Every project's record in ``folder``, by project (blocking)."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return {}
    found = {}
    for name in names:
        if name.endswith(".json") and not name.startswith("."):
            record = read_record(os.path.join(folder, name))
            if record:
                found[name.removesuffix(".json")] = record
    return found


@attrs.define
class _Known:
    checked_at: float
    stamp: int | None
    record: Record
    turn: int = 0


@attrs.define
class ProjectFiles:
    """One JSON record per project in ``folder`` (an empty record: no file)."""

    folder: FilePath
    clock: IReactorTime
    run_blocking: RunBlocking | None = None
    recheck: float = 1.0
    memory_size: int = 10000
    _known: "OrderedDict[str, _Known]" = attrs.field(factory=OrderedDict)
    _writing: dict[str, "Deferred[None]"] = attrs.field(factory=dict)

    def path(self, project: str) -> FilePath:
        return self.folder.child(normalize(project) + ".json")

    def _stamp(self, path: FilePath) -> int | None:
        try:
            return os.stat(path.path).st_mtime_ns
        except OSError:
            return None

    def _entry(self, project: str) -> _Known:
        now = self.clock.seconds()
        known = self._known.get(project)
        if known is not None:
            self._known.move_to_end(project)
            if now - known.checked_at < self.recheck or project in self._writing:
                return known
        path = self.path(project)
        stamp = self._stamp(path)
        if known is None or stamp != known.stamp:
            record = read_record(path.path) if stamp is not None else {}
            if known is None:
                known = _Known(now, stamp, record)
            elif record != known.record:
                known = _Known(now, stamp, record, known.turn + 1)
            else:
                known.stamp = stamp
        known.checked_at = now
        self._known[project] = known
        while len(self._known) > self.memory_size:
            self._known.popitem(last=False)
        return known

    def get(self, project: str) -> Record:
        """The record of ``project`` (``{}``: none). Do not change it: :meth:`put`."""
        return self._entry(project).record

    def version(self, project: str) -> Hashable:
        """Changes whenever the record of ``project`` does."""
        return self._entry(project).turn

    def put(self, project: str, record: Record) -> "Deferred[None]":
        """Make ``record`` the record of ``project`` (here at once); fires once
        it is on disk (removed, if empty)."""
        known = self._entry(project)
        if record == known.record:
            return self._writing.get(project) or succeed(None)
        known.record, known.turn = record, known.turn + 1
        previous = self._writing.get(project)
        path = self.path(project)
        content = json.dumps(record, indent=1).encode()

        def write() -> None:
            if record:
                path.parent().makedirs(ignoreExistingDirectory=True)
                write_atomically(path, content)
            elif path.exists():
                path.remove()

        def start(_: object = None) -> "Deferred[None]":
            if self.run_blocking is None:
                return maybeDeferred(write)
            return self.run_blocking(write)

        d = start() if previous is None else previous.addBoth(start)
        written: Deferred[None] = Deferred()

        def done(result: object) -> object:
            if self._writing.get(project) is written:
                del self._writing[project]
            entry = self._known.get(project)
            if entry is not None:
                entry.stamp = self._stamp(path)
            return result

        d.addBoth(done).chainDeferred(written)
        self._writing[project] = written
        return written

    def forget(self, project: str) -> None:
        self._known.pop(project, None)
