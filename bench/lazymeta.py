"""
Cold locks through pypicache against an upstream that offers no ``.metadata``::

    mkdir -p /tmp/pypicache-base && git archive <base-commit> | tar -x -C /tmp/pypicache-base
    python bench/lazymeta.py --base /tmp/pypicache-base [--rounds 3]

Builds a small synthetic tree in ``bench/work/lazymeta/`` (16 projects, 4
versions each, wheels of 0.5 to 3 MB of incompressible payload with their
``METADATA`` near the end as real wheels have it; the four top projects
conflict on a shared one, so resolvers backtrack), serves it with
``bench/upstream.py --no-metadata`` (no ``.metadata``, ``Range`` answered;
``--rate MB/s`` sends each file body no faster, as over a real link), and
for each client command runs, in alternation: ``direct`` (the client against
the upstream), ``base`` (``twistd pypicache`` from ``--base``) and ``new``
(this checkout). Each proxied run starts a daemon on an empty cache (cold),
then runs the command again against the same daemon with a fresh client cache
(warm). It prints, per command and variant, the median seconds and the bytes of
file bodies the upstream sent (with its range and whole-file GETs).

The commands: ``uv pip compile``, ``uv lock`` (a ``pyproject.toml`` project),
and ``pip install --dry-run`` (pip 23 still downloads the chosen wheels); with
``--lockers BIN`` also ``BIN/poetry lock`` and ``BIN/pdm lock`` (install them
in a virtual environment of their own: ``python -m venv /tmp/lockers &&
/tmp/lockers/bin/pip install poetry pdm``). Every client runs with ``HOME``
and its caches in a fresh temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from clients import run_timed  # noqa: E402
from procs import ROOT, start_daemon, start_upstream, stop, stop_all  # noqa: E402
from synthetic import build_big_wheel  # noqa: E402

from tests.clients import clean_env, pip_install_args, uv_binary  # noqa: E402

TOPS = ["top-a", "top-b", "top-c", "top-d"]
MIDS = [f"mid-{i}" for i in range(8)]
LEAVES = ["shared", "leaf-x", "leaf-y", "leaf-z"]


def requires(name: str, version: int) -> list[str]:
    """Each top needs two mids; top-a 4 needs shared<3 while top-b 4 needs
    shared>=4 (backtracking); mids need leaves."""
    if name in TOPS:
        i = TOPS.index(name)
        deps = [MIDS[2 * i], MIDS[2 * i + 1]]
        if name == "top-a" and version == 4:
            deps.append("shared<3")
        if name == "top-b" and version == 4:
            deps.append("shared>=4")
        return deps
    if name in MIDS:
        i = MIDS.index(name)
        return [LEAVES[i % 4], LEAVES[(i + 1) % 4]]
    return []


def build(directory: Path) -> None:
    done = directory / "built"
    if done.exists():
        return
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for n, name in enumerate(TOPS + MIDS + LEAVES):
        for version in range(1, 5):
            size = (500 + (n * 397 + version * 211) % 2500) * 1024
            build_big_wheel(
                directory, name, f"{version}.0", size, requires(name, version)
            )
    done.write_text("1\n")


def stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats") as r:
        return json.loads(r.read())


def project(index: str) -> str:
    """A ``pyproject.toml`` needing the four tops, with ``index`` as its only
    source for poetry and pdm (a pdm source named ``pypi`` replaces the default)."""
    deps = ", ".join(f'"{t}"' for t in TOPS)
    return (
        f'[project]\nname = "app"\nversion = "0"\nrequires-python = ">=3.8"\n'
        f"dependencies = [{deps}]\n\n"
        f'[[tool.poetry.source]]\nname = "bench"\nurl = "{index}"\n'
        f'priority = "primary"\n\n'
        f'[[tool.pdm.source]]\nname = "pypi"\nurl = "{index}"\n'
    )


def command(kind: str, index: str, scratch: Path, lockers: Path | None) -> list[str]:
    if kind in ("poetry lock", "pdm lock"):
        assert lockers is not None
        (scratch / "pyproject.toml").write_text(project(index))
        tool = kind.split()[0]
        if tool == "poetry":
            return [str(lockers / "poetry"), "lock", "--no-interaction"]
        return [str(lockers / "pdm"), "lock"]
    if kind == "uv pip compile":
        (scratch / "req.in").write_text("\n".join(TOPS) + "\n")
        return [
            uv_binary(),
            "pip",
            "compile",
            "--no-config",
            "--index-url",
            index,
            "--python",
            sys.executable,
            "req.in",
        ]
    if kind == "uv lock":
        (scratch / "pyproject.toml").write_text(project(index))
        return [
            uv_binary(),
            "lock",
            "--no-config",
            "--default-index",
            index,
            "--python",
            sys.executable,
        ]
    return pip_install_args(index, TOPS, scratch / "target", ["--dry-run"])


def client(
    kind: str, index: str, upstream: int, lockers: Path | None = None
) -> tuple[float, dict]:
    """Run one command with a fresh client cache; seconds and the upstream's
    counters it caused."""
    with tempfile.TemporaryDirectory(prefix="lazymeta-") as tmp:
        scratch = Path(tmp)
        args = command(kind, index, scratch, lockers)
        before = stats(upstream)
        seconds = run_timed(args, clean_env(scratch), scratch)
        after = stats(upstream)
    delta = {
        "bytes": after["file_bytes"] - before["file_bytes"],
        "ranges": after["range_gets"] - before["range_gets"],
        "gets": sum(after["file_gets"].values()) - sum(before["file_gets"].values()),
    }
    delta["whole"] = delta["gets"] - delta["ranges"]
    return seconds, delta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="checkout of the base")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--lockers", type=Path, help="folder with poetry and pdm executables"
    )
    parser.add_argument(
        "--commands", help="comma-separated commands to run (default: all)"
    )
    parser.add_argument(
        "--rate", type=float, help="MB/s the upstream sends each file body at"
    )
    args = parser.parse_args()
    work = BENCH / "work" / "lazymeta"
    files = work / "files"
    build(files)
    extra = ["--no-metadata"] + (["--rate", str(args.rate)] if args.rate else [])
    upstream, port = start_upstream(files, work / "upstream.log", extra_args=extra)
    direct = f"http://127.0.0.1:{port}/simple/"
    results: dict = {}
    kinds = ["uv pip compile", "uv lock", "pip install --dry-run"]
    if args.lockers is not None:
        kinds += ["poetry lock", "pdm lock"]
    if args.commands:
        kinds = [k for k in kinds if k in args.commands.split(",")]
    try:
        for round in range(args.rounds):
            for kind in kinds:
                for variant in ("direct", "base", "new"):
                    entry = results.setdefault(kind, {}).setdefault(variant, [])
                    if variant == "direct":
                        entry.append({"cold": client(kind, direct, port, args.lockers)})
                        continue
                    code = args.base if variant == "base" else ROOT
                    os.environ["PYTHONPATH"] = str(code)
                    cache = work / f"cache-{variant}"
                    shutil.rmtree(cache, ignore_errors=True)
                    daemon, dport = start_daemon(cache, direct, work / f"{variant}.log")
                    try:
                        index = f"http://127.0.0.1:{dport}/simple/"
                        cold = client(kind, index, port, args.lockers)
                        warm = client(kind, index, port, args.lockers)
                    finally:
                        stop(daemon)
                    entry.append({"cold": cold, "warm": warm})
                    print(kind, variant, round, cold, warm, flush=True)
    finally:
        stop_all()
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print()
    print(
        f"{'command':24} {'variant':7} {'cold s':>7} {'warm s':>7} "
        f"{'upstream MB':>11} {'ranges':>6} {'whole':>5}"
    )
    for kind, variants in results.items():
        for variant, runs in variants.items():
            cold = statistics.median(r["cold"][0] for r in runs)
            warm = (
                statistics.median(r["warm"][0] for r in runs)
                if "warm" in runs[0]
                else float("nan")
            )
            c = runs[-1]["cold"][1]
            print(
                f"{kind:24} {variant:7} {cold:7.2f} {warm:7.2f} "
                f"{c['bytes'] / 1e6:11.2f} {c['ranges']:6d} {c['whole']:5d}"
            )


if __name__ == "__main__":
    main()
