# -*- test-case-name: tests.test_proxy -*-
"""Files from upstream: fetched at most once, verified, stored; core metadata extracted or fetched."""

import hashlib
from typing import Any, Callable, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from pypicache.concurrency import RunBlocking, SingleFlight
from pypicache.errors import HashMismatch, NotFound, PypicacheError, UpstreamError
from pypicache.index.archives import MAX_METADATA, read_wheel_metadata
from pypicache.index.hashes import preferred_hash
from pypicache.index.model import DistFile
from pypicache.index.names import METADATA_SUFFIX
from pypicache.proxy.kept import (
    KeptMetadata,
    Persisted,
    kept_and_own,
    not_kept,
    persist_download,
)
from pypicache.proxy.lazywheel import CannotRange, read_metadata
from pypicache.proxy.pages import ProjectPages
from pypicache.proxy.splicing import take_body
from pypicache.proxy.spool import Hashes, Spool, verified
from pypicache.proxy.upstream import Upstream, counted_outcome
from pypicache.storage.atomic import full_disk_is_507
from pypicache.storage.growing import Download
from pypicache.storage.interface import IStore
from pypicache.storage.locks import Locks
from pypicache.storage.records import MIRROR, StoredFile

log = Logger()

T = TypeVar("T")


@attrs.define
class Mirror:
    """Files from upstream: fetched at most once, verified, stored, shared while in flight."""

    _upstream: Upstream
    _store: IStore
    _pages: ProjectPages
    _run_blocking: RunBlocking
    #: One download per file across the processes on the cache folder.
    _locks: Locks
    #: Where stored files are synced and renamed (default: ``_run_blocking``).
    _run_sync: RunBlocking | None = None
    #: Told of each file stored from upstream (the cache's size is kept from it).
    on_stored: Callable[[StoredFile], None] | None = attrs.field(
        default=None, kw_only=True
    )
    _downloads: dict[str, Download] = attrs.field(factory=dict)
    _metadata_flights: SingleFlight[bytes] = attrs.field(factory=SingleFlight)
    _kept: KeptMetadata = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._kept = KeptMetadata(self._store, self._sync)

    def _sync(self, f: Callable[..., T], *args: Any) -> "Deferred[T]":
        """Run ``f`` (a write that syncs) in the threads that store files."""
        return (self._run_sync or self._run_blocking)(f, *args)

    @property
    def pages(self) -> ProjectPages:
        return self._pages

    async def describe(self, project: str, filename: str) -> DistFile:
        """Return what the upstream page says of a file.

        :raises NotFound: no such file on the project's page.
        """
        page = (await self._pages.get(project)).page
        info = page.file(filename)
        if info is None or info.url is None:
            raise NotFound(f"No file {filename!r} in project {project!r}")
        return info

    def in_flight(self, filename: str) -> Download | None:
        """The download of ``filename`` under way, if any."""
        return self._downloads.get(filename)

    async def download(self, project: str, filename: str) -> Download:
        """Return the download of a file, starting it unless it is under way."""
        existing = self._downloads.get(filename)
        if existing is not None:
            await existing.wait_until(lambda: existing.started or existing.finished)
            return existing
        info = await self.describe(project, filename)
        if filename in self._downloads:  # another client started it meanwhile
            return await self.download(project, filename)
        with full_disk_is_507(filename):
            temp = self._store.open_temp(project, MIRROR)
        try:
            download = Download(project, info, temp)
        except BaseException:
            temp.discard()  # its reading descriptor could not be opened (EMFILE)
            raise
        self._downloads[filename] = download
        Deferred.fromCoroutine(self._fetch(download))
        await download.wait_until(lambda: download.started or download.finished)
        return download

    async def _fetch(self, download: Download) -> None:
        """Download, verify and store; every way out releases the slot and the waiters."""
        info = download.info
        lock = None
        try:
            with full_disk_is_507(info.filename):
                path = self._store.lock_path(MIRROR, download.project, info.filename)
                lock = await self._locks.acquire(
                    path,
                    lambda: log.info(
                        "Waiting for another process's download of {filename}",
                        filename=info.filename,
                    ),
                    lambda: download.follow_noted(path),
                )
            stored = await self._store.reread(MIRROR, download.project, info.filename)
            if download.following:
                if stored is not None and download.follows(stored.path.path):
                    download.written = stored.info.size or download.written
                elif download.readable == 0:
                    download.unfollow()
                else:
                    raise UpstreamError(
                        f"The download of {info.filename} by another process failed"
                    )
            if stored is None:
                try:
                    lock.note(download.temp.path.basename())
                except OSError:
                    pass  # a full disk: the others wait without streaming
                await self._fetch_and_store(download)
            else:
                log.info(
                    "{filename} was stored by another process meanwhile",
                    filename=info.filename,
                )
                download.temp.discard()
                download.stored = stored
        except Exception as e:
            download.error = (
                e
                if isinstance(e, PypicacheError)
                else UpstreamError(f"Download of {info.filename} failed: {e}")
            )
            download.temp.discard()
            if not isinstance(e, PypicacheError):
                log.failure("Download of {filename} failed", filename=info.filename)
            else:
                log.warn(
                    "{what} of {filename} failed: {reason}",
                    what="Storing" if download.verified else "Download",
                    filename=info.filename,
                    reason=e.message,
                )
        finally:
            if lock is not None:
                lock.release()
            self._downloads.pop(info.filename, None)
            download._notify()
            download._close_if_done()

    async def _fetch_and_store(self, download: Download) -> None:
        info = download.info
        if info.url is None:
            raise NotFound(f"No URL for {info.filename!r} upstream")
        expected = preferred_hash(info.hashes)
        hashes = Hashes(expected[0] if expected else None)
        # Written and hashed as they come; readers see them once written.
        spool = Spool(download, hashes, self._sync)
        response = await self._upstream.open_file(info.url)
        if response.length is not None and isinstance(response.length, int):
            download.length = response.length
        elif info.size is not None:
            download.length = info.size
        download.started = True
        download._notify()
        # A large plain body: spliced into the file by a thread instead.
        body = await take_body(
            response, download, hashes, self._sync, self._upstream, info.url
        )
        try:
            if body is None:
                await self._upstream.read_body(
                    response, 0, spool.received, attach=spool.attach
                )
            else:
                with counted_outcome(response):
                    await body.read()
            await (body or spool).written()
            stored_info = verified(download, hashes, expected)
            kept, own = await kept_and_own(
                self._store, self._run_blocking, download.temp, info.filename
            )
        except BaseException:
            # No thread on the file discarded.
            await (body or spool).drained(quietly=True)
            raise
        # Verified: its clients complete now, while it is committed (a
        # wheel's metadata beside it), the commit under way at once (once
        # a flush to the disk begun meanwhile is over).
        download.verify()
        await (body or spool).drained()
        persisted = await persist_download(
            self._store, download.temp, stored_info, kept, own
        )
        download.stored = persisted.stored
        self._metadata_kept(persisted)
        if self.on_stored is not None:
            self.on_stored(download.stored)
        log.info(
            "Stored {filename} ({size} bytes, sha256 {digest})",
            filename=info.filename,
            size=download.written,
            digest=stored_info.hashes["sha256"],
        )

    def _metadata_kept(self, persisted: Persisted) -> None:
        """Say what became of the metadata of a wheel just stored."""
        filename = persisted.stored.info.filename
        if not filename.endswith(".whl"):
            return
        self._kept.remember(filename, None)
        if persisted.own is None and persisted.previous is not None:
            log.warn(
                "Removing the .metadata kept for {filename}: the wheel has none",
                filename=filename,
            )
        elif persisted.previous not in (None, persisted.own):
            log.warn(
                "The .metadata kept for {filename} differs from the wheel's own: replaced",
                filename=filename,
            )
        if persisted.not_kept is not None:
            not_kept(filename, persisted.not_kept)

    def metadata_digest(self, filename: str) -> str | None:
        """The sha256 of the ``.metadata`` of a file not stored, if known."""
        return self._kept.digest(filename)

    async def _extract_metadata(self, stored: StoredFile) -> bytes | None:
        """A stored wheel's core metadata, read from it (in a thread) and kept
        beside it if it is not yet (a wheel stored by an older version, or whose
        metadata did not fit on the disk: see :func:`persist_download`).
        What could not be kept (a full disk) is still returned.
        """
        kept = await self._store.open_metadata(stored.project, stored.info.filename)
        if kept is not None:
            return kept.path.getContent()  # type: ignore[no-any-return]
        opened = await self._store.open(stored)
        content = await self._run_blocking(read_wheel_metadata, opened.path.path)
        self._kept.remember(stored.info.filename, None)
        if content is None:
            return None
        try:
            await self._store.add_metadata(
                stored.project,
                stored.info.filename,
                content,
                hashlib.sha256(content).hexdigest(),
            )
        except Exception as e:
            not_kept(stored.info.filename, e)
        return content

    async def metadata(
        self, project: str, filename: str, whole: bool = True, absent: bool = False
    ) -> bytes:
        """Return the core metadata of a file: stored, extracted, or fetched from upstream.

        :param whole: whether a wheel may be downloaded whole for it (bulk
            caching downloads files itself, and says which it fetched).
        :param absent: the caller found none stored, in this same step of
            the reactor: not looked for again.
        :raises NotFound: neither the archive nor the upstream can give it.
        """
        being_kept = self._kept.being_kept(filename)
        if being_kept is not None:
            return being_kept
        opened = None if absent else await self._store.open_metadata(project, filename)
        if opened is not None:
            content: bytes = opened.path.getContent()
            if (
                not self._kept.knows(filename)
                and await self._store.find(project, filename) is None
            ):
                self._kept.remember(filename, content)
            return content
        stored = await self._store.find(project, filename)
        if stored is not None and filename.endswith(".whl"):
            content = await self._extract_metadata(stored)
            if content is not None:
                return content
        return await self._metadata_flights.run(
            filename, lambda: self._fetch_metadata(project, filename, whole)
        )

    async def _fetch_metadata(self, project: str, filename: str, whole: bool) -> bytes:
        """The core metadata of a file not stored, once across processes: the
        upstream's ``.metadata`` if it offers one, else read from the wheel by
        ranges, else from the whole wheel (downloaded and stored)."""
        info = await self.describe(project, filename)
        wheel = filename.endswith(".whl")
        if info.url is None or not (wheel or info.core_metadata):
            raise NotFound(f"No core metadata for {filename!r}")
        try:
            lock = await self._locks.acquire(
                self._store.lock_path(MIRROR, project, filename + METADATA_SUFFIX),
                lambda: log.info(
                    "Waiting for another process's fetch of {filename}.metadata",
                    filename=filename,
                ),
            )
        except OSError:
            lock = None  # a full disk: fetched all the same, and not kept
        try:
            opened = await self._store.open_metadata(project, filename)
            if opened is not None:  # another process fetched it meanwhile
                return opened.path.getContent()  # type: ignore[no-any-return]
            return await self._fetch_metadata_now(project, info, whole)
        finally:
            if lock is not None:
                # Held until what was fetched is on disk for the others.
                kept = self._kept.written(filename)
                if kept is None:
                    lock.release()
                else:
                    kept.addBoth(lambda _: lock.release())

    async def _fetch_metadata_now(
        self, project: str, info: DistFile, whole: bool
    ) -> bytes:
        filename = info.filename
        wheel = filename.endswith(".whl")
        if info.core_metadata:
            try:
                return await self._fetch_metadata_file(project, info)
            except NotFound:
                if not wheel:
                    raise
                log.warn(
                    "Upstream offers a .metadata for {filename} but has none",
                    filename=filename,
                )
        if await self._store.find(project, filename) is not None:
            raise NotFound(f"No readable METADATA in {filename!r}")
        if self.in_flight(filename) is None:
            try:
                content = await read_metadata(self._upstream, self._run_blocking, info)
            except CannotRange as e:
                log.info(
                    "Downloading {filename} whole for its metadata: {reason}",
                    filename=filename,
                    reason=str(e),
                )
            else:
                self._kept.keep_later(project, filename, content)
                return content
        if not whole:
            raise NotFound(f"No core metadata for {filename!r} short of the whole file")
        download = await self.download(project, filename)
        extracted = await self._extract_metadata(await download.stored_file())
        if extracted is None:
            raise NotFound(f"No readable METADATA in {filename!r}")
        return extracted

    async def _fetch_metadata_file(self, project: str, info: DistFile) -> bytes:
        """The upstream's ``.metadata`` of a file, checked against the page's hash."""
        assert info.url is not None
        filename = info.filename
        response = await self._upstream.open_file(info.url + ".metadata")
        content = await self._upstream.read_body(response, MAX_METADATA)
        expected = None
        if isinstance(info.core_metadata, dict):
            expected = preferred_hash(info.core_metadata)
            if (
                expected
                and hashlib.new(expected[0], content).hexdigest() != expected[1]
            ):
                log.warn("Hash mismatch for {filename}.metadata", filename=filename)
                raise HashMismatch(f"Hash mismatch for {filename}.metadata")
        # Where the page gives a hash, pages say it (merging.advertised): no
        # digest of ours to remember.
        self._kept.keep_later(project, filename, content, remember=not expected)
        return content
