# -*- test-case-name: tests.test_proxy -*-
"""One file being downloaded into a temporary file, read by its clients while
it grows: an upstream file on the proxy's cold path
(:mod:`pypicache.proxy.mirror`), or the local copy of an object the object
store fetches from its bucket (:mod:`pypicache.storage.s3.fetching`)."""

import os
from typing import BinaryIO, Callable

import attrs
from twisted.internet.defer import Deferred

from pypicache.errors import PypicacheError
from pypicache.index.model import DistFile
from pypicache.storage.atomic import TempFile
from pypicache.storage.locks import read_note
from pypicache.storage.records import TEMP_PREFIX, StoredFile


@attrs.define(eq=False)
class Download:
    """One file (from upstream, or from the bucket) being written to a
    temporary file, watched by clients.

    Clients read the temporary file as it grows (:attr:`written` bytes are on
    disk) with :meth:`read`, and are told of progress through :meth:`watch`. The
    last byte is held back from them until the whole body has arrived and its
    size and hash are verified (:attr:`verified`), or the file is in place
    (:attr:`stored`): then they complete (:attr:`complete`), while the file is
    still synced and renamed in a thread before it is listed. A failure before
    that sets :attr:`error` and they must abort; a failure to store a verified
    file (a full disk) sets :attr:`error` too, but clients may finish sending
    the verified bytes they read. One read-only descriptor, opened with the
    temporary file, serves every client (``pread``), so the rename into place
    never pulls the file from under a reader.
    """

    project: str
    info: DistFile
    temp: TempFile
    length: int | None = None
    written: int = 0
    stored: StoredFile | None = None
    #: The whole body arrived and matched its size and hash (not yet stored).
    verified: bool = False
    error: PypicacheError | None = None
    _watchers: list[Callable[[], None]] = attrs.field(factory=list)
    started: bool = False
    _waiting: list[tuple[Callable[[], bool], "Deferred[Download]"]] = attrs.field(
        factory=list
    )
    _fd: int | None = None
    #: Another process's temporary file of this file, read instead of ours.
    _followed: int | None = None

    def __attrs_post_init__(self) -> None:
        self._fd = os.open(self.temp.path.path, os.O_RDONLY)

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (callers keep below :attr:`readable`)."""
        fd = self._followed if self._followed is not None else self._fd
        assert fd is not None
        return os.pread(fd, size, offset)

    def reader(self) -> BinaryIO:
        """A file of its own on the bytes clients may read, for one client to
        close (``sendfile`` needs a descriptor; the offsets are the caller's)."""
        fd = self._followed if self._followed is not None else self._fd
        assert fd is not None
        return os.fdopen(os.dup(fd), "rb", buffering=0)

    @property
    def following(self) -> bool:
        return self._followed is not None

    def follow(self, path: str) -> None:
        """Serve the bytes another process is downloading into ``path`` as they
        arrive (:meth:`grew`), while this one waits for it to store them."""
        assert self._followed is None
        try:
            self._followed = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # stored or given up already: the lock will tell
        if self.length is None:
            self.length = self.info.size
        self.started = True
        self.grew()

    def follow_noted(self, lock_path: str) -> None:
        """Serve what the process holding this file's lock has written so far:
        it notes the name of its temporary file, beside ours, in the lock's note."""
        if self.following:
            self.grew()
            return
        name = read_note(lock_path)
        if name.startswith(TEMP_PREFIX) and os.sep not in name:
            self.follow(os.path.join(self.temp.path.dirname(), name))

    def grew(self) -> None:
        """Take in the bytes the followed file has now."""
        if self._followed is not None:
            self.written = max(self.written, os.fstat(self._followed).st_size)
            self._notify()

    def follows(self, path: str) -> bool:
        """Whether the file followed is the one now at ``path`` (renamed into place)."""
        if self._followed is None:
            return False
        try:
            there = os.stat(path)
        except OSError:
            return False
        mine = os.fstat(self._followed)
        return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)

    def unfollow(self) -> None:
        """Back to this process's own temporary file (no client has any byte yet)."""
        assert self.readable == 0
        if self._followed is not None:
            os.close(self._followed)
            self._followed = None
        self.written = 0

    def _close_if_done(self) -> None:
        if self.finished and not self._watchers:
            for fd in (self._fd, self._followed):
                if fd is not None:
                    os.close(fd)
            self._fd = self._followed = None

    @property
    def finished(self) -> bool:
        return self.stored is not None or self.error is not None

    def verify(self) -> None:
        """The whole body arrived and is verified: clients may have it all."""
        self.verified = True
        self._notify()

    @property
    def complete(self) -> bool:
        """Whether every byte is written and may be sent (verified or stored):
        a client that has them all ends its response."""
        return self.verified or self.stored is not None

    @property
    def cut_off(self) -> bool:
        """Whether clients must abort: failed before its bytes were verified."""
        return self.error is not None and not self.complete

    @property
    def whole_unverified(self) -> bool:
        """Whether every byte announced is written, and not yet verified: a
        client that waits for :meth:`verify` loses nothing (its last byte
        waits for it anyway)."""
        return (
            not self.complete
            and self.length is not None
            and self.written >= self.length
            and self.error is None
        )

    @property
    def readable(self) -> int:
        """How many bytes clients may have now."""
        if self.complete:
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
