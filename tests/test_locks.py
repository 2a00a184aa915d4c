"""Locks on the cache folder: what makes work single-flight across processes
and threads, without a file made or removed per lock."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from pypicache.storage import locks
from pypicache.storage.locks import LOCK_TABLE, Locks, read_note, try_lock

#: A process that takes the lock at argv[1] (waiting for it if argv[2] is
#: "wait"; on one lock byte for every name if argv[3] is "one-byte"), notes
#: argv[4] if given, says so, and holds it until killed or told to let go.
HOLDER = """
import sys
from pypicache.storage import locks
if sys.argv[3] == "one-byte":
    locks.LOCK_SPAN = 1
held = locks.try_lock(sys.argv[1], wait=sys.argv[2] == "wait")
if held is not None and len(sys.argv) > 4:
    held.note(sys.argv[4])
print("held" if held else "busy", flush=True)
sys.stdin.readline()
if held is not None:
    held.release()
print("released", flush=True)
sys.stdin.readline()
"""


class Holder:
    """Another process holding (or trying for) a lock."""

    def __init__(self, path, wait=False, one_byte=False, note=None):
        args = [path, "wait" if wait else "try", "one-byte" if one_byte else "any"]
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, *args, *([note] if note else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )

    def said(self) -> bytes:
        return self.process.stdout.readline()

    def let_go(self) -> None:
        self.process.stdin.write(b"\n")
        self.process.stdin.flush()
        assert self.said() == b"released\n"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill()


@pytest.fixture
def holders():
    started = []

    def start(*args, **kwargs):
        holder = Holder(*args, **kwargs)
        started.append(holder)
        return holder

    yield start
    for holder in started:
        holder.stop()


def test_two_processes_exclude_each_other_on_one_name(tmp_path, holders):
    """While another process holds a lock, it cannot be taken here; once that
    process lets go, it can, and then that process cannot take it."""
    path = str(tmp_path / "lock-x")
    holder = holders(path)
    assert holder.said() == b"held\n"
    assert try_lock(path) is None
    other = try_lock(str(tmp_path / "lock-y"))
    assert other is not None  # another name is free
    other.release()
    holder.let_go()
    held = try_lock(path)
    assert held is not None and held.held
    assert holders(path).said() == b"busy\n"
    held.release()
    assert holders(path).said() == b"held\n"


def test_a_killed_holder_frees_the_lock(tmp_path, holders):
    """A process killed (``kill -9``) while holding a lock lets it go: the
    kernel drops the locks of a process that ends, and nothing is left to clean."""
    path = str(tmp_path / "lock-x")
    holder = holders(path)
    assert holder.said() == b"held\n"
    assert try_lock(path) is None
    holder.kill()
    held = try_lock(path)
    assert held is not None
    held.release()
    assert os.listdir(tmp_path) == [LOCK_TABLE]


def test_a_waiting_process_gets_the_lock_once_let_go(tmp_path, holders):
    """A process waiting for a lock (``wait=True``, as the admin CLI and the
    importer do) takes it soon after the holder here lets go, not before."""
    path = str(tmp_path / "lock-x")
    held = try_lock(path)
    waiter = holders(path, wait=True)
    time.sleep(0.3)
    assert waiter.process.poll() is None  # still waiting: it has said nothing
    held.release()
    assert waiter.said() == b"held\n"
    assert try_lock(path) is None


def test_distinct_names_on_one_byte_do_not_deadlock_in_process(
    tmp_path, holders, monkeypatch
):
    """Two names on one lock byte (every name, here) are both held by one
    process at once, each still excludes a second holder of its own name in
    the process, and the byte stays locked for other processes until the last
    of them is let go."""
    monkeypatch.setattr(locks, "LOCK_SPAN", 1)
    first = try_lock(str(tmp_path / "lock-a"))
    second = try_lock(str(tmp_path / "lock-b"))
    assert first is not None and second is not None
    assert try_lock(str(tmp_path / "lock-a")) is None
    first.release()
    assert holders(str(tmp_path / "lock-c"), one_byte=True).said() == b"busy\n"
    again = try_lock(str(tmp_path / "lock-a"))
    assert again is not None
    again.release()
    second.release()
    assert holders(str(tmp_path / "lock-c"), one_byte=True).said() == b"held\n"


def test_no_file_is_made_or_removed_per_lock(tmp_path):
    """Taking and letting go of locks makes no file and removes none: the
    folder holds the one lock table, made by the first lock, and neither the
    folder nor the table is written again (their times do not change)."""
    folder = tmp_path / "locks"
    held = try_lock(str(folder / "lock-first"))
    held.release()
    assert os.listdir(folder) == [LOCK_TABLE]
    table = folder / LOCK_TABLE
    before = (os.stat(folder), os.stat(table))
    time.sleep(0.05)  # past the filesystem's clock granularity
    for i in range(200):
        held = try_lock(str(folder / f"lock-{i}"))
        assert held is not None
        held.handover().release()
    assert os.listdir(folder) == [LOCK_TABLE]
    after = (os.stat(folder), os.stat(table))
    for old, new in zip(before, after):
        assert (new.st_ino, new.st_mtime_ns, new.st_ctime_ns, new.st_size) == (
            old.st_ino,
            old.st_mtime_ns,
            old.st_ctime_ns,
            old.st_size,
        )


def test_threads_of_one_process_exclude_each_other(tmp_path):
    """A lock held by one thread (the reactor) is busy for another thread of
    the same process, which waiting (``wait=True``) gets it once let go; a
    handed-over lock stays held until the new object is released."""
    path = str(tmp_path / "lock-x")
    first = try_lock(path)
    got = []
    busy = threading.Thread(target=lambda: got.append(try_lock(path)))
    busy.start()
    busy.join(5)
    assert got == [None]
    waiter = threading.Thread(target=lambda: got.append(try_lock(path, wait=True)))
    waiter.start()
    handed = first.handover()
    first.release()  # a no-op: the lock went with the handover
    time.sleep(0.2)
    assert len(got) == 1 and handed.held
    threading.Thread(target=handed.release).start()
    waiter.join(5)
    second = got[1]
    assert second is not None and second.held
    assert try_lock(path) is None
    second.release()
    second.release()  # a second release does nothing


def test_notes_are_read_by_waiters_and_die_with_their_holder(tmp_path, holders):
    """A holder's note is read by another process (as a waiting download
    follows the holder's temporary file); once the holder lets go or is
    killed, its note reads as nothing, and so does one for another name."""
    path = str(tmp_path / "lock-x")
    holder = holders(path, note=".tmp-abc-demo-1.0.whl")
    assert holder.said() == b"held\n"
    assert read_note(path) == ".tmp-abc-demo-1.0.whl"
    assert read_note(str(tmp_path / "lock-y")) == ""
    holder.kill()
    assert read_note(path) == ""
    held = try_lock(path)
    assert read_note(path) == ""  # held here now, and not noted again
    held.note("mine")
    assert read_note(path) == "mine"
    held.release()
    assert read_note(path) == ""
    holder = holders(path, note="theirs")
    assert holder.said() == b"held\n"
    assert read_note(path) == "theirs"
    holder.let_go()
    assert read_note(path) == ""  # cleared as it let go (it still runs)


@pytest_twisted.ensureDeferred
async def test_acquire_waits_without_blocking_the_reactor(tmp_path, holders):
    """A busy lock is polled on the reactor: other work goes on meanwhile, the
    wait is reported once, and the lock is taken soon after its holder (another
    process) lets go."""
    path = str(tmp_path / "lock-x")
    holder = holders(path)
    assert holder.said() == b"held\n"
    reports = []
    waiting: Deferred = Deferred.fromCoroutine(
        Locks(reactor).acquire(path, lambda: reports.append("busy"))
    )
    for _ in range(10):
        await deferLater(reactor, 0.01, lambda: None)
    assert not waiting.called and reports == ["busy"]
    holder.let_go()
    mine = await waiting.addTimeout(5, reactor)
    assert mine.held
    mine.release()


def table_descriptors(folder) -> list[str]:
    """This process's descriptors open on the lock table in ``folder``."""
    table = os.path.realpath(folder / LOCK_TABLE)
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == table:
                found.append(fd)
        except OSError:
            pass
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest_twisted.ensureDeferred
async def test_the_reactor_opens_the_table_once_per_busy_spell(tmp_path):
    """Locks taken on the reactor share one descriptor on the table, kept open
    between them and closed ``LINGER`` seconds after the last (so a daemon
    that stops leaks none); a thread's lock alone opens it only while held."""
    by_thread = try_lock(str(tmp_path / "lock-thread"))
    assert len(table_descriptors(tmp_path)) == 1
    by_thread.release()
    assert table_descriptors(tmp_path) == []
    acquired = Locks(reactor)
    for i in range(20):
        held = await acquired.acquire(str(tmp_path / f"lock-{i}"))
        held.release()
        assert len(table_descriptors(tmp_path)) == 1
    await deferLater(reactor, locks.LINGER / 2, lambda: None)
    assert len(table_descriptors(tmp_path)) == 1
    await deferLater(reactor, locks.LINGER + 0.2, lambda: None)
    assert table_descriptors(tmp_path) == []
