"""
Server-side render time of the web interface's project page, for a project of
3,000 files (issue 13's target: under 100 ms)::

    python bench/run.py --only ui                 # this measure alone, in the table
    python bench/uipages.py --files 3000          # the same, printed in ms
    python bench/uipages.py --profile one         # and a cProfile of one cold page
    python bench/uipages.py --profile one --rendered   # ... of a first render

It builds ``<work>/ui-<files>/`` (``bench/work/ui-3000/``; reused), a
pypicache cache folder with two private projects in its on-disk layout:
``uibench-one``, one release of 3,000 wheels (many Python and platform tags,
build numbers), and ``uibench-many``, 1,000 versions of three files each (two
wheels and an sdist). Every archive is a hard link to one real wheel whose
core metadata has this repository's ``README.rst`` as its description (so the
page renders a real README), with its sidecar (size, sha256, upload time,
uploader, core metadata digest) and its ``.metadata`` beside it, as an upload
stores them.

Then, in this process, it builds the daemon's objects
(:func:`pypicache.tap.build.build_app`, blocking work in a thread pool as in
``twistd``) and calls the route of ``/+ui/projects/<project>/`` itself with a
request that accepts gzip, timing each call (wall clock, and the CPU time of
the whole process): *cold* is a page as a fresh process renders it (a fresh
:class:`~pypicache.web.routes.ui.UiRoutes`: nothing kept in memory; the
description kept in ``<root>/ui/descriptions/`` by an earlier process, as
an upload or the first view leaves it; the project's listing already in
memory as after any ``/simple/`` request; median of ``--rounds``),
*rendered* the same page with no description kept anywhere (rendered, and
written to a new folder: the first view of a release ever; taken in turn
with *cold*, median of ``--rounds``), *warm* a page asked for again (kept;
median of 20), *first* the first page of the process (templates compiled,
modules imported, the README rendered: the descriptions' folder is emptied
at the start). ``renders`` counts the descriptions rendered in all. Two pages are measured right after the project's main page:
``uibench-many`` at an older version (``1.0.500`` with 3,000 files) and
``uibench-one``'s ``cp312`` wheels (``/+ui/projects/uibench-one/1.0/?files=cp312``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

#: The target of issue 13, in ms.
TARGET_MS = 100

PYTHONS = ["cp38", "cp39", "cp310", "cp311", "cp312", "cp313"]
PLATFORMS = [
    f"{kind}_{arch}"
    for kind in ("manylinux_2_17", "manylinux_2_28", "musllinux_1_2")
    for arch in ("x86_64", "aarch64", "ppc64le", "s390x", "i686")
] + [
    "macosx_10_9_x86_64",
    "macosx_11_0_arm64",
    "win_amd64",
    "win32",
    "win_arm64",
]


def one_release(count: int) -> list[str]:
    """``count`` wheel names of ``uibench-one`` 1.0 (Python × platform × build)."""
    names = []
    build = 0
    while len(names) < count:
        build += 1
        for python in PYTHONS:
            for platform in PLATFORMS:
                if len(names) < count:
                    names.append(
                        f"uibench_one-1.0-{build}-{python}-{python}-{platform}.whl"
                    )
    return names


def many_releases(count: int) -> list[str]:
    """``count`` file names of ``uibench-many``: versions of two wheels and an sdist."""
    names = []
    for i in range(count // 3):
        version = f"1.{i // 1000}.{i % 1000}"
        names += [
            f"uibench_many-{version}-py3-none-any.whl",
            f"uibench_many-{version}-cp312-abi3-manylinux_2_17_x86_64.whl",
            f"uibench_many-{version}.tar.gz",
        ]
    return names


def older_version(count: int) -> str:
    """The version of ``uibench-many`` halfway down its list (``1.0.500``)."""
    i = count // 6
    return f"1.{i // 1000}.{i % 1000}"


def build(root: Path, count: int) -> Path:
    """The cache folder at ``root`` with both projects (reused when complete)."""
    from cachetree import complete

    from tests.uiwheels import wheel_with_metadata

    done = root / ".bench-complete"
    if complete(root):
        return root
    started = time.perf_counter()
    readme = (REPO / "README.rst").read_text()
    headers = [
        ("Summary", "A project of many files, for the web interface's benchmark"),
        ("License", "MIT"),
        ("Author", "The pypicache developers"),
        ("Requires-Python", ">=3.8"),
        ("Project-URL", "Source, https://example.invalid/uibench"),
        ("Requires-Dist", "packaging>=22"),
        ("Classifier", "Programming Language :: Python :: 3"),
        ("Description-Content-Type", "text/x-rst"),
    ]
    for project, names in (
        ("uibench-one", one_release(count)),
        ("uibench-many", many_releases(count)),
    ):
        folder = root / "private" / "releases" / project
        folder.mkdir(parents=True)
        with tempfile.TemporaryDirectory() as tmp:
            sample = wheel_with_metadata(Path(tmp), project, "1.0", headers, readme)
            blob = root / f".bench-blob-{project}.whl"
            shutil.copyfile(sample, blob)
        data = blob.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        # As an upload stores it: the core metadata beside each archive.
        metadata = root / f".bench-blob-{project}.metadata"
        with zipfile.ZipFile(blob) as wheel:
            metadata.write_bytes(
                next(wheel.read(n) for n in wheel.namelist() if n.endswith("/METADATA"))
            )
        metadata_digest = hashlib.sha256(metadata.read_bytes()).hexdigest()
        for k, filename in enumerate(names):
            sidecar = {
                "file": {
                    "filename": filename,
                    "url": None,
                    "hashes": {"sha256": digest},
                    "requires_python": ">=3.8",
                    "yanked": "bench: an old build" if k % 97 == 5 else False,
                    "core_metadata": {"sha256": metadata_digest},
                    "size": len(data),
                    "upload_time": f"2026-11-{1 + k % 28:02d}T12:{k % 60:02d}:00Z",
                    "provenance": None,
                    "uploaded_by": "bench-user (token 1a2b)",
                },
                "stored_at": 1_790_000_000.0 + k,
            }
            (folder / (filename + ".json")).write_text(json.dumps(sidecar))
            os.link(blob, folder / filename)
            os.link(metadata, folder / (filename + ".metadata"))
    done.write_text(f"{count} files a project\n")
    print(
        f"  made the UI bench cache ({count:,} files a project) in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return root


def request_for(path: str, group: str | None = None) -> Any:
    """A ``GET`` of ``path`` (``?files=group``) as the route sees it, accepting gzip."""
    from twisted.web.test.requesthelper import DummyRequest

    request = DummyRequest([part.encode() for part in path.lstrip("/").split("/")])
    request.path = path.encode()
    request.uri = request.path + (f"?files={group}".encode() if group else b"")
    if group:
        request.args = {b"files": [group.encode()]}
    request.method = b"GET"
    request.isSecure = lambda: False
    for name, value in ((b"host", b"127.0.0.1:3141"), (b"accept-encoding", b"gzip")):
        request.requestHeaders.setRawHeaders(name, [value])
    return request


async def timed(
    routes: Any, project: str, version: str | None, group: str | None = None
) -> dict[str, Any]:
    """One call of the project page's route: ms (wall and CPU), what it answered."""
    path = f"/+ui/projects/{project}/" + (f"{version}/" if version else "")
    request = request_for(path, group)
    wall, cpu = time.perf_counter(), time.process_time()
    body = await routes.project(request, project, version)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    code = request.responseCode or 200
    if code != 200:
        raise RuntimeError(f"{path}: {code} {body!r:.300}")
    length = request.responseHeaders.getRawHeaders(b"content-length")
    return {
        "ms": wall * 1000,
        "cpu_ms": cpu * 1000,
        "gzip_bytes": int(length[0]) if length else None,
    }


async def run(
    reactor: Any,
    root: Path,
    count: int,
    rounds: int,
    profile: str | None,
    rendered: bool = False,
) -> Any:
    from functools import partial

    from twisted.internet.threads import deferToThreadPool
    from twisted.python.threadpool import ThreadPool
    from twisted.web.client import HTTPConnectionPool

    from pypicache.tap.build import build_app
    from pypicache.web.routes.ui import UiRoutes

    threads = ThreadPool(minthreads=1, maxthreads=4, name="uibench")
    threads.start()
    try:
        app = build_app(
            cache=str(root),
            index_url="http://127.0.0.1:9/simple/",
            reactor=reactor,
            pool=HTTPConnectionPool(reactor, persistent=False),
            run_blocking=partial(deferToThreadPool, reactor, threads),
        )

        from twisted.python.filepath import FilePath

        from pypicache.web.ui import release

        kept = FilePath(str(root))  # descriptions kept in <root>/ui/descriptions/
        try:
            from pypicache.web.ui.descriptions import Descriptions
        except ImportError:  # older checkouts keep no descriptions
            Descriptions = None
        shutil.rmtree(root / "ui", ignore_errors=True)  # the first page renders
        renders = []

        def fresh(render: bool = False) -> Any:
            """Routes as a new process has them: nothing in memory, the
            descriptions kept on disk by an earlier process (``render``:
            none kept either, the page's description rendered for the first
            time, in a new folder)."""
            forget = getattr(release, "described", None)  # older checkouts
            if forget is not None:
                forget.cache_clear()
            ui = app.ui
            routes = UiRoutes(
                app.store, app.views, app.policy, app.run_blocking, ui.catalog
            )
            if Descriptions is not None:
                folder = kept
                if render:
                    folder = FilePath(
                        tempfile.mkdtemp(dir=root.parent, prefix="ui-kept-")
                    )
                routes.descriptions = Descriptions.under(folder)
                renders.append(routes.descriptions)
            return routes

        cases = {
            "one": ("uibench-one", None, None),
            "one_group": ("uibench-one", "1.0", "cp312"),
            "many": ("uibench-many", None, None),
            "many_older": ("uibench-many", older_version(count), None),
        }
        # The listing of the project measured in memory (two of 3,000 files
        # do not fit the store's default budget of listings together).
        await app.store.files("uibench-one")
        out: dict[str, Any] = {"rounds": rounds, "target_ms": TARGET_MS}
        out["first_ms"] = round((await timed(fresh(), "uibench-one", None))["ms"], 1)
        if profile is not None:
            import cProfile
            import pstats

            from twisted.internet.defer import maybeDeferred

            profiler = cProfile.Profile()
            project, version, group = cases[profile]
            await app.store.files(project)
            routes = fresh(rendered)
            # In this thread, so that the profile has the rendering too.
            routes._run_blocking = maybeDeferred
            profiler.enable()
            await timed(routes, project, version, group)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(60)
        for project, version, group in cases.values():  # kept by a process before
            await timed(fresh(), project, version, group)
        for key, (project, version, group) in cases.items():
            cold, rendered, warm = [], [], []
            await app.store.files(project)
            for _ in range(rounds):
                # Alternately: a fresh process on the cache (its description
                # kept by an earlier one), and the first render ever.
                for render, into in ((False, cold), (True, rendered)):
                    routes = fresh(render)
                    if version is not None:  # another page of a project shown
                        await timed(routes, project, None)
                        if render:  # its description not kept either
                            routes.descriptions = fresh(True).descriptions
                    into.append(await timed(routes, project, version, group))
            for _ in range(20):
                warm.append(await timed(routes, project, version, group))
            out[key] = {
                "cold_ms": round(statistics.median(c["ms"] for c in cold), 1),
                "cold_cpu_ms": round(statistics.median(c["cpu_ms"] for c in cold), 1),
                "rendered_ms": round(statistics.median(c["ms"] for c in rendered), 1),
                "rendered_cpu_ms": round(
                    statistics.median(c["cpu_ms"] for c in rendered), 1
                ),
                "warm_ms": round(statistics.median(w["ms"] for w in warm), 2),
                "gzip_bytes": cold[-1]["gzip_bytes"],
                "runs_ms": [round(c["ms"], 1) for c in cold],
                "rendered_runs_ms": [round(c["ms"], 1) for c in rendered],
            }
        out["renders"] = sum(getattr(d, "renders", 0) for d in renders)
        for leftover in root.parent.glob("ui-kept-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        return out
    finally:
        threads.stop()


def measure(
    work: Path,
    count: int,
    rounds: int = 5,
    profile: str | None = None,
    rendered: bool = False,
):
    """Build (or reuse) the cache and measure; the figures as a dict."""
    from twisted.internet import task
    from twisted.internet.defer import Deferred

    root = build(work / f"ui-{count}", count)
    result: dict[str, Any] = {}

    async def main(reactor: Any) -> None:
        result.update(await run(reactor, root, count, rounds, profile, rendered))

    try:
        task.react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
    except SystemExit as e:
        if e.code:
            raise
    return {"files": count, "load_average": os.getloadavg()[0], **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=str(BENCH / "work"))
    parser.add_argument("--files", type=int, default=3000, help="files a project")
    parser.add_argument("--rounds", type=int, default=5, help="cold renders, median")
    parser.add_argument(
        "--profile",
        choices=("one", "one_group", "many", "many_older"),
        help="profile one case",
    )
    parser.add_argument(
        "--rendered",
        action="store_true",
        help="profile a page whose description was never rendered (default: "
        "a fresh process's page, the description kept)",
    )
    parser.add_argument("--json", help="write the figures there too")
    args = parser.parse_args()
    figures = measure(
        Path(args.work).resolve(), args.files, args.rounds, args.profile, args.rendered
    )
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
