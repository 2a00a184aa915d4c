"""
Benchmark pypicache side by side with nginx (the limit) and its peers, with real
processes on 127.0.0.1::

    python bench/run.py                          # full size, peers proxpi and devpi
    python bench/run.py --quick                  # smoke run: small sizes, short loads
    python bench/run.py --peers proxpi --quick   # one peer; --peers none: no peer
    python bench/run.py --only ui                # one measure alone: the UI's page
    python bench/run.py --only startup --runs 5  # start-up alone, beside twistd web

It builds a synthetic upstream in ``bench/work/`` (``synthetic.py``: wheels,
sdists and pre-rendered PEP 503/691 pages; kept and reused), serves it with
nginx (``servers.py``), and runs the same workload against each subject:

- nginx itself, serving the upstream's files directly: the limit;
- pypicache (``twistd -n pypicache``) with that nginx as its upstream;
- the peers (``peers.py``): proxpi under gunicorn and devpi-server as a mirror
  of the same upstream, each installed by the bench into its own venv.

It prints one table (absolute figures, ``x nginx`` and ``x best peer``) and
writes ``bench/work/results.json`` (``results-quick.json`` for ``--quick``).
Every process it starts is stopped on exit, Ctrl-C and errors included.  See
docs/benchmark.rst for what each figure is.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import clients
import peers
import procs
import report
import servers
import synthetic
from measures import Measures
from procs import HOST, MB
from servers import Running

START = time.perf_counter()


def sizes(quick: bool) -> dict[str, Any]:
    """What to build and how long to load, for a full or a quick run."""
    return {
        "mode": "quick" if quick else "full",
        "tree_projects": 10 if quick else 30,
        "tree_versions": ["1.0", "1.1", "2.0"],
        "many_files": 300 if quick else 3000,
        "big_bytes": (30 if quick else 300) * MB,
        "medium_bytes": (4 if quick else 32) * MB,
        "load_seconds": 1.0 if quick else 5.0,
        "connections": 32,
        "install_runs": 1,
        "warm_file_runs": 1 if quick else 3,
        "cache_files": [1000, 10000] if quick else [10000, 100000],
        "delay_ms": 20,
    }


class Bench(Measures):
    """One run: the upstream, its delaying proxy, and the results of each subject."""

    def __init__(self, args: argparse.Namespace, results: dict[str, Any]) -> None:
        self.cfg = sizes(args.quick)
        if args.seconds is not None:
            self.cfg["load_seconds"] = args.seconds
        if args.runs is not None:
            self.cfg["install_runs"] = args.runs
        self.work = Path(args.work).resolve()
        self.daemon_args: list[str] = args.daemon_arg
        self.runs = self.work / "run"
        self.results = results
        self.notes: list[str] = results.setdefault("notes", [])

    def setup(
        self, wanted_peers: list[str]
    ) -> list[tuple[str, str, Callable[[str, str], Running]]]:
        """Build and start the upstream; return the subjects: (name, version, start)."""
        self.work.mkdir(parents=True, exist_ok=True)
        if self.runs.exists():
            shutil.rmtree(self.runs)
        self.runs.mkdir()
        self.manifest = synthetic.build(
            self.work / f"upstream-{self.cfg['mode']}", self.cfg
        )
        root = self.work / f"upstream-{self.cfg['mode']}"
        if not clients.have_wrk():
            self.note(
                "wrk is not installed (apt-get install -y wrk): request rates come from the bench's own Python client, which is slower than the servers it measures"
            )
        subjects: list[tuple[str, str, Callable[[str, str], Running]]] = []
        missing = servers.nginx_note()
        if missing is None:
            self.upstream = servers.start_nginx(root, self.runs / "nginx")
            self.upstream.owned = False
            subjects.append(
                ("nginx", servers.versions().get("nginx", "?"), self.nginx_view)
            )
        else:
            self.note(
                missing
                + "; the upstream is bench/upstream.py (FakeIndex) instead, whose"
                " absolute file URLs go around the delaying proxy (only pages are delayed)"
            )
            process, port = procs.start_upstream(
                root / "files", self.runs / "upstream.log"
            )
            base = f"http://{HOST}:{port}"
            self.upstream = Running(
                "fakeindex",
                base,
                base + "/simple/",
                "/simple/{project}/",
                [process],
                owned=False,
            )
        self.up_port = int(self.upstream.base.rsplit(":", 1)[1])
        process, far_port = procs.start_announcing(
            [
                sys.executable,
                str(BENCH / "delay.py"),
                str(self.up_port),
                str(self.cfg["delay_ms"]),
            ],
            self.runs / "delay.log",
        )
        self.far_url = f"http://{HOST}:{far_port}/simple/"
        print(
            f"Upstream {self.upstream.index_url}; {self.cfg['delay_ms']} ms away: {self.far_url}",
            flush=True,
        )
        # One untimed install of each kind warms the OS caches of pip and uv themselves.
        warm = self.runs / "clients" / "warm-up"
        clients.pip_install(self.upstream.index_url, "bench-root", warm)
        clients.uv_install(self.upstream.index_url, "bench-root", warm)
        subjects.append(("pypicache", _pypicache_version(), self.pypicache_fresh))
        for name in wanted_peers:
            venv, version = peers.install(name, self.work)
            if venv is None:
                self.note(f"{name} skipped: {version}")
                continue
            subjects.append((name, version, peers.Starter(name, venv, self.runs)))
        return subjects

    def nginx_view(self, upstream: str, tag: str) -> Running:
        """nginx "fresh": the upstream itself (or, far, through the delaying proxy)."""
        base = upstream.rsplit("/simple/", 1)[0]
        return Running(
            "nginx",
            base,
            upstream,
            "/simple/{project}/",
            self.upstream.processes,
            owned=False,
        )

    def pypicache_fresh(self, upstream: str, tag: str) -> Running:
        folder = self.runs / f"pypicache-{tag}"
        return servers.start_pypicache(
            folder / "cache", upstream, folder, extra_args=self.daemon_args
        )

    # -- measures ------------------------------------------------------------------


def _pypicache_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pypicache")
    except PackageNotFoundError:
        return "?"


def _context(bench: Bench) -> dict[str, Any]:
    """What the results say of the run before any measure."""
    return {
        "mode": bench.cfg["mode"],
        "machine": procs.machine(),
        "tools": servers.versions(),
        "config": bench.cfg,
        "load_average_start": os.getloadavg(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "subjects": {},
    }


def run(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Run every measurement, filling ``results`` as it goes (kept if a step fails)."""
    wanted = (
        []
        if args.peers in ("", "none")
        else [p.strip() for p in args.peers.split(",") if p.strip()]
    )
    unknown = [p for p in wanted if p not in peers.KNOWN]
    if unknown:
        sys.exit(f"unknown peer(s) {unknown}; known: {', '.join(peers.KNOWN)}")
    bench = Bench(args, results)
    results.update(_context(bench))
    subjects = bench.setup(wanted)
    results["build_seconds"] = bench.manifest["build_seconds"]
    for name, version, start in subjects:
        print(f"{name} {version}:", flush=True)
        t0 = time.perf_counter()
        try:
            figures = bench.measure(name, start)
        except Exception as e:  # noqa: BLE001 (a subject that does not start)
            bench.note(f"{name} skipped: {e.__class__.__name__}: {str(e)[:300]}")
            continue
        finally:
            if isinstance(start, peers.Starter):
                start.close()
        figures["version"] = version
        figures["seconds"] = round(time.perf_counter() - t0, 1)
        results["subjects"][name] = figures
    print("pypicache start-up with many files in the cache:", flush=True)
    if "pypicache" in results["subjects"]:
        pypicache = results["subjects"]["pypicache"]
        pypicache["startup_cached"] = bench.startup()
        if pypicache.get("startup_empty"):
            pypicache["startup_cached"]["empty_x_twistd_web"] = round(
                pypicache["startup_empty"] / pypicache["startup_cached"]["twistd_web"],
                2,
            )
        results["subjects"]["pypicache"]["single_flight"] = bench.single_flight()
    print("pypicache web interface, project page of many files:", flush=True)
    if "pypicache" in results["subjects"]:
        results["subjects"]["pypicache"]["ui_pages"] = bench.ui_pages()
    results["load_average_end"] = os.getloadavg()
    results["seconds"] = round(time.perf_counter() - START, 1)


def run_only(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """``--only ui`` or ``--only startup``: one measure of pypicache alone (no
    upstream, no peers)."""
    bench = Bench(args, results)
    bench.runs.mkdir(parents=True, exist_ok=True)
    results.update(_context(bench))
    pypicache = results["subjects"]["pypicache"] = {"version": _pypicache_version()}
    if args.only == "startup":
        # No upstream: nothing the start-up measure asks for reaches it.
        dead = f"http://{HOST}:9/simple/"
        bench.upstream = Running("none", dead, dead, "/simple/{project}/")
        print(
            f"pypicache start-up, {bench.cfg['install_runs']} round(s), each start beside one of twistd web:",
            flush=True,
        )
        startup = bench.startup(empty=True, rounds=bench.cfg["install_runs"])
        pypicache["startup_cached"] = startup
        pypicache["startup_empty"] = startup["empty"]
    else:
        print("pypicache web interface, project page of many files:", flush=True)
        pypicache["ui_pages"] = bench.ui_pages()
    results["load_average_end"] = os.getloadavg()
    results["seconds"] = round(time.perf_counter() - START, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and short loads (a smoke run)"
    )
    parser.add_argument(
        "--work", default=str(BENCH / "work"), help="work folder (default bench/work)"
    )
    parser.add_argument(
        "--peers",
        default="proxpi,devpi",
        help="peers to compare with, comma-separated, or none (default proxpi,devpi)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        help="seconds of load per request-rate figure (default 5, 1 with --quick)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        help="installs of each kind (with --only startup: starts of each kind), "
        "median taken (default 1)",
    )
    parser.add_argument(
        "--daemon-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for the measured twistd pypicache, e.g. "
        "--daemon-arg=--access-log=access.log (repeatable; not for the start-up "
        "and single-flight measures)",
    )
    parser.add_argument(
        "--only",
        choices=["ui", "startup"],
        help="run one measure alone (no upstream, no peers; written to "
        "results-<measure>.json): ui, the web interface's project page of "
        "3,000 files rendered on the server; startup, pypicache's start-up to "
        "its first answer on an empty cache and on caches of many files, each "
        "start beside one of twistd -n web (Twisted's own floor), --runs "
        "rounds",
    )
    args = parser.parse_args()
    atexit.register(procs.stop_all)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, procs.on_signal)
    # A --quick run keeps its own file, so it never overwrites the full figures.
    out = Path(args.work).resolve() / (
        f"results{'-' + args.only if args.only else ''}"
        f"{'-quick' if args.quick else ''}.json"
    )
    results: dict[str, Any] = {}
    try:
        (run_only if args.only else run)(args, results)
    except BaseException as e:
        procs.stop_all()
        results["error"] = f"{e.__class__.__name__}: {e}"
        results["seconds"] = round(time.perf_counter() - START, 1)
        partial = out.with_name(out.stem + "-partial.json")
        if len(results) > 2:
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(results, indent=2) + "\n")
        if isinstance(e, KeyboardInterrupt):
            print(
                f"\nInterrupted; processes stopped; partial results in {partial}",
                file=sys.stderr,
            )
            sys.exit(130)
        if isinstance(e, SystemExit):
            raise
        print(
            f"\nFAILED; processes stopped; partial results in {partial}",
            file=sys.stderr,
        )
        raise
    finally:
        procs.stop_all()
    out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(report.table(results))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
