"""
The benchmark's clients: one file download as fast as one client reads, a
request-rate load (``wrk`` when installed, else a raw asyncio HTTP/1.1 client),
and hermetic ``pip install`` / ``uv pip install`` runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from procs import HOST, MB

from tests.clients import clean_env, pip_install_args, uv_binary


def get(
    url: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One GET (no redirect followed): status, lower-cased headers, body."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        conn.request(
            "GET",
            parts.path + (f"?{parts.query}" if parts.query else ""),
            headers=headers or {},
        )
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def download(url: str, *, hash_it: bool = False) -> dict[str, Any]:
    """GET a file as fast as one client can read it, following redirects (counted);
    return status, size, seconds (and sha256)."""
    started = time.perf_counter()
    redirects = 0
    while True:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
        conn.request("GET", parts.path, headers={"Accept-Encoding": "identity"})
        response = conn.getresponse()
        if response.status in (301, 302, 303, 307, 308) and redirects < 5:
            url = urljoin(url, response.getheader("location", ""))
            response.read()
            conn.close()
            redirects += 1
            continue
        break
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
        "mb_per_s": size / MB / elapsed if elapsed else 0.0,
        "redirects": redirects,
        "final_host": f"{parts.hostname}:{parts.port}",
        "sha256": digest.hexdigest() if digest else None,
    }


# -- request-rate load -----------------------------------------------------------


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def load(
    url: str, headers: dict[str, str], connections: int, seconds: float
) -> dict[str, Any]:
    """Requests/s of ``url`` with ``connections`` keep-alive connections."""
    if have_wrk():
        return wrk(url, headers, connections, seconds)
    parts = urlsplit(url)
    return asyncio.run(
        _load(
            parts.port or 80,
            parts.path,
            headers,
            connections,
            seconds,
            min(1.0, seconds / 5),
        )
    )


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(
    url: str, headers: dict[str, str], connections: int, seconds: float
) -> dict[str, Any]:
    """Run ``wrk --latency`` and read its summary."""
    args = [
        "wrk",
        "-t",
        str(min(2, connections)),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run(
        args + [url], check=True, capture_output=True, text=True, timeout=seconds + 60
    ).stdout

    def number(pattern: str) -> float:
        m = re.search(pattern, out)
        return float(m.group(1)) if m else 0.0

    def latency(pct: str) -> float:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        return round(float(m.group(1)) * _UNITS[m.group(2)], 2) if m else float("nan")

    requests = int(number(r"(\d+) requests in"))
    errors = int(number(r"Non-2xx or 3xx responses: (\d+)"))
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "client": "wrk",
        "requests_per_s": round(number(r"Requests/sec:\s+([\d.]+)"), 1),
        "requests": requests,
        "errors": errors,
        "socket_errors": socket_errors.group(1).strip() if socket_errors else "",
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "seconds": seconds,
        "connections": connections,
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
    counts = {"ok": 0, "errors": 0, "reconnects": 0}
    loop = asyncio.get_running_loop()
    measure_from = loop.time() + warmup
    end = measure_from + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while True:
                sent = loop.time()
                if sent >= end:
                    return
                writer.write(request)
                status, _, keep = await _read_response(reader)
                if sent >= measure_from:
                    latencies.append(loop.time() - sent)
                    counts["ok" if status < 400 else "errors"] += 1
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
        if not latencies:
            return float("nan")
        return round(
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2
        )

    return {
        "client": "python",
        "requests_per_s": round(counts["ok"] / measured, 1),
        "requests": counts["ok"] + counts["errors"],
        "errors": counts["errors"],
        "reconnects": counts["reconnects"],
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "seconds": round(measured, 2),
        "connections": connections,
    }


# -- installers ---------------------------------------------------------------------


def _fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _timed(args: list[str], env: dict[str, str], cwd: Path, what: str) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        args, check=False, env=env, cwd=cwd, capture_output=True, text=True, timeout=900
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return elapsed


def pip_install(index_url: str, requirement: str, scratch: Path) -> tuple[float, int]:
    """A hermetic ``pip install --no-cache-dir --target`` into a fresh folder;
    return its wall-clock seconds and how many distributions it installed."""
    scratch = _fresh(scratch)
    target = scratch / "target"
    env = clean_env(
        scratch
    )  # no PIP_* from here, PIP_CONFIG_FILE=/dev/null, HOME in scratch
    elapsed = _timed(
        pip_install_args(index_url, [requirement], target), env, scratch, "pip"
    )
    return elapsed, len(list(target.glob("*.dist-info")))


def uv_install(index_url: str, requirement: str, scratch: Path) -> tuple[float, int]:
    """``uv pip install --no-config --cache-dir <fresh> --target <fresh>``, with no
    ``UV_*`` variable in its environment; return seconds and distributions installed."""
    scratch = _fresh(scratch)
    target = scratch / "target"
    env = {k: v for k, v in clean_env(scratch).items() if not k.startswith("UV_")}
    args = [
        uv_binary(),
        "pip",
        "install",
        "--no-config",
        "--no-progress",
        "--cache-dir",
        str(scratch / "uv-cache"),
        "--index-url",
        index_url,
        "--target",
        str(target),
        "--python",
        sys.executable,
        "--link-mode",
        "copy",
        requirement,
    ]
    elapsed = _timed(args, env, scratch, "uv")
    return elapsed, len(list(target.glob("*.dist-info")))


def uv_version() -> str:
    try:
        return subprocess.run(
            [uv_binary(), "--version"], capture_output=True, text=True, check=False
        ).stdout.split()[1]
    except (RuntimeError, IndexError, OSError):
        return "?"
