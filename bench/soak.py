"""
A soak of pypicache (not run in CI), with real processes on 127.0.0.1::

    python bench/soak.py            # 64 clients: 60 s warm-up, then 600 s measured
    python bench/soak.py --quick    # smoke run: 16 clients, 5 s + 30 s

It starts a synthetic upstream (``bench/soak_upstream.py``: ``tests.fakeindex``
over generated wheels, making new projects on demand) and ``twistd -n
pypicache`` on a fresh cache, each in its own process, then runs N client
threads (``http.client`` keep-alive connections), each looping over a weighted
mix of requests:

- ``cached_page``: ``GET /simple/<p>/`` of a warmed project, with pip's Accept;
- ``cached_file``: ``GET /packages/<p>/<file>`` of a warmed file (sha256 checked);
- ``cold_page``: the page of a project nobody has asked for yet;
- ``cold_file``: the first download of a file from a cold page fetched earlier;
- ``upload``: ``PUT /packages/<p>/<file>`` of a new small wheel (201 expected).

An error is any other status, a wrong body, an exception or a request slower
than ``--timeout``.  It samples the daemon's RSS, CPU time, threads and open
files every few seconds, prints a table (per kind: count, errors, p50, p99, max,
requests/s; RSS and CPU; a verdict on the targets) and writes a JSON file
(``bench/work/soak.json``, or ``soak-quick.json``).  Every process it starts is
stopped on exit, Ctrl-C and errors included.  See docs/benchmark.rst, "Soak".

Targets: 0 errors; RSS within 10 % of its post-warm-up value over the second
half of the run; p99 of cached pages under 100 ms.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import gzip
import hashlib
import http.client
import itertools
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
import zlib
from array import array
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

# bench/procs.py: the process, /proc and machine helpers (it puts the repository
# root on sys.path, for tests.packages).
import procs as bench

from tests.packages import build_sdist, build_wheel, sha256_of

HOST = bench.HOST
ACCEPT_JSON = bench.ACCEPT_JSON
KINDS = ("cached_page", "cached_file", "cold_page", "cold_file", "upload")
DEFAULT_MIX = "cached_page=50,cached_file=30,cold_page=8,cold_file=8,upload=4"
COLD_PREFIX = "soak-cold-"
#: Bump when what build_warm() writes changes, so old folders are rebuilt.
BUILD_VERSION = 1

TARGET_ERRORS = 0
TARGET_RSS_DRIFT = 0.10
TARGET_CACHED_PAGE_P99_MS = 100.0


# -- the warmed projects -------------------------------------------------------


def warm_name(i: int) -> str:
    return f"soak-warm-{i:03d}"


#: Versions of each warmed project's wheels and their payload (hex characters of
#: incompressible bytes, so roughly half of it ends up in the file).
WARM_WHEELS = {"1.0": 0, "1.1": 32 * 1024, "1.2": 256 * 1024, "2.0": 1024 * 1024}


def payload(seed: str, size: int) -> str:
    return f"DATA = {hashlib.shake_128(seed.encode()).hexdigest(size // 2)!r}\n"


def build_warm(directory: Path, projects: int) -> dict[str, Any]:
    """The warmed projects' files (4 wheels, ~0.5 kB to ~0.5 MB, and an sdist
    each), reused when already built alike; returns the manifest."""
    manifest_path = directory / "manifest.json"
    wanted = {"projects": projects, "build_version": BUILD_VERSION}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("config") == wanted:
            return manifest
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    started = time.perf_counter()
    files: dict[str, list[dict[str, Any]]] = {}
    for i in range(projects):
        name = warm_name(i)
        paths = [
            build_wheel(
                directory,
                name,
                v,
                module_body=payload(f"{name}-{v}", size) if size else "",
            )
            for v, size in WARM_WHEELS.items()
        ]
        paths.append(build_sdist(directory, name, "2.0"))
        files[name] = [
            {"filename": p.name, "size": p.stat().st_size, "sha256": sha256_of(p)}
            for p in paths
        ]
    manifest = {
        "config": wanted,
        "files": files,
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


def cold_filenames(project: str) -> set[str]:
    """What the upstream lists for a project it makes on demand (soak_upstream.cold_wheels)."""
    from tests.packages import wheel_filename

    return {wheel_filename(project, "1.0"), wheel_filename(project, "1.1")}


# -- the clients ---------------------------------------------------------------------


class Recorder:
    """One client's record: send times and latencies per kind, errors."""

    def __init__(self) -> None:
        self.sent = {k: array("d") for k in KINDS}
        self.latency = {k: array("d") for k in KINDS}
        self.failed = {k: array("b") for k in KINDS}
        self.errors: list[dict[str, Any]] = []
        self.substituted = 0
        self.reconnects = 0

    def add(self, kind: str, sent: float, seconds: float, error: str | None) -> None:
        self.sent[kind].append(sent)
        self.latency[kind].append(seconds)
        self.failed[kind].append(1 if error else 0)
        if error and len(self.errors) < 50:
            self.errors.append(
                {
                    "kind": kind,
                    "t": round(sent, 3),
                    "ms": round(seconds * 1000, 1),
                    "error": error,
                }
            )


class Soak:
    """What the client threads share."""

    def __init__(
        self,
        port: int,
        manifest: dict[str, Any],
        mix: dict[str, float],
        timeout: float,
        scratch: Path,
        think: float,
        max_requests: int,
    ) -> None:
        self.port = port
        self.kinds = [k for k in KINDS if mix.get(k, 0) > 0]
        self.weights = [mix[k] for k in self.kinds]
        self.pages = [
            (p, {f["filename"] for f in fs}) for p, fs in manifest["files"].items()
        ]
        self.files = [(p, f) for p, fs in manifest["files"].items() for f in fs]
        self.timeout = timeout
        self.scratch = scratch
        self.think = think
        self.max_requests = max_requests
        self.cold_numbers = itertools.count()
        #: (project, filename, sha256 from the cold page) not downloaded yet.
        self.cold_files: collections.deque[tuple[str, str, str]] = collections.deque()
        self.stop = threading.Event()
        self.begin = 0.0  # monotonic: load starts (warm-up)
        self.measure_from = 0.0  # monotonic: the measured part starts
        self.end = 0.0
        self.recorders: list[Recorder] = []
        #: Clients that died of a bug of their own (a traceback each).
        self.crashed: list[str] = []

    def client(self, number: int) -> None:
        """One client: a keep-alive connection, requests until the end."""
        rng = random.Random(number)
        record = Recorder()
        self.recorders.append(record)
        conn: http.client.HTTPConnection | None = None
        uploads = 0
        done = 0
        try:
            while not self.stop.is_set() and done < self.max_requests:
                if time.monotonic() >= self.end:
                    break
                kind = rng.choices(self.kinds, self.weights)[0]
                if kind == "cold_file" and not self.cold_files:
                    kind = "cold_page"  # nothing to download yet: make some
                    record.substituted += 1
                kind, method, path, headers, body, check = self._prepare(
                    kind, number, uploads, rng
                )
                if kind == "upload":
                    uploads += 1
                if conn is None:
                    conn = http.client.HTTPConnection(
                        HOST, self.port, timeout=self.timeout
                    )
                sent = time.monotonic()
                started = time.perf_counter()
                error: str | None = None
                try:
                    conn.request(method, path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    seconds = time.perf_counter() - started
                    error = check(response, data)
                    if error is not None:
                        error = f"{method} {path}: {error}"
                    if response.will_close:
                        conn.close()
                        conn = None
                        record.reconnects += 1
                except Exception as e:  # noqa: BLE001 - every failure is an error here
                    seconds = time.perf_counter() - started
                    error = f"{method} {path}: {e.__class__.__name__}: {e}"
                    conn.close()
                    conn = None
                    record.reconnects += 1
                if error is None and seconds > self.timeout:
                    error = f"{method} {path}: took {seconds:.1f} s (timeout {self.timeout} s)"
                record.add(kind, sent - self.begin, seconds, error)
                done += 1
                if self.think:
                    self.stop.wait(rng.expovariate(1 / self.think))
        # A bug of the client must show in the results, not end a thread quietly.
        except Exception:  # noqa: BLE001
            self.crashed.append(f"client {number}: {traceback.format_exc()}")
        finally:
            if conn is not None:
                conn.close()

    def _prepare(
        self, kind: str, number: int, uploads: int, rng: random.Random
    ) -> tuple[
        str,
        str,
        str,
        dict[str, str],
        bytes | None,
        Callable[[Any, bytes], str | None],
    ]:
        """The kind actually sent (a cold file becomes a cold page when there is
        none left), method, path, headers, body and the check of the answer."""
        page_headers = {"Accept": ACCEPT_JSON, "Accept-Encoding": "gzip, deflate"}
        file_headers = {"Accept-Encoding": "identity"}
        if kind == "cached_page":
            project, expected = rng.choice(self.pages)
            return (
                kind,
                "GET",
                f"/simple/{project}/",
                page_headers,
                None,
                page_check(expected),
            )
        if kind == "cached_file":
            project, f = rng.choice(self.files)
            return (
                kind,
                "GET",
                f"/packages/{project}/{f['filename']}",
                file_headers,
                None,
                file_check(f["size"], f["sha256"]),
            )
        if kind == "cold_page":
            project = f"{COLD_PREFIX}{next(self.cold_numbers)}"
            expected = cold_filenames(project)

            def remember(doc: dict[str, Any]) -> None:
                for f in doc["files"]:
                    self.cold_files.append(
                        (project, f["filename"], f["hashes"]["sha256"])
                    )

            return (
                kind,
                "GET",
                f"/simple/{project}/",
                page_headers,
                None,
                page_check(expected, remember),
            )
        if kind == "cold_file":
            try:
                project, filename, sha = (
                    self.cold_files.pop()
                    if rng.random() < 0.5
                    else self.cold_files.popleft()
                )
            except IndexError:  # another client took the last one
                return self._prepare("cold_page", number, uploads, rng)
            return (
                kind,
                "GET",
                f"/packages/{project}/{filename}",
                file_headers,
                None,
                file_check(None, sha),
            )
        assert kind == "upload", kind
        project = f"soak-private-{number:02d}"
        version = f"1.0.{uploads}"
        directory = self.scratch / f"client-{number:02d}"
        wheel = build_wheel(
            directory,
            project,
            version,
            module_body=payload(f"{project}-{version}", 8 * 1024),
        )
        body = wheel.read_bytes()
        wheel.unlink()
        return (
            kind,
            "PUT",
            f"/packages/{project}/{wheel.name}",
            {"Content-Type": "application/octet-stream"},
            body,
            upload_check(wheel.name),
        )


def _decoded(response: Any, data: bytes) -> bytes:
    encoding = (response.getheader("content-encoding") or "").lower()
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "deflate":
        return zlib.decompress(data)
    return data


def page_check(
    expected: set[str], then: Callable[[dict[str, Any]], None] | None = None
) -> Callable[[Any, bytes], str | None]:
    def check(response: Any, data: bytes) -> str | None:
        if response.status != 200:
            return f"status {response.status}: {data[:200]!r}"
        ctype = response.getheader("content-type") or ""
        if not ctype.startswith("application/vnd.pypi.simple.v1+json"):
            return f"content-type {ctype!r}"
        doc = json.loads(_decoded(response, data))
        listed = {f["filename"] for f in doc["files"]}
        if listed != expected:
            return f"page lists {sorted(listed)}, expected {sorted(expected)}"
        if then is not None:
            then(doc)
        return None

    return check


def file_check(size: int | None, sha256: str) -> Callable[[Any, bytes], str | None]:
    def check(response: Any, data: bytes) -> str | None:
        if response.status != 200:
            return f"status {response.status}: {data[:200]!r}"
        if size is not None and len(data) != size:
            return f"{len(data)} bytes, expected {size}"
        if hashlib.sha256(data).hexdigest() != sha256:
            return "sha256 mismatch"
        return None

    return check


def upload_check(filename: str) -> Callable[[Any, bytes], str | None]:
    def check(response: Any, data: bytes) -> str | None:
        if response.status != 201:
            return f"status {response.status}: {data[:200]!r}"
        answer = json.loads(data)
        if answer.get("filename") != filename or answer.get("stored") is not True:
            return f"answer {answer!r}"
        return None

    return check


# -- sampling ----------------------------------------------------------------------------


def family(pid: int) -> list[int]:
    """``pid`` and its children (the workers of ``--workers``)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [pid, *map(int, f.read().split())]
    except OSError:
        return [pid]


def sample(pid: int) -> dict[str, Any]:
    """VmRSS (MB), CPU seconds, threads and open descriptors of a process,
    summed with its children's (the workers of ``--workers``)."""
    values: dict[str, Any] = {"rss_mb": 0.0, "threads": 0, "cpu_s": 0.0, "fds": 0}
    for member in family(pid):
        try:
            with open(f"/proc/{member}/status") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if key == "VmRSS":
                        values["rss_mb"] += int(rest.split()[0]) / 1024
                    elif key == "Threads":
                        values["threads"] += int(rest)
            values["cpu_s"] += bench.cpu_seconds(member)
            values["fds"] += len(os.listdir(f"/proc/{member}/fd"))
        except OSError:
            continue  # a worker that just ended
    values["rss_mb"] = round(values["rss_mb"], 1)
    values["cpu_s"] = round(values["cpu_s"], 2)
    return values


def machine_cpu() -> list[int]:
    """The machine's CPU jiffies from /proc/stat: user, nice, system, idle,
    iowait, irq, softirq, steal."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]


def machine_share(before: list[int], after: list[int]) -> dict[str, float]:
    """Busy, iowait and steal, in % of all CPUs, between two :func:`machine_cpu` reads."""
    delta = [b - a for a, b in zip(before, after)]
    total = sum(delta) or 1
    return {
        "busy_percent": round(100 * (total - delta[3] - delta[4]) / total, 1),
        "iowait_percent": round(100 * delta[4] / total, 1),
        "steal_percent": round(100 * delta[7] / total, 1),
    }


def by_tenth(
    samples: list[dict[str, Any]], start: float, span: float
) -> dict[str, list[float]]:
    """Per tenth of the measured part, from the samples nearest its ends: the
    request rate, the CPU milliseconds per request of the daemon, the upstream
    and the clients, and the machine's busy and steal %. The mix is the same
    all along, so a process's CPU per request moves only if its work or the
    CPU's speed does: when all three move together, the host changed (a
    neighbour on the same cores slows every instruction without showing as
    steal)."""
    figures: dict[str, list[float]] = {
        k: []
        for k in ("req_per_s", "daemon_ms", "upstream_ms", "client_ms", "busy", "steal")
    }
    if not samples or "machine" not in samples[0]:
        return figures
    ends = [
        min(samples, key=lambda s: abs(s["t"] - (start + i * span / 10)))
        for i in range(11)
    ]
    if len({id(end) for end in ends}) < 11:
        return figures  # tenths shorter than the samples' interval
    for a, b in zip(ends, ends[1:]):
        seconds = (b["t"] - a["t"]) or 1
        requests = (b["requests"] - a["requests"]) or 1
        figures["req_per_s"].append(round(requests / seconds, 1))
        for key, field in (
            ("daemon_ms", "cpu_s"),
            ("upstream_ms", "upstream_cpu_s"),
            ("client_ms", "client_cpu_s"),
        ):
            figures[key].append(round(1000 * (b[field] - a[field]) / requests, 2))
        share = machine_share(a["machine"], b["machine"])
        figures["busy"].append(share["busy_percent"])
        figures["steal"].append(share["steal_percent"])
    return figures


def stall_report(pid: int) -> dict[str, Any]:
    """What the daemon's threads are doing: state and kernel wait channel of each,
    and a ``py-spy dump`` when py-spy is installed."""
    threads = []
    for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
        try:
            stat = (task / "stat").read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            state = stat[stat.rindex(")") + 2]
            wchan = (task / "wchan").read_text().strip()
        except OSError:
            continue
        threads.append(
            {"tid": int(task.name), "name": name, "state": state, "wchan": wchan}
        )
    report: dict[str, Any] = {"threads": threads}
    spy = shutil.which("py-spy")
    if spy:
        try:
            out = subprocess.run(
                [spy, "dump", "--pid", str(pid)],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            report["py_spy"] = (out.stdout + out.stderr)[-6000:]
        except subprocess.TimeoutExpired:
            report["py_spy"] = "py-spy dump timed out"
    return report


def is_stall(before: list[dict[str, Any]], sample: dict[str, Any]) -> bool:
    """Whether fewer requests completed since the last sample than 5 % of the
    average per interval so far (none at all, while there is no average yet)."""
    if sample["t"] - before[-1]["t"] < 1.0:
        return False  # too short to tell (the extra sample where measuring starts)
    done = sample["requests"] - before[-1]["requests"]
    if len(before) < 3:
        return done == 0
    typical = (before[-1]["requests"] - before[0]["requests"]) / (len(before) - 1)
    return done <= 0.05 * typical


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted ``values`` (nan if empty)."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, math.ceil(p * len(values)) - 1))]


def ms(seconds: float, digits: int = 2) -> float | None:
    """Seconds as rounded milliseconds; None for nan (no requests), as JSON has no nan."""
    return None if math.isnan(seconds) else round(seconds * 1000, digits)


def summarize(
    recorders: list[Recorder], start: float, end: float, windows: int
) -> dict[str, Any]:
    """Per kind: count, errors, p50/p99/max ms, requests/s; and per time window."""
    out: dict[str, Any] = {}
    span = end - start
    for kind in KINDS:
        lat: list[float] = []
        errors = 0
        per_window: list[list[float]] = [[] for _ in range(windows)]
        window_errors = [0] * windows
        for r in recorders:
            for sent, seconds, failed in zip(
                r.sent[kind], r.latency[kind], r.failed[kind]
            ):
                if not start <= sent < end:
                    continue
                lat.append(seconds)
                errors += failed
                w = min(windows - 1, int((sent - start) / span * windows))
                per_window[w].append(seconds)
                window_errors[w] += failed
        lat.sort()
        for w in per_window:
            w.sort()
        out[kind] = {
            "count": len(lat),
            "errors": errors,
            "p50_ms": ms(percentile(lat, 0.50)),
            "p99_ms": ms(percentile(lat, 0.99)),
            "max_ms": ms(lat[-1], 1) if lat else None,
            "mean_ms": ms(statistics.fmean(lat)) if lat else None,
            "requests_per_s": round(len(lat) / span, 1) if span > 0 else 0.0,
            "windows": [
                {
                    "from_s": round(start + i * span / windows, 1),
                    "count": len(w),
                    "errors": window_errors[i],
                    "p50_ms": ms(percentile(w, 0.50)),
                    "p99_ms": ms(percentile(w, 0.99)),
                }
                for i, w in enumerate(per_window)
            ],
        }
    return out


def daemon_logs(path: Path) -> list[Path]:
    """The daemon's log and its rotated parts (twistd rotates at 1 MB), oldest first."""
    rotated = [p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()]
    return sorted(rotated, key=lambda p: -int(p.suffix[1:])) + [path]


def daemon_log_problems(path: Path) -> dict[str, Any]:
    """Lines of the daemon's log (all its parts) at warn level or worse, and tracebacks."""
    counts: collections.Counter[str] = collections.Counter()
    examples: list[str] = []
    for part in daemon_logs(path):
        with open(part, errors="replace") as f:
            for line in f:
                level = None
                for marker in ("#warn]", "#error]", "#critical]", "#failure]"):
                    if marker in line:
                        level = marker.strip("#]")
                if level is None and line.startswith("Traceback"):
                    level = "traceback"
                if level is None and "Unhandled" in line:
                    level = "unhandled"
                if level is not None:
                    counts[level] += 1
                    if len(examples) < 10:
                        examples.append(line.rstrip()[:300])
    return {"counts": dict(counts), "examples": examples}


def git_state() -> dict[str, Any]:
    """The commit and the files changed in the working tree (read-only git calls)."""

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=bench.ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout

    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "changed": [line[3:] for line in git("status", "--porcelain").splitlines()],
    }


# -- the run ------------------------------------------------------------------------------


def parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        kind = kind.strip()
        if kind not in KINDS:
            raise argparse.ArgumentTypeError(
                f"unknown kind {kind!r} (kinds: {', '.join(KINDS)})"
            )
        mix[kind] = float(weight)
    if sum(mix.values()) <= 0:
        raise argparse.ArgumentTypeError("the weights add up to 0")
    return mix


def prime(port: int, manifest: dict[str, Any]) -> float:
    """Fetch every warmed page and file once (8 at a time), checking them."""
    started = time.perf_counter()
    jobs: list[tuple[str, Callable[[Any, bytes], str | None]]] = []
    for project, files in manifest["files"].items():
        jobs.append((f"/simple/{project}/", page_check({f["filename"] for f in files})))
    for project, files in manifest["files"].items():
        for f in files:
            jobs.append(
                (
                    f"/packages/{project}/{f['filename']}",
                    file_check(f["size"], f["sha256"]),
                )
            )

    def fetch(job: tuple[str, Callable[[Any, bytes], str | None]]) -> None:
        path, check = job
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        try:
            conn.request(
                "GET", path, headers={"Accept": ACCEPT_JSON, "Accept-Encoding": "gzip"}
            )
            response = conn.getresponse()
            error = check(response, response.read())
        finally:
            conn.close()
        if error is not None:
            raise RuntimeError(f"warming GET {path}: {error}")

    pages = [j for j in jobs if j[0].startswith("/simple/")]
    files = [j for j in jobs if not j[0].startswith("/simple/")]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(fetch, pages))
        list(pool.map(fetch, files))
    return time.perf_counter() - started


def run(args: argparse.Namespace, results: dict[str, Any]) -> None:
    work = Path(args.work).resolve()
    runs = work / ("soak-quick-run" if args.quick else "soak-run")
    if runs.exists():
        shutil.rmtree(runs)
    runs.mkdir(parents=True)
    results.update(
        {
            "mode": "quick" if args.quick else "full",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": bench.machine(),
            "tree": git_state(),
            "load_average_start": os.getloadavg(),
            "config": {
                "clients": args.clients,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "mix": args.mix,
                "timeout_s": args.timeout,
                "think_ms": args.think * 1000,
                "warm_projects": args.projects,
                "page_ttl_s": args.page_ttl,
                "sample_interval_s": args.sample_interval,
            },
        }
    )

    files = work / f"soak-upstream-{args.projects}"
    t0 = time.perf_counter()
    manifest = build_warm(files, args.projects)
    print(
        f"Warmed projects: {args.projects} in {files} ({time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    upstream, up_port = bench.start_upstream(
        files,
        runs / "upstream.log",
        script=BENCH / "soak_upstream.py",
        extra_args=[
            "--cold-dir",
            str(runs / "upstream-cold"),
            "--cold-prefix",
            COLD_PREFIX,
        ],
    )
    index_url = f"http://{HOST}:{up_port}/simple/"
    daemon, port = bench.start_daemon(
        runs / "cache",
        index_url,
        runs / "daemon.log",
        extra_args=["--page-ttl", str(args.page_ttl), *args.daemon_arg],
    )
    results["pids"] = {"daemon": daemon.pid, "upstream": upstream.pid}
    print(
        f"Upstream {index_url} (pid {upstream.pid}); daemon http://{HOST}:{port}/ (pid {daemon.pid})",
        flush=True,
    )
    results["rss_fresh_mb"] = sample(daemon.pid)["rss_mb"]
    results["prime_seconds"] = round(prime(port, manifest), 2)
    print(
        f"Primed {len(manifest['files'])} pages and "
        f"{sum(len(f) for f in manifest['files'].values())} files in {results['prime_seconds']} s",
        flush=True,
    )

    soak = Soak(
        port,
        manifest,
        args.mix,
        args.timeout,
        runs / "uploads",
        args.think,
        args.max_requests // args.clients,
    )
    soak.begin = time.monotonic()
    soak.measure_from = soak.begin + args.warmup
    soak.end = soak.measure_from + args.duration
    threads = [
        threading.Thread(target=soak.client, args=(i,), daemon=True, name=f"client-{i}")
        for i in range(args.clients)
    ]
    samples: list[dict[str, Any]] = []
    results["samples"] = samples
    stalls: list[dict[str, Any]] = []
    results["stalls"] = stalls
    machine_from = machine_to = machine_cpu()
    cpu0 = time.process_time()
    for t in threads:
        t.start()
    print(
        f"Load: {args.clients} clients, {args.warmup:g} s warm-up then {args.duration:g} s measured "
        f"(mix {args.mix_text})",
        flush=True,
    )

    # Sample every interval (and exactly when the measured part starts and ends).
    times = {
        soak.begin + k * args.sample_interval
        for k in range(int((args.warmup + args.duration) / args.sample_interval) + 1)
    }
    times |= {soak.measure_from, soak.end}
    last_progress = soak.begin
    last_seen: dict[int, int] = {}
    last_total = 0
    last_cpu = sample(daemon.pid)["cpu_s"]
    for when in sorted(times):
        delay = when - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if daemon.poll() is not None:
            raise RuntimeError(
                f"the daemon exited ({daemon.returncode}) at t={when - soak.begin:.0f} s; "
                f"see {runs / 'daemon.log'}:\n{bench.tail(runs / 'daemon.log')}"
            )
        s = sample(daemon.pid)
        s["t"] = round(when - soak.begin, 2)
        s["upstream_cpu_s"] = round(bench.cpu_seconds(upstream.pid), 2)
        s["client_cpu_s"] = round(time.process_time() - cpu0, 2)
        s["requests"] = sum(len(r.sent[k]) for r in soak.recorders for k in KINDS)
        s["errors"] = sum(sum(r.failed[k]) for r in soak.recorders for k in KINDS)
        s["machine"] = machine_cpu()
        if when == soak.measure_from:
            machine_from = machine_cpu()
        elif when == soak.end:
            machine_to = machine_cpu()
        # (Almost) no request completed for a whole interval under load: look at
        # the daemon while it is stuck.
        if samples and when < soak.end and is_stall(samples, s):
            if len(stalls) < 3:
                stalls.append({"t": s["t"], **stall_report(daemon.pid)})
            print(
                f"  t={s['t']:5.0f} s  STALL: (almost) no request completed in the last interval",
                flush=True,
            )
        samples.append(s)
        now = time.monotonic()
        if now - last_progress >= args.progress or when == soak.end:
            span = now - last_progress
            recent: list[float] = []
            for r in soak.recorders:
                lat = r.latency["cached_page"]
                recent.extend(lat[last_seen.get(id(r), 0) :])
                last_seen[id(r)] = len(lat)
            recent.sort()
            print(
                f"  t={s['t']:5.0f} s  {(s['requests'] - last_total) / span:7.1f} req/s  "
                f"errors {s['errors']}  RSS {s['rss_mb']:.1f} MB  "
                f"daemon CPU {100 * (s['cpu_s'] - last_cpu) / span:3.0f}%  fds {s['fds']}  "
                f"cached page p99 {percentile(recent, 0.99) * 1000:.1f} ms",
                flush=True,
            )
            last_progress, last_total, last_cpu = now, s["requests"], s["cpu_s"]
    soak.stop.set()
    for t in threads:
        t.join(args.timeout + 5)
    stuck = sum(t.is_alive() for t in threads)
    client_cpu = time.process_time() - cpu0
    results["load_average_end"] = os.getloadavg()

    # -- results --------------------------------------------------------------------
    start, end = args.warmup, args.warmup + args.duration
    results["kinds"] = summarize(soak.recorders, start, end, windows=10)
    warm = summarize(soak.recorders, 0.0, start, windows=1) if args.warmup else {}
    results["warmup_errors"] = sum(k["errors"] for k in warm.values())
    results["warmup_requests"] = sum(k["count"] for k in warm.values())
    results["late_requests"] = sum(
        1 for r in soak.recorders for k in KINDS for t in r.sent[k] if t >= end
    )
    results["error_examples"] = [e for r in soak.recorders for e in r.errors][:50]
    results["cold_file_substituted_by_cold_page"] = sum(
        r.substituted for r in soak.recorders
    )
    results["reconnects"] = sum(r.reconnects for r in soak.recorders)
    results["clients_stuck_at_end"] = stuck
    results["clients_crashed"] = soak.crashed

    measured = [s for s in samples if start <= s["t"] <= end + 0.5]
    base = measured[0]
    last = measured[-1]
    second_half = [s for s in measured if s["t"] >= start + args.duration / 2]
    drift = max(abs(s["rss_mb"] - base["rss_mb"]) / base["rss_mb"] for s in second_half)
    ts = [s["t"] for s in measured]
    rss = [s["rss_mb"] for s in measured]
    slope = statistics.linear_regression(ts, rss).slope * 60 if len(ts) > 1 else 0.0
    results["rss"] = {
        "fresh_mb": results["rss_fresh_mb"],
        "start_mb": base["rss_mb"],
        "min_mb": min(rss),
        "max_mb": max(rss),
        "end_mb": last["rss_mb"],
        "peak_warmup_mb": max(s["rss_mb"] for s in samples if s["t"] <= start),
        "second_half_max_drift": round(drift, 4),
        "slope_mb_per_min": round(slope, 3),
        "flat": drift <= TARGET_RSS_DRIFT,
        "samples": len(measured),
    }
    results["daemon"] = {
        "cpu_s": round(last["cpu_s"] - base["cpu_s"], 1),
        "cpu_percent": round(100 * (last["cpu_s"] - base["cpu_s"]) / args.duration, 1),
        "threads_start": base["threads"],
        "threads_end": last["threads"],
        "threads_max": max(s["threads"] for s in measured),
        "fds_start": base["fds"],
        "fds_end": last["fds"],
        "fds_max": max(s["fds"] or 0 for s in measured),
    }
    results["upstream"] = {
        "cpu_percent": round(
            100 * (last["upstream_cpu_s"] - base["upstream_cpu_s"]) / args.duration, 1
        ),
        **bench.upstream_stats(up_port),
    }
    results["client"] = {
        "cpu_percent": round(
            100 * (last["client_cpu_s"] - base["client_cpu_s"]) / args.duration, 1
        ),
        "cpu_s_total": round(client_cpu, 1),
    }
    results["machine_cpu"] = machine_share(machine_from, machine_to)
    results["by_tenth"] = by_tenth(samples, args.warmup, args.duration)
    results["stalled_intervals"] = sum(
        1 for i in range(1, len(samples)) if is_stall(samples[:i], samples[i])
    )
    results["daemon_log"] = daemon_log_problems(runs / "daemon.log")
    results["daemon_log_mb"] = round(
        sum(p.stat().st_size for p in daemon_logs(runs / "daemon.log")) / 1024**2, 1
    )
    total = sum(k["count"] for k in results["kinds"].values())
    errors = sum(k["errors"] for k in results["kinds"].values())
    results["total"] = {
        "requests": total,
        "errors": errors,
        "requests_per_s": round(total / args.duration, 1),
    }
    all_errors = errors + results["warmup_errors"]
    p99 = results["kinds"]["cached_page"]["p99_ms"]
    results["verdict"] = {
        "errors": {
            "value": all_errors,
            "target": TARGET_ERRORS,
            "ok": all_errors == TARGET_ERRORS and not stuck and not soak.crashed,
        },
        "rss_flat": {
            "value": round(100 * drift, 1),
            "target": 100 * TARGET_RSS_DRIFT,
            "ok": drift <= TARGET_RSS_DRIFT,
        },
        "cached_page_p99_ms": {
            "value": p99,
            "target": TARGET_CACHED_PAGE_P99_MS,
            "ok": p99 is not None and p99 < TARGET_CACHED_PAGE_P99_MS,
        },
    }
    results["reactor"] = reactor_health(port)
    results["stopped_processes"] = True
    bench.stop(daemon)
    bench.stop(upstream)


def reactor_health(port: int) -> dict[str, Any]:
    """The daemon's watchdog figures from ``/metrics`` (``pypicache/web/watchdog.py``):
    ticks, how many ran more than 25 and 100 ms late, garbage collections by
    generation (count and seconds). Empty for a tree without the watchdog."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return {}
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(
            (
                "pypicache_reactor_",
                "pypicache_gc_pause_",
                "pypicache_request_duration_seconds_sum",
                "pypicache_request_duration_seconds_count",
            )
        ):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    ticks = values.get("pypicache_reactor_lag_seconds_count")
    if not ticks:
        return {}

    def within(le: str) -> float:
        return values.get(f'pypicache_reactor_lag_seconds_bucket{{le="{le}"}}', 0.0)

    gc_ = {
        g: {
            "count": int(
                values.get(f'pypicache_gc_pause_seconds_count{{generation="{g}"}}', 0)
            ),
            "seconds": round(
                values.get(f'pypicache_gc_pause_seconds_sum{{generation="{g}"}}', 0.0),
                3,
            ),
            "over_10_ms": int(
                values.get(f'pypicache_gc_pause_seconds_count{{generation="{g}"}}', 0)
                - values.get(
                    f'pypicache_gc_pause_seconds_bucket{{generation="{g}",le="0.01"}}',
                    0,
                )
            ),
        }
        for g in ("0", "1", "2")
    }
    return {
        "ticks": int(ticks),
        "late_over_25_ms": int(ticks - within("0.025")),
        "late_over_100_ms": int(ticks - within("0.1")),
        "late_seconds": round(values.get("pypicache_reactor_lag_seconds_sum", 0.0), 2),
        "gc": gc_,
        # What the daemon itself measured (request parsed to answer written),
        # against what the clients see.
        "daemon_mean_ms": {
            kind: round(
                1000
                * values.get(
                    f'pypicache_request_duration_seconds_sum{{kind="{kind}"}}', 0
                )
                / count,
                1,
            )
            for kind in ("page", "file", "write")
            if (
                count := values.get(
                    f'pypicache_request_duration_seconds_count{{kind="{kind}"}}'
                )
            )
        },
    }


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    c, tree = results["config"], results["tree"]
    title = (
        f"pypicache soak ({results['mode']}): {c['clients']} clients, "
        f"{c['duration_s']:g} s measured after {c['warmup_s']:g} s warm-up; "
        f"{m['cpus']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}, "
        f"Twisted {m['twisted']}; load average {results['load_average_start'][0]:.2f} "
        f"at start, {results['load_average_end'][0]:.2f} at end"
    )
    lines = [
        title,
        f"tree {tree['commit']} + {len(tree['changed'])} changed files; "
        + f"started {results['started']}",
        "",
    ]
    header = ("kind", "count", "errors", "p50 ms", "p99 ms", "max ms", "req/s")
    rows = [header]

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for kind, k in results["kinds"].items():
        rows.append(
            (
                kind,
                f"{k['count']:,}",
                str(k["errors"]),
                num(k["p50_ms"], ".1f"),
                num(k["p99_ms"], ".1f"),
                num(k["max_ms"], ".0f"),
                f"{k['requests_per_s']:.1f}",
            )
        )
    t = results["total"]
    rows.append(
        (
            "all",
            f"{t['requests']:,}",
            str(t["errors"]),
            "",
            "",
            "",
            f"{t['requests_per_s']:.1f}",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for j, r in enumerate(rows):
        lines.append(
            "  ".join(
                (c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]))
                for i, c in enumerate(r)
            )
        )
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    r, d = results["rss"], results["daemon"]
    start = results["config"]["warmup_s"]
    span = results["config"]["duration_s"]
    lines.append(
        f"daemon RSS MB: fresh {r['fresh_mb']}, after warm-up {r['start_mb']}, min {r['min_mb']}, "
        f"max {r['max_mb']}, end {r['end_mb']} ({r['slope_mb_per_min']:+.2f} MB/min; "
        f"{r['samples']} samples)"
    )
    tenths = [
        min(results["samples"], key=lambda s: abs(s["t"] - (start + i * span / 10)))[
            "rss_mb"
        ]
        for i in range(11)
    ]
    lines.append(
        f"daemon RSS MB by tenth of the run: {' '.join(f'{x:.1f}' for x in tenths)}"
    )
    lines.append(
        "p99 ms by tenth of the run: "
        + "; ".join(
            f"{kind} "
            + " ".join(
                num(w["p99_ms"], ".0f") for w in results["kinds"][kind]["windows"]
            )
            for kind in ("cached_page", "cold_page", "upload")
        )
    )
    tenth = results.get("by_tenth", {})
    if tenth.get("req_per_s"):
        lines.append(
            "by tenth of the run: "
            + "; ".join(
                f"{label} " + " ".join(format(x, fmt) for x in tenth[key])
                for key, label, fmt in (
                    ("req_per_s", "req/s", ".0f"),
                    ("daemon_ms", "daemon CPU ms/req", ".2f"),
                    ("upstream_ms", "upstream", ".2f"),
                    ("client_ms", "clients", ".2f"),
                    ("busy", "machine busy %", ".0f"),
                    ("steal", "steal %", ".0f"),
                )
            )
        )
    lines.append(
        f"daemon CPU {d['cpu_s']} s ({d['cpu_percent']}% of one core); threads {d['threads_start']}"
        f"->{d['threads_end']} (max {d['threads_max']}); open fds {d['fds_start']}->{d['fds_end']} "
        f"(max {d['fds_max']})"
    )
    lines.append(
        f"upstream CPU {results['upstream']['cpu_percent']}%, {results['upstream']['generated_projects']:,} "
        f"projects made; client CPU {results['client']['cpu_percent']}% (all threads); "
        f"warm-up: {results['warmup_requests']:,} requests, {results['warmup_errors']} errors"
    )
    mc = results["machine_cpu"]
    ours = (
        d["cpu_percent"]
        + results["upstream"]["cpu_percent"]
        + results["client"]["cpu_percent"]
    ) / m["cpus"]
    lines.append(
        f"machine CPU: {mc['busy_percent']}% of all {m['cpus']} busy (this soak's three "
        f"processes: {ours:.1f}%), "
        f"iowait {mc['iowait_percent']}%, steal {mc['steal_percent']}%; "
        f"stalled intervals: {results['stalled_intervals']}"
    )
    health = results.get("reactor")
    if health:
        lines.append(
            f"reactor ticks (every 50 ms, whole run): {health['ticks']:,}, "
            f"late > 25 ms {health['late_over_25_ms']:,}, > 100 ms {health['late_over_100_ms']:,}; "
            "GC "
            + ", ".join(
                f"gen{g} {v['count']:,} ({v['seconds']} s, {v['over_10_ms']} > 10 ms)"
                for g, v in health["gc"].items()
            )
            + "; daemon-side mean ms "
            + ", ".join(f"{k} {v}" for k, v in health.get("daemon_mean_ms", {}).items())
        )
    log = results["daemon_log"]["counts"]
    lines.append(
        f"daemon log: {results['daemon_log_mb']} MB; warn/error lines: {log or 'none'}; "
        f"reconnects {results['reconnects']}; cold files replaced by cold pages "
        f"{results['cold_file_substituted_by_cold_page']}"
    )
    lines.append("")
    v = results["verdict"]

    def ok(x: dict[str, Any]) -> str:
        return "ok" if x["ok"] else "MISSED"

    lines.append(
        f"target errors == 0 .................. {v['errors']['value']}  {ok(v['errors'])}"
    )
    lines.append(
        f"target RSS within 10 % (second half) .. max drift {v['rss_flat']['value']} %  {ok(v['rss_flat'])}"
    )
    lines.append(
        f"target cached page p99 < 100 ms ...... {num(v['cached_page_p99_ms']['value'], '.1f')} ms  "
        f"{ok(v['cached_page_p99_ms'])}"
    )
    for e in results["error_examples"][:5]:
        lines.append(f"  error: {e}")
    if results["clients_stuck_at_end"] or results["clients_crashed"]:
        lines.append(
            f"  clients stuck at the end: {results['clients_stuck_at_end']}; "
            f"crashed: {len(results['clients_crashed'])} (tracebacks in the JSON)"
        )
    for stall in results["stalls"]:
        main = stall["threads"][0] if stall["threads"] else {}
        lines.append(
            f"  stall at t={stall['t']:.0f} s: main thread state {main.get('state')} "
            f"in {main.get('wchan') or '-'}; py-spy dump in the JSON ('stalls')"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="A soak of pypicache: N clients, a mix of cached and cold pages and "
        "files and uploads; errors, latency per kind, RSS over time. "
        "See docs/benchmark.rst, 'Soak'."
    )
    parser.add_argument(
        "--quick", action="store_true", help="16 clients, 5 s warm-up, 30 s"
    )
    parser.add_argument(
        "--duration", type=float, help="measured seconds (default 600; 30 quick)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        help="seconds of load before measuring (default 60; 5 quick)",
    )
    parser.add_argument(
        "--clients", type=int, help="concurrent clients (default 64; 16 quick)"
    )
    parser.add_argument(
        "--mix", default=DEFAULT_MIX, help=f"weights per kind (default {DEFAULT_MIX})"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="per-request timeout, s"
    )
    parser.add_argument(
        "--think",
        type=float,
        default=0.0,
        help="mean pause between a client's requests, ms (default 0)",
    )
    parser.add_argument(
        "--projects", type=int, default=100, help="warmed projects (default 100)"
    )
    parser.add_argument(
        "--page-ttl",
        type=float,
        help="the daemon's --page-ttl (default: longer than the run)",
    )
    parser.add_argument(
        "--daemon-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for twistd pypicache, e.g. --daemon-arg=--workers=2 "
        "(repeatable)",
    )
    parser.add_argument(
        "--sample-interval", type=float, default=2.0, help="RSS sampling, s"
    )
    parser.add_argument(
        "--max-requests", type=int, default=5_000_000, help="cap on all requests"
    )
    parser.add_argument(
        "--work", default=str(BENCH / "work"), help="work folder (default bench/work)"
    )
    parser.add_argument(
        "--output", help="JSON results (default WORK/soak.json or soak-quick.json)"
    )
    args = parser.parse_args()
    args.duration = args.duration or (30.0 if args.quick else 600.0)
    args.warmup = (
        args.warmup if args.warmup is not None else (5.0 if args.quick else 60.0)
    )
    args.clients = args.clients or (16 if args.quick else 64)
    args.mix_text = args.mix
    args.mix = parse_mix(args.mix)
    args.think /= 1000
    args.page_ttl = args.page_ttl or max(3600.0, 2 * (args.warmup + args.duration))
    args.progress = 5.0 if args.quick else 30.0
    if args.duration <= 0 or args.clients < 1 or args.sample_interval <= 0:
        parser.error("--duration, --clients and --sample-interval must be positive")
    atexit.register(bench.stop_all)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, bench.on_signal)
    out = Path(
        args.output
        or Path(args.work) / ("soak-quick.json" if args.quick else "soak.json")
    ).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    try:
        run(args, results)
    except BaseException as e:
        bench.stop_all()
        results["error"] = f"{e.__class__.__name__}: {e}"
        partial = out.with_name(out.stem + "-partial.json")
        partial.write_text(json.dumps(results, indent=1, default=str) + "\n")
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            print(
                f"\nInterrupted; processes stopped; partial results in {partial}",
                file=sys.stderr,
            )
            sys.exit(130 if isinstance(e, KeyboardInterrupt) else e.code)
        print(
            f"\nFAILED; processes stopped; partial results in {partial}",
            file=sys.stderr,
        )
        raise
    finally:
        bench.stop_all()
    out.write_text(json.dumps(results, indent=1) + "\n")
    print()
    print(report(results))
    print(f"\nwritten: {out}")
    sys.exit(0 if all(v["ok"] for v in results["verdict"].values()) else 1)


if __name__ == "__main__":
    main()
