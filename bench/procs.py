"""
Process control for the benchmarks: start servers in their own sessions, wait
for them to answer, stop them (and only them) on exit, and read their memory and
CPU time from ``/proc``.  Used by ``bench/run.py`` and ``bench/soak.py``.
"""

from __future__ import annotations

import json
import os
import platform
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"
MB = 1024 * 1024

#: The Accept headers pip 23+ sends (JSON preferred) and a browser-like HTML one.
ACCEPT_JSON = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
ACCEPT_HTML = "text/html"

_PROCESSES: list[subprocess.Popen] = []

#: Where the daemons' compiled modules are kept from one start to the next:
#: an installed daemon has its ``.pyc`` files (pip compiles them), and a
#: ``PYTHONDONTWRITEBYTECODE`` in the bench's shell would otherwise time the
#: compiler at every start (a third of the start-up's imports).  Per source
#: tree, as the prefix mirrors absolute paths.
PYCACHE = Path(tempfile.gettempdir()) / "pypicache-bench-pycache"


def daemon_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default ours) as a daemon runs with its bytecode cached."""
    out = dict(os.environ if env is None else env)
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    out.setdefault("PYTHONPYCACHEPREFIX", str(PYCACHE))
    return out


def stop(process: subprocess.Popen, grace: float = 10.0) -> None:
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
        stop(_PROCESSES[-1])


def on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def spawn(args: Sequence[str], log: Path, **kwargs: Any) -> subprocess.Popen:
    """Start ``args`` in a new session (stderr appended to ``log``); stopped on exit."""
    with open(log, "ab") as err:
        process = subprocess.Popen(
            [str(a) for a in args], stderr=err, start_new_session=True, **kwargs
        )
    _PROCESSES.append(process)
    return process


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_answer(
    process: subprocess.Popen,
    url: str,
    timeout: float,
    log: Path,
    interval: float = 0.01,
) -> float:
    """Poll ``url`` until it answers 200; return the seconds since now.

    :raises RuntimeError: the process died or did not answer in time (it is stopped).
    """
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                r.read()
                if r.status == 200:
                    return time.perf_counter() - started
        except (OSError, urllib.error.HTTPError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"{url} did not answer; see {log}:\n{tail(log)}")
        time.sleep(interval)


def start_upstream(
    files: Path,
    log: Path,
    timeout: float = 120.0,
    script: Path = BENCH / "upstream.py",
    extra_args: Sequence[str] = (),
) -> tuple[subprocess.Popen, int]:
    """Start bench/upstream.py (or ``script``, same protocol) and wait for its
    ``READY <port>`` line."""
    return start_announcing(
        [sys.executable, str(script), str(files), "0", *extra_args], log, timeout
    )


def start_announcing(
    args: Sequence[str], log: Path, timeout: float = 120.0
) -> tuple[subprocess.Popen, int]:
    """Start a helper that prints ``READY <port>`` once it listens; return it and the port."""
    process = spawn(args, log, stdout=subprocess.PIPE, cwd=ROOT)
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or process.poll() is not None:
            stop(process)
            raise RuntimeError(f"{args[1]} did not start; see {log}:\n{tail(log)}")
        ready, _, _ = select.select([process.stdout], [], [], min(left, 0.5))
        if ready:
            line += os.read(process.stdout.fileno(), 256)
    if not line.startswith(b"READY "):
        stop(process)
        raise RuntimeError(f"{args[1]} said {line!r}; see {log}")
    return process, int(line.split()[1])


def twistd_command() -> list[str]:
    """How the bench starts ``twistd``: the script installed beside this
    interpreter (as a virtual environment's ``bin/twistd``), else the same
    entry point run by this interpreter.

    Not ``shutil.which("twistd")``: under pyenv that is a shim, a bash script
    that runs ``pyenv exec`` (about 0.12 s added to every start-up timed).
    """
    script = Path(sys.executable).parent / "twistd"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def start_daemon(*args: Any, **kwargs: Any) -> tuple[subprocess.Popen, int]:
    """Start ``twistd -n pypicache`` (see :func:`start_daemon_timed`) and wait for /health."""
    process, port, _ = start_daemon_timed(*args, **kwargs)
    return process, port


def start_daemon_timed(
    cache: Path,
    index_url: str,
    log: Path,
    timeout: float = 60.0,
    extra_args: Sequence[str] = (),
    ready_path: str = "/health",
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, int, float]:
    """Start ``twistd -n pypicache`` (with ``extra_args`` after its own options)
    on a free port (with ``env``, default ours); return it, the port, and the
    seconds from spawn to the first 200 answer to ``ready_path``."""
    port = free_port()
    args = [
        *twistd_command(),
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
    started = time.perf_counter()
    process = spawn(
        args,
        log.with_suffix(".stderr"),
        cwd=log.parent,
        stdout=subprocess.DEVNULL,
        env=daemon_env(env),
    )
    try:
        wait_answer(
            process, f"http://{HOST}:{port}{ready_path}", timeout, log, interval=0.005
        )
    except RuntimeError as e:
        raise RuntimeError(f"{e}\n{tail(log.with_suffix('.stderr'))}") from None
    return process, port, time.perf_counter() - started


def upstream_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{HOST}:{port}/_stats", timeout=10) as r:
        return json.loads(r.read())


# -- /proc -----------------------------------------------------------------------


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


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (read from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, ()))
    return found


def tree_cpu_seconds(pids: Sequence[int]) -> float:
    """CPU seconds used so far by these processes and all their descendants."""
    total = 0.0
    for top in pids:
        for p in descendants(top):
            try:
                total += cpu_seconds(p)
            except OSError:
                pass
    return total


def wait_idle(
    pids: Sequence[int], busy: float = 0.05, window: float = 0.25, limit: float = 10.0
) -> float:
    """Wait until these processes (and their children) used less than
    ``busy`` of a CPU over ``window`` seconds, at most ``limit`` seconds
    (work left from an earlier step, the store of a large file, say, must
    not weigh on the next figure); return the seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        before = tree_cpu_seconds(pids)
        time.sleep(window)
        if tree_cpu_seconds(pids) - before < busy * window:
            break
    return time.perf_counter() - started


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
