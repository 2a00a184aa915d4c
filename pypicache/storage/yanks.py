# -*- test-case-name: tests.test_local_yanks -*-
"""Local yanks: the team's yanks of upstream files and releases, kept in
the store's state document ``local-yanks.json`` (:mod:`pypicache.storage.state`):
``DIR/local-yanks.json``, or the object ``<prefix>/state/local-yanks.json``
of the bucket.

The record is small (what people decided, one entry per yank). Every change
is read, changed and written atomically against every other writer (under
the record's lock on disk, so several ``--workers`` and an import share one
file; with conditional writes in a bucket, so several daemons share one
object). Each process keeps the record in memory and reads it again when it
changed (checked with one ``stat`` at most every few milliseconds on disk,
one conditional ``GET`` at most every ``state_max_age`` seconds on S3).
"""

import json
import os
import time
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.python.filepath import FilePath

from pypicache.errors import PypicacheError
from pypicache.storage.atomic import write_atomically
from pypicache.storage.locks import try_lock
from pypicache.storage.shared import SharedDoc
from pypicache.storage.state import IState

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


def parse_record(data: Any) -> Record:
    """The record in the JSON object ``data``.

    :raises ValueError: it is not one.
    """
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


def read_record(root: FilePath) -> Record:
    """The persisted record (empty if missing; blocking).

    :raises ValueError: the file is there but is not a record.
    """
    try:
        content = root.child(YANKS_FILE).getContent()
    except FileNotFoundError:
        return {}
    return parse_record(json.loads(content))


def _document(record: Record) -> dict[str, Any]:
    """The record as its document holds it (``{}``: no yank at all)."""
    kept = {p: kinds for p, kinds in sorted(record.items()) if any(kinds.values())}
    return {"yanks": kept} if kept else {}


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
    content = json.dumps(_document(record) or {"yanks": {}}, indent=1, sort_keys=True)
    content += "\n"
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


def _changed(
    data: dict[str, Any],
    project: str,
    kind: str,
    target: str,
    reason: str | None,
    now: float,
) -> dict[str, Any]:
    """The document ``data`` with one target yanked (``reason`` a string) or
    unyanked (``None``).

    :raises PypicacheError: ``data`` is not a record (it is left as it is).
    """
    try:
        record = parse_record(data) if data else {}
    except (ValueError, TypeError, AttributeError) as e:
        raise PypicacheError(
            f"{YANKS_FILE} cannot be read ({e}); nothing was changed: "
            "repair or remove it"
        ) from e
    kinds = record.setdefault(project, {k: {} for k in KINDS})
    if reason is None:
        kinds[kind].pop(target, None)
    else:
        kinds[kind][target] = {"reason": reason, "at": now}
    return _document(record)


class YankRecords:
    """The record as this process sees it: the shared document
    ``local-yanks.json`` of the store's state (:mod:`pypicache.storage.state`:
    the file in the cache folder, or the object in the bucket).

    :param state: the store (an :class:`~pypicache.storage.state.IState`).
    """

    def __init__(self, state: IState) -> None:
        self._doc = SharedDoc(state, YANKS_FILE)
        self._turn = -1
        self._yanks: dict[str, ProjectYanks] = {}

    def ready(self) -> "Deferred[None] | None":
        """``None`` if :meth:`of` answers as things are (within the store's
        ``state_max_age``), else what to wait for first."""
        return self._doc.ready()

    def of(self, project: str) -> ProjectYanks | None:
        """The project's yanks, or ``None`` (a value that changes whenever
        they do, here or in another process)."""
        data = self._doc.data
        if self._doc.turn != self._turn:
            self._use(data)
        return self._yanks.get(project)

    def _use(self, data: dict[str, Any]) -> None:
        try:
            record = parse_record(data) if data else {}
        except (ValueError, TypeError, AttributeError):
            return  # the last good record stays
        self._turn = self._doc.turn
        self._yanks = {p: y for p, k in record.items() if (y := _frozen(k))}

    async def change(
        self, project: str, kind: str, target: str, reason: str | None
    ) -> ProjectYanks | None:
        """Yank (``reason`` a string, maybe empty) or unyank (``None``) one
        file (``kind`` ``"files"``) or release (``"releases"``) of
        ``project``: in the store, then here; the project's yanks now.
        """
        now = time.time()
        await self._doc.change(
            lambda data: _changed(data, project, kind, target, reason, now)
        )
        return self.of(project)
