"""
The reactor thread of a daemon profiled during one cold ``uv pip install``::

    python bench/coldprof.py /tmp/new.prof
    python bench/coldprof.py /tmp/base.prof --source /tmp/base
    python bench/coldprof.py - --source /tmp/base     # no profile: CPU only

Builds ``cold.py``'s upstream (31 distributions, ``bench-root`` needing the
3,000-file ``bench-many``) under ``--work``, serves it with nginx, starts
``twistd -n pypicache --prefetch-depth=0`` (from ``--source``, default this
checkout) through this script in its ``--as-twistd`` mode, which profiles
the main thread (the reactor's) with ``cProfile`` on the thread's own CPU
clock (``time.thread_time``) between two ``SIGUSR2``: sent just before and
just after the install, so start-up is left out. Prints the install's time
and the daemon's CPU seconds during it; the profile goes to the first
argument (``pstats``). Profiles of two trees taken in turn compare well on
a loaded machine: the call counts do not depend on the load, the
proportions little.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import shutil
import signal
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def as_twistd() -> None:
    """Run twistd (arguments after ``--as-twistd``), profiling the reactor's
    thread between the first and second ``SIGUSR2`` into ``$COLDPROF_OUT``."""
    profile = cProfile.Profile(time.thread_time)
    state = {"on": False}

    def toggle(*_: object) -> None:
        if not state["on"]:
            state["on"] = True
            profile.enable()
        else:
            profile.disable()
            state["on"] = False
            profile.dump_stats(os.environ["COLDPROF_OUT"])

    signal.signal(signal.SIGUSR2, toggle)
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", *sys.argv[2:]]
    run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="where the profile goes; - for none")
    parser.add_argument("--source", default=str(BENCH.parent))
    parser.add_argument("--work", default="/tmp/pypicache-coldprof")
    args = parser.parse_args()
    sys.path.insert(0, str(BENCH))
    import clients
    import procs
    import servers
    import synthetic
    from run import sizes

    procs.twistd_command = lambda: [sys.executable, __file__, "--as-twistd"]
    work = Path(args.work).resolve()
    runs = work / "run"
    cfg = {**sizes(False), "big_bytes": 1 << 20, "medium_bytes": 1 << 20}
    synthetic.build(work / "upstream-cold", cfg)
    upstream = servers.start_nginx(work / "upstream-cold", runs / "nginx")
    try:
        scratch = runs / "clients"
        clients.uv_install(upstream.index_url, "bench-root", scratch / "warm-up")
        folder = runs / "daemon"
        if folder.exists():
            shutil.rmtree(folder)
        env = {
            **os.environ,
            "PYTHONPATH": str(Path(args.source).resolve()),
            "COLDPROF_OUT": os.path.abspath(args.out),
        }
        daemon = servers.start_pypicache(
            folder / "cache",
            upstream.index_url,
            folder,
            ["--prefetch-depth=0"],
            env=env,
        )
        try:
            time.sleep(1.5)  # what waits for the first answer has run
            pid = daemon.pids[0]
            if args.out != "-":
                os.kill(pid, signal.SIGUSR2)
            time.sleep(0.1)
            before = daemon.cpu()
            seconds, got = clients.uv_install(
                daemon.index_url, "bench-root", scratch / "c"
            )
            used = daemon.cpu() - before
            if args.out != "-":
                os.kill(pid, signal.SIGUSR2)
                time.sleep(1.0)
            print(
                f"{args.source}: install {seconds:.2f} s, {got} distributions, "
                f"daemon CPU during it {used:.3f} s",
                flush=True,
            )
        finally:
            daemon.stop()
    finally:
        upstream.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--as-twistd"]:
        as_twistd()
    else:
        main()
