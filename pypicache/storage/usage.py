# -*- test-case-name: tests.test_eviction -*-
"""When each mirrored file was last served, as pypicache itself records it.

The filesystem's access time is usually off (``noatime``), so the daemon
keeps its own record: serving a file costs one dict assignment
(:meth:`Usage.record`), to a resolution of :data:`RESOLUTION` seconds, and
what was recorded is merged into ``DIR/usage.json`` now and then and at stop
(:meth:`Usage.flush`, blocking, run in a thread). The merge takes a ``flock``
and keeps the later time of each file, so several ``--workers`` and
``pypicache-admin`` share one file; the write is atomic.
"""

import json
import time
from typing import Any

from twisted.python.filepath import FilePath

from pypicache.storage.atomic import write_atomically
from pypicache.storage.locks import try_lock

#: Seconds a recorded time is rounded down to.
RESOLUTION = 60

#: The file of the record, under the cache root.
USAGE_FILE = "usage.json"

#: What ``usage.json`` maps: ``"<project>/<filename>"`` to a time in seconds.
UsageMap = dict[str, int]


def usage_key(project: str, filename: str) -> str:
    return f"{project}/{filename}"


def read_usage(root: FilePath) -> UsageMap:
    """The persisted record (empty if missing or unreadable; blocking)."""
    try:
        data = json.loads(root.child(USAGE_FILE).getContent())
        used = data["used"]
        return {str(k): int(v) for k, v in used.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


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
        if recorded or forget:
            content = {"resolution": RESOLUTION, "used": merged}
            write_atomically(root.child(USAGE_FILE), json.dumps(content).encode())
        return merged
    finally:
        held.release()


class Usage:
    """The uses recorded by this process since its last flush."""

    def __init__(self, root: FilePath, lock_path: str, clock: Any = time) -> None:
        self._root = root
        self._lock_path = lock_path
        self._now = getattr(clock, "seconds", None) or clock.time
        self._recorded: dict[tuple[str, str], int] = {}

    def record(self, project: str, filename: str) -> None:
        """Note that the archive ``filename`` of ``project`` was served now:
        the one call on the hot path (every route that serves an archive, from
        the disk or while it downloads, calls it, for mirrored files: private
        ones are never evicted)."""
        now = int(self._now())
        self._recorded[(project, filename)] = now - now % RESOLUTION

    def take(self) -> UsageMap:
        """What was recorded since the last call, emptied (reactor thread)."""
        recorded, self._recorded = self._recorded, {}
        return {usage_key(p, f): when for (p, f), when in recorded.items()}

    def flush(
        self, recorded: UsageMap, forget: frozenset[str] = frozenset()
    ) -> UsageMap:
        """Persist what :meth:`take` gave (blocking: run it in a thread); the
        merged record."""
        return merge_usage(self._root, self._lock_path, recorded, forget)
