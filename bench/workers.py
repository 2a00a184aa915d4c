"""
Requests/s and CPU per request of a cached small page with 1 and N workers::

    python bench/workers.py                  # --workers 1 and 2, 3 rounds, 10 s each
    python bench/workers.py --workers 1 2 4 --rounds 2 --seconds 5

One synthetic upstream (``bench/upstream.py``, one small project), then for
each round and each worker count (alternating, so that the machine's other
load spreads over all of them) a fresh ``twistd -n pypicache --workers N``:
the page is fetched once to cache it, then ``wrk`` (``--connections``
keep-alive connections, two threads) asks for it for ``--seconds``. CPU is
user + system time of the twistd process and all its workers (from
``/proc``), so it includes relaying the workers' access log into the one
log (``--access-log``: the daemons write access lines to a file instead,
which nothing relays). Without ``wrk`` the bench's own asyncio client
(``bench/clients.py``) is used, which needs more CPU itself. Prints one line per run and the
median per worker count; see docs/benchmark.rst.
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.clients import get, load
from bench.procs import (
    HOST,
    cpu_seconds,
    descendants,
    start_daemon,
    start_upstream,
    stop,
    stop_all,
)
from tests.packages import build_wheel

PAGE = "/simple/smallpage/"


def tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of the twistd process, and of it with its workers."""
    own = cpu_seconds(pid)
    total = own
    for child in descendants(pid)[1:]:
        try:
            total += cpu_seconds(child)
        except OSError:
            pass
    return own, total


def wait_ready(log: Path, workers: int, timeout: float = 60.0) -> None:
    """Wait until every worker has logged that it is ready."""
    if workers == 1:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = set(re.findall(r"Worker (\d+) ready", log.read_text(errors="replace")))
        if len(ready) == workers:
            return
        time.sleep(0.1)
    raise RuntimeError(f"workers did not start; see {log}")


def measure(
    upstream_url: str,
    work: Path,
    workers: int,
    connections: int,
    seconds: float,
    access_log: bool,
) -> dict[str, float]:
    cache = Path(tempfile.mkdtemp(dir=work, prefix=f"cache-{workers}-"))
    log = work / f"twistd-{workers}.log"
    log.unlink(missing_ok=True)
    extra = ["--workers", str(workers)]
    if access_log:
        extra += ["--access-log", str(work / f"access-{workers}.log")]
    process, port = start_daemon(cache, upstream_url, log, extra_args=extra)
    url = f"http://{HOST}:{port}{PAGE}"
    try:
        wait_ready(log, workers)
        status, _, _ = get(url)
        assert status == 200, status
        for _ in range(20):  # every worker renders it once
            get(url)
        own0, cpu0 = tree_cpu(process.pid)
        wall0 = time.perf_counter()
        result = load(url, {}, connections, seconds)
        wall = time.perf_counter() - wall0
        own1, cpu1 = tree_cpu(process.pid)
    finally:
        stop(process)
        shutil.rmtree(cache, ignore_errors=True)
    requests = float(result["requests"])
    if result["errors"] or not requests:
        raise RuntimeError(f"the load failed: {result}")
    return {
        "workers": workers,
        "rps": float(result["requests_per_s"]),
        "cpu_ms_per_request": 1000 * (cpu1 - cpu0) / requests,
        "parent_ms_per_request": 1000 * (own1 - own0) / requests,
        "cpu_percent": 100 * (cpu1 - cpu0) / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="run the daemons with --access-log (access lines to a file, not relayed)",
    )
    args = parser.parse_args()
    atexit.register(stop_all)
    work = Path(tempfile.mkdtemp(prefix="pypicache-bench-workers-"))
    files = work / "files"
    files.mkdir()
    build_wheel(files, "smallpage", "1.0")
    build_wheel(files, "smallpage", "1.1")
    upstream, upstream_port = start_upstream(files, work / "upstream.log")
    upstream_url = f"http://{HOST}:{upstream_port}/simple/"
    runs: list[dict[str, float]] = []
    try:
        for round in range(args.rounds):
            for workers in args.workers:
                r = measure(
                    upstream_url,
                    work,
                    workers,
                    args.connections,
                    args.seconds,
                    args.access_log,
                )
                runs.append(r)
                print(
                    f"round {round + 1} --workers {workers}: {r['rps']:.0f} req/s, "
                    f"{r['cpu_ms_per_request']:.3f} ms CPU/request "
                    f"(twistd process {r['parent_ms_per_request']:.3f}), "
                    f"{r['cpu_percent']:.0f}% CPU",
                    flush=True,
                )
    finally:
        stop(upstream)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmedians over {args.rounds} rounds, {os.cpu_count()} CPUs:")
    for workers in args.workers:
        mine = [r for r in runs if r["workers"] == workers]
        print(
            f"  --workers {workers}: "
            f"{statistics.median(r['rps'] for r in mine):.0f} req/s, "
            f"{statistics.median(r['cpu_ms_per_request'] for r in mine):.3f} ms CPU/request, "
            f"twistd process {statistics.median(r['parent_ms_per_request'] for r in mine):.3f} ms/request"
        )


if __name__ == "__main__":
    main()
