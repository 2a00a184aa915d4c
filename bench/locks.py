"""Micro-benchmark of the cross-process locks, as the reactor takes them.

Times ``Locks.acquire`` (uncontended: it returns without waiting) and
``release`` of a new lock name per cycle, for ``pypicache/storage/locks.py``
as a git revision has it (``--base``, default ``main``) and as the working
tree has it, in a folder on the filesystem of ``--dir``. With ``--fsync-load``
a child process writes and syncs files in that folder meanwhile (as stores
of downloads and uploads do), which is when a lock that makes and removes a
file waits behind the journal. Prints microseconds per cycle::

    python bench/locks.py
    python bench/locks.py --fsync-load --cycles 20000
"""

import argparse
import hashlib
import importlib.util
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

from twisted.internet.task import Clock

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = "pypicache/storage/locks.py"


def load(name: str, source: str) -> object:
    """The module in ``source`` (text), imported as ``name``."""
    path = os.path.join(tempfile.mkdtemp(prefix="locks-bench-"), name + ".py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def take(locks: object, path: str) -> object:
    """Run ``acquire`` to its end without a reactor (an uncontended lock)."""
    coroutine = locks.acquire(path)
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError(f"{path} is busy")


def cycles(module: object, folder: str, count: int, prefix: str) -> list[int]:
    """Nanoseconds of each acquire and release, a new name each time."""
    os.makedirs(folder, exist_ok=True)
    locks = module.Locks(Clock())
    names = [
        os.path.join(folder, prefix + hashlib.sha256(b"%d" % i).hexdigest()[:40])
        for i in range(count)
    ]
    take(locks, names[0]).release()  # the first makes the folder's table
    times = []
    for path in names:
        start = time.perf_counter_ns()
        take(locks, path).release()
        times.append(time.perf_counter_ns() - start)
    return times


def fsync_load(folder: str) -> None:
    """Write, sync and rename files in ``folder`` until killed."""
    data = os.urandom(256 * 1024)
    for i in range(10**9):
        path = os.path.join(folder, f"load-{i % 8}")
        with open(path + ".tmp", "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)


def report(label: str, times: list[int]) -> None:
    times = sorted(times)

    def at(q: float) -> float:
        return times[min(len(times) - 1, int(q * len(times)))] / 1000

    print(
        f"{label:<28} mean {sum(times) / len(times) / 1000:8.1f}  p50 {at(0.5):8.1f}"
        f"  p99 {at(0.99):8.1f}  p99.9 {at(0.999):8.1f}  max {times[-1] / 1000:9.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="main", help="git revision of 'before'")
    parser.add_argument("--cycles", type=int, default=5000)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--fsync-load", action="store_true")
    options = parser.parse_args()
    old_source = subprocess.run(
        ["git", "-C", HERE, "show", f"{options.base}:{MODULE}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    with open(os.path.join(HERE, MODULE)) as f:
        new_source = f.read()
    before, after = load("locks_before", old_source), load("locks_after", new_source)
    with tempfile.TemporaryDirectory(dir=options.dir) as work:
        load_process = None
        if options.fsync_load:
            load_process = multiprocessing.Process(
                target=fsync_load, args=(work,), daemon=True
            )
            load_process.start()
            time.sleep(0.5)
        try:
            print(f"{options.cycles} cycles of acquire + release, microseconds")
            for _ in range(2):  # interleaved, twice: the load varies
                times = cycles(
                    before, os.path.join(work, "a"), options.cycles, ".tmp-lock-"
                )
                report(f"before ({options.base})", times)
                times = cycles(after, os.path.join(work, "b"), options.cycles, "lock-")
                report("after (working tree)", times)
        finally:
            if load_process is not None:
                load_process.kill()
                load_process.join()


if __name__ == "__main__":
    sys.exit(main())
