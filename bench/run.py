"""
Benchmark pypicache end to end, with real processes on 127.0.0.1::

    python bench/run.py            # full size: a 300 MB wheel, a 3,000-file project
    python bench/run.py --quick    # smoke run: 30 MB, 300 files, shorter loads

It builds a synthetic upstream in ``bench/work/`` (kept and reused between runs),
starts it in its own process (``bench/upstream.py``, FakeIndex in "json" mode)
and ``twistd -n pypicache`` as another process on a fresh cache, then measures:

- requests/s of warm project pages (a small one and the 3,000-file one, HTML and
  JSON) with 4 concurrent keep-alive connections;
- MB/s of a warm (cached) 300 MB file;
- the daemon's idle RSS and its peak RSS while it proxies the 300 MB file cold;
- how many times the upstream is asked for one file when 8 clients ask the
  daemon for it at once, cold;
- a cold ``pip install`` of a 30-package dependency tree through the proxy
  (fresh cache each time) against the same install straight from the upstream
  (median of 3 each).

It prints a table and writes ``bench/work/results.json`` (``results-quick.json``
for ``--quick``).  Every process it
starts is stopped on exit, Ctrl-C and errors included.  See docs/benchmark.rst.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import hashlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from tests.clients import clean_env, pip_install_args
from tests.packages import build_sdist, build_wheel, wheel_filename

#: Bump when what build_upstream() writes changes, so old work dirs are rebuilt.
BUILD_VERSION = 1
HOST = "127.0.0.1"
MB = 1024 * 1024

#: The Accept headers pip 23+ sends (JSON preferred) and a browser-like HTML one.
ACCEPT_JSON = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
ACCEPT_HTML = "text/html"

TARGET_RSS_MB = 25.0
TARGET_FETCHES = 1
TARGET_RATIO = 1.15


# -- sizes -------------------------------------------------------------------


def sizes(quick: bool) -> dict[str, Any]:
    """What to build and how long to load, for a full or a quick run."""
    return {
        "mode": "quick" if quick else "full",
        "tree_projects": 30,
        "tree_versions": ["1.0", "1.1", "2.0"],
        "many_files": 300 if quick else 3000,
        "big_bytes": (30 if quick else 300) * MB,
        "medium_bytes": (4 if quick else 32) * MB,
        "load_seconds": 1.5 if quick else 5.0,
        "load_connections": 4,
        "install_runs": 1 if quick else 3,
        "warm_file_runs": 1 if quick else 3,
        "concurrent_clients": 8,
    }


# -- the synthetic upstream ----------------------------------------------------


def tree_name(i: int) -> str:
    return "bench-root" if i == 0 else f"bench-dep-{i:02d}"


def tree_requires(i: int, n: int) -> list[str]:
    """Node i of a ternary tree of n nodes needs its children, plus a shared cousin (diamonds)."""
    deps = [3 * i + k for k in (1, 2, 3) if 3 * i + k < n]
    if 3 * i + 4 < n:
        deps.append(3 * i + 4)
    return [f"{tree_name(d)}>=1.0" for d in deps]


def build_big_wheel(
    directory: Path, name: str, version: str, size: int, requires: Sequence[str] = ()
) -> Path:
    """A wheel whose payload is ``size`` random (incompressible) bytes, ZIP_STORED.

    Written in 1 MB chunks, never held in memory, with a correct RECORD.
    """
    import base64

    mod = name.replace("-", "_")
    dist_info = f"{mod}-{version}.dist-info"
    path = directory / f"{mod}-{version}-py3-none-any.whl"
    partial = directory / (path.name + ".partial")
    record: list[str] = []
    when = (2024, 1, 2, 3, 4, 6)

    def b64(digest: bytes) -> str:
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:

        def small(arcname: str, data: bytes) -> None:
            info = zipfile.ZipInfo(arcname, date_time=when)
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
            record.append(
                f"{arcname},sha256={b64(hashlib.sha256(data).digest())},{len(data)}"
            )

        small(f"{mod}/__init__.py", f'__version__ = "{version}"\n'.encode())
        info = zipfile.ZipInfo(f"{mod}/payload.bin", date_time=when)
        info.compress_type = zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        digest = hashlib.sha256()
        with zf.open(info, "w", force_zip64=True) as out:
            left = size
            while left:
                chunk = os.urandom(min(MB, left))
                out.write(chunk)
                digest.update(chunk)
                left -= len(chunk)
        record.append(f"{mod}/payload.bin,sha256={b64(digest.digest())},{size}")
        small(
            f"{dist_info}/METADATA",
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: big\n".encode()
            + "".join(f"Requires-Dist: {r}\n" for r in requires).encode()
            + b"\n",
        )
        small(
            f"{dist_info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: pypicache-bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        record.append(f"{dist_info}/RECORD,,")
        info = zipfile.ZipInfo(f"{dist_info}/RECORD", date_time=when)
        info.external_attr = 0o644 << 16
        zf.writestr(info, "\n".join(record) + "\n")
    os.replace(partial, path)
    return path


def build_upstream(directory: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Write the upstream's files into ``directory`` (reused if already built alike)."""
    manifest_path = directory / "manifest.json"
    wanted = {
        k: cfg[k]
        for k in (
            "tree_projects",
            "tree_versions",
            "many_files",
            "big_bytes",
            "medium_bytes",
        )
    }
    wanted["build_version"] = BUILD_VERSION
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("config") == wanted:
            print(f"Reusing the upstream files in {directory}", flush=True)
            return manifest
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    started = time.perf_counter()
    n = cfg["tree_projects"]
    print(f"Building the upstream in {directory} ...", flush=True)
    for i in range(n):
        for version in cfg["tree_versions"]:
            build_wheel(
                directory,
                tree_name(i),
                version,
                requires=tree_requires(i, n),
                module_body=f"# {tree_name(i)} {version}\n" + "X = 1\n" * 50,
            )
        build_sdist(
            directory,
            tree_name(i),
            cfg["tree_versions"][-1],
            requires=tree_requires(i, n),
        )
    t_tree = time.perf_counter() - started
    t0 = time.perf_counter()
    for k in range(cfg["many_files"]):
        build_wheel(directory, "bench-many", f"{k // 100}.{k % 100}")
    t_many = time.perf_counter() - t0
    t0 = time.perf_counter()
    big = build_big_wheel(directory, "bench-big", "1.0", cfg["big_bytes"])
    t_big = time.perf_counter() - t0
    medium = build_big_wheel(directory, "bench-medium", "1.0", cfg["medium_bytes"])
    manifest = {
        "config": wanted,
        "big": big.name,
        "medium": medium.name,
        "many_first": Path(build_wheel(directory, "bench-many", "0.0")).name,
        "build_seconds": {
            "tree": round(t_tree, 2),
            "many": round(t_many, 2),
            "big": round(t_big, 2),
            "total": round(time.perf_counter() - started, 2),
        },
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    print(
        f"  built in {manifest['build_seconds']['total']:.1f} s "
        f"(tree {t_tree:.1f} s, {cfg['many_files']} files {t_many:.1f} s, "
        f"{cfg['big_bytes'] // MB} MB wheel {t_big:.1f} s)",
        flush=True,
    )
    return manifest


# -- processes -----------------------------------------------------------------

_PROCESSES: list[subprocess.Popen] = []


def _stop(process: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop one process we started (and its own process group) by its id."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
    if process in _PROCESSES:
        _PROCESSES.remove(process)


def stop_all() -> None:
    while _PROCESSES:
        _stop(_PROCESSES[-1])


def _on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _spawn(args: list[str], log: Path, **kwargs: Any) -> subprocess.Popen:
    with open(log, "ab") as err:
        process = subprocess.Popen(args, stderr=err, start_new_session=True, **kwargs)
    _PROCESSES.append(process)
    return process


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_upstream(
    files: Path,
    log: Path,
    timeout: float = 120.0,
    script: Path = BENCH / "upstream.py",
    extra_args: Sequence[str] = (),
) -> tuple[subprocess.Popen, int]:
    """Start bench/upstream.py (or ``script``, same protocol) and wait for its
    ``READY <port>`` line."""
    import select

    process = _spawn(
        [sys.executable, str(script), str(files), "0", *extra_args],
        log,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or process.poll() is not None:
            _stop(process)
            raise RuntimeError(f"upstream did not start; see {log}:\n{tail(log)}")
        ready, _, _ = select.select([process.stdout], [], [], min(left, 0.5))
        if ready:
            line += os.read(process.stdout.fileno(), 256)
    if not line.startswith(b"READY "):
        _stop(process)
        raise RuntimeError(f"upstream said {line!r}; see {log}")
    return process, int(line.split()[1])


def start_daemon(
    cache: Path,
    index_url: str,
    log: Path,
    timeout: float = 30.0,
    extra_args: Sequence[str] = (),
) -> tuple[subprocess.Popen, int]:
    """Start ``twistd -n pypicache`` (with ``extra_args`` after its own options)
    on a free port and wait for /health."""
    port = free_port()
    twistd = shutil.which("twistd") or "twistd"
    args = [
        twistd,
        "-n",
        "--pidfile=",
        f"--logfile={log}",
        "pypicache",
        "--cache",
        str(cache),
        "--index-url",
        index_url,
        "--listen",
        f"tcp:{port}:interface={HOST}",
        *extra_args,
    ]
    process = _spawn(
        args, log.with_suffix(".stderr"), cwd=log.parent, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return process, port
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            raise RuntimeError(
                f"daemon did not start; see {log}:\n{tail(log)}\n{tail(log.with_suffix('.stderr'))}"
            )
        time.sleep(0.05)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def upstream_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{HOST}:{port}/_stats", timeout=10) as r:
        return json.loads(r.read())


# -- memory ----------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of a process, in kB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every ``interval`` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kb = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                rss = proc_status(self.pid)["VmRSS"]
            except (OSError, KeyError):
                break
            self.peak_kb = max(self.peak_kb, rss)
            self.samples += 1
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


# -- HTTP clients ------------------------------------------------------------------


def download(
    port: int,
    path: str,
    *,
    hash_it: bool = False,
    connection: http.client.HTTPConnection | None = None,
    ready: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """GET a file as fast as the client can read it; return status, size, time (and sha256)."""
    conn = connection or http.client.HTTPConnection(HOST, port, timeout=120)
    if ready is not None:
        conn.connect()
        ready()
    started = time.perf_counter()
    conn.request("GET", path, headers={"Accept-Encoding": "identity"})
    response = conn.getresponse()
    digest = hashlib.sha256() if hash_it else None
    buffer = bytearray(MB)
    view = memoryview(buffer)
    size = 0
    while True:
        n = response.readinto(buffer)
        if not n:
            break
        size += n
        if digest is not None:
            digest.update(view[:n])
    elapsed = time.perf_counter() - started
    conn.close()
    return {
        "status": response.status,
        "bytes": size,
        "seconds": elapsed,
        "sha256": digest.hexdigest() if digest else None,
    }


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, int, bool]:
    """Read one HTTP/1.1 response; return (status, body bytes, connection may be reused)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    keep = headers.get("connection", "").lower() != "close"
    if "content-length" in headers:
        length = int(headers["content-length"])
        await reader.readexactly(length)
        return status, length, keep
    if headers.get("transfer-encoding", "").lower() == "chunked":
        total = 0
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers expected
                return status, total, keep
            await reader.readexactly(size + 2)
            total += size
    body = await reader.read()
    return status, len(body), False


async def _load(
    port: int,
    path: str,
    headers: dict[str, str],
    connections: int,
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: pypicache-bench\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    ).encode()
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0, "bytes": 0, "reconnects": 0}
    loop = asyncio.get_running_loop()
    begin = loop.time()
    measure_from = begin + warmup
    end = measure_from + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while True:
                sent = loop.time()
                if sent >= end:
                    return
                writer.write(request)
                status, size, keep = await _read_response(reader)
                done = loop.time()
                if sent >= measure_from:
                    latencies.append(done - sent)
                    counts["ok" if status == 200 else "errors"] += 1
                    counts["bytes"] += size
                if not keep:
                    writer.close()
                    counts["reconnects"] += 1
                    reader, writer = await asyncio.open_connection(HOST, port)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    measured = loop.time() - measure_from
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000
            if latencies
            else float("nan")
        )

    return {
        "requests_per_s": round(counts["ok"] / measured, 1),
        "requests": counts["ok"],
        "errors": counts["errors"],
        "reconnects": counts["reconnects"],
        "body_bytes": counts["bytes"] // max(1, counts["ok"] + counts["errors"]),
        "p50_ms": round(pct(0.50), 2),
        "p99_ms": round(pct(0.99), 2),
        "seconds": round(measured, 2),
        "connections": connections,
    }


def load(
    port: int, path: str, headers: dict[str, str], connections: int, seconds: float
) -> dict[str, Any]:
    return asyncio.run(
        _load(port, path, headers, connections, seconds, warmup=min(1.0, seconds / 5))
    )


def get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def replay_install(
    port: int, names: list[str], version: str, direct: bool
) -> dict[str, float]:
    """The requests a cold pip install of the tree makes, one after another on one
    connection (each page and its wheel's PEP 658 metadata, then the wheels);
    returns the mean milliseconds per request of each kind."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    spent = {"page": 0.0, "metadata": 0.0, "file": 0.0}

    def fetch(kind: str, path: str, headers: dict[str, str]) -> None:
        started = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        spent[kind] += time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")

    def file_path(name: str) -> str:
        filename = wheel_filename(name, version)
        return f"/files/{filename}" if direct else f"/packages/{name}/{filename}"

    try:
        for name in names:
            fetch("page", f"/simple/{name}/", {"Accept": ACCEPT_JSON})
            fetch("metadata", file_path(name) + ".metadata", {})
        for name in names:
            fetch("file", file_path(name), {})
    finally:
        conn.close()
    return {kind: seconds * 1000 / len(names) for kind, seconds in spent.items()}


# -- pip ---------------------------------------------------------------------------


def run_timed(args: list[str], env: dict[str, str], cwd: Path) -> float:
    """Run a client command to its end; its seconds.

    :raises RuntimeError: it failed (with the end of its output).
    """
    started = time.perf_counter()
    result = subprocess.run(
        args,
        check=False,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(
            f"{args[0]} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return elapsed


def pip_install(index_url: str, requirement: str, scratch: Path) -> tuple[float, int]:
    """A cold, hermetic ``pip install --target``; returns its wall-clock seconds
    and how many distributions it installed."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    target = scratch / "target"
    env = clean_env(
        scratch
    )  # no PIP_*/UV_* from here, PIP_CONFIG_FILE=/dev/null, HOME in scratch
    args = pip_install_args(index_url, [requirement], target)
    elapsed = run_timed(args, env, scratch)
    installed = len(list(target.glob("*.dist-info")))
    return elapsed, installed


# -- the run ----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import twisted

    pip_version = subprocess.run(
        [sys.executable, "-m", "pip", "--version"],
        check=False,
        capture_output=True,
        text=True,
    ).stdout.split()[1]
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "pip": pip_version,
    }


def run(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    """Run every measurement, filling ``results`` as it goes (kept if a step fails)."""
    cfg = sizes(args.quick)
    if args.seconds is not None:
        cfg["load_seconds"] = args.seconds
    if args.runs is not None:
        cfg["install_runs"] = args.runs
    work = Path(args.work).resolve()
    files = work / f"upstream-{cfg['mode']}"
    runs = work / "run"
    work.mkdir(parents=True, exist_ok=True)
    if runs.exists():
        shutil.rmtree(runs)
    runs.mkdir()

    results.update(
        {
            "mode": cfg["mode"],
            "machine": machine(),
            "config": cfg,
            "load_average_start": os.getloadavg(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
    manifest = build_upstream(files, cfg)
    results["build_seconds"] = manifest[
        "build_seconds"
    ]  # of the build that made the files
    big, medium, tiny = manifest["big"], manifest["medium"], manifest["many_first"]

    t0 = time.perf_counter()
    upstream, up_port = start_upstream(files, runs / "upstream.log")
    index_url = f"http://{HOST}:{up_port}/simple/"
    print(
        f"Upstream on {index_url} (pid {upstream.pid}, ready in {time.perf_counter() - t0:.1f} s)",
        flush=True,
    )

    # A reference: the 300 MB file straight from the upstream process.
    ref = download(up_port, f"/files/{big}")
    assert ref["status"] == 200, ref
    results["upstream_direct_file_mb_per_s"] = round(
        ref["bytes"] / MB / ref["seconds"], 1
    )

    # -- 1. one daemon: memory, concurrency, file and page throughput ------------
    daemon, port = start_daemon(runs / "cache", index_url, runs / "daemon.log")
    print(f"Daemon on http://{HOST}:{port}/ (pid {daemon.pid})", flush=True)
    time.sleep(0.5)
    idle_fresh = proc_status(daemon.pid)["VmRSS"]

    # The 300 MB file, cold: its page first (so only the file is in flight), then
    # idle RSS, then the download with the RSS sampled every 20 ms.
    status, _ = get(port, "/simple/bench-big/", {"Accept": ACCEPT_JSON})
    assert status == 200, status
    time.sleep(0.3)
    before = proc_status(daemon.pid)
    cpu_before = cpu_seconds(daemon.pid)
    sampler = RssSampler(daemon.pid, 0.02)
    sampler.start()
    cold = download(port, f"/packages/bench-big/{big}", hash_it=True)
    sampler.stop()
    after = proc_status(daemon.pid)
    cold_cpu = cpu_seconds(daemon.pid) - cpu_before
    expected_big = hashlib.sha256()
    with open(files / big, "rb") as f:
        for chunk in iter(lambda: f.read(MB), b""):
            expected_big.update(chunk)
    assert cold["status"] == 200 and cold["bytes"] == (files / big).stat().st_size, cold
    assert (
        cold["sha256"] == expected_big.hexdigest()
    ), "the daemon served different bytes"
    # VmHWM catches a spike between two samples (if it rose during the download).
    peak_kb = max(
        sampler.peak_kb, after["VmHWM"] if after["VmHWM"] > before["VmHWM"] else 0
    )
    results["memory"] = {
        "idle_rss_mb_fresh": round(idle_fresh / 1024, 1),
        "idle_rss_mb": round(before["VmRSS"] / 1024, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "peak_minus_idle_mb": round((peak_kb - before["VmRSS"]) / 1024, 1),
        "rss_after_mb": round(after["VmRSS"] / 1024, 1),
        "vmhwm_before_mb": round(before["VmHWM"] / 1024, 1),
        "vmhwm_after_mb": round(after["VmHWM"] / 1024, 1),
        "samples": sampler.samples,
        "file_mb": round((files / big).stat().st_size / MB, 1),
        "cold_mb_per_s": round((files / big).stat().st_size / MB / cold["seconds"], 1),
        "cold_seconds": round(cold["seconds"], 2),
        "cold_daemon_cpu_s": round(cold_cpu, 2),
        "target_mb": TARGET_RSS_MB,
    }
    print(
        f"  cold {big}: {cold['seconds']:.2f} s (daemon CPU {cold_cpu:.2f} s), RSS idle {before['VmRSS'] / 1024:.1f} MB, "
        f"peak {peak_kb / 1024:.1f} MB",
        flush=True,
    )

    # The same file, warm (from the cache).
    warm_runs = [
        download(port, f"/packages/bench-big/{big}")
        for _ in range(cfg["warm_file_runs"])
    ]
    for w in warm_runs:
        assert w["status"] == 200 and w["bytes"] == (files / big).stat().st_size, w
    rates = [w["bytes"] / MB / w["seconds"] for w in warm_runs]
    results["warm_file"] = {
        "mb_per_s": round(statistics.median(rates), 1),
        "runs": [round(r, 1) for r in rates],
        "file_mb": round((files / big).stat().st_size / MB, 1),
    }
    print(f"  warm {big}: {results['warm_file']['mb_per_s']} MB/s", flush=True)

    # 8 concurrent cold requests for one file (its page cold too): upstream fetches.
    results["concurrent"] = {}
    for label, project, filename in (
        ("medium", "bench-medium", medium),
        ("tiny", "bench-many", tiny),
    ):
        n = cfg["concurrent_clients"]
        stats_before = upstream_stats(up_port)
        barrier = threading.Barrier(n)
        outcomes: list[dict[str, Any]] = [{} for _ in range(n)]

        def client(
            i: int,
            path: str,
            barrier: threading.Barrier,
            outcomes: list[dict[str, Any]],
        ) -> None:
            try:
                outcomes[i] = download(
                    port, path, hash_it=True, ready=lambda: barrier.wait(30)
                )
            except Exception as e:  # noqa: BLE001
                outcomes[i] = {"error": repr(e)}

        path = f"/packages/{project}/{filename}"
        threads = [
            threading.Thread(target=client, args=(i, path, barrier, outcomes))
            for i in range(n)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats_after = upstream_stats(up_port)
        expected = hashlib.sha256((files / filename).read_bytes()).hexdigest()
        good = sum(
            1
            for o in outcomes
            if o.get("status") == 200 and o.get("sha256") == expected
        )
        fetches = stats_after["file_gets"].get(filename, 0) - stats_before[
            "file_gets"
        ].get(filename, 0)
        pages = stats_after["page_gets"].get(project, 0) - stats_before[
            "page_gets"
        ].get(project, 0)
        results["concurrent"][label] = {
            "file": filename,
            "file_mb": round((files / filename).stat().st_size / MB, 2),
            "clients": n,
            "complete_and_verified": good,
            "upstream_file_fetches": fetches,
            "upstream_page_fetches": pages,
            "target": TARGET_FETCHES,
            "errors": [
                o.get("error") or o.get("status")
                for o in outcomes
                if o.get("status") != 200 or o.get("sha256") != expected
            ],
        }
        print(
            f"  {n} concurrent cold GETs of {filename}: {fetches} upstream fetch(es), {good}/{n} verified",
            flush=True,
        )

    # Warm pages: requests/s with N keep-alive connections.
    results["pages"] = {}
    pages = [
        ("small", "/simple/bench-root/"),
        (
            "3000-file" if not args.quick else f"{cfg['many_files']}-file",
            "/simple/bench-many/",
        ),
    ]
    for label, path in pages:
        for kind, accept in (("HTML", ACCEPT_HTML), ("JSON", ACCEPT_JSON)):
            headers = {"Accept": accept, "Accept-Encoding": "gzip, deflate"}
            status, _ = get(port, path, headers)  # make it warm
            assert status == 200, (path, status)
            cpu0, wall0 = cpu_seconds(daemon.pid), time.perf_counter()
            r = load(port, path, headers, cfg["load_connections"], cfg["load_seconds"])
            r["daemon_cpu_percent"] = round(
                100 * (cpu_seconds(daemon.pid) - cpu0) / (time.perf_counter() - wall0)
            )
            results["pages"][f"{label} {kind}"] = {"path": path, **r}
            print(
                f"  {label} page {kind}: {r['requests_per_s']} req/s ({r['body_bytes']} B gzipped, "
                f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, {r['errors']} errors, daemon CPU {r['daemon_cpu_percent']}%)",
                flush=True,
            )
    results["memory"]["rss_after_pages_mb"] = round(
        proc_status(daemon.pid)["VmRSS"] / 1024, 1
    )
    _stop(daemon)

    # -- 2. cold pip installs: direct vs through a fresh proxy ----------------------
    print("pip installs of the 30-package tree (bench-root) ...", flush=True)
    pip_install(
        index_url, "bench-root", runs / "pip-warmup"
    )  # warm the OS caches of pip itself
    direct, proxied, warm = [], [], []
    upstream_requests: dict[str, list[int]] = {"direct": [], "proxy_cold": []}
    replays: dict[str, list[dict[str, float]]] = {
        "direct": [],
        "proxy_cold": [],
        "proxy_warm": [],
    }
    names = [tree_name(i) for i in range(cfg["tree_projects"])]
    latest = cfg["tree_versions"][-1]
    for i in range(cfg["install_runs"]):
        before_stats = upstream_stats(up_port)
        seconds, count = pip_install(index_url, "bench-root", runs / f"pip-direct-{i}")
        assert count == cfg["tree_projects"], count
        direct.append(seconds)
        upstream_requests["direct"].append(
            upstream_stats(up_port)["requests"] - before_stats["requests"]
        )
        replays["direct"].append(replay_install(up_port, names, latest, direct=True))
        d_proc, d_port = start_daemon(
            runs / f"cache-install-{i}", index_url, runs / f"daemon-install-{i}.log"
        )
        try:
            before_stats = upstream_stats(up_port)
            seconds, count = pip_install(
                f"http://{HOST}:{d_port}/simple/", "bench-root", runs / f"pip-proxy-{i}"
            )
            assert count == cfg["tree_projects"], count
            proxied.append(seconds)
            upstream_requests["proxy_cold"].append(
                upstream_stats(up_port)["requests"] - before_stats["requests"]
            )
            seconds, count = pip_install(
                f"http://{HOST}:{d_port}/simple/", "bench-root", runs / f"pip-warm-{i}"
            )
            assert count == cfg["tree_projects"], count
            warm.append(seconds)
            replays["proxy_warm"].append(
                replay_install(d_port, names, latest, direct=False)
            )
        finally:
            _stop(d_proc)
        # The same requests without pip, on another fresh cache: the proxy's own latency.
        d_proc, d_port = start_daemon(
            runs / f"cache-replay-{i}", index_url, runs / f"daemon-replay-{i}.log"
        )
        try:
            replays["proxy_cold"].append(
                replay_install(d_port, names, latest, direct=False)
            )
        finally:
            _stop(d_proc)
        print(
            f"  run {i + 1}: direct {direct[-1]:.2f} s, proxy cold {proxied[-1]:.2f} s, "
            f"proxy warm {warm[-1]:.2f} s",
            flush=True,
        )
    results["install"] = {
        "packages": cfg["tree_projects"],
        "direct_s": round(statistics.median(direct), 2),
        "proxy_cold_s": round(statistics.median(proxied), 2),
        "proxy_warm_s": round(statistics.median(warm), 2),
        "ratio": round(statistics.median(proxied) / statistics.median(direct), 3),
        "direct_runs": [round(x, 2) for x in direct],
        "proxy_cold_runs": [round(x, 2) for x in proxied],
        "proxy_warm_runs": [round(x, 2) for x in warm],
        "upstream_requests": upstream_requests,
        "target_ratio": TARGET_RATIO,
        "request_ms": {
            how: {
                kind: round(statistics.median(r[kind] for r in runs_), 2)
                for kind in ("page", "metadata", "file")
            }
            for how, runs_ in replays.items()
        },
    }
    results["load_average_end"] = os.getloadavg()
    _stop(upstream)
    results["seconds"] = round(time.perf_counter() - START, 1)
    return results


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    rows: list[tuple[str, str, str, str]] = []

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    for label, r in results["pages"].items():
        rows.append(
            (
                f"warm page {label} ({r['body_bytes']:,} B gz), req/s",
                f"{r['requests_per_s']:,.0f}",
                "",
                f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, {r['errors']} err, daemon CPU {r['daemon_cpu_percent']}%",
            )
        )
    w = results["warm_file"]
    rows.append(
        (
            f"warm file ({w['file_mb']:.0f} MB), MB/s",
            f"{w['mb_per_s']:,.0f}",
            "",
            f"runs {w['runs']}",
        )
    )
    mem = results["memory"]
    rows.append(
        (
            "cold file via proxy, MB/s",
            f"{mem['cold_mb_per_s']:,.1f}",
            "",
            f"{mem['cold_seconds']} s, daemon CPU {mem['cold_daemon_cpu_s']} s",
        )
    )
    rows.append(
        (
            "same file straight from upstream, MB/s",
            f"{results['upstream_direct_file_mb_per_s']:,.0f}",
            "",
            "reference",
        )
    )
    rows.append(
        (
            "daemon idle RSS, MB",
            f"{mem['idle_rss_mb']:.1f}",
            "",
            f"fresh start {mem['idle_rss_mb_fresh']:.1f}",
        )
    )
    rows.append(
        (
            f"daemon peak RSS, cold {mem['file_mb']:.0f} MB file, MB",
            f"{mem['peak_rss_mb']:.1f}",
            "",
            f"{mem['samples']} samples @20 ms",
        )
    )
    rows.append(
        (
            "  peak - idle, MB",
            f"{mem['peak_minus_idle_mb']:+.1f}",
            f"<= {TARGET_RSS_MB:.0f}",
            verdict(mem["peak_minus_idle_mb"] <= TARGET_RSS_MB),
        )
    )
    for label, c in results["concurrent"].items():
        rows.append(
            (
                f"upstream fetches, {c['clients']} cold GETs ({c['file_mb']} MB)",
                str(c["upstream_file_fetches"]),
                f"== {TARGET_FETCHES}",
                f"{verdict(c['upstream_file_fetches'] == TARGET_FETCHES)}; {c['complete_and_verified']}/{c['clients']} verified",
            )
        )
    i = results["install"]
    rows.append(
        (
            f"pip install {i['packages']} pkgs direct, s",
            f"{i['direct_s']:.2f}",
            "",
            f"runs {i['direct_runs']}",
        )
    )
    rows.append(
        (
            f"pip install {i['packages']} pkgs via proxy cold, s",
            f"{i['proxy_cold_s']:.2f}",
            "",
            f"runs {i['proxy_cold_runs']}",
        )
    )
    rows.append(
        (
            "  ratio proxy cold / direct",
            f"{i['ratio']:.3f}",
            f"<= {TARGET_RATIO}",
            verdict(i["ratio"] <= TARGET_RATIO),
        )
    )
    rows.append(
        (
            f"pip install {i['packages']} pkgs via proxy warm, s",
            f"{i['proxy_warm_s']:.2f}",
            "",
            f"runs {i['proxy_warm_runs']}",
        )
    )
    for how, label in (
        ("direct", "direct"),
        ("proxy_cold", "proxy cold"),
        ("proxy_warm", "proxy warm"),
    ):
        ms = i["request_ms"][how]
        rows.append(
            (
                f"pip's requests replayed, {label}, ms/req",
                f"{sum(ms.values()) / 3:.2f}",
                "",
                f"page {ms['page']}, metadata {ms['metadata']}, file {ms['file']}",
            )
        )
    rows.append(
        (
            "upstream requests per install",
            "",
            "",
            f"direct {i['upstream_requests']['direct']}, proxy cold {i['upstream_requests']['proxy_cold']}",
        )
    )
    widths = [
        max(len(r[k]) for r in rows + [("figure", "value", "target", "notes")])
        for k in range(4)
    ]
    title = (
        f"pypicache benchmark ({results['mode']}): {m['cpus']} CPUs ({m['cpu']}), Linux {m['kernel']}, "
        f"Python {m['python']}, Twisted {m['twisted']}, pip {m['pip']}; {results['seconds']} s; "
        f"load average {results['load_average_start'][0]:.2f} at start, {results['load_average_end'][0]:.2f} at end"
    )
    lines = [title]
    header = ("figure", "value", "target", "notes")

    def fmt(r: tuple[str, ...]) -> str:
        return f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}"

    lines.append(fmt(header))
    lines.append(fmt(tuple("-" * w for w in widths)))  # type: ignore[arg-type]
    lines.extend(fmt(r) for r in rows)
    return "\n".join(lines)


START = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and short loads (a smoke run)"
    )
    parser.add_argument(
        "--work", default=str(BENCH / "work"), help="work folder (default bench/work)"
    )
    parser.add_argument("--seconds", type=float, help="seconds of load per page figure")
    parser.add_argument(
        "--runs", type=int, help="pip installs of each kind (median taken)"
    )
    args = parser.parse_args()
    atexit.register(stop_all)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    # A --quick run keeps its own file, so it never overwrites the full figures.
    out = Path(args.work).resolve() / (
        "results-quick.json" if args.quick else "results.json"
    )
    results: dict[str, Any] = {}
    try:
        run(args, results)
    except BaseException as e:
        stop_all()
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
        print(
            f"\nFAILED; processes stopped; partial results in {partial}",
            file=sys.stderr,
        )
        raise
    finally:
        stop_all()
    out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(report(results))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
