# -*- test-case-name: tests.test_store -*-
"""Temporary files beside their final place, and writes made atomic by a synced rename."""

import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Iterable
from typing import IO, Any

from twisted.python.filepath import FilePath

from pypicache.errors import InsufficientStorage
from pypicache.storage.records import TEMP_PREFIX

#: Errors that mean the disk (or the user's quota on it) is full.
_FULL = (errno.ENOSPC, errno.EDQUOT)


class full_disk_is_507:  # a context manager named as the function it was
    """Turn "no space left" while storing ``what`` into :class:`InsufficientStorage`.

    A class, not a ``@contextmanager`` generator: it wraps every write of a
    download on the reactor (two calls a use instead of about eight).
    """

    __slots__ = ("_what",)

    def __init__(self, what: str) -> None:
        self._what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> bool:
        if isinstance(error, OSError) and error.errno in _FULL:
            raise InsufficientStorage(
                "Insufficient storage: no space left on the server's disk "
                f"to store {self._what}"
            ) from error
        return False


def fsync_directory(directory: FilePath) -> None:
    """Sync a folder, so that a rename into it survives a power cut."""
    fd = os.open(directory.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path: FilePath) -> None:
    """Delete a file if it is there; never raises (cleanup after a failure)."""
    try:
        os.unlink(path.path)
    except OSError:
        pass


def open_locked_temp(
    directory: FilePath, buffering: int = -1
) -> tuple[FilePath, IO[bytes]]:
    """A new temporary file in ``directory``, open for writing and locked.

    The lock (``flock``) is held as long as the file is open, so the start-up
    clean-up (:func:`remove_if_unlocked`), which may run while the daemon, or
    another worker, already writes, only removes what nobody holds: what a
    crash or a kill left behind. A file the clean-up removed between its
    creation and its locking is noticed (no links left) and replaced.
    """
    while True:
        # A safe name: joined as ``FilePath.child`` would, without its checks.
        path = FilePath(
            os.path.join(directory.path, TEMP_PREFIX + secrets.token_hex(8))
        )
        file = open(path.path, "xb", buffering=buffering)  # noqa: SIM115
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(file.fileno()).st_nlink:
                return path, file
        except BlockingIOError:
            pass
        except BaseException:
            file.close()
            remove_quietly(path)
            raise
        file.close()


def remove_if_unlocked(path: str) -> bool:
    """Delete the temporary file at ``path`` unless a writer holds it open
    (see :func:`open_locked_temp`); never a folder or a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


class TempFile:
    """A temporary file opened for writing beside its final place.

    It is unbuffered: what :meth:`write` accepted is in the kernel's hands, so
    another descriptor reads it at once, and a full disk shows in
    :meth:`write` (a 507) rather than in a later flush or close that callers
    would not expect to fail.
    """

    def __init__(self, directory: FilePath, project: str | None, area: str) -> None:
        self.project = project
        self.area = area
        try:
            # One system call where its parent is there (``makedirs`` takes
            # several and more Python, for every file of a cold install).
            os.mkdir(directory.path)
        except FileExistsError:
            pass
        except FileNotFoundError:
            directory.makedirs(ignoreExistingDirectory=True)
        self.path, self.file = open_locked_temp(directory, buffering=0)

    @property
    def what(self) -> str:
        """What this file will be, for messages."""
        return f"a file of {self.project}" if self.project else "an upload"

    def write(self, data: bytes) -> None:
        """Append ``data`` (all of it: an unbuffered write may take only part).

        :raises InsufficientStorage: the disk is full.
        """
        with full_disk_is_507(self.what):
            view = memoryview(data)
            while view:
                written = self.file.write(view)
                if not written:  # never for a regular file: do not spin
                    raise OSError(errno.EIO, "write took no bytes")
                view = view[written:]

    def flush_and_sync(self) -> None:
        """Flush Python's buffer and the kernel's to the disk.

        :raises InsufficientStorage: the disk is full.
        """
        with full_disk_is_507(self.what):
            self.file.flush()
            os.fsync(self.file.fileno())

    def discard(self) -> None:
        """Close and delete the temporary file; never raises.

        Closing flushes Python's buffer, which fails again on a full disk: the
        descriptor is closed all the same, and the file deleted.
        """
        try:
            self.file.close()
        except OSError:
            pass
        remove_quietly(self.path)


def write_atomically(path: FilePath, content: bytes | Iterable[bytes]) -> None:
    """Write ``content`` (bytes, or chunks of them: streamed) to ``path``
    through a synced temporary file and a rename.

    On any failure the temporary file is removed and ``path`` is left as it was.

    :raises InsufficientStorage: the disk is full.
    """
    with full_disk_is_507(path.basename()):
        temp, f = open_locked_temp(path.parent())
    try:
        with full_disk_is_507(path.basename()), f:
            for chunk in [content] if isinstance(content, bytes) else content:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
            # Renamed while still open: the lock keeps the clean-up off it.
            os.replace(temp.path, path.path)
    except BaseException:
        remove_quietly(temp)
        raise
