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

(An archive whose daemon died after uploading it but before adding it to its
project's record is not listed, and not an orphan: the next commit of that
file finds its bytes there, and records it.)
"""

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from pypicache.storage.s3.bucket import Bucket
from pypicache.storage.s3.errors import BucketError
from pypicache.storage.s3.keys import Keys

log = Logger()

#: Seconds after which an open multipart upload is taken for abandoned.
ABANDONED_AFTER = 24 * 3600.0

#: Seconds between two sweeps by one daemon.
SWEEP_EVERY = 3600.0


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
