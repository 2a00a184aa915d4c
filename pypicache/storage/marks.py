# -*- test-case-name: tests.test_refresh_workers -*-
"""Per-project marks shared by every process on one cache folder.

``POST /+refresh/<project>`` and ``DELETE /+cache/<project>`` are answered
by one process, but with ``--workers`` every worker keeps project pages in
its memory and answers them without a system call (the fast lane). So the
answering process marks the project in ``DIR/marks``, a small file that
every process maps into its memory (``mmap``, shared; no descriptor stays
open): its first word (8 bytes) is an epoch, changed on every mark, and
each project hashes (crc32 of its name) to one of :data:`SLOTS` words, set
to new random bytes when it is marked. Before a process answers from its memory it compares the epoch
with the one it last saw: one read of memory, no system call. Only when it
moved does it compare the slots with its copy of them, to learn which
projects were marked (several names may share a slot: they are all taken as
marked, which costs a re-read, never a stale answer).

Marks are visible to every process as soon as :meth:`Marks.mark` returns:
the answer to the refresh goes out after it, so no later request sees the
old page in any worker.
"""

import ctypes
import mmap
import os
import zlib

from twisted.python.filepath import FilePath

#: The file of the marks, under the cache root.
MARKS_FILE = "marks"

#: Slots the projects hash to.
SLOTS = 4096

#: Bytes of the epoch and of each slot.
WIDTH = 8

_SIZE = (SLOTS + 1) * WIDTH


def slot_of(project: str) -> int:
    """The index of ``project``'s slot among the words of the map (the same
    in every process; the epoch is word 0)."""
    return zlib.crc32(project.encode()) % SLOTS + 1


def _map_shared(fd: int) -> memoryview:
    """The file ``fd`` mapped shared, as a writable buffer.

    Mapped with the C library's ``mmap`` so that no descriptor stays open
    (Python's ``mmap`` keeps a duplicate for as long as the map lives): the
    mapping lasts as long as the process, and closing ``fd`` leaves it be.
    Python's ``mmap`` where that is not available.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.mmap
    except (OSError, AttributeError):
        return memoryview(mmap.mmap(fd, _SIZE))
    call.restype = ctypes.c_void_p
    call.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    address = call(
        None, _SIZE, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0
    )
    if address is None or address == ctypes.c_void_p(-1).value:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return memoryview((ctypes.c_char * _SIZE).from_address(address)).cast("B")


class Marks:
    """The shared map of marks of one cache folder (blocking: open it at start-up)."""

    def __init__(self, root: FilePath) -> None:
        fd = os.open(root.child(MARKS_FILE).path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)  # zeros; the same size in every process
            #: The map as 8-byte words: reading one is a read of memory.
            self._words = _map_shared(fd).cast("Q")
        finally:
            os.close(fd)

    def mark(self, project: str) -> None:
        """Tell every process that ``project`` changed (its slot, then the epoch)."""
        self._words[slot_of(project)] = _token()
        self._words[0] = _token()

    def watch(self) -> "Watch":
        """A reader of the marks made from now on, with its own copy of them."""
        return Watch(self._words)


def _token() -> int:
    return int.from_bytes(os.urandom(WIDTH), "little")


class Watch:
    """What one reader has seen of the marks (each cache of pages has its own)."""

    def __init__(self, words: memoryview) -> None:
        self._words = words
        self._seen = words.tolist()
        self._epoch = self._seen[0]

    def moved(self) -> bool:
        """Whether anything was marked since :meth:`marked` last looked (the
        hot path: one word read)."""
        return self._words[0] != self._epoch

    def marked(self) -> frozenset[int]:
        """The slots (as :func:`slot_of` gives) marked since the last call."""
        now = self._words.tolist()
        seen, self._seen, self._epoch = self._seen, now, now[0]
        return frozenset(i for i, (a, b) in enumerate(zip(now, seen)) if i and a != b)
