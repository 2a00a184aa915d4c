"""
A large file cold through pypicache, A/B in one run: the 300 MB wheel of
``run.py`` straight from nginx (direct) and through fresh pypicache daemons
of different source trees, each round in turn, each daemon on an empty cache
(the client reads as fast as it can and checks the sha256)::

    python bench/coldbig.py --runs 3 --work /tmp/coldbig
    python bench/coldbig.py --source base=/tmp/base --work /tmp/coldbig

``--source NAME=PATH`` adds a subject run from the source tree at PATH (put
first on its ``PYTHONPATH``); ``new`` is this checkout. Prints MB/s per run,
the medians and the ratios to direct, and the daemon's CPU seconds during
the download.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import os
import shutil
import signal
import statistics
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import clients
import procs
import servers
import synthetic

MB = 1024 * 1024


def build(root: Path, size: int) -> tuple[str, str]:
    """An upstream of one project, ``bench-big``, with one wheel of ``size``
    bytes (kept between runs); its file name and sha256."""
    files = root / "files"
    wheels = list(files.glob("bench_big-*.whl")) if files.exists() else []
    if not wheels or wheels[0].stat().st_size < size:
        shutil.rmtree(root, ignore_errors=True)
        files.mkdir(parents=True)
        wheels = [synthetic.build_big_wheel(files, "bench-big", "1.0", size)]
    wheel = wheels[0]
    digest = hashlib.sha256()
    with open(wheel, "rb") as f:
        while chunk := f.read(MB):
            digest.update(chunk)
    sha = digest.hexdigest()
    page = root / "simple" / "bench-big"
    page.mkdir(parents=True, exist_ok=True)
    url = f"../../files/{wheel.name}"
    (page / "index.html").write_text(
        f'<!DOCTYPE html><html><body><a href="{url}#sha256={sha}">{wheel.name}</a></body></html>\n'
    )
    (page / "index.json").write_text(
        json.dumps(
            {
                "meta": {"api-version": "1.1"},
                "name": "bench-big",
                "files": [
                    {
                        "filename": wheel.name,
                        "url": url,
                        "hashes": {"sha256": sha},
                        "size": wheel.stat().st_size,
                    }
                ],
                "versions": ["1.0"],
            }
        )
    )
    (root / "simple" / "index.html").write_text(
        '<html><body><a href="bench-big/">bench-big</a></body></html>\n'
    )
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return wheel.name, sha


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--mb", type=int, default=300, help="file size (default 300)")
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="another subject, run from the source tree at PATH",
    )
    parser.add_argument("--work", default=str(BENCH / "work"))
    args = parser.parse_args()
    atexit.register(procs.stop_all)
    signal.signal(signal.SIGTERM, procs.on_signal)
    work = Path(args.work).resolve()
    subjects = dict(v.split("=", 1) for v in args.source)
    subjects["new"] = str(BENCH.parent)
    name, sha = build(work / "upstream-big", args.mb * MB)
    runs = work / "run-coldbig"
    upstream = servers.start_nginx(work / "upstream-big", runs / "nginx")
    direct_url = f"{upstream.base}/files/{name}"
    clients.download(direct_url)  # the file into the page cache
    speeds: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for n in range(args.runs):
        got = clients.download(direct_url, hash_it=True)
        speeds.setdefault("direct", []).append(got["mb_per_s"])
        print(f"round {n + 1} direct: {got['mb_per_s']:.0f} MB/s", flush=True)
        for subject, source in subjects.items():
            folder = runs / f"{subject}-{n}"
            shutil.rmtree(folder, ignore_errors=True)
            daemon = servers.start_pypicache(
                folder / "cache",
                upstream.index_url,
                folder,
                env={**os.environ, "PYTHONPATH": str(Path(source).resolve())},
            )
            try:
                before = daemon.cpu()
                got = clients.download(
                    f"{daemon.base}/packages/bench-big/{name}", hash_it=True
                )
                cpu.setdefault(subject, []).append(daemon.cpu() - before)
            finally:
                daemon.stop()
                shutil.rmtree(folder / "cache", ignore_errors=True)
            if got["status"] != 200 or got["sha256"] != sha:
                raise SystemExit(f"{subject}: {got}")
            speeds.setdefault(subject, []).append(got["mb_per_s"])
            print(
                f"round {n + 1} {subject}: {got['mb_per_s']:.0f} MB/s "
                f"(CPU {cpu[subject][-1]:.2f} s)",
                flush=True,
            )
    direct = statistics.median(speeds["direct"])
    row = [f"{args.mb} MB cold, medians of {args.runs}: direct {direct:.0f} MB/s"]
    for subject in subjects:
        median = statistics.median(speeds[subject])
        row.append(
            f"{subject} {median:.0f} MB/s ({median / direct:.2f}x, "
            f"CPU {statistics.median(cpu[subject]):.2f} s)"
        )
    print("\n" + "  ".join(row))


if __name__ == "__main__":
    main()
