# -*- test-case-name: tests.test_locks -*-
"""Locks that every process on the cache folder honours, without a file per lock.

``--workers`` runs several processes on one cache folder, and
``pypicache-admin`` and ``pypicache-import`` may run beside them. What must
happen once (one upstream download of a file, one fetch of a project's page,
one upload taking a filename) is done under an exclusive lock named by a
*lock path* (:meth:`~pypicache.storage.layout.Layout.lock_path`). No file is
made at that path: its folder holds one *lock table* (:data:`LOCK_TABLE`),
created once and kept open by each process while it holds (or, on the
reactor, has just held) a lock in it, and the lock's name picks one byte of
the table, far past its end, which the process locks with ``lockf`` (a POSIX
record lock: taking or letting go of one is a single ``fcntl`` that writes
nothing, so it never waits behind another process's ``fsync``; the kernel
drops the locks of a process that ends, even by ``kill -9``).

Record locks belong to the process, not to a thread or a descriptor, so the
exclusion within a process comes from this module's own table of the names
held (guarded for threads), and the lock byte is let go once the last holder
in the process of a name on it is gone (two names on one byte, which 2**30
bytes make unlikely, share it in one process and exclude each other across
processes). For the same reason nothing else in the process may open and
close the lock table: that would drop every lock the process holds in it.

A holder may note what waiters can follow (:meth:`HeldLock.note`, read by
:func:`read_note`): the table's first :data:`NOTE_SLOTS` blocks of
:data:`NOTE_SIZE` bytes hold notes, one slot per name (by its hash), each
naming its writer, the lock and a checksum, so that a torn, overwritten or
stale note (of another name, of a lock let go since, of a process killed)
reads as no note.
"""

import errno
import fcntl
import hashlib
import os
import threading
import time
import zlib
from collections.abc import Callable

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater

#: Seconds between two tries for a busy lock: the first, and the longest.
FIRST_POLL = 0.005
LAST_POLL = 0.1
#: The lock table's name in the folder of its lock paths.
LOCK_TABLE = ".lock-table"
#: Notes: slots of this many bytes at the start of the table.
NOTE_SIZE = 1024
NOTE_SLOTS = 2048
#: Lock bytes: this many from this offset on (past the notes; under 2**31,
#: which every filesystem's record locks take).
LOCK_BASE = 1 << 30
LOCK_SPAN = 1 << 30
#: Seconds a table used by :class:`Locks` stays open once no lock is held in it.
LINGER = 1.0


@attrs.define(eq=False)
class _Table:
    """One lock table, as this process uses it (every field under ``_guard``)."""

    path: str
    fd: int | None = None
    #: Claims (and note readers) using ``fd``: it stays open while any does.
    users: int = 0
    #: Kept open by :class:`Locks` until ``LINGER`` after it was last used.
    warm: bool = False
    used: float = 0.0
    cooling: IDelayedCall | None = None
    #: The names held in this process, and the holders per lock byte.
    names: set[str] = attrs.field(factory=set)
    bytes_held: dict[int, int] = attrs.field(factory=dict)

    def open(self) -> int:
        if self.fd is None:
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
            try:
                self.fd = os.open(self.path, flags, 0o600)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                self.fd = os.open(self.path, flags, 0o600)
        return self.fd

    def close_if_unused(self) -> None:
        # Closing drops every record lock of this process on the file: only
        # once none is held.
        if self.fd is not None and self.users == 0 and not self.warm:
            fd, self.fd = self.fd, None
            assert not self.bytes_held
            os.close(fd)


_guard = threading.Lock()
#: The tables this process uses, by the real path of their folder, and the
#: real paths of the folders as given.
_tables: dict[str, _Table] = {}
_folders: dict[str, str] = {}


def _forget_after_fork() -> None:
    """A child process holds no record lock of its parent's: start afresh."""
    global _guard
    _guard = threading.Lock()
    for table in _tables.values():
        if table.fd is not None:
            try:
                os.close(table.fd)
            except OSError:
                pass
    _tables.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def _table(folder: str) -> _Table:
    """The table of the lock paths in ``folder`` (under ``_guard``)."""
    real = _folders.get(folder)
    if real is None:
        # One table per file: two descriptors on it would let each other's
        # locks go when closed.
        real = _folders[folder] = os.path.realpath(folder)
    table = _tables.get(real)
    if table is None:
        table = _tables[real] = _Table(os.path.join(real, LOCK_TABLE))
    return table


def _spot(name: str) -> tuple[int, int]:
    """The lock byte and the note slot's offset of the lock ``name``."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    number = int.from_bytes(digest, "big")
    return LOCK_BASE + number % LOCK_SPAN, (number >> 32) % NOTE_SLOTS * NOTE_SIZE


@attrs.define(eq=False)
class _Claim:
    table: _Table
    name: str
    byte: int
    slot: int
    noted: bool = False


@attrs.define(eq=False)
class HeldLock:
    """An exclusive lock, held until :meth:`release`."""

    path: str
    _claim: _Claim | None

    @property
    def held(self) -> bool:
        return self._claim is not None

    def handover(self) -> "HeldLock":
        """The same lock as a new object, to be released elsewhere (a thread's
        work); releasing this one is then a no-op."""
        claim, self._claim = self._claim, None
        return HeldLock(self.path, claim)

    def note(self, text: str) -> None:
        """Note ``text`` (one line, short) for waiters to read (:func:`read_note`).

        One ``pwrite`` into the table, no file made (and one more to clear it
        on :meth:`release`); :exc:`OSError` on a full disk.
        """
        claim = self._claim
        assert claim is not None and claim.table.fd is not None
        claim.noted = True
        os.pwrite(claim.table.fd, _note_record(claim.name, text), claim.slot)

    def release(self) -> None:
        """Let the next holder in; never raises."""
        claim, self._claim = self._claim, None
        if claim is None:
            return
        table = claim.table
        if claim.noted and table.fd is not None:
            try:  # a note of nothing, while the slot is still this holder's
                os.pwrite(table.fd, b"\n", claim.slot)
            except OSError:
                pass  # read as stale all the same once this process ends
        with _guard:
            table.names.discard(claim.name)
            left = table.bytes_held.pop(claim.byte) - 1
            if left:
                table.bytes_held[claim.byte] = left
            elif table.fd is not None:
                try:
                    fcntl.lockf(table.fd, fcntl.LOCK_UN, 1, claim.byte)
                except OSError:
                    pass
            table.users -= 1
            try:
                table.close_if_unused()
            except OSError:
                pass


def _take(path: str) -> tuple[HeldLock | None, _Table]:
    """One try for the lock at ``path``: the lock, or ``None`` if busy; and its table."""
    folder, name = os.path.split(path)
    byte, slot = _spot(name)
    with _guard:
        table = _table(folder)
        if name in table.names:
            return None, table
        if byte not in table.bytes_held:
            fd = table.open()
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, byte)
            except OSError as e:
                table.close_if_unused()
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    return None, table
                raise
        table.bytes_held[byte] = table.bytes_held.get(byte, 0) + 1
        table.names.add(name)
        table.users += 1
        global _taken
        _taken += 1
        return HeldLock(path, _Claim(table, name, byte, slot)), table


#: Locks taken by this process so far (see :func:`taken`).
_taken = 0


def taken() -> int:
    """How many locks this process has taken: a lookup remembered from
    before a lock was taken is not used after it (the lock's last holder,
    maybe another process, may have stored what it looks for)."""
    return _taken


def try_lock(path: str, wait: bool = False) -> HeldLock | None:
    """Take the lock at ``path``, or ``None`` if another holds it (here or in
    another process).

    :param wait: wait until it is free instead, polling (only off the reactor).
    """
    delay = FIRST_POLL
    while True:
        held, _ = _take(path)
        if held is not None or not wait:
            return held
        time.sleep(delay)
        delay = min(delay * 2, LAST_POLL)


def _note_record(name: str, text: str) -> bytes:
    body = f"{os.getpid()}\t{name}\t{text}".encode()
    if b"\n" in body or len(body) + 16 > NOTE_SIZE:
        body = f"{os.getpid()}\t{name}\t".encode()  # unfit: a note of nothing
    return body + b"\t%08x\n" % zlib.crc32(body)


def read_note(path: str) -> str:
    """What the holder of the lock at ``path`` noted ("" if nothing, or if
    that holder let go or ended since)."""
    folder, name = os.path.split(path)
    _, slot = _spot(name)
    with _guard:
        table = _table(folder)
        try:
            fd = table.open()
        except OSError:
            return ""
        table.users += 1
    try:
        data = os.pread(fd, NOTE_SIZE, slot)
    except OSError:
        data = b""
    finally:
        with _guard:
            table.users -= 1
            table.close_if_unused()
            mine = name in table.names
    body, _, rest = data.partition(b"\n")[0].rpartition(b"\t")
    if not body or rest != b"%08x" % zlib.crc32(body):
        return ""
    try:
        pid, noted, text = body.decode("utf-8", "replace").split("\t", 2)
        if noted != name or not _alive(int(pid), mine):
            return ""
    except ValueError:
        return ""
    return text


def _alive(pid: int, mine: bool) -> bool:
    """Whether the process that wrote a note may hold its lock still."""
    if pid == os.getpid():
        return mine
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # another user's: alive
    return True


@attrs.define
class Locks:
    """Takes locks, waiting for busy ones without blocking the reactor.

    A busy lock is tried again after 5 ms, then twice as long each time up to
    100 ms: the holders are downloads and upstream fetches, which take longer.
    A table stays open for ``LINGER`` seconds after its last lock is let go,
    so a busy daemon opens it once, not once per lock.
    """

    #: ``None`` in a process without a reactor (``pypicache-import``): wait
    #: in place, and close tables once no lock is held in them.
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
        if self._clock is None:
            held = try_lock(path, wait=True)
            assert held is not None
            return held
        delay = FIRST_POLL
        while True:
            held, table = _take(path)
            if held is not None:
                self._keep_open(table)
                return held
            if busy is not None:
                busy()
                busy = None
            if poll is not None:
                poll()
            await deferLater(self._clock, delay, lambda: None)
            delay = min(delay * 2, LAST_POLL)

    def _keep_open(self, table: _Table) -> None:
        """Keep ``table`` open until ``LINGER`` seconds after its last use."""
        assert self._clock is not None
        with _guard:
            table.used = self._clock.seconds()
            table.warm = table.fd is not None
            if table.warm and table.cooling is None:
                table.cooling = self._clock.callLater(LINGER, self._cool, table)

    def _cool(self, table: _Table) -> None:
        assert self._clock is not None
        with _guard:
            table.cooling = None
            idle = self._clock.seconds() - table.used
            if idle < LINGER and table.warm:
                table.cooling = self._clock.callLater(LINGER - idle, self._cool, table)
                return
            table.warm = False
            try:
                table.close_if_unused()
            except OSError:
                pass
