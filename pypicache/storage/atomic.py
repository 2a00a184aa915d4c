# -*- test-case-name: tests.test_store -*-
"""Temporary files beside their final place, and writes made atomic by a synced rename."""

import errno
import os
import secrets
from contextlib import contextmanager
from typing import IO, Iterator

from twisted.python.filepath import FilePath

from pypicache.errors import InsufficientStorage
from pypicache.storage.records import TEMP_PREFIX

#: Errors that mean the disk (or the user's quota on it) is full.
_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def full_disk_is_507(what: str) -> Iterator[None]:
    """Turn "no space left" while storing ``what`` into :class:`InsufficientStorage`."""
    try:
        yield
    except OSError as e:
        if e.errno in _FULL:
            raise InsufficientStorage(
                f"Insufficient storage: no space left on the server's disk to store {what}"
            ) from e
        raise


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


class TempFile:
    """A temporary file opened for writing beside its final place.

    It is unbuffered: what :meth:`write` accepted is in the kernel's hands, so
    another descriptor reads it at once, and a full disk shows in
    :meth:`write` (a 507) rather than in a later flush or close that callers
    would not expect to fail.
    """

    def __init__(self, directory: FilePath, project: str | None, area: str) -> None:
        directory.makedirs(ignoreExistingDirectory=True)
        self.project = project
        self.area = area
        self.path = directory.child(TEMP_PREFIX + secrets.token_hex(8))
        self.file: IO[bytes] = open(self.path.path, "xb", buffering=0)

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


def write_atomically(path: FilePath, content: bytes) -> None:
    """Write ``content`` to ``path`` through a synced temporary file and a rename.

    On any failure the temporary file is removed and ``path`` is left as it was.

    :raises InsufficientStorage: the disk is full.
    """
    temp = path.sibling(TEMP_PREFIX + secrets.token_hex(8))
    try:
        with full_disk_is_507(path.basename()):
            with open(temp.path, "xb") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp.path, path.path)
    except BaseException:
        remove_quietly(temp)
        raise
