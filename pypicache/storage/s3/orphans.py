# -*- test-case-name: tests.test_s3_streaming -*-
"""What a daemon killed in the middle of a write leaves in the bucket, and
its clean-up.

pypicache writes no temporary key: records, pages, metadata and archives up
to ``--s3-part-size`` are single ``PUT``s, there whole or not at all. An
archive larger than that goes up as a multipart upload, which stays open,
invisible but billed, when its daemon dies before it completes or aborts it.
Every daemon on S3 sweeps them once an hour (:data:`SWEEP_EVERY`): the
uploads under its prefix that started more than :data:`ABANDONED_AFTER` ago
(no upload of one file takes that long) are aborted. Several daemons may
sweep at once: an upload another one aborted first is skipped.

An archive whose daemon died after uploading it but before adding it to its
project's record is not listed: an orphan. The next commit of the same bytes
finds them there and records them; other bytes under that name replace it
(``If-Match`` on its ETag) once it is older than :data:`ORPHAN_AFTER`, and
``pypicache-admin cleanup --storage ...`` deletes such orphans
(:func:`find_orphans`, :func:`remove_orphan`). A younger unlisted archive may
be a commit still under way on another daemon: it is left alone (another
upload of that name gets a ``409``). The bound holds because no commit lists
an archive later than :data:`RECORD_WITHIN` after its upload began (it fails
instead, and leaves an orphan): an unlisted archive older than
:data:`ORPHAN_AFTER` (by S3's ``Last-Modified``, which is when a multipart
upload began) was left by a daemon that died, or gave up, even with clocks
half an hour apart.
"""

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from pypicache.errors import BadRequest
from pypicache.index.names import METADATA_SUFFIX
from pypicache.index.provenance import PROVENANCE_SUFFIX
from pypicache.storage.layout import is_archive_name
from pypicache.storage.records import MIRROR
from pypicache.storage.s3.bucket import Bucket
from pypicache.storage.s3.errors import BucketError, PreconditionFailed
from pypicache.storage.s3.keys import AREAS, Keys
from pypicache.storage.s3.transfer import ObjectInfo

log = Logger()

#: Seconds after which an open multipart upload is taken for abandoned.
ABANDONED_AFTER = 24 * 3600.0

#: Seconds between two sweeps by one daemon.
SWEEP_EVERY = 3600.0

#: Seconds after which an archive no record lists is an orphan.
ORPHAN_AFTER = 3600.0

#: Seconds from the start of an archive's upload within which its commit
#: must write its record, or fail (see the module's docstring).
RECORD_WITHIN = ORPHAN_AFTER / 2


def is_orphan(there: ObjectInfo | None, now: float) -> bool:
    """Whether the unlisted object ``there`` is older than :data:`ORPHAN_AFTER`."""
    modified = there.last_modified if there is not None else None
    return modified is not None and now - modified > ORPHAN_AFTER


def _archive_of(name: str, area: str) -> str:
    """The archive an object named ``name`` is, or is kept beside (``""``:
    none; core metadata fetched ahead of a mirrored archive is no orphan)."""
    suffixes = (
        (PROVENANCE_SUFFIX,) if area == MIRROR else (METADATA_SUFFIX, PROVENANCE_SUFFIX)
    )
    for suffix in suffixes:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name if is_archive_name(name) else ""


async def find_orphans(store: Any, now: float) -> list[ObjectInfo]:
    """The objects of ``store`` (an ``S3Store``) under ``files/`` that are,
    or are kept beside, an archive its project's record does not list, older
    than :data:`ORPHAN_AFTER`."""
    found = []
    for area in AREAS:
        start = store.keys.area_prefix(area)
        for info in await store.bucket.list_info(start):
            project, _, name = info.key[len(start) :].partition("/")
            archive = _archive_of(name, area)
            if not archive or "/" in name or not is_orphan(info, now):
                continue
            try:
                record = await store.records.get(project)
            except BadRequest:
                continue  # not a project's folder: not pypicache's
            entry = record.files.get(archive)
            if entry is None or entry.area != area:
                found.append(info)
    return found


async def remove_orphan(store: Any, orphan: ObjectInfo, now: float) -> bool:
    """Delete ``orphan`` (of :func:`find_orphans`) if it still is one: still
    unlisted (its record read again), and still that version (``If-Match``
    on its ETag: an upload that replaced it meanwhile is kept). Whether it
    was deleted."""
    start = store.keys.files_prefix
    area, _, rest = orphan.key[len(start) :].rpartition("/")
    area, _, project = area.rpartition("/")
    record = await store.records.refresh(project)
    entry = record.files.get(_archive_of(rest, area))
    there = await store.bucket.head(orphan.key)
    if (entry is not None and entry.area == area) or not is_orphan(there, now):
        return False
    assert there is not None
    if there.etag != orphan.etag:
        return False
    try:
        await store.bucket.delete(orphan.key, if_match=orphan.etag)
    except PreconditionFailed:
        return False  # replaced meanwhile
    log.info("Deleted the orphaned object {key}", key=orphan.key)
    return True


async def abort_abandoned_uploads(
    bucket: Bucket, keys: Keys, now: float, older_than: float = ABANDONED_AFTER
) -> list[str]:
    """Abort the multipart uploads under ``keys``' prefix that started more
    than ``older_than`` seconds before ``now``; return their keys.

    :raises BucketError: they could not be listed.
    """
    root = f"{keys.prefix}/" if keys.prefix else ""
    aborted = []
    for key, upload_id, started in await bucket.open_uploads(root):
        if now - started < older_than:
            continue
        try:
            await bucket.abort_upload(key, upload_id)
        except BucketError as e:  # aborted by another daemon meanwhile
            log.info("Could not abort the upload of {key}: {reason}", key=key, reason=e)
            continue
        log.info(
            "Aborted the multipart upload of {key}, left unfinished since "
            "{hours:.0f} hours",
            key=key,
            hours=(now - started) / 3600,
        )
        aborted.append(key)
    return aborted


def sweep(bucket: Bucket, keys: Keys, clock: Any) -> "Deferred[Any]":
    """One periodic sweep (:func:`abort_abandoned_uploads`); never fails
    (a failure is logged, and the next sweep tries again)."""
    d = Deferred.fromCoroutine(abort_abandoned_uploads(bucket, keys, clock.seconds()))
    d.addErrback(lambda f: log.failure("Sweeping abandoned uploads failed", f))
    return d
