"""
Cold installs, A/B in one run: ``uv pip install`` and ``pip install`` of the
bench tree straight from nginx (direct) and through fresh pypicache daemons
started with different options (by default ``--prefetch-depth=0`` and
``--prefetch-depth=3``), with the upstream on loopback and 20 ms away
(``delay.py``)::

    python bench/cold.py                       # 3 rounds, uv and pip, 0 and 20 ms
    python bench/cold.py --runs 5 --clients uv --delays 20
    python bench/cold.py --variant off=--prefetch-depth=0 --variant d1=--prefetch-depth=1
    python bench/cold.py --variant base= --source base=/tmp/base --variant new=
    python bench/cold.py --clients pip --delays 0 --warm   # each cold install, then warm

``--source NAME=PATH`` runs variant NAME from the source tree at PATH (put
first on its ``PYTHONPATH``, ``twisted/plugins`` included), to compare two
versions of pypicache in one run; the others run the pypicache of this
checkout (``PYTHONPATH`` is this tree).

Every round runs every (client, delay, subject) once, in turn, each
pypicache on a fresh cache and each client with a fresh cache of its own, so
that the machine's load hits every subject alike; the medians are printed, and
every run goes to ``bench/work/cold.json``, with the CPU seconds of each
daemon (from its start to the end of the install). The upstream is ``run.py``'s full
tree (31 distributions, ``bench-root`` needing the 3,000-file ``bench-many``)
without the big files, built in ``bench/work/upstream-cold/``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import clients
import procs
import servers
import synthetic
from run import sizes

TREE = "bench-root"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--clients", default="uv,pip", help="uv, pip or both")
    parser.add_argument(
        "--delays", default="0,20", help="upstream delays in ms (default 0,20)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        metavar="NAME=ARGS",
        help="a pypicache subject: a name and its extra daemon options, "
        "space-separated (default: off=--prefetch-depth=0 and on=--prefetch-depth=3)",
    )
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="run variant NAME from the source tree at PATH (default: this checkout)",
    )
    parser.add_argument(
        "--warm",
        action="store_true",
        help="after each cold install, the same install again on the same daemon "
        "(a fresh client cache): its warm install, printed as subject+warm",
    )
    parser.add_argument("--work", default=str(BENCH / "work"))
    args = parser.parse_args()
    variants = dict(
        v.split("=", 1)
        for v in (args.variant or ["off=--prefetch-depth=0", "on=--prefetch-depth=3"])
    )
    sources = dict(v.split("=", 1) for v in args.source)
    unknown = set(sources) - set(variants)
    if unknown:
        raise SystemExit(f"--source for no --variant: {', '.join(sorted(unknown))}")
    envs = {
        name: {
            **os.environ,
            "PYTHONPATH": str(Path(sources.get(name, BENCH.parent)).resolve()),
        }
        for name in variants
    }
    atexit.register(procs.stop_all)
    signal.signal(signal.SIGTERM, procs.on_signal)
    work = Path(args.work).resolve()
    runs = work / "run-cold"
    cfg = {**sizes(False), "big_bytes": 1 << 20, "medium_bytes": 1 << 20}
    manifest = synthetic.build(work / "upstream-cold", cfg)
    count = cfg["tree_projects"] + 1
    upstream = servers.start_nginx(work / "upstream-cold", runs / "nginx")
    port = int(upstream.base.rsplit(":", 1)[1])
    index = {0: upstream.index_url}
    for delay in {int(d) for d in args.delays.split(",")} - {0}:
        _, far = procs.start_announcing(
            [sys.executable, str(BENCH / "delay.py"), str(port), str(delay)],
            runs / f"delay-{delay}.log",
        )
        index[delay] = f"http://{procs.HOST}:{far}/simple/"
    install = {"uv": clients.uv_install, "pip": clients.pip_install}
    wanted = args.clients.split(",")
    delays = [int(d) for d in args.delays.split(",")]
    scratch = runs / "clients"
    for kind in wanted:  # warm the OS caches of the clients themselves
        install[kind](upstream.index_url, TREE, scratch / "warm-up")
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}  # the daemon's CPU seconds, start-up included
    started = time.perf_counter()
    for n in range(args.runs):
        for kind in wanted:
            for delay in delays:
                for subject in ["direct", *variants]:
                    key = f"{kind} {delay} ms {subject}"
                    warm = None
                    if subject == "direct":
                        seconds, got = install[kind](index[delay], TREE, scratch / "c")
                        if args.warm:
                            warm = install[kind](index[delay], TREE, scratch / "c")
                    else:
                        folder = runs / f"pypicache-{subject}-{n}-{kind}-{delay}"
                        if folder.exists():  # an earlier run's cache is not cold
                            shutil.rmtree(folder)
                        daemon = servers.start_pypicache(
                            folder / "cache",
                            index[delay],
                            folder,
                            variants[subject].split(),
                            env=envs[subject],
                        )
                        try:
                            seconds, got = install[kind](
                                daemon.index_url, TREE, scratch / "c"
                            )
                            cpu.setdefault(key, []).append(daemon.cpu())
                            if args.warm:
                                warm = install[kind](
                                    daemon.index_url, TREE, scratch / "c"
                                )
                                cpu.setdefault(key + "+warm", []).append(
                                    daemon.cpu() - cpu[key][-1]
                                )
                        finally:
                            daemon.stop()
                    if got != count:
                        raise SystemExit(f"{key}: {got} distributions, not {count}")
                    times.setdefault(key, []).append(seconds)
                    print(f"round {n + 1} {key}: {seconds:.2f} s", flush=True)
                    if warm is not None:
                        if warm[1] != count:
                            raise SystemExit(f"{key} warm: {warm[1]} distributions")
                        times.setdefault(key + "+warm", []).append(warm[0])
                        print(f"round {n + 1} {key}+warm: {warm[0]:.2f} s", flush=True)
    print(
        f"\ncold installs of {TREE} ({count} distributions), medians of {args.runs} "
        f"rounds, {time.perf_counter() - started:.0f} s; variants: {variants}"
        f"; sources: {sources or 'this checkout'}"
    )
    for kind in wanted:
        for delay in delays:
            direct = statistics.median(times[f"{kind} {delay} ms direct"])
            row = [f"{kind:3} {delay:2} ms: direct {direct:.2f} s"]
            for subject in variants:
                median = statistics.median(times[f"{kind} {delay} ms {subject}"])
                used = statistics.median(cpu[f"{kind} {delay} ms {subject}"])
                row.append(
                    f"{subject} {median:.2f} s ({median / direct:.2f}x, CPU {used:.2f} s)"
                )
            print("  ".join(row))
            if args.warm:
                direct = statistics.median(times[f"{kind} {delay} ms direct+warm"])
                row = [f"{kind:3} {delay:2} ms warm: direct {direct:.2f} s"]
                for subject in variants:
                    median = statistics.median(
                        times[f"{kind} {delay} ms {subject}+warm"]
                    )
                    used = statistics.median(cpu[f"{kind} {delay} ms {subject}+warm"])
                    row.append(
                        f"{subject} {median:.2f} s ({median / direct:.2f}x, CPU {used:.2f} s)"
                    )
                print("  ".join(row))
    (work / "cold.json").write_text(
        json.dumps(
            {
                "variants": variants,
                "sources": sources,
                "times": times,
                "daemon_cpu": cpu,
                "manifest": manifest["config"],
            }
        )
    )


if __name__ == "__main__":
    main()
