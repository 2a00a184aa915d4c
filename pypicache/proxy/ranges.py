# -*- test-case-name: tests.test_lazywheel -*-
"""Parts of a remote file held in memory, read as a file that says what it lacks.

:class:`SparseFile` lets a blocking reader (``zipfile``) run over the byte
ranges fetched so far: a read of bytes that are not there raises
:class:`Missing` naming them, the caller fetches them (on the reactor) and runs
the reader again. Pure: no I/O, no reactor.
"""

import bisect
import io


class Missing(Exception):
    """A read needed bytes ``[start, end)`` that have not been fetched."""

    def __init__(self, start: int, end: int) -> None:
        super().__init__(f"bytes {start}-{end - 1} not fetched")
        self.start = start
        self.end = end


class Pieces:
    """Disjoint byte ranges of a file of known ``size``, merged as they come.

    :ivar held: how many bytes are held in all.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.held = 0
        self._starts: list[int] = []
        self._data: list[bytes] = []

    def add(self, start: int, data: bytes) -> None:
        """Keep ``data`` found at ``start``, joined with the pieces it touches."""
        end = start + len(data)
        if not data or start < 0 or end > self.size:
            raise ValueError(f"bytes {start}-{end - 1} outside a file of {self.size}")
        first = bisect.bisect_left(self._starts, start)
        if first > 0 and self._starts[first - 1] + len(self._data[first - 1]) >= start:
            first -= 1
        last = first
        while last < len(self._starts) and self._starts[last] <= end:
            last += 1
        if first == last:
            self._starts.insert(first, start)
            self._data.insert(first, data)
            self.held += len(data)
            return
        lo = min(start, self._starts[first])
        hi = max(end, self._starts[last - 1] + len(self._data[last - 1]))
        merged = bytearray(hi - lo)
        for s, d in zip(self._starts[first:last], self._data[first:last]):
            merged[s - lo : s - lo + len(d)] = d
            self.held -= len(d)
        merged[start - lo : end - lo] = data
        self._starts[first:last] = [lo]
        self._data[first:last] = [bytes(merged)]
        self.held += len(merged)

    def gap(self, start: int, end: int) -> tuple[int, int] | None:
        """The first run of missing bytes in ``[start, end)``, or ``None``."""
        end = min(end, self.size)
        position = start
        i = bisect.bisect_right(self._starts, position) - 1
        if i >= 0 and self._starts[i] + len(self._data[i]) > position:
            position = self._starts[i] + len(self._data[i])
            i += 1
        else:
            i += 1
        if position >= end:
            return None
        stop = self._starts[i] if i < len(self._starts) else end
        return position, min(stop, end)

    def next_start(self, position: int) -> int:
        """Where the first piece after ``position`` starts (``size`` if none)."""
        i = bisect.bisect_right(self._starts, position)
        return self._starts[i] if i < len(self._starts) else self.size

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` (clipped to the file).

        :raises Missing: some of them were not fetched.
        """
        end = min(end, self.size)
        if start >= end:
            return b""
        missing = self.gap(start, end)
        if missing is not None:
            raise Missing(*missing)
        i = bisect.bisect_right(self._starts, start) - 1
        offset = start - self._starts[i]
        return self._data[i][offset : offset + end - start]


class SparseFile(io.RawIOBase):
    """A read-only, seekable file over :class:`Pieces` that raises :class:`Missing`."""

    def __init__(self, pieces: Pieces, name: str = "") -> None:
        super().__init__()
        self._pieces = pieces
        self._position = 0
        self.name = name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        bases = {io.SEEK_SET: 0, io.SEEK_CUR: self._position}
        position = bases.get(whence, self._pieces.size) + offset
        if position < 0:
            raise OSError("seek before the start of the file")
        self._position = position
        return position

    def read(self, size: int | None = -1) -> bytes:
        end = self._pieces.size if size is None or size < 0 else self._position + size
        data = self._pieces.read(self._position, end)
        self._position += len(data)
        return data
