"""
A warm ``pip install``'s requests, replayed per kind, A/B: where pypicache adds
time over nginx on a warm install, request by request::

    python bench/replay.py --rounds 12 --variant base= --source base=/tmp/base --variant new=
    python bench/replay.py --rounds 6 --delay 20 --variant new=

Each variant is a pypicache daemon (``--variant NAME=ARGS``, ``--source
NAME=PATH`` as in ``cold.py``) on a fresh cache of ``cold.py``'s upstream,
made warm by one cold ``pip install`` of the bench tree and one warm one,
whose requests (from the daemon's access log, in pip's order) are the
replay. Then, round after round, every subject in turn (nginx "direct", then
each daemon) answers those requests, sent as pip sends them: pip's own
vendored ``requests`` on one keep-alive connection, pages with pip's
``Accept`` and ``Cache-Control: max-age=0`` and gzip, files with
``Accept-Encoding: identity``. It prints, per subject, the medians over the
rounds of the replay's wall time, of each kind's sum and fastest answer
(``page``, ``metadata``, ``wheel``), of the daemon's CPU per replay, and of
the client's CPU to read the answers as pip does (the pages' JSON parsed
into pip's links). With ``--delay MS`` the daemons' upstream (and
"direct") is ``delay.py`` ``MS`` away; it also counts the upstream requests
the daemons made during the warm install and the replays (``Fetching``
lines of their logs): a warm install within the page TTL makes none.

``--cold`` replays on a fresh daemon (empty cache) each round instead: the
cold requests, one at a time as pip makes them (``--variant
off=--prefetch-depth=0`` to time them without prefetch); ``--gap MS`` waits
that long between two requests (pip's own work between them, which
prefetch uses)::

    python bench/replay.py --cold --rounds 6 --variant base=--prefetch-depth=0 \
        --source base=/tmp/base --variant new=--prefetch-depth=0
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
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
from pip._internal.models.link import Link
from pip._internal.network.session import user_agent
from pip._vendor import requests
from run import sizes

TREE = "bench-root"
PAGE_HEADERS = {
    "Accept": procs.ACCEPT_JSON,
    "Cache-Control": "max-age=0",
}
FILE_HEADERS = {"Accept-Encoding": "identity"}
_LINE = re.compile(r'"GET (/\S*) HTTP/1\.1" 200 ')


def kind_of(path: str) -> str:
    if path.endswith(".metadata"):
        return "metadata"
    return "page" if path.endswith("/") else "wheel"


def parse_page(body: bytes, url: str) -> int:
    """What pip does with a JSON page: its links (``Link.from_json``)."""
    import json

    data = json.loads(body)
    links = [Link.from_json(f, url) for f in data.get("files", [])]
    return sum(1 for link in links if link is not None)


class Replay:
    def __init__(self, base: str, paths: list[str], gap: float = 0.0) -> None:
        self.base = base
        self.gap = gap
        self.paths = paths
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent()

    def once(self) -> dict[str, list[float]]:
        """Every request once; seconds per kind, and the client's CPU seconds
        spent reading the answers as pip does (``client``)."""
        got: dict[str, list[float]] = {"page": [], "metadata": [], "wheel": []}
        parse = 0.0
        for path in self.paths:
            kind = kind_of(path)
            url = self.base + path
            started = time.perf_counter()
            response = self.session.get(
                url, headers=PAGE_HEADERS if kind == "page" else FILE_HEADERS
            )
            body = response.content
            got[kind].append(time.perf_counter() - started)
            if self.gap:
                time.sleep(self.gap)
            if response.status_code != 200:
                raise SystemExit(f"{url}: {response.status_code}")
            if kind == "page":
                cpu = time.process_time()
                parse_page(body, response.url)
                parse += time.process_time() - cpu
        got["client"] = [parse]
        return got


def fetches(log: Path, since: int) -> int:
    """The upstream requests a daemon logged after byte ``since`` of its log."""
    with log.open("rb") as f:
        f.seek(since)
        return sum(1 for line in f if b"Fetching " in line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--delay", type=int, default=0, help="upstream ms away")
    parser.add_argument("--variant", action="append", metavar="NAME=ARGS")
    parser.add_argument("--source", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="replay on a fresh daemon (empty cache) each round: the cold requests",
    )
    parser.add_argument(
        "--gap",
        type=float,
        default=0.0,
        help="milliseconds between two requests (pip's own work between them)",
    )
    parser.add_argument("--work", default=str(BENCH / "work"))
    args = parser.parse_args()
    variants = dict(v.split("=", 1) for v in (args.variant or ["pypicache="]))
    sources = dict(v.split("=", 1) for v in args.source)
    atexit.register(procs.stop_all)
    signal.signal(signal.SIGTERM, procs.on_signal)
    work = Path(args.work).resolve()
    runs = work / "run-replay"
    cfg = {**sizes(False), "big_bytes": 1 << 20, "medium_bytes": 1 << 20}
    synthetic.build(work / "upstream-cold", cfg)
    upstream = servers.start_nginx(work / "upstream-cold", runs / "nginx")
    index = upstream.index_url
    direct_base = upstream.base
    if args.delay:
        port = int(upstream.base.rsplit(":", 1)[1])
        _, far = procs.start_announcing(
            [sys.executable, str(BENCH / "delay.py"), str(port), str(args.delay)],
            runs / "delay.log",
        )
        index = f"http://{procs.HOST}:{far}/simple/"
        direct_base = (
            f"http://{procs.HOST}:{far}"  # direct: as far as the daemons' upstream
        )
    scratch = runs / "clients"
    daemons = {}
    paths: list[str] = []
    marks = {}
    envs = {
        name: {
            **os.environ,
            "PYTHONPATH": str(Path(sources.get(name, BENCH.parent)).resolve()),
        }
        for name in variants
    }
    for name, extra in variants.items():
        env = envs[name]
        folder = runs / f"pypicache-{name}"
        daemon = servers.start_pypicache(
            folder / "cache", index, folder, extra.split(), env=env
        )
        daemons[name] = daemon
        clients.pip_install(daemon.index_url, TREE, scratch / "c")  # cold
        log = folder / "daemon.log"
        mark = log.stat().st_size
        seconds, _ = clients.pip_install(daemon.index_url, TREE, scratch / "c")
        marks[name] = mark
        print(
            f"{name}: warm install {seconds:.2f} s, upstream requests during it:"
            f" {fetches(log, mark)}",
            flush=True,
        )
        if not paths:
            with log.open("rb") as f:
                f.seek(mark)
                text = f.read().decode("utf-8", "replace")
            paths = [p for p in _LINE.findall(text) if p != "/health"]
    counts = {
        k: sum(1 for p in paths if kind_of(p) == k)
        for k in ("page", "metadata", "wheel")
    }
    print(f"replaying {len(paths)} requests: {counts}", flush=True)
    # nginx's paths: the same pages; the files under /files/ as its pages link them.
    direct_paths = [
        p if kind_of(p) == "page" else "/files/" + p.rsplit("/", 1)[1] for p in paths
    ]
    gap = args.gap / 1000
    subjects = {"direct": Replay(direct_base, direct_paths, gap)}
    subjects.update({n: Replay(d.base, paths, gap) for n, d in daemons.items()})
    results: dict[str, dict[str, list[float]]] = {s: {} for s in subjects}
    for n in range(args.rounds):
        for name, replay in subjects.items():
            if args.cold and name in daemons:
                daemons[name].stop()
                folder = runs / f"pypicache-{name}-cold"
                if folder.exists():
                    shutil.rmtree(folder)
                daemons[name] = servers.start_pypicache(
                    folder / "cache",
                    index,
                    folder,
                    variants[name].split(),
                    env=envs[name],
                )
                replay = subjects[name] = Replay(daemons[name].base, paths, gap)
            daemon = daemons.get(name)
            before = daemon.cpu() if daemon else 0.0
            started = time.perf_counter()
            got = replay.once()
            wall = time.perf_counter() - started
            row = results[name]
            row.setdefault("wall", []).append(wall)
            if daemon:
                row.setdefault("cpu", []).append(daemon.cpu() - before)
            for kind, seconds in got.items():
                row.setdefault(kind, []).append(sum(seconds))
                if kind != "client":
                    row.setdefault(kind + " min", []).append(min(seconds))
        print(
            f"round {n + 1}: "
            + "  ".join(
                f"{s} {results[s]['wall'][-1] * 1000:.0f} ms" for s in subjects
            ),
            flush=True,
        )
    print(f"\nmedians of {args.rounds} rounds (ms per replay of {len(paths)} requests)")
    for name, row in results.items():
        med = {k: statistics.median(v) * 1000 for k, v in row.items()}
        print(
            f"{name:10} wall {med['wall']:6.0f}  page {med['page']:5.0f} (min {med['page min']:.2f})"
            f"  metadata {med['metadata']:5.0f} (min {med['metadata min']:.2f})"
            f"  wheel {med['wheel']:5.0f} (min {med['wheel min']:.2f})"
            f"  client parse {med['client']:5.0f}"
            + (f"  daemon CPU {med['cpu']:5.0f}" if "cpu" in med else "")
        )
    for name, daemon in daemons.items():
        if args.cold:
            break
        log = runs / f"pypicache-{name}" / "daemon.log"
        print(
            f"{name}: upstream requests since its warm install: {fetches(log, marks[name])}"
        )


if __name__ == "__main__":
    main()
