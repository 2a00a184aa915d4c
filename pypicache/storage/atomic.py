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
    """Turn "no space left" while doing ``what`` into :class:`InsufficientStorage`."""
    try:
        yield
    except OSError as e:
        if e.errno in _FULL:
            raise InsufficientStorage(f"No space left to store {what}") from e
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
    """A temporary file opened for writing beside its final place."""

    def __init__(self, directory: FilePath, project: str | None, area: str) -> None:
        directory.makedirs(ignoreExistingDirectory=True)
        self.project = project
        self.area = area
        self.path = directory.child(TEMP_PREFIX + secrets.token_hex(8))
        self.file: IO[bytes] = open(self.path.path, "xb")

    def write(self, data: bytes) -> None:
        """Append ``data``.

        :raises InsufficientStorage: the disk is full.
        """
        with full_disk_is_507(self.path.basename()):
            self.file.write(data)

    def flush_and_sync(self) -> None:
        """Flush Python's buffer and the kernel's to the disk.

        :raises InsufficientStorage: the disk is full.
        """
        with full_disk_is_507(self.path.basename()):
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
