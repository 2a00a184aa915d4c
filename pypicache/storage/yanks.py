# -*- test-case-name: tests.test_local_yanks -*-
"""Local yanks: the team's yanks of upstream files and releases, kept in
``DIR/local-yanks.json``.

The record is small (what people decided, one entry per yank). Every change
is made under the record's lock (:mod:`pypicache.storage.locks`), read, changed and
written atomically (:func:`~pypicache.storage.atomic.write_atomically`), so
several ``--workers``, and an import, share one file. Each process keeps the
record in memory and reads it again when the file changed (checked with one
``stat`` at most every few milliseconds), so a yank made through another
worker shows at once.
"""

import json
import os
import time
from typing import Any

import attrs
from twisted.python.filepath import FilePath

from pypicache.concurrency import RunBlocking
from pypicache.errors import PypicacheError
from pypicache.storage.atomic import write_atomically
from pypicache.storage.listings import RECHECK_NS
from pypicache.storage.locks import try_lock

#: The file of the record, under the cache root.
YANKS_FILE = "local-yanks.json"

#: The longest reason accepted.
MAX_REASON = 1000


@attrs.frozen(cache_hash=True)
class ProjectYanks:
    """A project's local yanks: ``(target, reason)`` pairs, sorted; a target
    is a filename (``files``) or a normalized version (``releases``); the
    reason is ``""`` when none was given."""

    files: tuple[tuple[str, str], ...] = ()
    releases: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.files or self.releases)


#: Yanks by project, as the file holds them: ``{project: {"files": {filename:
#: {"reason": str, "at": float}}, "releases": {version: {...}}}}``.
Record = dict[str, dict[str, dict[str, dict[str, Any]]]]

KINDS = ("files", "releases")

#: What identifies a version of the file: inode, modification time, size.
Stamp = tuple[int, int, int]


def _stamp(path: str) -> Stamp | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_ino, status.st_mtime_ns, status.st_size)


def read_record(root: FilePath) -> Record:
    """The persisted record (empty if missing; blocking).

    :raises ValueError: the file is there but is not a record.
    """
    try:
        content = root.child(YANKS_FILE).getContent()
    except FileNotFoundError:
        return {}
    data = json.loads(content)
    yanks = data.get("yanks") if isinstance(data, dict) else None
    if not isinstance(yanks, dict):
        raise ValueError(f"{YANKS_FILE} holds no 'yanks' table")
    record: Record = {}
    for project, kinds in yanks.items():
        if not isinstance(kinds, dict):
            raise ValueError(f"{YANKS_FILE}: {project!r} is not a table")
        record[str(project)] = {
            kind: {
                str(target): {
                    "reason": str(entry.get("reason", "")),
                    "at": float(entry.get("at", 0)),
                }
                for target, entry in (kinds.get(kind) or {}).items()
            }
            for kind in KINDS
        }
    return record


def _readable_record(root: FilePath) -> Record:
    """:func:`read_record`, for a change.

    :raises PypicacheError: the file is broken (a ``500`` naming it): it is
        not overwritten, so no decision is lost.
    """
    try:
        return read_record(root)
    except (ValueError, TypeError, AttributeError) as e:
        raise PypicacheError(
            f"{YANKS_FILE} in the cache folder cannot be read ({e}); "
            "nothing was changed: repair or remove it"
        ) from e


def _write_record(root: FilePath, record: Record) -> None:
    kept = {p: kinds for p, kinds in sorted(record.items()) if any(kinds.values())}
    content = json.dumps({"yanks": kept}, indent=1, sort_keys=True) + "\n"
    write_atomically(root.child(YANKS_FILE), content.encode())


def change_record(
    root: FilePath,
    lock_path: str,
    project: str,
    kind: str,
    target: str,
    reason: str | None,
    now: float,
) -> tuple[Record, Stamp | None]:
    """Yank (``reason`` a string) or unyank (``None``) one target under the
    record's lock; the record as written, and the file's stamp then (blocking).
    """
    held = try_lock(lock_path, wait=True)
    assert held is not None
    try:
        record = _readable_record(root)
        kinds = record.setdefault(project, {k: {} for k in KINDS})
        if reason is None:
            kinds[kind].pop(target, None)
        else:
            kinds[kind][target] = {"reason": reason, "at": now}
        _write_record(root, record)
        return record, _stamp(root.child(YANKS_FILE).path)
    finally:
        held.release()


def merge_records(root: FilePath, lock_path: str, incoming: Record) -> int:
    """Add the yanks of ``incoming`` that the record lacks (one already there
    is kept as it is); how many were added (blocking)."""
    held = try_lock(lock_path, wait=True)
    assert held is not None
    try:
        record = _readable_record(root)
        added = 0
        for project, kinds in incoming.items():
            mine = record.setdefault(project, {k: {} for k in KINDS})
            for kind in KINDS:
                for target, entry in kinds.get(kind, {}).items():
                    if target not in mine[kind]:
                        mine[kind][target] = entry
                        added += 1
        if added:
            _write_record(root, record)
        return added
    finally:
        held.release()


def _frozen(kinds: dict[str, dict[str, dict[str, Any]]]) -> ProjectYanks:
    return ProjectYanks(
        *(
            tuple(sorted((t, e["reason"]) for t, e in kinds.get(kind, {}).items()))
            for kind in KINDS
        )
    )


class YankRecords:
    """The record in memory, kept in step with the file.

    :param root: the cache folder; :param lock_path: the record's lock.
    """

    def __init__(self, root: FilePath, lock_path: str) -> None:
        self._root = root
        self._lock_path = lock_path
        self._path = root.child(YANKS_FILE).path
        self._stamp: Stamp | None = None
        self._checked_at = 0
        self._yanks: dict[str, ProjectYanks] = {}

    def of(self, project: str) -> ProjectYanks | None:
        """The project's yanks, or ``None`` (a value that changes whenever
        they do, here or in another process)."""
        now = time.monotonic_ns()
        if now - self._checked_at >= RECHECK_NS:
            self._checked_at = now
            stamp = _stamp(self._path)
            if stamp != self._stamp:
                self._load(stamp)
        return self._yanks.get(project)

    def _load(self, stamp: Stamp | None) -> None:
        try:
            record = read_record(self._root)
        except (OSError, ValueError, TypeError, AttributeError):
            return  # the last good record stays; checked again next time
        self._stamp = stamp
        self._use(record)

    def _use(self, record: Record) -> None:
        self._yanks = {p: y for p, k in record.items() if (y := _frozen(k))}

    async def change(
        self,
        run_blocking: RunBlocking,
        project: str,
        kind: str,
        target: str,
        reason: str | None,
    ) -> ProjectYanks | None:
        """Yank (``reason`` a string, maybe empty) or unyank (``None``) one
        file (``kind`` ``"files"``) or release (``"releases"``) of
        ``project``: on disk, in a thread, then here; the project's yanks now.
        """
        record, stamp = await run_blocking(
            change_record,
            self._root,
            self._lock_path,
            project,
            kind,
            target,
            reason,
            time.time(),
        )
        self._stamp = stamp
        self._checked_at = time.monotonic_ns()
        self._use(record)
        return self._yanks.get(project)
