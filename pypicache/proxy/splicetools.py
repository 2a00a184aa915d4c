# -*- test-case-name: tests.test_splicing -*-
"""The parts of :mod:`pypicache.proxy.splicing`'s thread that need no state
of its own: the upstream's time limits on a body, the socket's low-water
mark, hashing what is written from the page cache."""

import mmap
import socket
import time

from pypicache.errors import UpstreamTimeout
from pypicache.proxy.spool import Hashes

#: Bytes the socket must hold before the thread wakes up for them
#: (``SO_RCVLOWAT``): woken for every few kB that arrive, it took a step
#: (splices, a mapping, a hash, a turn of the reactor) for each.
LOW_WATER = 256 * 1024


def hash_mapped(hashes: Hashes, fd: int, offset: int, size: int) -> None:
    """Hash ``size`` bytes of the file from ``offset``, mapped from the
    page cache (no copy: a ``pread`` into a buffer was 8 % of the daemon's
    CPU on a cold 300 MB file)."""
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    mapped = mmap.mmap(fd, offset + size - start, flags, mmap.PROT_READ, offset=start)
    try:
        with memoryview(mapped) as view, view[offset - start :] as part:
            hashes.update(part)
    finally:
        mapped.close()


def low_water(conn: socket.socket, wanted: int, now: int) -> int:
    """Set the socket's ``SO_RCVLOWAT`` to ``wanted`` (never above the bytes
    still to come: the upstream may keep the connection open after them)."""
    if wanted != now:
        try:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, wanted)
        except OSError:
            return now
    return wanted


class Limits:
    """The upstream's time limits on a body, as :class:`~pypicache.proxy.bodies.BodyReader`
    keeps them: an idle timeout, a minimum rate over each idle window, and a
    deadline (the idle timeout plus what the minimum rate allows the length)."""

    def __init__(self, idle: float, min_rate: float, length: int) -> None:
        now = time.monotonic()
        self.idle, self.min_rate = idle, min_rate
        self.last = self.window = now
        self.window_bytes = 0
        self.allowed = idle + length / min_rate if min_rate > 0 else None
        self.deadline = now + self.allowed if self.allowed is not None else None

    def got(self, size: int) -> None:
        self.last = time.monotonic()
        self.window_bytes += size

    def check(self, written: int) -> float:
        """Raise past a limit; else the seconds until the next one to check."""
        now = time.monotonic()
        if now - self.last >= self.idle:
            raise UpstreamTimeout(f"Upstream stalled for {self.idle:g}s mid-body")
        if self.deadline is not None and now >= self.deadline:
            raise UpstreamTimeout(
                f"Upstream took longer than {self.allowed:g}s "
                f"({written} bytes read)"
            )
        if self.min_rate > 0 and now - self.window >= self.idle:
            if self.window_bytes < self.min_rate * self.idle:
                raise UpstreamTimeout(
                    f"Upstream too slow: {self.window_bytes} bytes in {self.idle:g}s, "
                    f"below {self.min_rate:g} bytes/s"
                )
            self.window, self.window_bytes = now, 0
        until = self.last + self.idle - now
        if self.deadline is not None:
            until = min(until, self.deadline - now)
        if self.min_rate > 0:
            until = min(until, self.window + self.idle - now)
        return max(0.0, until)
