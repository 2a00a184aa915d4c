# -*- test-case-name: tests.test_locks -*-
"""Locks that every process on the cache folder honours: ``flock`` on lock files.

``--workers`` runs several processes on one cache folder, and
``pypicache-import`` may run beside them. What must happen once (one upstream
download of a file, one fetch of a project's page, one upload taking a
filename) is done under an exclusive ``flock`` on a lock file in the cache's
``locks/`` folder. It is named like a temporary file, so a start-up cleans
what a crash left; its holder may note in it what waiters can follow. The
holder removes it before letting go; a waiter that then gets the lock on the
removed file sees it is no longer the one at the path and starts over, so two
holders never overlap.
"""

import errno
import fcntl
import os
from collections.abc import Callable

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

#: Seconds between two tries for a busy lock: the first, and the longest.
FIRST_POLL = 0.005
LAST_POLL = 0.1


@attrs.define(eq=False)
class HeldLock:
    """An exclusive lock on a lock file, held until :meth:`release`."""

    path: str
    _fd: int | None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def handover(self) -> "HeldLock":
        """The same lock as a new object, to be released elsewhere (a thread's
        work); releasing this one is then a no-op."""
        fd, self._fd = self._fd, None
        return HeldLock(self.path, fd)

    def note(self, text: str) -> None:
        """Write ``text`` into the lock file, for waiters to read (:func:`read_note`)."""
        assert self._fd is not None
        data = text.encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        """Remove the lock file, then let the next holder in; never raises."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(fd)


def read_note(path: str) -> str:
    """What the holder of the lock at ``path`` wrote into it ("" if nothing)."""
    try:
        with open(path, "rb") as f:
            return f.read(1024).decode("utf-8", "replace")
    except OSError:
        return ""


def try_lock(path: str, wait: bool = False) -> HeldLock | None:
    """Take the lock at ``path`` (creating its file), or ``None`` if another holds it.

    :param wait: block until it is free instead (only where no reactor runs).
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            mine = os.fstat(fd)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        if current is not None and (current.st_dev, current.st_ino) == (
            mine.st_dev,
            mine.st_ino,
        ):
            return HeldLock(path, fd)
        # The holder before us removed this file as it let go: try the new one.
        os.close(fd)


@attrs.define
class Locks:
    """Takes lock files, waiting for busy ones without blocking the reactor.

    A busy lock is tried again after 5 ms, then twice as long each time up to
    100 ms: the holders are downloads and upstream fetches, which take longer.
    """

    #: ``None`` in a process without a reactor (``pypicache-import``): wait in ``flock``.
    _clock: IReactorTime | None

    async def acquire(
        self,
        path: str,
        busy: Callable[[], None] | None = None,
        poll: Callable[[], None] | None = None,
    ) -> HeldLock:
        """The lock at ``path``, once every other holder has let go.

        :param busy: called once if another holder has it (to log the wait).
        :param poll: called each time it is found busy (to follow the holder's work).
        """
        delay = FIRST_POLL
        while True:
            held = try_lock(path, wait=self._clock is None)
            if held is not None:
                return held
            if busy is not None:
                busy()
                busy = None
            if poll is not None:
                poll()
            assert self._clock is not None
            await deferLater(self._clock, delay, lambda: None)
            delay = min(delay * 2, LAST_POLL)
