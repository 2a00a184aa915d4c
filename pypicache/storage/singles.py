"""Archives read one at a time (a file asked for while its project's listing
is not in memory), remembered while neither the archive nor its sidecar has
changed: two ``stat`` calls instead of reading and parsing the sidecar."""

import os
import stat
from collections import OrderedDict
from typing import Callable

from twisted.python.filepath import FilePath

from pypicache.storage.records import SIDECAR_SUFFIX, StoredFile

#: Archives remembered; the least recently asked for go first.
DEFAULT_SIZE = 1024

Stamp = tuple[int, int, int]


def _stamp(path: str) -> Stamp | None:
    """Inode, mtime and size of a regular file; ``None`` if there is none.
    Sidecars are replaced by rename, so a rewrite gives a new inode."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    return (status.st_ino, status.st_mtime_ns, status.st_size)


class SingleReads:
    """What ``read`` gives for an archive's path, kept while unchanged.

    :param read: reads the archive and its sidecar (``None``: no valid one).
    :param size: how many archives are remembered.
    """

    def __init__(
        self, read: Callable[[FilePath], StoredFile | None], size: int = DEFAULT_SIZE
    ) -> None:
        self._read = read
        self._size = size
        self._kept: OrderedDict[str, tuple[tuple[Stamp, Stamp | None], StoredFile]] = (
            OrderedDict()
        )

    def get(self, path: str) -> StoredFile | None:
        """The stored archive at ``path``, or ``None`` if there is no valid one."""
        archive = _stamp(path)
        if archive is None:
            self._kept.pop(path, None)
            return None
        key = (archive, _stamp(path + SIDECAR_SUFFIX))
        kept = self._kept.get(path)
        if kept is not None and kept[0] == key:
            self._kept.move_to_end(path)
            return kept[1]
        stored = self._read(FilePath(path))
        if stored is None:
            self._kept.pop(path, None)
            return None
        self._kept[path] = (key, stored)
        self._kept.move_to_end(path)
        if len(self._kept) > self._size:
            self._kept.popitem(last=False)
        return stored
