# -*- test-case-name: tests.test_cooldown -*-
"""When pypicache first saw each file of a project (the cooldown's own clock).

One small JSON file per project, ``<cache>/first-seen/<project>.json``
(``{filename: seconds since the epoch}``), read on first use and kept in
memory for the most recently used projects. A project's file is written
again only when a file never seen before shows up (never per request), in a
thread, through a synced temporary file and a rename; writes of one project
never overlap, and each merges what is on disk (the earliest time wins), so
processes sharing the cache folder (``--workers``) keep each other's times.
"""

import json
from collections import OrderedDict
from typing import Any, Iterable

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from pypicache.storage.atomic import write_atomically

log = Logger()

#: The folder, in the cache folder.
FOLDER = "first-seen"


def _read(path: FilePath) -> dict[str, float]:
    try:
        data = json.loads(path.getContent())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        k: float(v)
        for k, v in data.items()
        if isinstance(k, str) and isinstance(v, (int, float))
    }


def _write(path: FilePath, times: dict[str, float]) -> None:
    """Merge ``times`` with what is on disk (earliest wins) and write it (blocking)."""
    merged = _read(path)
    for name, when in times.items():
        merged[name] = min(when, merged.get(name, when))
    path.parent().makedirs(ignoreExistingDirectory=True)
    write_atomically(path, json.dumps(merged, sort_keys=True).encode())


@attrs.define
class FirstSeen:
    """First-seen times of files, by project; persisted, read lazily."""

    _root: FilePath
    _clock: IReactorTime
    _run_blocking: Any
    #: Projects kept in memory.
    memory_size: int = 2000
    _memory: "OrderedDict[str, dict[str, float]]" = attrs.field(factory=OrderedDict)
    #: Projects being written, and whether they changed meanwhile.
    _writing: dict[str, bool] = attrs.field(factory=dict)

    def _path(self, project: str) -> FilePath:
        return self._root.child(FOLDER).child(project + ".json")

    def _times(self, project: str) -> dict[str, float]:
        times = self._memory.get(project)
        if times is None:
            times = self._memory[project] = _read(self._path(project))
            while len(self._memory) > self.memory_size:
                oldest = next(iter(self._memory))
                if oldest in self._writing:
                    break
                del self._memory[oldest]
        else:
            self._memory.move_to_end(project)
        return times

    def get(self, project: str, filename: str) -> float | None:
        """When ``filename`` was first seen, or ``None`` if never."""
        return self._times(project).get(filename)

    def see(self, project: str, filenames: Iterable[str]) -> dict[str, float]:
        """Record ``filenames`` as seen now unless seen before; return the
        first-seen time of every file of the project known."""
        times = self._times(project)
        now = None
        for name in filenames:
            if name not in times:
                now = self._clock.seconds() if now is None else now
                times[name] = now
        if now is not None:
            self._save(project)
        return times

    def _save(self, project: str) -> None:
        if project in self._writing:
            self._writing[project] = True  # written again when this one ends
            return
        self._writing[project] = False
        snapshot = dict(self._memory[project])
        d = self._run_blocking(_write, self._path(project), snapshot)

        def done(result: Any) -> None:
            again = self._writing.pop(project, False)
            if again and project in self._memory:
                self._save(project)

        d.addErrback(
            lambda f: log.error(
                "Cannot record first-seen times of {project}: {reason}",
                project=project,
                reason=f.getErrorMessage(),
            )
        )
        d.addBoth(done)
