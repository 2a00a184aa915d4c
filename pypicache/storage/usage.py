# -*- test-case-name: tests.test_eviction -*-
"""When each mirrored file was last served, as pypicache itself records it.

The filesystem's access time is usually off (``noatime``), so the daemon
keeps its own record: serving a file costs one dict assignment
(:meth:`Usage.record`), to a resolution of :data:`RESOLUTION` seconds, and
what was recorded is appended to ``DIR/usage.log`` now and then
(:meth:`Usage.append`: a line per file served since, so a flush costs what
was served, not what is stored) and merged into ``DIR/usage.json`` at stop,
by eviction passes and once the log outgrows the record
(:meth:`Usage.flush`, which rewrites it atomically and empties the log). Both
are blocking (run in a thread) and take the record's lock; reading replays the log
over the record keeping the later time of each file, so several
``--workers`` and ``pypicache-admin`` share one record.
"""

import json
import os
import time
from typing import Any

from twisted.python.filepath import FilePath

from pypicache.storage.atomic import write_atomically
from pypicache.storage.locks import try_lock

#: Seconds a recorded time is rounded down to.
RESOLUTION = 60

#: The file of the record, under the cache root.
USAGE_FILE = "usage.json"

#: Uses appended since ``usage.json`` was last written: ``<key>\t<time>`` lines.
USAGE_LOG = "usage.log"

#: The log is merged into the record once it is larger than this and than
#: the record itself (so merging costs O(1) per use recorded).
COMPACT_AT = 1024 * 1024

#: What ``usage.json`` maps: ``"<project>/<filename>"`` (a file of the
#: cache's own ``mirror/``) or ``"upstreams/<name>/<project>/<filename>"`` (one
#: of a named upstream's store) to a time in seconds.
UsageMap = dict[str, int]


def usage_key(project: str, filename: str, store: str = "") -> str:
    """The key of a mirrored file in the record; ``store`` is ``""`` (the
    cache's own) or ``"upstreams/<name>"`` (see
    :func:`~pypicache.storage.layout.mirror_stores`)."""
    return f"{store}/{project}/{filename}" if store else f"{project}/{filename}"


def read_usage(root: FilePath) -> UsageMap:
    """The persisted record with the log replayed over it (empty if missing
    or unreadable; a torn or bad log line is skipped; blocking)."""
    try:
        data = json.loads(root.child(USAGE_FILE).getContent())
        used = data["used"]
        merged = {str(k): int(v) for k, v in used.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        merged = {}
    try:
        with open(root.child(USAGE_LOG).path, "rb") as log:
            for line in log:
                fields = line.decode("utf-8", "replace").split("\t")
                if len(fields) == 2 and fields[1].endswith("\n"):
                    key, when = fields[0], fields[1][:-1]
                    if when.isdigit() and merged.get(key, 0) < int(when):
                        merged[key] = int(when)
    except OSError:
        pass
    return merged


def _log_size(root: FilePath) -> int:
    try:
        return os.stat(root.child(USAGE_LOG).path).st_size
    except OSError:
        return 0


def append_usage(root: FilePath, lock_path: str, recorded: UsageMap) -> None:
    """Append ``recorded`` to the log under the record's lock, merging the log
    into the record once it outgrows it (blocking, thread-safe)."""
    held = try_lock(lock_path, wait=True)
    assert held is not None
    try:
        # Starts on a line of its own, after a line a crash left torn.
        lines = "\n" + "".join(
            f"{key}\t{when}\n"
            for key, when in recorded.items()
            if "\n" not in key and "\t" not in key
        )
        with open(root.child(USAGE_LOG).path, "ab") as log:
            log.write(lines.encode())
        size = _log_size(root)
        if size > COMPACT_AT:
            try:
                record = os.stat(root.child(USAGE_FILE).path).st_size
            except OSError:
                record = 0
            if size > record:
                _write(root, read_usage(root))
    finally:
        held.release()


def _write(root: FilePath, merged: UsageMap) -> None:
    """Make ``merged`` the record, then empty the log (a crash between the
    two replays the log again: the later time of each file is kept)."""
    content = {"resolution": RESOLUTION, "used": merged}
    write_atomically(root.child(USAGE_FILE), json.dumps(content).encode())
    try:
        os.unlink(root.child(USAGE_LOG).path)
    except FileNotFoundError:
        pass


def merge_usage(
    root: FilePath,
    lock_path: str,
    recorded: UsageMap,
    forget: frozenset[str] = frozenset(),
) -> UsageMap:
    """Merge ``recorded`` into the persisted record, dropping ``forget``, under
    the record's lock; the merged record (blocking, thread-safe)."""
    held = try_lock(lock_path, wait=True)
    assert held is not None
    try:
        merged = read_usage(root)
        for key, when in recorded.items():
            if merged.get(key, 0) < when:
                merged[key] = when
        for key in forget:
            merged.pop(key, None)
        if recorded or forget or _log_size(root):
            _write(root, merged)
        return merged
    finally:
        held.release()


class Usage:
    """The uses recorded by this process since its last flush."""

    def __init__(self, root: FilePath, lock_path: str, clock: Any = time) -> None:
        self._root = root
        self._lock_path = lock_path
        self._now = getattr(clock, "seconds", None) or clock.time
        self._recorded: dict[tuple[str, str, str], int] = {}

    def record(self, project: str, filename: str, store: str = "") -> None:
        """Note that the archive ``filename`` of ``project`` was served now:
        the one call on the hot path (every route that serves an archive, from
        the disk or while it downloads, calls it, for mirrored files: private
        ones are never evicted). ``store``: see :func:`usage_key`."""
        now = int(self._now())
        self._recorded[(project, filename, store)] = now - now % RESOLUTION

    def of_store(self, store: str) -> "StoreUsage":
        """What a named upstream's routes record their files' uses with."""
        return StoreUsage(self, store)

    def take(self) -> UsageMap:
        """What was recorded since the last call, emptied (reactor thread)."""
        recorded, self._recorded = self._recorded, {}
        return {usage_key(p, f, s): when for (p, f, s), when in recorded.items()}

    def append(self, recorded: UsageMap) -> None:
        """Persist what :meth:`take` gave cheaply: appended to the log
        (blocking: run it in a thread)."""
        append_usage(self._root, self._lock_path, recorded)

    def flush(
        self, recorded: UsageMap, forget: frozenset[str] = frozenset()
    ) -> UsageMap:
        """Persist what :meth:`take` gave (blocking: run it in a thread); the
        merged record."""
        return merge_usage(self._root, self._lock_path, recorded, forget)


class StoreUsage:
    """The uses of one named upstream's store, recorded in the cache's one
    :class:`Usage` (so one cap covers every store)."""

    def __init__(self, usage: Usage, store: str) -> None:
        self._usage = usage
        self._store = store

    def record(self, project: str, filename: str) -> None:
        self._usage.record(project, filename, self._store)
