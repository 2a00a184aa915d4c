"""Lock files in the cache folder: what makes work single-flight across processes."""

import os
import subprocess
import sys
import threading
import time

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from pypicache.storage.locks import Locks, try_lock

#: A process that takes the lock at argv[1], says so, and holds it until killed.
HOLDER = """
import sys
from pypicache.storage.locks import try_lock
held = try_lock(sys.argv[1])
print("held" if held else "busy", flush=True)
sys.stdin.read()
"""


def test_a_held_lock_is_busy_for_another_process(tmp_path):
    """While another process holds a lock file, it cannot be taken here; once
    that process is gone (even killed), it can."""
    path = str(tmp_path / ".tmp-lock-x")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline() == b"held\n"
        assert try_lock(path) is None
    finally:
        holder.kill()
        holder.wait()
    held = try_lock(path)
    assert held is not None
    held.release()


def test_release_removes_the_lock_file(tmp_path):
    """Letting go removes the lock file, so none is left behind per file ever fetched."""
    path = str(tmp_path / ".tmp-lock-x")
    held = try_lock(path)
    assert held is not None and os.path.exists(path)
    held.release()
    held.release()  # a second release does nothing
    assert not os.path.exists(path)


def test_a_waiter_on_a_removed_file_starts_over(tmp_path):
    """A waiter blocked on the lock file when its holder removes it and lets go
    takes the file now at the path, not the removed one: it holds the lock that
    every later comer sees."""
    path = str(tmp_path / ".tmp-lock-x")
    first = try_lock(path)
    assert first is not None
    got = []
    waiter = threading.Thread(target=lambda: got.append(try_lock(path, wait=True)))
    waiter.start()
    time.sleep(0.3)  # the waiter has opened the file and blocks in flock
    first.release()
    waiter.join(5)
    (second,) = got
    assert second is not None and second.held
    # (Without starting over it would hold the removed file, and no file would be at the path.)
    assert os.stat(path).st_ino == os.fstat(second._fd).st_ino
    assert try_lock(path) is None
    second.release()


@pytest_twisted.ensureDeferred
async def test_acquire_waits_without_blocking_the_reactor(tmp_path):
    """A busy lock is polled on the reactor: other work goes on meanwhile, the
    wait is reported once, and the lock is taken soon after its holder lets go."""
    path = str(tmp_path / ".tmp-lock-x")
    held = try_lock(path)
    reports = []
    waiting: Deferred = Deferred.fromCoroutine(
        Locks(reactor).acquire(path, lambda: reports.append("busy"))
    )
    for _ in range(10):
        await deferLater(reactor, 0.01, lambda: None)
    assert not waiting.called and reports == ["busy"]
    held.release()
    mine = await waiting.addTimeout(5, reactor)
    assert mine.held and os.path.exists(path)
    mine.release()
