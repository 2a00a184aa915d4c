"""
The servers the benchmark compares, each started on 127.0.0.1 as a process of
its own: nginx serving the synthetic upstream's static files (the limit, and the
upstream of the others) and pypicache.  The peers are in ``peers.py``.

Every server gives a :class:`Running`: where pip points, where a project page
is, and the processes whose CPU time counts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin

import clients
import procs
from procs import ACCEPT_JSON, HOST


@dataclass
class Running:
    """A started server."""

    name: str
    base: str
    index_url: str
    page_template: str
    processes: list[subprocess.Popen] = field(default_factory=list)
    startup_s: float | None = None
    #: False for a server this view does not own (the shared upstream): not stopped.
    owned: bool = True

    def page_url(self, project: str) -> str:
        return self.base + self.page_template.format(project=project)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def cpu(self) -> float:
        return procs.tree_cpu_seconds(self.pids)

    def stop(self) -> None:
        if not self.owned:
            return
        for p in self.processes:
            procs.stop(p)

    def file_url(self, project: str, filename: str) -> str:
        """The URL of ``filename`` as this server's own page links it."""
        page = self.page_url(project)
        status, headers, body = clients.get(
            page, {"Accept": ACCEPT_JSON, "Accept-Encoding": "identity"}
        )
        if status != 200:
            raise RuntimeError(f"{self.name}: GET {page} -> {status}")
        if "json" in headers.get("content-type", ""):
            urls = [
                f["url"] for f in json.loads(body)["files"] if f["filename"] == filename
            ]
        else:
            urls = [
                u
                for u in re.findall(r'href="([^"]+)"', body.decode())
                if urldefrag(u)[0].rsplit("/", 1)[-1] == filename
            ]
        if not urls:
            raise RuntimeError(f"{self.name}: {filename} not on {page}")
        return urldefrag(urljoin(page, urls[0].replace("&amp;", "&")))[0]


def launch(
    name: str,
    args: list[Any],
    port: int,
    log: Path,
    ready_path: str,
    index_path: str,
    page_template: str = "/simple/{project}/",
    timeout: float = 60.0,
    **kwargs: Any,
) -> Running:
    """Start a server process (stderr to ``log``) and wait for a 200 answer to
    ``ready_path``; its start-up time is from spawn to that answer."""
    started = time.perf_counter()
    process = procs.spawn(args, log, stdout=subprocess.DEVNULL, **kwargs)
    base = f"http://{HOST}:{port}"
    procs.wait_answer(process, base + ready_path, timeout, log)
    return Running(
        name,
        base,
        base + index_path,
        page_template,
        [process],
        startup_s=time.perf_counter() - started,
    )


# -- nginx ---------------------------------------------------------------------------

NGINX_CONF = """\
daemon off;
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    types {{ text/html html; application/vnd.pypi.simple.v1+json json; }}
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    open_file_cache max=20000 inactive=60s;
    gzip_static on;
    gzip_vary on;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    # A simplified content negotiation: JSON whenever the client accepts it.
    map $http_accept $page {{
        "~application/vnd\\.pypi\\.simple\\.v1\\+json" index.json;
        default index.html;
    }}
    server {{
        listen {host}:{port};
        root {root};
        location /simple/ {{
            index $page;
            add_header Vary Accept;
        }}
        location /files/ {{ }}
    }}
}}
"""


def nginx_note() -> str | None:
    """Why nginx cannot run here, or None."""
    if shutil.which("nginx") is None:
        return (
            "nginx is not installed (apt-get install -y nginx): its column is skipped"
        )
    return None


def start_nginx(root: Path, folder: Path) -> Running:
    """nginx in the foreground, with its own prefix and config in ``folder``,
    serving ``root`` (``simple/`` and ``files/``); unprivileged (as ``nobody``
    when started by root)."""
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "tmp").mkdir(parents=True)
    port = procs.free_port()
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=folder, host=HOST, port=port, root=root))
    args = [shutil.which("nginx"), "-p", str(folder), "-c", str(conf)]
    if os.geteuid() == 0:
        for path in [folder, *folder.rglob("*")]:
            os.chown(path, 65534, 65534)
        args = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *args]
    return launch("nginx", args, port, folder / "stderr.log", "/simple/", "/simple/")


# -- pypicache -----------------------------------------------------------------------


def start_pypicache(
    cache: Path,
    upstream: str,
    folder: Path,
    extra_args: list[str] | None = None,
    ready_path: str = "/health",
    env: dict[str, str] | None = None,
) -> Running:
    """``twistd -n pypicache`` on ``cache`` (kept as it is) with ``upstream``
    (with ``env``, default ours)."""
    folder.mkdir(parents=True, exist_ok=True)
    process, port, seconds = procs.start_daemon_timed(
        cache,
        upstream,
        folder / "daemon.log",
        extra_args=extra_args or [],
        ready_path=ready_path,
        env=env,
    )
    base = f"http://{HOST}:{port}"
    return Running(
        "pypicache",
        base,
        base + "/simple/",
        "/simple/{project}/",
        [process],
        startup_s=seconds,
    )


def start_twistd_web(folder: Path) -> Running:
    """``twistd -n web --path <empty folder>``, started as the bench starts
    pypicache (the same ``twistd``, environment and polling), ready once its
    listing of the empty folder answers: Twisted's own start-up to a first
    answer on this host, the floor of pypicache's."""
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty"
    empty.mkdir(exist_ok=True)
    port = procs.free_port()
    log = folder / "twistd-web.log"
    args = [
        *procs.twistd_command(),
        "-n",
        "--pidfile=",
        f"--logfile={log}",
        "web",
        "--path",
        str(empty),
        "--listen",
        f"tcp:{port}:interface={HOST}",
    ]
    started = time.perf_counter()
    process = procs.spawn(
        args,
        log.with_suffix(".stderr"),
        cwd=folder,
        stdout=subprocess.DEVNULL,
        env=procs.daemon_env(),
    )
    base = f"http://{HOST}:{port}"
    procs.wait_answer(process, base + "/", 60.0, log, interval=0.005)
    return Running(
        "twistd web",
        base,
        base + "/",
        "/{project}/",
        [process],
        startup_s=time.perf_counter() - started,
    )


def versions() -> dict[str, Any]:
    out = {}
    if shutil.which("nginx"):
        v = subprocess.run(
            ["nginx", "-v"], capture_output=True, text=True, check=False
        ).stderr
        out["nginx"] = v.strip().rsplit("/", 1)[-1]
    if clients.have_wrk():
        v = subprocess.run(
            ["wrk", "--version"], capture_output=True, text=True, check=False
        )
        out["wrk"] = (
            (v.stdout + v.stderr).split()[1]
            if (v.stdout + v.stderr).split()[1:]
            else "?"
        )
    out["uv"] = clients.uv_version()
    return out
