"""
The peers pypicache is compared with, each installed by the benchmark into a
virtual environment of its own under ``<work>/peers/<name>/`` (with pip, from
the package registry; reused once installed):

- ``proxpi`` (``proxpi`` + ``gunicorn``): ``gunicorn --workers 1 --threads 8
  proxpi.server:app`` with ``PROXPI_INDEX_URL`` set to the upstream and
  ``PROXPI_CACHE_DIR`` to a fresh folder;
- ``devpi`` (``devpi-server``): ``devpi-init --no-root-pypi`` once into a
  template folder, copied for every fresh start; then ``devpi-server`` and, once
  it answers, a mirror index ``root/bench`` of the upstream made through its
  HTTP API (``PUT /root/bench``, ``{"type": "mirror", "mirror_url": ...}``).

A peer that cannot be installed or does not start is skipped with a note.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import procs
from procs import HOST
from servers import Running, launch

PACKAGES = {"proxpi": ["proxpi", "gunicorn"], "devpi": ["devpi-server"]}
KNOWN = tuple(PACKAGES)


def install(name: str, work: Path) -> tuple[Path | None, str]:
    """The peer's venv (installed if missing) and its version, or None and why not."""
    folder = work / "peers" / name
    venv = folder / "venv"
    marker = folder / "installed.json"
    if marker.exists():
        return venv, json.loads(marker.read_text())["version"]
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    print(f"Installing {name} into {venv} ...", flush=True)
    log = folder / "install.log"
    with open(log, "w") as out:
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                *PACKAGES[name],
            ],
        ]
        for step in steps:
            if subprocess.run(
                step, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=600
            ).returncode:
                return (
                    None,
                    f"could not be installed (pip install {' '.join(PACKAGES[name])}; see {log})",
                )
    version = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            f"import importlib.metadata as m; print(m.version({PACKAGES[name][0]!r}))",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    marker.write_text(json.dumps({"version": version, "packages": PACKAGES[name]}))
    return venv, version


class Starter:
    """Starts a peer on a fresh cache for each ``(upstream, tag)``.

    proxpi is started anew each time.  devpi-server takes many seconds to
    start, so one server is started and each call makes a new mirror index
    ``root/<tag>`` of ``upstream`` on it (a fresh mirror cache: devpi keeps each
    index's files apart); the first call's start-up time is reported.
    """

    def __init__(self, name: str, venv: Path, runs: Path) -> None:
        self.name, self.venv, self.runs = name, venv, runs
        self.devpi: Running | None = None
        self.token = ""

    def __call__(self, upstream: str, tag: str) -> Running:
        if self.name == "proxpi":
            return start_proxpi(self.venv, upstream, self.runs / f"proxpi-{tag}")
        if self.devpi is None:
            self.devpi, self.token = start_devpi(self.venv, self.runs / "devpi")
        return devpi_index(self.devpi, self.token, upstream, tag)

    def close(self) -> None:
        if self.devpi is not None:
            self.devpi.stop()
            self.devpi = None


def _fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def start_proxpi(venv: Path, upstream: str, folder: Path) -> Running:
    folder = _fresh(folder)
    port = procs.free_port()
    env = {
        **os.environ,
        "PROXPI_INDEX_URL": upstream,
        "PROXPI_CACHE_DIR": str(folder / "cache"),
        "PROXPI_LOGGING_LEVEL": "WARNING",
    }
    args = [
        venv / "bin" / "gunicorn",
        "--workers",
        "1",
        "--threads",
        "8",
        "--bind",
        f"{HOST}:{port}",
        "proxpi.server:app",
    ]
    return launch(
        "proxpi",
        args,
        port,
        folder / "gunicorn.log",
        "/health",
        "/index/",
        "/index/{project}/",
        env=env,
        cwd=folder,
    )


def _devpi_template(venv: Path) -> Path:
    """A server folder made by ``devpi-init`` once, copied for each fresh start."""
    template = venv.parent / "serverdir-template"
    if not (template / ".bench-complete").exists():
        if template.exists():
            shutil.rmtree(template)
        subprocess.run(
            [
                venv / "bin" / "devpi-init",
                "--serverdir",
                template,
                "--no-root-pypi",
                "--root-passwd",
                "",
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        (template / ".bench-complete").write_text("")
    return template


def _devpi_call(
    base: str, method: str, path: str, body: dict, auth: str | None = None
) -> dict:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if auth:
        headers["X-Devpi-Auth"] = auth
    request = urllib.request.Request(
        base + path, json.dumps(body).encode(), headers, method=method
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read() or b"{}")


def start_devpi(venv: Path, folder: Path) -> tuple[Running, str]:
    """devpi-server on a copy of the template folder, and a token of its root user."""
    folder = _fresh(folder)
    serverdir = folder / "server"
    shutil.copytree(_devpi_template(venv), serverdir)
    port = procs.free_port()
    args = [
        venv / "bin" / "devpi-server",
        "--serverdir",
        serverdir,
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    server = launch(
        "devpi", args, port, folder / "devpi.log", "/+api", "/", "", 120, cwd=folder
    )
    login = _devpi_call(
        server.base, "POST", "/+login", {"user": "root", "password": ""}
    )
    token = base64.b64encode(f"root:{login['result']['password']}".encode()).decode()
    return server, token


def devpi_index(server: Running, token: str, upstream: str, tag: str) -> Running:
    """A new mirror index ``root/<tag>`` of ``upstream`` on a running devpi-server."""
    _devpi_call(
        server.base,
        "PUT",
        f"/root/{tag}",
        {"type": "mirror", "mirror_url": upstream},
        token,
    )
    return Running(
        "devpi",
        server.base,
        f"{server.base}/root/{tag}/+simple/",
        f"/root/{tag}/+simple/{{project}}/",
        server.processes,
        startup_s=server.startup_s,
        owned=False,
    )
