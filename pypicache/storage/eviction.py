# -*- test-case-name: tests.test_eviction -*-
"""Which mirrored files go when the cache is over its size or unused for long,
and their removal (blocking: run in a thread, or by ``pypicache-admin``).

Only ``mirror/`` is ever touched: private files are never evicted, and do
not count against ``--max-cache-size``. A file's last use is the later of
what :mod:`.usage` recorded and when it was stored (its archive's
modification time), so a file stored a moment ago is as recent as one served.
"""

import os
import secrets
from collections.abc import Callable, Iterable

import attrs
from twisted.python.filepath import FilePath

from pypicache.index.names import METADATA_SUFFIX
from pypicache.index.provenance import PROVENANCE_SUFFIX
from pypicache.storage.layout import is_archive_name
from pypicache.storage.locks import try_lock
from pypicache.storage.pins import read_pins
from pypicache.storage.records import MIRROR, SIDECAR_SUFFIX, TEMP_PREFIX
from pypicache.storage.usage import UsageMap, usage_key

#: Eviction for the size stops at this fraction of ``--max-cache-size``, so
#: that it does not run again at the next store.
LOW_WATER = 0.9

#: A file used or stored this recently (seconds) is never evicted: uses
#: recorded by other workers reach the shared record only when they flush.
GRACE = 120


@attrs.frozen
class Entry:
    """A mirrored archive with its sidecar and core metadata."""

    project: str
    filename: str
    #: Bytes on disk: the archive, its sidecar and its ``.metadata``.
    size: int
    #: When it was stored (the archive's modification time).
    stored: float

    @property
    def key(self) -> str:
        return usage_key(self.project, self.filename)


@attrs.frozen
class Scan:
    """What ``mirror/`` holds: its archives and every byte in it."""

    entries: list[Entry]
    total: int


def scan_mirror(root: FilePath) -> Scan:
    """Every archive in ``mirror/`` and the bytes the folder holds
    (temporary files of downloads under way left out; blocking)."""
    entries: list[Entry] = []
    total = 0
    top = root.child(MIRROR).path
    try:
        projects = [e for e in os.scandir(top) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return Scan([], 0)
    for project in projects:
        sizes: dict[str, int] = {}
        stamps: dict[str, float] = {}
        try:
            files = list(os.scandir(project.path))
        except OSError:
            continue
        for entry in files:
            if entry.name.startswith(TEMP_PREFIX):
                continue
            try:
                status = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            sizes[entry.name] = status.st_size
            stamps[entry.name] = status.st_mtime
            total += status.st_size
        for name, size in sizes.items():
            if is_archive_name(name) and name + SIDECAR_SUFFIX in sizes:
                size += sizes[name + SIDECAR_SUFFIX]
                size += sizes.get(name + METADATA_SUFFIX, 0)
                entries.append(Entry(project.name, name, size, stamps[name]))
    return Scan(entries, total)


def choose(
    scan: Scan,
    used: UsageMap,
    now: float,
    max_size: int | None = None,
    unused_after: float | None = None,
    pinned: Iterable[str] = (),
) -> list[Entry]:
    """The entries to evict, least recently used first: those unused for
    ``unused_after`` seconds, then more until the total is at most
    :data:`LOW_WATER` times ``max_size`` (if it is over ``max_size``).
    Never a pinned one, nor one used within :data:`GRACE`."""
    pinned = set(pinned)

    def last_use(entry: Entry) -> float:
        return max(used.get(entry.key, 0), entry.stored)

    candidates = sorted(
        (e for e in scan.entries if e.key not in pinned),
        key=last_use,
    )
    chosen: list[Entry] = []
    total = scan.total
    over = max_size is not None and total > max_size
    target = int(max_size * LOW_WATER) if max_size is not None else total
    for entry in candidates:
        age = now - last_use(entry)
        if age < GRACE:
            break
        stale = unused_after is not None and age >= unused_after
        if not (stale or (over and total > target)):
            break  # the rest were used later still
        chosen.append(entry)
        total -= entry.size
    return chosen


def evict(
    root: FilePath, entry: Entry, lock_path: Callable[[str, str | None, str], str]
) -> bool:
    """Remove a mirrored archive, its sidecar and its core metadata (blocking).

    Skipped (``False``) if it is being downloaded (its download lock is
    held), gone, or pinned: the archive is renamed out of sight first (it
    leaves every listing at once), then the pins are read, and a pinned
    archive is renamed back (see :mod:`.pins`).
    """
    held = try_lock(lock_path(MIRROR, entry.project, entry.filename))
    if held is None:
        return False
    try:
        folder = root.child(MIRROR).child(entry.project)
        archive = folder.child(entry.filename)
        hidden = folder.child(TEMP_PREFIX + "evict-" + secrets.token_hex(8))
        try:
            os.rename(archive.path, hidden.path)
        except OSError:
            return False
        if entry.key in read_pins(root):
            try:
                os.rename(hidden.path, archive.path)
                return False
            except OSError:
                pass  # gone meanwhile: take the rest with it
        for path in (
            archive.siblingExtension(SIDECAR_SUFFIX),
            archive.siblingExtension(METADATA_SUFFIX),
            archive.siblingExtension(PROVENANCE_SUFFIX),
            hidden,
        ):
            try:
                os.unlink(path.path)
            except FileNotFoundError:
                pass
        return True
    finally:
        held.release()
