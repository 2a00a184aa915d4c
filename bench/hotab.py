"""
A/B of the hot path: the loads of ``bench/run.py`` (cached pages and a small
wheel under ``wrk``) on two or more pypicache variants and nginx, taken in
turn round after round so that a loaded machine weighs on all of them alike::

    python bench/hotab.py --variant base= --source base=/tmp/base --variant new=
    python bench/hotab.py --variant one= --variant two=--workers=2 --cases small_html_gz,wheel

``--variant NAME=ARGS`` names a pypicache subject and its extra daemon
options (space-separated); ``--source NAME=PATH`` runs it from the source tree
at ``PATH`` (first on its ``PYTHONPATH``), as in ``bench/cold.py``. Each
daemon runs on a fresh cache of the same synthetic upstream (``--quick``
sizes but 3,000 files in ``bench-many``, no big file), served by the bench's
nginx; as in ``bench/run.py``, one ``bench-many`` wheel is stored and its
page built first, then each page and the wheel loaded is fetched once
(the wheel last, so stored last), then each case runs
``wrk -t 2 -c 32`` for ``--seconds`` on every subject in turn. It prints the
medians of req/s and of the server's CPU milliseconds per request (from
``/proc``, children included: steadier than rates on a shared machine), and
writes every figure to ``<work>/hotab.json``.
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
sys.path.insert(0, str(BENCH.parent))

import clients
import procs
import servers
import synthetic
from procs import ACCEPT_HTML, ACCEPT_JSON
from run import sizes

#: Case name to (project or None for the wheel, Accept, Accept-Encoding).
CASES = {
    "small_html_gz": ("bench-root", ACCEPT_HTML, "gzip"),
    "small_html": ("bench-root", ACCEPT_HTML, "identity"),
    "small_json_gz": ("bench-root", ACCEPT_JSON, "gzip"),
    "small_json": ("bench-root", ACCEPT_JSON, "identity"),
    "many_html_gz": ("bench-many", ACCEPT_HTML, "gzip"),
    "many_html": ("bench-many", ACCEPT_HTML, "identity"),
    "many_json_gz": ("bench-many", ACCEPT_JSON, "gzip"),
    "many_json": ("bench-many", ACCEPT_JSON, "identity"),
    "wheel": (None, "", "identity"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/pypicache-hotab")
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--source", action="append", default=[])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--no-nginx", action="store_true", help="leave nginx out")
    parser.add_argument(
        "--big",
        type=int,
        default=0,
        help="MB: a big file downloaded cold, then 3 times warm, right before each "
        "subject's first load (as bench/run.py does before its page loads)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy each daemon's loads of the first round (raw stacks in the work folder)",
    )
    args = parser.parse_args()
    variants = dict(v.split("=", 1) for v in args.variant or ["this="])
    sources = dict(v.split("=", 1) for v in args.source)
    if set(sources) - set(variants):
        raise SystemExit("--source for no --variant")
    cases = args.cases.split(",")
    if set(cases) - set(CASES):
        raise SystemExit(f"cases: {', '.join(CASES)}")
    atexit.register(procs.stop_all)
    signal.signal(signal.SIGTERM, procs.on_signal)
    work = Path(args.work).resolve()
    cfg = {**sizes(True), "many_files": 3000, "big_bytes": max(1, args.big) << 20}
    cfg["medium_bytes"] = 1 << 20
    manifest = synthetic.build(work / "upstream", cfg)
    nginx = servers.start_nginx(work / "upstream", work / "run" / "nginx")
    subjects = {} if args.no_nginx else {"nginx": nginx}
    for name, extra in variants.items():
        env = {
            **os.environ,
            "PYTHONPATH": str(Path(sources.get(name, BENCH.parent)).resolve()),
        }
        folder = work / "run" / name
        cache = folder / "cache"
        if cache.exists():
            shutil.rmtree(cache)
        subjects[name] = servers.start_pypicache(
            cache, nginx.index_url, folder, extra.split(), env=env
        )
    # As in bench/run.py: a bench-many wheel stored (by its install) and the
    # project's page built before the loads; the wheel loaded is stored last.
    newest = sorted(
        p.name
        for p in (work / "upstream" / "files").glob("bench_many-*.whl")
        if p.name != manifest["many_first"]
    )[-1]
    urls = {}
    for name, r in subjects.items():
        if name != "nginx":
            clients.get(r.file_url("bench-many", newest), {})
            clients.get(r.page_url("bench-many"), {"Accept": ACCEPT_JSON})
        for case in cases:
            project, accept, encoding = CASES[case]
            if project is None:
                url = r.file_url("bench-many", manifest["many_first"])
            else:
                url = r.page_url(project)
            headers = {"Accept-Encoding": encoding}
            if accept:
                headers["Accept"] = accept
            status, got, _ = clients.get(url, headers)
            if status != 200:
                raise SystemExit(f"{name}: GET {url}: {status}")
            urls[name, case] = (url, headers)
    time.sleep(2)  # walks started by the first answers
    figures: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for n in range(args.rounds):
        for case in cases:
            for name, r in subjects.items():
                url, headers = urls[name, case]
                if args.big and n == 0 and case == cases[0]:
                    big = r.file_url("bench-big", manifest["big"])
                    for _ in range(4):
                        clients.download(big, hash_it=True)
                spy = None
                if args.profile and n == 0 and name != "nginx":
                    spy = procs.spawn(
                        ["py-spy", "record", "-r", "500", "--nonblocking", "-f", "raw"]
                        + ["-d", str(args.seconds), "-p", str(r.pids[0])]
                        + ["-o", str(work / f"prof-{name}-{case}.txt")],
                        work / f"prof-{name}-{case}.log",
                    )
                procs.wait_idle(r.pids)
                cpu0 = r.cpu()
                got = clients.load(url, headers, 32, args.seconds)
                cpu = r.cpu() - cpu0
                if spy is not None:
                    spy.wait(30)
                per = 1000 * cpu / got["requests"] if got["requests"] else 0.0
                figures.setdefault(case, {}).setdefault(name, []).append(
                    (got["requests_per_s"], per)
                )
                print(
                    f"round {n + 1} {case:14} {name:8} {got['requests_per_s']:9,.0f} req/s"
                    f"  {per:.3f} CPU ms/req  errors {got['errors']}",
                    flush=True,
                )
    names = list(subjects)
    print(f"\nmedians of {args.rounds} rounds, req/s (CPU ms per request)")
    print(f"{'case':14}" + "".join(f"{n:>22}" for n in names))
    for case in cases:
        row = f"{case:14}"
        for name in names:
            runs = figures[case][name]
            rate = statistics.median(r for r, _ in runs)
            per = statistics.median(c for _, c in runs)
            row += f"{rate:>13,.0f} ({per:.3f})"
        print(row)
    (work / "hotab.json").write_text(
        json.dumps({"variants": variants, "sources": sources, "figures": figures})
    )


if __name__ == "__main__":
    main()
