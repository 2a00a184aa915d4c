# -*- test-case-name: tests.test_store -*-
"""Temporary files beside their final place, and writes made atomic by a synced rename."""

import os
import secrets
from typing import IO

from twisted.python.filepath import FilePath

from pypicache.storage.records import TEMP_PREFIX


class TempFile:
    """A temporary file opened for writing beside its final place."""

    def __init__(self, directory: FilePath, project: str | None, area: str) -> None:
        directory.makedirs(ignoreExistingDirectory=True)
        self.project = project
        self.area = area
        self.path = directory.child(TEMP_PREFIX + secrets.token_hex(8))
        self.file: IO[bytes] = open(self.path.path, "xb")

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def flush_and_sync(self) -> None:
        """Flush Python's buffer and the kernel's to the disk."""
        self.file.flush()
        os.fsync(self.file.fileno())

    def discard(self) -> None:
        """Close and delete the temporary file."""
        if not self.file.closed:
            self.file.close()
        try:
            os.unlink(self.path.path)
        except FileNotFoundError:
            pass


def write_atomically(path: FilePath, content: bytes) -> None:
    """Write ``content`` to ``path`` through a synced temporary file and a rename."""
    temp = path.sibling(TEMP_PREFIX + secrets.token_hex(8))
    with open(temp.path, "xb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp.path, path.path)
