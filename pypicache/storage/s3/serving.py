# -*- test-case-name: tests.test_s3_streaming -*-
"""The local copies an :class:`~pypicache.storage.s3.store.S3Store` serves from.

The bucket holds every stored file; a daemon serves an archive from a local
copy in its working folder, fetched on first use and checked against the
sha256 its record names. The first read of an archive with no local copy is
streamed to its client while the copy is fetched
(:mod:`pypicache.storage.s3.fetching`), and every reader that comes meanwhile
shares that one fetch (one ``GET`` per object per daemon). A copy this
process wrote or checked is served at once; one found on disk (from before a
restart) is hashed first, and fetched again if it is not the file recorded.

The local copies are a cache of the bucket: with ``max_size`` the least
recently served archives are deleted once they take more than that many
bytes, never one being fetched nor one served in the last
:data:`IN_USE_SECONDS` (a client reading an evicted file keeps reading it:
its descriptor holds the bytes). With ``s3-redirect`` clients are sent to a
short-lived presigned URL instead.
"""

import os
from collections import OrderedDict
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from pypicache.concurrency import RunBlocking
from pypicache.errors import NotFound
from pypicache.storage.atomic import (
    TempFile,
    remove_quietly,
    write_atomically,
)
from pypicache.storage.growing import Download
from pypicache.storage.records import (
    MIRROR,
    PRERELEASES,
    RELEASES,
    TEMP_PREFIX,
    UPSTREAMS,
    Opened,
    StoredFile,
)
from pypicache.storage.s3.bucket import Bucket
from pypicache.storage.s3.errors import BucketError
from pypicache.storage.s3.fetching import fill, move_into_place
from pypicache.storage.s3.transfer import ObjectInfo
from pypicache.storage.verify import sha256_file

log = Logger()

#: Seconds after it was last served during which a local copy is not evicted
#: (the web layer opens the file it was handed within the same turn).
IN_USE_SECONDS = 10.0

#: The areas of the local folder whose archives are local copies.
ARCHIVE_AREAS = (MIRROR, RELEASES, PRERELEASES)

#: Files beside the archives that are not archives.
_NOT_ARCHIVES = (".metadata", ".provenance")


def sha256_of(path: str) -> str | None:
    """The sha256 of the file at ``path`` (``None``: there is none)."""
    try:
        return sha256_file(path)
    except FileNotFoundError:
        return None


def _found_copies(root: str) -> list[tuple[float, str, int]]:
    """The archives under the archive areas of ``root`` and of the named
    upstreams' folders in it (blocking): ``(last modified, path, size)``,
    oldest first."""
    found = []
    named = os.path.join(root, UPSTREAMS)
    stores = [root] + [os.path.join(named, n) for n in _names(named)]
    for area in [os.path.join(s, a) for s in stores for a in ARCHIVE_AREAS]:
        for folder, dirs, files in os.walk(area):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.startswith((TEMP_PREFIX, ".")) or name.endswith(_NOT_ARCHIVES):
                    continue
                path = os.path.join(folder, name)
                try:
                    status = os.stat(path)
                except OSError:
                    continue
                found.append((status.st_mtime, path, status.st_size))
    return sorted(found)


def _names(folder: str) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def _remove(paths: list[str]) -> None:
    for path in paths:
        remove_quietly(FilePath(path))


class LocalCopies:
    """Local copies of what the bucket holds, by local path.

    :param redirect: archives are served by a presigned URL, not a local copy.
    :param max_size: most bytes of archives kept (``None``: no bound).
    :param root: the local folder (scanned for copies kept before a restart).
    :param clock: ``seconds()`` (when a copy was last served).
    """

    def __init__(
        self,
        bucket: Bucket,
        run_blocking: RunBlocking,
        redirect: bool,
        max_size: int | None = None,
        root: FilePath | None = None,
        clock: Any = None,
    ) -> None:
        self.bucket = bucket
        self._run_blocking = run_blocking
        self.redirect = redirect
        self.max_size = max_size
        self._root = root
        self._clock = clock
        #: local path -> (the sha256 of the archive there, checked or written
        #: here; ``None``: found on disk, unchecked), its size, when last
        #: served; least recently served first.
        self._archives: OrderedDict[str, tuple[str | None, int, float]] = OrderedDict()
        #: The bytes of the archives in :attr:`_archives`.
        self.size = 0
        #: Archives being fetched, by local path: every reader shares one.
        self._fetching: dict[str, Download] = {}
        #: Local paths being checked or opened, and who waits for them.
        self._opening: dict[str, list[Deferred[Download | None]]] = {}
        self._scanned = root is None
        self._evicting = False
        #: Seconds after it was last served during which a copy stays.
        self.in_use_seconds = IN_USE_SECONDS
        #: local paths of metadata and provenance copies made by this process
        self._small: set[str] = set()

    def _now(self) -> float:
        return self._clock.seconds() if self._clock is not None else 0.0

    def _remember(self, path: str, sha256: str | None, size: int) -> None:
        old = self._archives.pop(path, None)
        if old is not None:
            self.size -= old[1]
        self._archives[path] = (sha256, size, self._now())
        self.size += size

    def _known(self, path: str, sha256: str | None) -> bool:
        """Whether the copy at ``path`` is the archive of ``sha256`` (and
        note that it is served now)."""
        entry = self._archives.get(path)
        if entry is None or entry[0] != sha256 or sha256 is None:
            return False
        if not os.path.isfile(path):  # removed behind this process's back
            self.size -= self._archives.pop(path)[1]
            return False
        self._archives[path] = (entry[0], entry[1], self._now())
        self._archives.move_to_end(path)
        return True

    def archive(
        self, key: str, stored: StoredFile, stream: bool = False
    ) -> "Deferred[Opened]":
        """How to serve the archive of ``stored`` (under ``key``).

        :param stream: the caller serves :attr:`Opened.download` while it
            grows; else the answer waits for the local copy to be complete.
        """
        sha256 = stored.info.hashes.get("sha256")
        if not self.redirect and self._known(stored.path.path, sha256):
            return succeed(Opened(stored.path))
        return ensureDeferred(self._archive(key, stored, stream))

    async def _archive(self, key: str, stored: StoredFile, stream: bool) -> Opened:
        if self.redirect:
            return Opened(stored.path, url=await self.bucket.presign(key))
        download = self._fetching.get(stored.path.path)
        if download is None:
            download = await self._open(key, stored)
        if download is not None:
            if stream and not download.complete:
                return Opened(stored.path, download=download)
            await download.stored_file()
        return Opened(stored.path)

    async def _open(self, key: str, stored: StoredFile) -> Download | None:
        """The fetch of ``stored``'s local copy, or ``None`` if the copy on
        disk is the file recorded: one check or fetch per path at a time,
        whoever asks meanwhile waits for its answer."""
        path = stored.path.path
        waiting = self._opening.get(path)
        if waiting is not None:
            d: Deferred[Download | None] = Deferred()
            waiting.append(d)
            return await d
        self._opening[path] = waiting = []
        try:
            found = await self._check_or_fetch(key, stored)
        except BaseException as e:
            del self._opening[path]
            for d in waiting:
                d.errback(e)
            raise
        del self._opening[path]
        for d in waiting:
            d.callback(found)
        return found

    async def _check_or_fetch(self, key: str, stored: StoredFile) -> Download | None:
        path, sha256 = stored.path.path, stored.info.hashes.get("sha256")
        if self._known(path, sha256):
            return None
        if path in self._fetching:
            return self._fetching[path]
        if sha256 is not None and await self._run_blocking(sha256_of, path) == sha256:
            self._remember(path, sha256, os.path.getsize(path))
            self.evict()
            return None
        return await self._fetch(key, stored, sha256)

    async def _fetch(
        self, key: str, stored: StoredFile, sha256: str | None
    ) -> Download:
        """Start fetching ``stored``'s local copy (the ``GET`` answered)."""
        opened = await self.bucket.open_object(key)
        if opened is None:
            raise NotFound(f"{stored.info.filename} is listed but not in the bucket")
        body, response = opened
        info = ObjectInfo.from_response(key, response)
        there = info.metadata.get("sha256")
        try:
            if sha256 is not None and there is not None and there != sha256:
                raise BucketError(
                    f"{stored.info.filename} in the bucket is not the file its "
                    "record names"
                )
            temp = await self._run_blocking(
                TempFile, stored.path.parent(), stored.project, stored.area
            )
            try:
                download = Download(stored.project, stored.info, temp)
            except BaseException:
                temp.discard()  # its reading descriptor could not be opened
                raise
        except BaseException:
            await self.bucket.read_body(key, body.close)
            raise
        download.length = info.size
        download.started = True
        self._fetching[stored.path.path] = download
        Deferred.fromCoroutine(
            fill(
                self.bucket,
                key,
                body,
                download,
                stored,
                sha256,
                self._run_blocking,
                self._fetched,
            )
        )
        return download

    def _fetched(self, download: Download) -> None:
        """A fetch ended: keep its copy (if it succeeded), bound the copies."""
        stored = download.stored
        for path, there in list(self._fetching.items()):
            if there is download:
                del self._fetching[path]
        if stored is not None and download.error is None:
            self._remember(
                stored.path.path, stored.info.hashes.get("sha256"), download.written
            )
            self.evict()

    def evict(self) -> None:
        """Bound the local copies to ``max_size`` (in the background)."""
        if self.max_size is not None and not self._evicting:
            self._evicting = True
            d = Deferred.fromCoroutine(self._evict())
            d.addErrback(lambda f: log.failure("Evicting local copies failed", f))

    async def _evict(self) -> None:
        try:
            if not self._scanned:
                assert self._root is not None
                found = await self._run_blocking(_found_copies, self._root.path)
                self._scanned = True
                for modified, path, size in found:
                    if path not in self._archives:
                        self._remember(path, None, size)
                        self._archives.move_to_end(path, last=False)
                        entry = self._archives[path]
                        self._archives[path] = (entry[0], entry[1], modified)
            assert self.max_size is not None
            gone = []
            recent = self._now() - self.in_use_seconds
            for path, (_, size, used) in list(self._archives.items()):
                if self.size <= self.max_size:
                    break
                if path in self._fetching or used > recent:
                    continue
                del self._archives[path]
                self.size -= size
                gone.append(path)
            if gone:
                await self._run_blocking(_remove, gone)
        finally:
            self._evicting = False

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
        await self._run_blocking(move_into_place, temp, stored.path)
        self._remember(
            stored.path.path, stored.info.hashes.get("sha256"), stored.info.size or 0
        )
        self.evict()
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
        entry = self._archives.pop(path.path, None)
        if entry is not None:
            self.size -= entry[1]
        await self._run_blocking(remove_quietly, path)

    async def drop(self, stored: StoredFile) -> None:
        """Drop the local copies of ``stored`` and of what is kept beside it."""
        for path in (stored.path, stored.metadata_path, stored.provenance_path):
            await self.forget(path)
