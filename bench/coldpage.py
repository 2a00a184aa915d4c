"""
A/B of the cold 3,000-file page: the first request for ``bench-many``'s page,
nothing cached, from each pypicache variant in turn, round after round::

    python bench/coldpage.py --work /tmp/cp --variant base= --source base=/tmp/base --variant new=

The upstream is the bench's nginx serving pages shaped as
:mod:`synthetic` writes them (``--files`` entries, each with a sha256,
``size``, ``upload-time`` and ``core-metadata``; JSON and HTML, gzipped
beside them), without the files themselves. Each round starts every variant
on a fresh cache (``--prefetch-depth=0`` unless its arguments say
otherwise), warms it up with a one-file page, asks for the page as ``uv``
does (JSON, gzip), then once more in each other form (JSON plain, HTML
gzip, HTML plain: the render of a cached page), and notes the milliseconds
of each and the daemon's CPU seconds from the first request for the page
to the end. Prints medians and writes every figure to
``<work>/coldpage.json``.

``--stages N`` times each stage of that path instead, in this process with
the ``pypicache`` on ``PYTHONPATH``: CPU milliseconds, median of ``N``
(``render_form``, the render and gzip a thread does, by the wall clock
with ``WALL=1`` in the environment)::

    PYTHONPATH=/tmp/base python bench/coldpage.py --work /tmp/cp --stages 25
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import hashlib
import html
import json
import os
import signal
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import procs
import servers
from procs import ACCEPT_HTML, ACCEPT_JSON
from synthetic import UPLOAD_TIME

FORMS = {
    "json_gz": (ACCEPT_JSON, "gzip"),
    "json": (ACCEPT_JSON, "identity"),
    "html_gz": (ACCEPT_HTML, "gzip"),
    "html": (ACCEPT_HTML, "identity"),
}


def write_pages(root: Path, count: int) -> int:
    """``simple/bench-many/index.{json,html}`` (and ``.gz``) of ``count``
    made-up wheels, as :func:`synthetic.render_pages` shapes them; return
    the JSON page's size."""
    folder = root / "simple" / "bench-many"
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for k in range(count):
        name = f"bench_many-{k // 100}.{k % 100}-py3-none-any.whl"
        digest = {"sha256": hashlib.sha256(b"m" + name.encode()).hexdigest()}
        entries.append(
            {
                "filename": name,
                "url": f"../../files/{name}",
                "hashes": {"sha256": hashlib.sha256(name.encode()).hexdigest()},
                "size": 1000 + k,
                "upload-time": UPLOAD_TIME,
                "core-metadata": digest,
                "data-dist-info-metadata": digest,
            }
        )
    versions = [f"{k // 100}.{k % 100}" for k in range(count)]
    page = {
        "meta": {"api-version": "1.1"},
        "name": "bench-many",
        "files": entries,
        "versions": sorted(versions, key=lambda v: tuple(map(int, v.split(".")))),
    }
    body = json.dumps(page).encode()
    links = []
    for e in entries:
        value = f"sha256={e['core-metadata']['sha256']}"
        href = html.escape(f"{e['url']}#sha256={e['hashes']['sha256']}")
        links.append(
            f'    <a href="{href}" data-dist-info-metadata="{value}" '
            f'data-core-metadata="{value}">{html.escape(e["filename"])}</a><br />\n'
        )
    text = (
        '<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" content="1.1">\n'
        "    <title>Links for bench-many</title>\n  </head>\n  <body>\n"
        f"    <h1>Links for bench-many</h1>\n{''.join(links)}  </body>\n</html>\n"
    )
    for path, data in (
        (folder / "index.json", body),
        (folder / "index.html", text.encode()),
    ):
        path.write_bytes(data)
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data, 6, mtime=0))
    small = root / "simple" / "bench-small"
    small.mkdir(exist_ok=True)
    (small / "index.html").write_text(
        '<html><body><a href="../../files/bench_small-1.0-py3-none-any.whl'
        f'#sha256={"0" * 64}">bench_small-1.0-py3-none-any.whl</a></body></html>\n'
    )
    wheel = "bench_small-1.0-py3-none-any.whl"
    (small / "index.json").write_text(
        json.dumps(
            {
                "meta": {"api-version": "1.1"},
                "name": "bench-small",
                "files": [
                    {
                        "filename": wheel,
                        "url": f"../../files/{wheel}",
                        "hashes": {"sha256": "0" * 64},
                    }
                ],
            }
        )
    )
    (root / "simple" / "index.html").write_text("<html><body></body></html>\n")
    (root / "files").mkdir(exist_ok=True)
    return len(body)


def fetch(url: str, accept: str, encoding: str) -> tuple[float, int]:
    """Milliseconds to fetch ``url`` whole, and the bytes received."""
    request = urllib.request.Request(
        url, headers={"Accept": accept, "Accept-Encoding": encoding}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        data = response.read()
        assert response.status == 200, response.status
    return (time.perf_counter() - started) * 1000, len(data)


def stages(work: Path, count: int, repeat: int) -> None:
    """Print the CPU milliseconds (median of ``repeat``) of each stage of the
    cold page, in this process, with the ``pypicache`` on ``sys.path``."""
    import tempfile

    # bench/procs.py put this checkout first: PYTHONPATH's trees go before it.
    for entry in reversed(os.environ.get("PYTHONPATH", "").split(os.pathsep)):
        if entry:
            sys.path.insert(0, str(Path(entry).resolve()))
    from twisted.python.filepath import FilePath

    import pypicache
    from pypicache.index.simple import HTML_TYPE, JSON_TYPE
    from pypicache.proxy.bodies import read_page
    from pypicache.proxy.merging import advertised, merged
    from pypicache.proxy.rules import Rules
    from pypicache.storage.pagefile import read_page_file, write_page_file
    from pypicache.storage.records import CachedPage
    from pypicache.web.rendered import Form, render_form
    from pypicache.web.routes.pagebodies import renderer

    print(f"pypicache from {Path(pypicache.__file__).parent.parent}")
    write_pages(work / "upstream", count)
    body = (work / "upstream/simple/bench-many/index.json.gz").read_bytes()
    url = "http://127.0.0.1/simple/bench-many/"
    path = FilePath(tempfile.mkdtemp(dir=work)).child("bench-many.json")
    times: dict[str, list[float]] = {}

    def timed(name: str, f: Any, *args: Any, clock: Any = time.process_time) -> Any:
        started = clock()
        result = f(*args)
        times.setdefault(name, []).append((clock() - started) * 1000)
        return result

    for _ in range(repeat):
        page = timed(
            "parse (gunzip, JSON, records)",
            read_page,
            body,
            "gzip",
            JSON_TYPE,
            url,
            "bench-many",
            1 << 30,
        )
        cached = CachedPage(page, time.time(), '"e"', None)
        timed("store: write the page file", write_page_file, path, cached)
        timed("store: read it back", read_page_file, path)
        shown = timed(
            "merge with the disk, rules",
            lambda: Rules().page("simple", "bench-many", merged(page, [], 1.0)[0]),
        )
        render = renderer(shown, lambda f: advertised(f, lambda name: None))
        plain = timed("render JSON", render, JSON_TYPE)
        timed("gzip JSON (level 6)", gzip.compress, plain, 6)
        plain = timed("render HTML", render, HTML_TYPE)
        timed("gzip HTML (level 6)", gzip.compress, plain, 6)
        for media in (JSON_TYPE, HTML_TYPE):
            form = Form(("simple", "bench-many"), 1, media, 600, True)
            timed(
                f"{media.rsplit('+', 1)[-1][-4:].upper()} rendered+gzipped (render_form)",
                render_form,
                form,
                render,
                None,
                clock=(
                    time.perf_counter if os.environ.get("WALL") else time.process_time
                ),
            )
    for name, values in times.items():
        unit = " ms wall" if os.environ.get("WALL") and "form)" in name else " ms CPU"
        print(f"{name:40} {statistics.median(values):6.1f}{unit}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", default="/tmp/coldpage")
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--source", action="append", default=[])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument(
        "--stages",
        type=int,
        metavar="N",
        help="time each stage in this process N times instead (the pypicache "
        "on PYTHONPATH), no daemon",
    )
    args = parser.parse_args()
    if args.stages:
        return stages(Path(args.work).resolve(), args.files, args.stages)
    variants = dict(v.split("=", 1) for v in (args.variant or ["this="]))
    sources = dict(v.split("=", 1) for v in args.source)
    atexit.register(procs.stop_all)
    signal.signal(signal.SIGTERM, procs.on_signal)
    work = Path(args.work).resolve()
    size = write_pages(work / "upstream", args.files)
    upstream = servers.start_nginx(work / "upstream", work / "nginx")
    print(f"upstream page: {args.files} files, {size:,} bytes of JSON")
    figures: dict[str, dict[str, list[float]]] = {
        name: {key: [] for key in [*FORMS, "cpu_s", "bytes"]} for name in variants
    }
    for n in range(args.rounds):
        for name, extra in variants.items():
            env = {
                **os.environ,
                "PYTHONPATH": str(Path(sources.get(name, BENCH.parent)).resolve()),
            }
            options = extra.split()
            if not any(o.startswith("--prefetch-depth") for o in options):
                options.append("--prefetch-depth=0")
            folder = work / f"run-{name}"
            cache = folder / "cache"
            if cache.exists():
                os.system(f"rm -rf {cache}")
            folder.mkdir(parents=True, exist_ok=True)
            process, port, _ = procs.start_daemon_timed(
                cache,
                upstream.index_url,
                folder / "daemon.log",
                extra_args=options,
                env=env,
            )
            try:
                # A first page (small, in each form) warms the daemon up, as
                # a client's first requests do before it reaches this page.
                base = f"http://{procs.HOST}:{port}/simple/"
                for accept, encoding in FORMS.values():
                    fetch(base + "bench-small/", accept, encoding)
                idle = procs.cpu_seconds(process.pid)
                url = base + "bench-many/"
                for form, (accept, encoding) in FORMS.items():
                    ms, got = fetch(url, accept, encoding)
                    figures[name][form].append(ms)
                    if form == "json_gz":
                        figures[name]["bytes"].append(got)
                figures[name]["cpu_s"].append(procs.cpu_seconds(process.pid) - idle)
            finally:
                procs.stop(process)
            row = figures[name]
            print(
                f"round {n + 1} {name:>8}: "
                + "  ".join(f"{k} {row[k][-1]:7.1f}" for k in FORMS)
                + f"  cpu {row['cpu_s'][-1]:.2f} s",
                flush=True,
            )
    print("\nmedians (ms; cpu s)")
    for name, row in figures.items():
        print(
            f"{name:>8}: "
            + "  ".join(f"{k} {statistics.median(row[k]):7.1f}" for k in FORMS)
            + f"  cpu {statistics.median(row['cpu_s']):.2f}"
            + f"  json.gz bytes {int(statistics.median(row['bytes'])):,}"
        )
    (work / "coldpage.json").write_text(json.dumps(figures, indent=1))
    upstream.stop()


if __name__ == "__main__":
    main()
