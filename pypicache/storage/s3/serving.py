# -*- test-case-name: tests.test_store_contract -*-
"""The local copies an :class:`~pypicache.storage.s3.store.S3Store` serves from.

The bucket holds every stored file; a daemon serves an archive from a local
copy in its working folder, fetched on first use (atomically: a half-fetched
copy is never served) and checked against the sha256 its record names. A
copy this process wrote or checked is served at once. With ``s3-redirect``
clients are sent to a short-lived presigned URL instead.
"""

import os

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.python.filepath import FilePath

from pypicache.concurrency import RunBlocking
from pypicache.errors import NotFound
from pypicache.storage.atomic import (
    TempFile,
    fsync_directory,
    remove_quietly,
    write_atomically,
)
from pypicache.storage.records import Opened, StoredFile
from pypicache.storage.s3.bucket import Bucket
from pypicache.storage.s3.errors import BucketError
from pypicache.storage.verify import sha256_file


def sha256_of(path: str) -> str | None:
    """The sha256 of the file at ``path`` (``None``: there is none)."""
    try:
        return sha256_file(path)
    except FileNotFoundError:
        return None


def _move(temp: TempFile, target: FilePath) -> None:
    """Rename the spooled ``temp`` to ``target`` (blocking)."""
    target.parent().makedirs(ignoreExistingDirectory=True)
    os.replace(temp.path.path, target.path)
    temp.file.close()
    fsync_directory(target.parent())


class LocalCopies:
    """Local copies of what the bucket holds, by local path.

    :param redirect: archives are served by a presigned URL, not a local copy.
    """

    def __init__(
        self, bucket: Bucket, run_blocking: RunBlocking, redirect: bool
    ) -> None:
        self.bucket = bucket
        self._run_blocking = run_blocking
        self.redirect = redirect
        #: local path -> the sha256 of the archive there (checked or written here)
        self._archives: dict[str, str | None] = {}
        #: local paths of metadata and provenance copies made by this process
        self._small: set[str] = set()

    def archive(
        self, key: str, path: FilePath, sha256: str | None
    ) -> "Deferred[Opened]":
        """How to serve the archive under ``key``, whose sha256 is ``sha256``."""
        if not self.redirect and self._archives.get(path.path, "") == sha256:
            if os.path.isfile(path.path):  # not evicted
                return succeed(Opened(path))
        return ensureDeferred(self._archive(key, path, sha256))

    async def _archive(self, key: str, path: FilePath, sha256: str | None) -> Opened:
        if self.redirect:
            return Opened(path, url=await self.bucket.presign(key))
        if (
            sha256 is not None
            and await self._run_blocking(sha256_of, path.path) == sha256
        ):
            self._archives[path.path] = sha256
            return Opened(path)
        await self._run_blocking(path.parent().makedirs, True)
        info = await self.bucket.download_to(key, path.path)
        if info is None:
            raise NotFound(f"{path.basename()} is listed but not in the bucket")
        there = info.metadata.get("sha256")
        if sha256 is not None and there is not None and there != sha256:
            remove_quietly(path)
            raise BucketError(
                f"{path.basename()} in the bucket is not the file its record names"
            )
        self._archives[path.path] = sha256
        return Opened(path)

    def small(self, key: str, path: FilePath) -> "Deferred[Opened | None]":
        """How to serve the metadata or provenance under ``key``; ``None``
        if the bucket has none."""
        if path.path in self._small:
            return succeed(Opened(path))
        return ensureDeferred(self._fetch_small(key, path))

    async def _fetch_small(self, key: str, path: FilePath) -> Opened | None:
        await self._run_blocking(path.parent().makedirs, True)
        if await self.bucket.download_to(key, path.path) is None:
            return None
        self._small.add(path.path)
        return Opened(path)

    async def keep(
        self,
        temp: TempFile,
        stored: StoredFile,
        metadata: bytes | None,
        provenance: bytes | None,
    ) -> None:
        """Keep the committed ``temp`` (and what came with it) as the local
        copy of ``stored``."""
        await self._run_blocking(_move, temp, stored.path)
        self._archives[stored.path.path] = stored.info.hashes.get("sha256")
        for path, content in (
            (stored.metadata_path, metadata),
            (stored.provenance_path, provenance),
        ):
            if content is not None:
                await self.write(path, content)

    async def write(self, path: FilePath, content: bytes) -> None:
        """Keep ``content`` (written to the bucket) as the local copy at ``path``."""

        def write() -> None:
            path.parent().makedirs(ignoreExistingDirectory=True)
            write_atomically(path, content)

        await self._run_blocking(write)
        self._small.add(path.path)

    async def forget(self, path: FilePath) -> None:
        """Drop the local copy at ``path``."""
        self._small.discard(path.path)
        self._archives.pop(path.path, None)
        await self._run_blocking(remove_quietly, path)

    async def drop(self, stored: StoredFile) -> None:
        """Drop the local copies of ``stored`` and of what is kept beside it."""
        for path in (stored.path, stored.metadata_path, stored.provenance_path):
            await self.forget(path)
