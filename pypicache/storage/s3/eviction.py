# -*- test-case-name: tests.test_s3_ops -*-
"""Eviction of mirrored files from the bucket (``--max-cache-size`` and
``--evict-unused-after`` with ``--storage s3://...``).

Only ``<prefix>/files/mirror/`` is ever touched: private files are never
evicted and do not count. A pass lists the mirror's objects (their sizes and
when each was written), picks what goes as the cache folder's eviction does
(:func:`~pypicache.storage.eviction.choose`: least recently used first, the
last use being the later of the usage record's and when the archive was
stored), and removes each chosen file as :meth:`S3Store.remove
<pypicache.storage.s3.store.S3Store.remove>` does: its entry leaves its
project's record first (a conditional write, ``If-Match``: no other
change to the record is lost), then its objects are deleted, so no daemon
lists a file whose object is gone once its view is revalidated; one whose
view is older answers a refetch from upstream (see the installer's route).

One pass at a time on the whole bucket: an evicting pass holds the bucket's
``evict`` lease (:mod:`.lease`); a daemon that finds it held only counts.
The listing and the grouping run in threads (the bucket's, and
``run_blocking``), never on the reactor.

Uses are those of the usage record given (the evicting daemon's own, in its
local folder): a file served only through other daemons counts as used
when it was stored (or last served through this one).
"""

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from pypicache.concurrency import RunBlocking
from pypicache.errors import BadRequest
from pypicache.index.names import METADATA_SUFFIX, normalize
from pypicache.index.provenance import PROVENANCE_SUFFIX
from pypicache.storage.capacity import EvictionPass, PassResult
from pypicache.storage.eviction import Entry, Scan, choose
from pypicache.storage.layout import is_archive_name
from pypicache.storage.locks import try_lock
from pypicache.storage.pins import read_pins
from pypicache.storage.records import MIRROR
from pypicache.storage.s3.keys import checked_project
from pypicache.storage.s3.lease import Lease
from pypicache.storage.s3.records import FileRecord
from pypicache.storage.s3.store import S3Store
from pypicache.storage.s3.transfer import ObjectInfo
from pypicache.storage.s3.view import _bare
from pypicache.storage.usage import UsageMap

log = Logger()

#: The lease of eviction passes (``<prefix>/leases/evict.json``).
EVICT_LEASE = "evict"


def scan_objects(infos: list[ObjectInfo], prefix: str) -> Scan:
    """The mirrored archives among the listed objects under ``prefix``
    (``<prefix><project>/<filename>``), each with the bytes of its
    ``.metadata`` and ``.provenance``, and every listed byte (blocking: many
    objects)."""
    sizes: dict[tuple[str, str], int] = {}
    stamps: dict[tuple[str, str], float] = {}
    total = 0
    for info in infos:
        total += info.size
        rest = info.key[len(prefix) :]
        project, _, name = rest.partition("/")
        if project and name and "/" not in name:
            sizes[project, name] = info.size
            stamps[project, name] = info.last_modified or 0.0
    entries = []
    for (project, name), size in sizes.items():
        if not is_archive_name(name) or name.endswith(PROVENANCE_SUFFIX):
            continue
        for suffix in (METADATA_SUFFIX, PROVENANCE_SUFFIX):
            size += sizes.get((project, name + suffix), 0)
        entries.append(Entry(project, name, size, stamps[project, name]))
    return Scan(entries, total)


class BucketEvictor:
    """Eviction passes over an :class:`S3Store`'s mirror (an
    :class:`~pypicache.storage.capacity.Evictor`).

    :param run_blocking: where the usage record and the pins (local files)
        are read and the listing is sorted out.
    """

    shared = True

    def __init__(
        self, store: S3Store, run_blocking: RunBlocking, lease: Lease | None = None
    ) -> None:
        self.store = store
        self._run_blocking = run_blocking
        self.lease = lease or Lease(
            store.bucket, store.keys.lease(EVICT_LEASE), store._clock
        )

    def run(self, asked: EvictionPass) -> "Deferred[PassResult]":
        return Deferred.fromCoroutine(self._run(asked))

    async def scan(self) -> Scan:
        """What the bucket's mirror holds (listed in the bucket's threads),
        each archive stored when its project's record says (or, not
        recorded, when its object was written)."""
        prefix = self.store.keys.area_prefix(MIRROR)
        infos = await self.store.bucket.list_info(prefix)
        scan: Scan = await self._run_blocking(scan_objects, infos, prefix)
        stamps: dict[tuple[str, str], float] = {}
        for project in sorted({e.project for e in scan.entries}):
            try:
                record = await self.store.records.get(checked_project(project))
            except BadRequest:
                continue  # not a key pypicache wrote: left alone
            for name, entry in record.files.items():
                if entry.area == MIRROR and entry.stored_at is not None:
                    stamps[project, name] = entry.stored_at
        entries = [
            attrs.evolve(e, stored=stamps.get((e.project, e.filename), e.stored))
            for e in scan.entries
            if (e.project, e.filename) in stamps or e.project == normalize(e.project)
        ]
        return Scan(entries, scan.total)

    async def _run(self, asked: EvictionPass) -> PassResult:
        usage, recorded, now = asked.usage, asked.recorded, asked.now
        max_size, unused_after = asked.max_size, asked.unused_after
        dry_run, progress, planned = asked.dry_run, asked.progress, asked.planned
        merged: UsageMap = dict(recorded)
        if usage is not None:
            merged = await self._run_blocking(usage.flush, recorded)
        if max_size is None and unused_after is None:
            scan = await self.scan()  # counting only: no lease needed
            return PassResult(scan.total, [], files=len(scan.entries))
        if not dry_run and not await self.lease.acquire():
            scan = await self.scan()
            return PassResult(scan.total, [], busy=True, files=len(scan.entries))
        try:
            scan = await self.scan()
            pinned = await self._run_blocking(read_pins, self.store.root)
            chosen = await self._run_blocking(
                choose, scan, merged, now, max_size, unused_after, pinned
            )
            if dry_run:
                return PassResult(scan.total, chosen, files=len(scan.entries))
            if planned is not None:
                planned(len(chosen))
            evicted: list[Entry] = []
            total = scan.total
            for entry in chosen:
                if not await self.lease.keep():
                    break  # too slow: another daemon evicts now
                if await self._evict(entry):
                    evicted.append(entry)
                    total -= entry.size
                if progress is not None:
                    progress(entry)
        finally:
            await self.lease.release()
        if usage is not None:
            present = {e.key for e in scan.entries}
            gone = frozenset(k for k in merged if k not in present)
            await self._run_blocking(
                usage.flush, {}, gone | frozenset(e.key for e in evicted)
            )
        return PassResult(total, evicted, files=len(scan.entries) - len(evicted))

    async def _evict(self, entry: Entry) -> bool:
        """Remove one mirrored file: out of its project's record, then its
        objects, then this daemon's local copies. Skipped (``False``) while
        this daemon downloads it (its download lock is held)."""
        store = self.store
        try:
            bare = _bare(entry.filename)
        except BadRequest:
            return False  # not a name pypicache stores under
        stored = store._stored(entry.project, FileRecord(bare, MIRROR))
        path = store.lock_path(MIRROR, entry.project, entry.filename)
        held = await self._run_blocking(try_lock, path)
        if held is None:
            return False
        try:
            await store.remove(stored)
        except Exception as e:  # the bucket failed: the next pass tries again
            log.warn(
                "Could not evict {key} from the bucket: {error}",
                key=entry.key,
                error=e,
            )
            return False
        finally:
            held.release()
        return True
