# -*- test-case-name: tests.test_s3_streaming -*-
"""The local copy of an archive, fetched from the bucket while clients read it.

A streamed ``GET`` of the object is read in the bucket's threads a chunk at a
time; each chunk is written to a temporary file beside the local copy's place
and hashed in the same thread, then the reactor is told how many bytes are on
disk. Clients read that temporary file as it grows, exactly as they read a
cold upstream download (:class:`~pypicache.storage.growing.Download`: the
last byte is held back until the whole object is there and its sha256 is
the one its record names). Only then is the file synced and renamed into
place, and served as the local copy: a half-fetched or corrupt copy is never
served, and a failure cuts off the clients that already had bytes.
"""

import hashlib
import os
from typing import Any, Callable

from twisted.logger import Logger
from twisted.python.filepath import FilePath

from pypicache.concurrency import RunBlocking
from pypicache.errors import PypicacheError
from pypicache.storage.atomic import TempFile, fsync_directory
from pypicache.storage.growing import Download
from pypicache.storage.records import StoredFile
from pypicache.storage.s3.bucket import Bucket
from pypicache.storage.s3.errors import BucketError

log = Logger()

#: Bytes read from the bucket (and written to the local copy) per call.
CHUNK = 256 * 1024


def move_into_place(temp: TempFile, target: FilePath) -> None:
    """Sync the written ``temp``, rename it to ``target`` and sync its folder
    (blocking)."""
    temp.flush_and_sync()
    target.parent().makedirs(ignoreExistingDirectory=True)
    os.replace(temp.path.path, target.path)
    temp.file.close()
    fsync_directory(target.parent())


async def fill(
    bucket: Bucket,
    key: str,
    body: Any,
    download: Download,
    stored: StoredFile,
    sha256: str | None,
    run_blocking: RunBlocking,
    done: Callable[[Download], None],
) -> None:
    """Read ``body`` (a ``GET`` of ``key``) into ``download``'s temporary
    file, verify it against ``sha256`` (``None``: the record names none),
    move it into place as the local copy of ``stored`` and call
    ``done(download)`` (on failure too: then :attr:`Download.error` is set).
    Never raises."""
    digest = hashlib.sha256()
    temp = download.temp

    def step() -> int:
        chunk = body.read(CHUNK)
        if chunk:
            temp.write(chunk)
            digest.update(chunk)
        return len(chunk)

    try:
        try:
            while True:
                size = await bucket.read_body(key, step)
                if not size:
                    break
                download.written += size
                download._notify()
        finally:
            # An unfinished body's connection is dropped, never pooled.
            await bucket.read_body(key, body.close)
        if download.length is not None and download.written != download.length:
            raise BucketError(
                f"The bucket sent {download.written} of {download.length} bytes "
                f"of {stored.info.filename}"
            )
        if sha256 is not None and digest.hexdigest() != sha256:
            raise BucketError(
                f"{stored.info.filename} in the bucket is not the file its record names"
            )
        download.verify()
        await run_blocking(move_into_place, temp, stored.path)
        download.stored = stored
    except Exception as e:
        download.error = (
            e
            if isinstance(e, PypicacheError)
            else BucketError(f"Fetching {stored.info.filename} failed: {e}")
        )
        temp.discard()
        if isinstance(e, PypicacheError):
            log.warn(
                "Fetching {filename} from the bucket failed: {reason}",
                filename=stored.info.filename,
                reason=e.message,
            )
        else:
            log.failure(
                "Fetching {filename} from the bucket failed",
                filename=stored.info.filename,
            )
    finally:
        done(download)
        download._notify()
        download._close_if_done()
