"""
pypicache's footprint: start-up to first answer, idle RSS, and RSS after
serving every project of a large cache (not run in CI)::

    python bench/footprint.py                      # 100,000 files (10,000 projects), 5 runs
    python bench/footprint.py --files 10000 --runs 3
    python bench/footprint.py --source /tmp/old --source .   # A/B of two source trees
    python bench/footprint.py --work /tmp/fp        # its cache and runs elsewhere

For each run and each ``--source`` (a folder with a ``pypicache`` package and
its ``twisted/plugins``, put first on the daemon's ``PYTHONPATH``; default: this
repository), in turn, so that both see the same machine:

1. ``twistd -n pypicache`` on an empty cache: seconds from spawn to the first
   200 answer to ``/health``, and the CPU seconds the daemon had used by then
   (``/proc/<pid>/stat``: steadier than the wall clock on a busy machine);
2. the same on ``bench/work/cache-<N>/`` (``cachetree.py``: N files, ten a
   project), then one page of a private project
   (``/simple/<project>/``, which needs no upstream); then the daemon's
   ``VmRSS`` (``/proc/<pid>/status``): the idle RSS;
3. the ``/local/<project>/`` page of every project in the cache, one after the
   other on one keep-alive connection (HTML and JSON alternately), then
   ``/simple/`` (the list of all of them); then ``VmRSS`` and ``VmHWM`` (its
   peak): the RSS after serving every project.

The upstream is a closed port on 127.0.0.1: nothing of this asks it anything.
Prints one line per run and the medians, and writes ``footprint.json`` into
``--work`` (default ``bench/work/``).
See docs/benchmark.rst, "Footprint".
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import json
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import procs  # noqa: I001 (first: it puts the repository on sys.path)
import cachetree
from procs import ACCEPT_HTML, ACCEPT_JSON, HOST

#: Nothing listens here: a daemon that asked its upstream would fail loudly.
NO_UPSTREAM = f"http://{HOST}:9/simple/"


def _get(conn: http.client.HTTPConnection, path: str, accept: str) -> int:
    conn.request("GET", path, headers={"Accept": accept})
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
    return len(body)


def _start(source: Path, cache: Path, folder: Path) -> tuple[Any, int, float, float]:
    """The daemon, its port, and the seconds and CPU seconds it took to answer."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(source)}
    process, port, seconds = procs.start_daemon_timed(
        cache, NO_UPSTREAM, folder / "daemon.log", env=env
    )
    return process, port, seconds, procs.cpu_seconds(process.pid)


def one_run(source: Path, cache: Path, projects: int, folder: Path) -> dict[str, Any]:
    """The three steps above on ``source``; the figures of this run."""
    out: dict[str, Any] = {}
    empty = folder / "empty-cache"
    shutil.rmtree(empty, ignore_errors=True)
    process, _, seconds, cpu = _start(source, empty, folder / "empty")
    procs.stop(process)
    out["startup_empty_s"] = round(seconds, 3)
    out["startup_empty_cpu_s"] = round(cpu, 2)

    process, port, seconds, cpu = _start(source, cache, folder / "cached")
    try:
        out["startup_cached_s"] = round(seconds, 3)
        out["startup_cached_cpu_s"] = round(cpu, 2)
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        _get(conn, f"/simple/{cachetree.PRIVATE_PROJECT}/", ACCEPT_HTML)
        out["rss_idle_mb"] = round(procs.proc_status(process.pid)["VmRSS"] / 1024, 1)
        started = time.perf_counter()
        for i in range(projects):
            accept = ACCEPT_JSON if i % 2 else ACCEPT_HTML
            _get(conn, f"/local/{cachetree.project_name(i)}/", accept)
        _get(conn, "/simple/", ACCEPT_JSON)
        out["serve_all_s"] = round(time.perf_counter() - started, 1)
        status = procs.proc_status(process.pid)
        out["rss_after_projects_mb"] = round(status["VmRSS"] / 1024, 1)
        out["rss_peak_mb"] = round(status["VmHWM"] / 1024, 1)
        conn.close()
    finally:
        procs.stop(process)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000, help="files in the cache")
    parser.add_argument("--runs", type=int, default=5, help="runs per source (medians)")
    parser.add_argument(
        "--work",
        type=Path,
        default=procs.ROOT / "bench" / "work",
        help="folder of the cache and the runs (default: bench/work)",
    )
    parser.add_argument(
        "--source",
        action="append",
        type=Path,
        help="a source tree to measure (repeatable; default: this repository)",
    )
    args = parser.parse_args()
    sources = [s.resolve() for s in args.source or [procs.ROOT]]
    atexit.register(procs.stop_all)
    signal.signal(signal.SIGTERM, procs.on_signal)
    work = args.work.resolve()
    cache = cachetree.build(work / f"cache-{args.files}", args.files)
    projects = (args.files + cachetree.FILES_PER_PROJECT - 1) // cachetree.FILES_PER_PROJECT
    runs: dict[str, list[dict[str, Any]]] = {str(s): [] for s in sources}
    for n in range(args.runs):
        for k, source in enumerate(sources):
            figures = one_run(source, cache, projects, work / "footprint" / f"{k}-{n}")
            runs[str(source)].append(figures)
            print(f"run {n + 1} {source}: {figures}", flush=True)
    medians = {
        source: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for source, results in runs.items()
    }
    print(f"\nMedians of {args.runs} runs, {args.files:,} files ({projects:,} projects):")
    for source, figures in medians.items():
        print(f"  {source}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    result = {"files": args.files, "projects": projects, "runs": runs, "medians": medians}
    (work / "footprint.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
