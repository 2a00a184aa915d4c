# -*- test-case-name: tests.test_proxy -*-
"""The proxy logic: project pages with a TTL, and single-flight file downloads."""

import hashlib
import os
import zipfile
from collections import OrderedDict
from typing import Any, Callable, Protocol

import attrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .errors import HashMismatch, NotFound, PypicacheError, UpstreamError
from .model import DistFile
from .shared import SingleFlight
from .store import MIRROR, CachedPage, IStore, StoredFile, TempFile
from .upstream import Upstream, mask_url

log = Logger()

#: Largest ``.metadata`` file we accept from upstream.
MAX_METADATA_SIZE = 16 * 1024 * 1024


class RunBlocking(Protocol):
    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]: ...


def in_background(
    run_blocking: RunBlocking | None, f: Callable[..., Any], *args: Any
) -> None:
    """Write to disk in a thread without making the client wait (synchronously without one).

    For what is also kept in memory: cached pages. A failure is logged.
    """
    d = run_blocking(f, *args) if run_blocking is not None else maybeDeferred(f, *args)
    d.addErrback(
        lambda failure: log.failure(
            "Could not write {what} to disk", failure, what=f.__name__
        )
    )


def preferred_hash(hashes: dict[str, str]) -> tuple[str, str] | None:
    """Return the strongest ``(algorithm, digest)`` that hashlib can check."""
    for algorithm in ("sha256", "sha512", "sha384", "sha224", "blake2b", "sha1", "md5"):
        if algorithm in hashes:
            return algorithm, hashes[algorithm].lower()
    return None


@attrs.define
class ProjectPages:
    """Upstream project pages: fresh for ``ttl``, then revalidated; stale on errors.

    Pages are kept by the store, so they survive restarts; the ``memory_size``
    most recently used are also kept in memory. An upstream ``404``
    is remembered for ``negative_ttl``; after an upstream failure the stale page
    is served without retrying for ``retry_after`` seconds.
    """

    _upstream: Upstream
    _store: IStore
    _clock: IReactorTime
    ttl: float = 600.0
    negative_ttl: float = 60.0
    retry_after: float = 30.0
    memory_size: int = 1000
    _run_blocking: "RunBlocking | None" = None
    _memory: "OrderedDict[str, CachedPage]" = attrs.field(factory=OrderedDict)
    _missing: dict[str, float] = attrs.field(factory=dict)
    _failing: dict[str, float] = attrs.field(factory=dict)
    _flights: SingleFlight[CachedPage] = attrs.field(factory=SingleFlight)

    def cached(self, project: str) -> CachedPage | None:
        """The cached page of ``project`` however old, without asking upstream."""
        cached = self._memory.get(project)
        if cached is None:
            cached = self._store.read_page(project)
            if cached is not None:
                self._remember(project, cached)
        else:
            self._memory.move_to_end(project)
        return cached

    def _remember(self, project: str, cached: CachedPage) -> None:
        """Keep a page in memory, forgetting the least recently used past ``memory_size``."""
        self._memory[project] = cached
        self._memory.move_to_end(project)
        while len(self._memory) > self.memory_size:
            self._memory.popitem(last=False)

    async def get(self, project: str) -> CachedPage:
        """Return the project page, asking upstream only when the cached one is not fresh.

        :raises NotFound: the upstream has no such project.
        :raises UpstreamError: upstream failed and nothing is cached.
        """
        now = self._clock.seconds()
        cached = self.cached(project)
        if cached is not None and now - cached.fetched_at < self.ttl:
            return cached
        if self._missing.get(project, 0) > now:
            raise NotFound(f"No project {project!r} upstream")
        if cached is not None and self._failing.get(project, 0) > now:
            return cached
        return await self._flights.run(project, lambda: self._refresh(project, cached))

    async def _refresh(self, project: str, cached: CachedPage | None) -> CachedPage:
        try:
            response = await self._upstream.fetch_page(
                project,
                cached.etag if cached else None,
                cached.last_modified if cached else None,
            )
        except NotFound:
            self._missing[project] = self._clock.seconds() + self.negative_ttl
            raise
        except UpstreamError as e:
            if cached is None:
                raise
            self._failing[project] = self._clock.seconds() + self.retry_after
            log.warn(
                "Serving stale page of {project}: {reason}",
                project=project,
                reason=e.message,
            )
            return cached
        self._failing.pop(project, None)
        self._missing.pop(project, None)
        page = response.page if response.page is not None else cached.page  # type: ignore[union-attr]
        fresh = CachedPage(
            page, self._clock.seconds(), response.etag, response.last_modified
        )
        self._remember(project, fresh)
        in_background(self._run_blocking, self._store.write_page, project, fresh)
        return fresh


@attrs.define(eq=False)
class Download:
    """One upstream file being written to a temporary file, watched by clients.

    Clients read the temporary file as it grows (:attr:`written` bytes are on
    disk) with :meth:`read`, and are told of progress through :meth:`watch`. The
    last byte is held back from them until the hash has verified and the file is
    in place (:attr:`stored`); on any failure :attr:`error` is set and they must
    abort. One read-only descriptor, opened with the
    temporary file, serves every client (``pread``), so the rename into place
    never pulls the file from under a reader.
    """

    project: str
    info: DistFile
    temp: TempFile
    length: int | None = None
    written: int = 0
    stored: StoredFile | None = None
    error: PypicacheError | None = None
    _watchers: list[Callable[[], None]] = attrs.field(factory=list)
    started: bool = False
    _waiting: list[tuple[Callable[[], bool], "Deferred[Download]"]] = attrs.field(
        factory=list
    )
    _fd: int | None = None

    def __attrs_post_init__(self) -> None:
        self._fd = os.open(self.temp.path.path, os.O_RDONLY)

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (callers keep below :attr:`readable`)."""
        assert self._fd is not None
        return os.pread(self._fd, size, offset)

    def _close_if_done(self) -> None:
        if self.finished and not self._watchers and self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def finished(self) -> bool:
        return self.stored is not None or self.error is not None

    @property
    def readable(self) -> int:
        """How many bytes clients may have now."""
        if self.stored is not None:
            return self.written
        return max(0, self.written - 1)

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` on every change; returns a function that stops it."""
        self._watchers.append(callback)

        def unwatch() -> None:
            if callback in self._watchers:
                self._watchers.remove(callback)
            self._close_if_done()

        return unwatch

    def wait_until(self, ready: Callable[[], bool]) -> "Deferred[Download]":
        """A Deferred that fires with this download once ``ready()`` is true.

        Cancelling it affects only the caller, never the download.
        """
        d: Deferred[Download] = Deferred(
            lambda d: (
                self._waiting.remove((ready, d))
                if (ready, d) in self._waiting
                else None
            )
        )
        if ready():
            d.callback(self)
        else:
            self._waiting.append((ready, d))
        return d

    async def stored_file(self) -> StoredFile:
        """Wait for the download to be stored; raise its error if it fails."""
        await self.wait_until(lambda: self.finished)
        if self.error is not None:
            raise self.error
        assert self.stored is not None
        return self.stored

    def _notify(self) -> None:
        for callback in list(self._watchers):
            callback()
        for ready, d in list(self._waiting):
            if ready():
                self._waiting.remove((ready, d))
                d.callback(self)


def read_wheel_metadata(path: str) -> bytes | None:
    """Return the ``METADATA`` of a wheel (blocking: run it in a thread)."""
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                parts = name.split("/")
                if (
                    len(parts) == 2
                    and parts[0].endswith(".dist-info")
                    and parts[1] == "METADATA"
                ):
                    return archive.read(name)
    except (OSError, zipfile.BadZipFile, KeyError):
        return None
    return None


@attrs.define
class Mirror:
    """Files from upstream: fetched at most once, verified, stored, shared while in flight."""

    _upstream: Upstream
    _store: IStore
    _pages: ProjectPages
    _run_blocking: RunBlocking
    _downloads: dict[str, Download] = attrs.field(factory=dict)
    _metadata_flights: SingleFlight[bytes] = attrs.field(factory=SingleFlight)

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
        download = Download(project, info, self._store.open_temp(project, MIRROR))
        self._downloads[filename] = download
        Deferred.fromCoroutine(self._fetch(download))
        await download.wait_until(lambda: download.started or download.finished)
        return download

    async def _fetch(self, download: Download) -> None:
        info = download.info
        assert info.url is not None
        expected = preferred_hash(info.hashes)
        hasher = hashlib.new(expected[0]) if expected else hashlib.sha256()
        sha256 = hashlib.sha256() if expected and expected[0] != "sha256" else hasher

        def received(chunk: bytes) -> None:
            download.temp.write(chunk)
            download.temp.file.flush()  # readers use their own descriptor
            hasher.update(chunk)
            if sha256 is not hasher:
                sha256.update(chunk)
            download.written += len(chunk)
            download._notify()

        try:
            response = await self._upstream.open_file(info.url)
            if response.length is not None and isinstance(response.length, int):
                download.length = response.length
            elif info.size is not None:
                download.length = info.size
            download.started = True
            download._notify()
            await self._upstream.read_body(response, 0, received)
            if info.size is not None and download.written != info.size:
                raise UpstreamError(
                    f"Upstream sent {download.written} bytes of {info.filename}, the index says {info.size}"
                )
            if download.length is not None and download.written != download.length:
                raise UpstreamError(
                    f"Upstream sent {download.written} of {download.length} bytes of {info.filename}"
                )
            if expected and hasher.hexdigest() != expected[1]:
                log.warn(
                    "Hash mismatch for {filename} from {url}: expected {algorithm} {expected}, got {actual}",
                    filename=info.filename,
                    url=mask_url(info.url),
                    algorithm=expected[0],
                    expected=expected[1],
                    actual=hasher.hexdigest(),
                )
                raise HashMismatch(
                    f"Hash mismatch for {info.filename}: upstream bytes do not match the index"
                )
            if expected is None:
                log.warn("No hash to verify {filename} against", filename=info.filename)
            hashes = {**info.hashes, "sha256": sha256.hexdigest()}
            stored_info = attrs.evolve(info, hashes=hashes, size=download.written)
            # fsync and rename in a thread; the listing is updated back here.
            persisted = await self._run_blocking(
                self._store.persist, download.temp, stored_info
            )
            download.stored = self._store.register(persisted)
            log.info(
                "Stored {filename} ({size} bytes, sha256 {digest})",
                filename=info.filename,
                size=download.written,
                digest=hashes["sha256"],
            )
        except Exception as e:
            download.temp.discard()
            download.error = (
                e
                if isinstance(e, PypicacheError)
                else UpstreamError(f"Download of {info.filename} failed: {e}")
            )
            if not isinstance(e, PypicacheError):
                log.failure("Download of {filename} failed", filename=info.filename)
            else:
                log.warn(
                    "Download of {filename} failed: {reason}",
                    filename=info.filename,
                    reason=e.message,
                )
        finally:
            del self._downloads[info.filename]
            download._notify()
            download._close_if_done()
        if download.stored is not None and info.filename.endswith(".whl"):
            await self._extract_metadata(download.stored)

    async def _extract_metadata(self, stored: StoredFile) -> bytes | None:
        """Read a stored wheel's core metadata (in a thread) and keep it beside it."""
        if stored.metadata_path.exists():
            return stored.metadata_path.getContent()
        content = await self._run_blocking(read_wheel_metadata, stored.path.path)
        if content is not None:
            digest = hashlib.sha256(content).hexdigest()
            self._store.add_metadata(
                stored.project, stored.info.filename, content, digest
            )
        return content

    async def metadata(self, project: str, filename: str) -> bytes:
        """Return the core metadata of a file: stored, extracted, or fetched from upstream.

        :raises NotFound: neither the archive nor the upstream can give it.
        """
        path = self._store.metadata_file(project, filename)
        if path is not None:
            return path.getContent()
        stored = self._store.find(project, filename)
        if stored is not None and filename.endswith(".whl"):
            content = await self._extract_metadata(stored)
            if content is not None:
                return content
        return await self._metadata_flights.run(
            filename, lambda: self._fetch_metadata(project, filename)
        )

    async def _fetch_metadata(self, project: str, filename: str) -> bytes:
        info = await self.describe(project, filename)
        if info.core_metadata is False or info.url is None:
            raise NotFound(f"No core metadata for {filename!r}")
        response = await self._upstream.open_file(info.url + ".metadata")
        content = await self._upstream.read_body(response, MAX_METADATA_SIZE)
        if isinstance(info.core_metadata, dict):
            expected = preferred_hash(info.core_metadata)
            if (
                expected
                and hashlib.new(expected[0], content).hexdigest() != expected[1]
            ):
                log.warn("Hash mismatch for {filename}.metadata", filename=filename)
                raise HashMismatch(f"Hash mismatch for {filename}.metadata")
        await self._run_blocking(self._store.write_metadata, project, filename, content)
        return content
