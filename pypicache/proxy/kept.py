# -*- test-case-name: tests.test_lazywheel -*-
"""Core metadata kept ahead of its archive: served from memory until it is on
disk, its sha256 remembered for the pages that offer it."""

import hashlib
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from pypicache.concurrency import NotReady, RunBlocking, result_now
from pypicache.index.archives import read_wheel_metadata
from pypicache.index.model import DistFile
from pypicache.storage.atomic import TempFile
from pypicache.storage.interface import IStore
from pypicache.storage.records import Opened, StoredFile

log = Logger()


@attrs.define
class KeptMetadata:
    """The ``.metadata`` files fetched (or read by ranges) before their archives.

    :ivar sync: runs a write that syncs, in the threads that store files.
    :ivar max_digests: most sha256 digests remembered.
    """

    _store: IStore
    _sync: Callable[..., "Deferred[Any]"]
    max_digests: int = 100_000
    #: Raw digests (32 bytes, not 64 characters of hex: a long-running
    #: daemon holds up to ``max_digests`` of them).
    _digests: dict[str, bytes] = attrs.field(factory=dict)
    _keeping: dict[str, bytes] = attrs.field(factory=dict)
    #: When each of those is on disk (a cross-process lock waits for it).
    _written: "dict[str, Deferred[None]]" = attrs.field(factory=dict)

    def digest(self, filename: str) -> str | None:
        """The sha256 of the ``.metadata`` of a file not stored, if known."""
        digest = self._digests.get(filename)
        return None if digest is None else digest.hex()

    def knows(self, filename: str) -> bool:
        return filename in self._digests

    def remember(self, filename: str, content: bytes | None) -> None:
        """Remember the digest of ``content`` (``None``: forget it)."""
        self._digests.pop(filename, None)
        if content is not None:
            self._digests[filename] = hashlib.sha256(content).digest()
            while len(self._digests) > self.max_digests:
                del self._digests[next(iter(self._digests))]

    def being_kept(self, filename: str) -> bytes | None:
        """What is being written for ``filename``, served meanwhile."""
        return self._keeping.get(filename)

    def written(self, filename: str) -> "Deferred[None] | None":
        """Fires once what is being kept for ``filename`` is on disk."""
        return self._written.get(filename)

    def keep_later(
        self, project: str, filename: str, content: bytes, remember: bool = True
    ) -> None:
        """Keep core metadata without making its client wait for the disk
        (``fsync``); it is served from memory until it is written.

        :param remember: remember its digest for the pages (``False`` where
            the upstream's page gives it: pages then say what the upstream
            says, and a busy daemon would fill its memory with digests nobody
            asks for: 181 bytes each, 5 MB for the 30,000 wheels a
            ten-minute soak lists and never downloads).
        """
        self._keeping[filename] = content
        if remember:
            try:
                stored = result_now(self._store.find(project, filename))
            except NotReady:
                stored = None  # told again once the archive is stored
            if stored is None:
                self.remember(filename, content)
        d = Deferred.fromCoroutine(self._keep(project, filename, content))
        d.addErrback(
            lambda failure: log.failure(
                "Keeping the metadata of {filename} failed", failure, filename=filename
            )
        )
        self._written[filename] = d
        d.addBoth(lambda _: self._done(filename))

    def _done(self, filename: str) -> None:
        # Not a lambda returning what it pops: a callback returning a Deferred
        # would chain this one to itself.
        self._keeping.pop(filename, None)
        self._written.pop(filename, None)

    async def _keep(self, project: str, filename: str, content: bytes) -> None:
        """Keep core metadata ahead of its archive (a failure is logged: the
        bytes are served all the same and fetched again next time).

        Not once the archive is stored: its own metadata is kept then."""
        if await self._store.find(project, filename) is not None:
            return
        try:
            await self._store.write_metadata(project, filename, content)
        except Exception as e:
            not_kept(filename, e)


def not_kept(filename: str, error: Exception) -> None:
    """Log core metadata that could not be written to disk (a full disk, say)."""
    log.warn(
        "Could not keep the metadata of {filename}: {reason}",
        filename=filename,
        reason=getattr(error, "message", None) or repr(error),
    )


@attrs.frozen
class Persisted:
    """A verified download in place, with what :func:`persist_download` found
    of its core metadata (wheels only)."""

    stored: StoredFile
    #: The wheel's own ``METADATA`` (``None``: not a wheel, or none readable).
    own: bytes | None = None
    #: The ``.metadata`` kept ahead of it, now replaced or removed.
    previous: bytes | None = None
    #: Why its own could not be kept beside it (a full disk), if so.
    not_kept: Exception | None = None


async def kept_and_own(
    store: IStore, run_blocking: RunBlocking, temp: TempFile, filename: str
) -> tuple[bytes | None, bytes | None]:
    """The ``.metadata`` kept ahead of a wheel being downloaded, and the
    wheel's own ``METADATA``, read from its complete temporary file (in a
    thread); ``(None, None)`` for another archive. Read before the download
    is verified, so that its commit starts as its clients complete."""
    if not filename.endswith(".whl"):
        return None, None
    assert temp.project is not None
    ahead = await store.open_metadata(temp.project, filename)
    return await run_blocking(_previous_and_own, ahead, temp, filename)  # type: ignore[no-any-return]


async def persist_download(
    store: IStore,
    temp: TempFile,
    info: DistFile,
    previous: bytes | None = None,
    own: bytes | None = None,
) -> Persisted:
    """Commit a verified download at once; a wheel's own ``METADATA``
    (``own``, see :func:`kept_and_own`) goes beside it in the same commit,
    its sha256 in the record.

    A ``.metadata`` kept ahead of the wheel (``previous``) is replaced by the
    wheel's own, or removed if the wheel has none. If the metadata does not
    fit (a full disk), the wheel is committed without it.
    """
    if not info.filename.endswith(".whl"):
        return Persisted(await store.commit(temp, info))
    assert temp.project is not None
    if own is None:
        stored = await store.commit(temp, info)
        if previous is not None:
            await store.drop_metadata(temp.project, info.filename)
        return Persisted(stored, None, previous)
    digest = hashlib.sha256(own).hexdigest()
    described = attrs.evolve(info, core_metadata={"sha256": digest})
    try:
        stored = await store.commit(temp, described, own if own != previous else None)
    except Exception as e:
        if own == previous:
            raise
        # It did not fit (a full disk): the wheel may still.
        return Persisted(await store.commit(temp, info), own, previous, e)
    return Persisted(stored, own, previous)


def _previous_and_own(
    ahead: Opened | None, temp: TempFile, filename: str
) -> tuple[bytes | None, bytes | None]:
    """The ``.metadata`` kept ahead of a wheel, and the wheel's own (blocking)."""
    previous = None
    if ahead is not None:
        try:
            previous = ahead.path.getContent()
        except OSError:
            pass
    return previous, read_wheel_metadata(temp.path.path, filename)
