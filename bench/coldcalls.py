"""
The reactor's Python calls per cold request, by phase, for two trees::

    python bench/coldcalls.py --source base=/tmp/base --source new=.
    python bench/coldcalls.py --source base=/tmp/base --source new=. --metadata

Builds ``cold.py``'s upstream under ``--work`` (29 small projects), serves it
with nginx, and for each tree starts ``twistd -n pypicache --prefetch-depth=0``
through this script in its ``--as-twistd`` mode, caches the 29 pages, then
fetches 19 cold wheels at once (``--metadata``: their ``.metadata``) while
``sys.setprofile`` counts, on the reactor's thread only, every Python call
and every call of a C function, each under the innermost phase it runs in
(a phase: one of the functions named in ``PHASES``, such as the route, the
store's look-up, the upstream request, the response's writes). Prints the
calls per request of each phase that differs between the trees, and the
totals. The counts depend little on the load (unlike CPU seconds on a
shared host), though timers and revalidations that depend on the time
move them by a few percent from run to run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent

#: (file name, function name) -> phase.
PHASES = {
    ("fastlane.py", "dataReceived"): "lane: arrival",
    ("ready.py", "answer"): "lane: ready answer",
    ("fastlane.py", "_cold_request"): "request: made and processed",
    ("coldlane.py", "render"): "route: cold call",
    ("installer.py", "package"): "route: package",
    ("installer.py", "_package_now"): "route: _now look-up",
    ("views.py", "find"): "route: Views.find",
    ("views.py", "check"): "route: Views.check",
    ("views.py", "check_upstream"): "route: Views.check_upstream",
    ("mirror.py", "download"): "mirror: download",
    ("mirror.py", "describe"): "mirror: describe",
    ("mirror.py", "metadata"): "mirror: metadata",
    ("mirror.py", "_fetch"): "mirror: _fetch",
    ("mirror.py", "_fetch_and_store"): "mirror: _fetch_and_store",
    ("filesystem.py", "open_temp"): "store: open_temp",
    ("filesystem.py", "reread"): "store: reread",
    ("filesystem.py", "open_metadata"): "store: open_metadata",
    ("listed.py", "find_now"): "store: find_now",
    ("locks.py", "acquire"): "locks",
    ("kept.py", "kept_and_own"): "kept_and_own",
    ("kept.py", "persist_download"): "persist_download",
    ("upstream.py", "_request"): "upstream: request",
    ("upstream.py", "read_body"): "upstream: body",
    ("client.py", "request"): "agent: request",
    ("endpoints.py", "connect"): "agent: connect",
    ("_newclient.py", "dataReceived"): "agent: response parsed",
    ("spool.py", "received"): "spool",
    ("growing.py", "_notify"): "download: notify",
    ("files.py", "render_GET"): "answer: render_GET",
    ("files.py", "_pump"): "answer: tail",
    ("server.py", "write"): "answer: Request.write",
    ("server.py", "finish"): "answer: Request.finish",
    ("_logger.py", "emit"): "log",
    ("accesslog.py", "log"): "access log",
    ("concurrency.py", "fire"): "threads: results",
    ("threadpool.py", "callInThreadWithCallback"): "threads: jobs",
    ("tcp.py", "doRead"): "tcp: read",
    ("abstract.py", "doWrite"): "tcp: write",
    ("tcp.py", "connectionLost"): "tcp: closed",
    ("base.py", "runUntilCurrent"): "reactor: timers",
    ("turns.py", "do_poll"): "reactor: poll",
}


def as_twistd() -> None:
    """Run twistd (arguments after ``--as-twistd``), counting the reactor
    thread's calls between two ``SIGUSR2`` into ``$COLDCALLS_OUT`` (JSON)."""
    counts: Counter[str] = Counter()
    stack: list[tuple[object, str]] = []
    phases: dict[object, str] = {}

    def profile(frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "call":
            code = frame.f_code
            phase = phases.get(code)
            if phase is None:
                key = (os.path.basename(code.co_filename), code.co_name)
                phase = phases[code] = PHASES.get(key, "")
            phase = phase or (stack[-1][1] if stack else "other")
            stack.append((frame, phase))
            counts[phase] += 1
        elif event == "return":
            if stack and stack[-1][0] is frame:
                stack.pop()
        elif event == "c_call":
            counts[stack[-1][1] if stack else "other"] += 1

    def toggle(*_: object) -> None:
        if sys.getprofile() is None:
            stack.clear()
            counts.clear()
            sys.setprofile(profile)
        else:
            sys.setprofile(None)
            with open(os.environ["COLDCALLS_OUT"], "w") as f:
                json.dump(dict(counts), f)

    signal.signal(signal.SIGUSR2, toggle)
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", *sys.argv[2:]]
    run()


def count(source: str, upstream: object, runs: Path, metadata: bool) -> Counter[str]:
    """The counts of one tree, per request."""
    import procs
    import servers

    procs.twistd_command = lambda: [sys.executable, __file__, "--as-twistd"]
    folder = runs / "daemon"
    if folder.exists():
        shutil.rmtree(folder)
    out = runs / "counts.json"
    env = {**os.environ, "PYTHONPATH": source, "COLDCALLS_OUT": str(out)}
    index = upstream.index_url  # type: ignore[attr-defined]
    daemon = servers.start_pypicache(
        folder / "cache", index, folder, ["--prefetch-depth=0"], env=env
    )
    base = daemon.index_url.rsplit("/simple/", 1)[0]

    def get(url: str) -> None:
        with urllib.request.urlopen(url) as r:
            r.read()

    try:
        time.sleep(1.0)
        names = [f"bench-dep-{i:02d}" for i in range(10, 29)]
        for name in names:
            get(f"{base}/simple/{name}/")
        time.sleep(0.3)
        suffix = ".metadata" if metadata else ""
        urls = [
            f"{base}/packages/{n}/{n.replace('-', '_')}-2.0-py3-none-any.whl{suffix}"
            for n in names
        ]
        pid = daemon.pids[0]
        os.kill(pid, signal.SIGUSR2)
        time.sleep(0.2)
        threads = [threading.Thread(target=get, args=(u,)) for u in urls]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(0.5)
        os.kill(pid, signal.SIGUSR2)
        time.sleep(0.5)
    finally:
        daemon.stop()
    return Counter({k: v / len(urls) for k, v in json.loads(out.read_text()).items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source", action="append", required=True, help="NAME=PATH (twice)"
    )
    parser.add_argument("--metadata", action="store_true")
    parser.add_argument("--work", default="/tmp/pypicache-coldcalls")
    args = parser.parse_args()
    sys.path.insert(0, str(BENCH))
    import servers
    import synthetic
    from run import sizes

    trees = [s.split("=", 1) for s in args.source]
    work = Path(args.work).resolve()
    cfg = {**sizes(False), "big_bytes": 1 << 20, "medium_bytes": 1 << 20}
    synthetic.build(work / "upstream-cold", cfg)
    upstream = servers.start_nginx(work / "upstream-cold", work / "run" / "nginx")
    try:
        counted = {
            name: count(
                str(Path(path).resolve()), upstream, work / "run", args.metadata
            )
            for name, path in trees
        }
    finally:
        upstream.stop()
    names = [name for name, _ in trees]
    phases = sorted({p for c in counted.values() for p in c})
    print(f"{'calls per request':32}" + "".join(f"{n:>10}" for n in names))
    for phase in phases:
        values = [counted[n][phase] for n in names]
        if max(values) - min(values) >= 2:
            print(f"{phase:32}" + "".join(f"{v:10.0f}" for v in values))
    totals = [sum(counted[n].values()) for n in names]
    print(f"{'total':32}" + "".join(f"{v:10.0f}" for v in totals))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--as-twistd"]:
        as_twistd()
    else:
        main()
