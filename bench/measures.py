"""
What the benchmark measures on each subject (see docs/benchmark.rst, "The
measures"): installs with pip and uv, the big file cold and warm, request rates
of pages and a wheel with their CPU cost, and, for pypicache alone, start-up on
caches of many files, single-flight of concurrent cold downloads, and the
web interface's project page of 3,000 files (``uipages.py``).

:class:`Measures` is the base of ``run.Bench``, which sets up the upstream and
the subjects and gives it ``cfg``, ``work``, ``runs``, ``manifest``,
``upstream``, ``far_url`` and ``notes``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cachetree
import clients
import procs
import servers
from procs import ACCEPT_HTML, ACCEPT_JSON, HOST
from servers import Running

from tests.packages import sha256_of

TREE = "bench-root"

#: An install client: (index URL, requirement, scratch folder) -> (seconds, count).
Installer = Callable[[str, str, Path], tuple[float, int]]


class Measures:
    """The measuring steps, on a set-up bench."""

    cfg: dict[str, Any]
    work: Path
    runs: Path
    manifest: dict[str, Any]
    upstream: Running
    far_url: str
    notes: list[str]

    def note(self, text: str) -> None:
        print(f"  NOTE: {text}", flush=True)
        self.notes.append(text)

    # -- one subject -------------------------------------------------------------

    def measure(
        self, name: str, start: Callable[[str, str], Running]
    ) -> dict[str, Any]:
        """Every measure of one subject; a failing one is noted and skipped.

        With ``--runs N`` each stage runs N times, each time on a fresh server,
        so that every "cold" install is cold; the medians are reported.
        """
        out: dict[str, Any] = {}
        times: dict[str, list[float]] = {}
        tree_count = self.cfg["tree_projects"] + 1
        scratch = self.runs / "clients" / name
        far = f"upstream {self.cfg['delay_ms']} ms away"

        def step(label: str, fn: Callable[..., None], *args: Any) -> None:
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 (a peer may fail anywhere)
                self.note(
                    f"{name}: {label} failed: {e.__class__.__name__}: {str(e)[:300]}"
                )
                out.setdefault("errors", {})[label] = traceback.format_exc()[-3000:]

        def installs(r: Running, kinds: list[tuple[str, Installer, str]]) -> None:
            for key, install, kind in kinds:
                n = len(times.get(key, ()))
                seconds, count = install(r.index_url, TREE, scratch / f"{key}-{n}")
                if count != tree_count:
                    raise RuntimeError(
                        f"{key}: {count} distributions installed, not {tree_count}"
                    )
                times.setdefault(key, []).append(seconds)
                print(f"  {name}: {key} {seconds:.2f} s ({kind})", flush=True)

        runs = self.cfg["install_runs"]
        if name != "nginx":
            # One untimed start and stop first: the first start of a run writes
            # what the others read (the bytecode of a tree changed since the
            # last run, twistd's plugin cache) and reads the code from disk;
            # the start-up timed below is a server's usual start.
            start(self.upstream.index_url, "warm-up").stop()
        # 1. pip cold and warm, uv warm (proxy warm, fresh uv cache); start-up.
        for i in range(runs):
            r = start(self.upstream.index_url, f"pip{i}")
            try:
                if i == 0 and name != "nginx":
                    out["startup_empty"] = round(r.startup_s or 0.0, 3)
                pip = [
                    ("pip_cold", clients.pip_install, "fresh proxy cache"),
                    ("pip_warm", clients.pip_install, "proxy warm"),
                    ("uv_warm", clients.uv_install, "proxy warm, fresh uv cache"),
                ]
                step("pip", installs, r, pip)
            finally:
                r.stop()
        # 2. uv cold; after the last one, files and pages on the same server.
        for i in range(runs):
            r = start(self.upstream.index_url, f"serve{i}")
            try:
                uv = [("uv_cold", clients.uv_install, "fresh proxy and uv caches")]
                step("uv", installs, r, uv)
                if i == runs - 1:
                    step("files", self.files, name, r, out)
                    step("pages", self.pages, name, r, out)
            finally:
                r.stop()
        # 3. the upstream 20 ms away: pip cold and warm.
        for i in range(runs):
            r = start(self.far_url, f"far{i}")
            try:
                pip = [
                    ("far_pip_cold", clients.pip_install, far),
                    ("far_pip_warm", clients.pip_install, far),
                ]
                step("far", installs, r, pip)
            finally:
                r.stop()
        for key, seconds in times.items():
            out[key] = round(statistics.median(seconds), 2)
            out.setdefault("runs", {})[key] = [round(t, 2) for t in seconds]
        return out

    def files(self, name: str, r: Running, out: dict[str, Any]) -> None:
        """The big file cold (through the proxy, sha256 checked) and warm."""
        big = self.manifest["big"]
        url = r.file_url("bench-big", big)
        sampler = None
        if name == "pypicache":
            out["rss_idle_mb"] = round(procs.proc_status(r.pids[0])["VmRSS"] / 1024, 1)
            sampler = procs.RssSampler(r.pids[0])
            sampler.start()
        cold = clients.download(url, hash_it=True)
        if sampler is not None:
            sampler.stop()
            out["rss_peak_cold_big_mb"] = round(sampler.peak_kb / 1024, 1)
        if cold["status"] != 200 or cold["sha256"] != self.manifest["big_sha256"]:
            raise RuntimeError(
                f"cold {big}: status {cold['status']}, {cold['bytes']} bytes, sha256 {cold['sha256']}"
            )
        out["big_cold"] = round(cold["mb_per_s"], 1)
        if cold["redirects"]:
            out.setdefault("remarks", {})[
                "big_cold"
            ] = f"redirected to {cold['final_host']}"
        warm = [clients.download(url) for _ in range(self.cfg["warm_file_runs"])]
        for w in warm:
            if w["status"] != 200 or w["bytes"] != cold["bytes"]:
                raise RuntimeError(f"warm {big}: {w}")
        out["big_warm"] = round(statistics.median(w["mb_per_s"] for w in warm), 1)
        if warm[0]["redirects"]:
            out.setdefault("remarks", {})[
                "big_warm"
            ] = f"redirected to {warm[0]['final_host']}"
        out.setdefault("runs", {})["big_warm"] = [round(w["mb_per_s"], 1) for w in warm]
        print(
            f"  {name}: {big} cold {out['big_cold']} MB/s, warm {out['big_warm']} MB/s",
            flush=True,
        )

    def pages(self, name: str, r: Running, out: dict[str, Any]) -> None:
        """Warm pages (small and many-file; HTML and JSON; gzip or not) and a small wheel, with wrk."""
        targets = []
        for size, project in (("small", TREE), ("many", "bench-many")):
            for kind, accept in (("html", ACCEPT_HTML), ("json", ACCEPT_JSON)):
                for gz in (True, False):
                    headers = {
                        "Accept": accept,
                        "Accept-Encoding": "gzip" if gz else "identity",
                    }
                    targets.append(
                        (
                            f"page_{size}_{kind}{'_gz' if gz else ''}",
                            r.page_url(project),
                            headers,
                            kind,
                        )
                    )
        wheel = r.file_url("bench-many", self.manifest["many_first"])
        targets.append(("wheel_small", wheel, {"Accept-Encoding": "identity"}, "file"))
        details = out.setdefault("loads", {})
        for key, url, headers, kind in targets:
            status, got, body = clients.get(
                url, headers
            )  # makes it warm; what it answers
            shape = {
                "status": status,
                "content_type": got.get("content-type", ""),
                "content_encoding": got.get("content-encoding", ""),
                "body_bytes": len(body),
                "chunked": got.get("transfer-encoding", "") == "chunked",
            }
            if status != 200:
                raise RuntimeError(f"GET {url} {headers}: {status}")
            if kind == "json" and "json" not in shape["content_type"]:
                out.setdefault("remarks", {})[
                    key
                ] = f"answered {shape['content_type']}, not JSON"
            if (
                headers.get("Accept-Encoding") == "gzip"
                and shape["content_encoding"] != "gzip"
            ):
                out.setdefault("remarks", {})[key] = "not gzipped"
            procs.wait_idle(r.pids)  # nothing left over from the last step
            cpu0 = r.cpu()
            result = clients.load(
                url, headers, self.cfg["connections"], self.cfg["load_seconds"]
            )
            cpu = r.cpu() - cpu0
            if result["errors"] or result.get("socket_errors"):
                out.setdefault("remarks", {})[
                    key
                ] = f"{result['errors']} of {result['requests']} answers >= 400 {result.get('socket_errors', '')}".strip()
            result["server_cpu_s"] = round(cpu, 2)
            result["cpu_s_per_1000"] = (
                round(1000 * cpu / result["requests"], 3)
                if result["requests"]
                else None
            )
            details[key] = {**shape, **result}
            out[key] = result["requests_per_s"]
            if key in ("page_small_json_gz", "page_many_json_gz"):
                out["cpu_" + key[5:]] = result["cpu_s_per_1000"]
            print(
                f"  {name}: {key} {result['requests_per_s']:,.0f} req/s ({shape['body_bytes']:,} B, "
                f"{result['errors']} errors, p99 {result['p99_ms']} ms, CPU {result['cpu_s_per_1000']} s/1000)",
                flush=True,
            )

    def startup(self, empty: bool = False, rounds: int = 1) -> dict[str, Any]:
        """pypicache's start-up to its first answer, on caches of many files
        (and on an empty one with ``empty``), ``rounds`` times each (medians;
        every start a fresh process), each start beside one of ``twistd -n web``
        on an empty folder: Twisted's own start-up on this host, in the same
        run, as ``twistd_web`` (its median) and each figure's ``x_twistd_web``."""
        out: dict[str, Any] = {}
        runs: dict[str, list[float]] = {}
        floor: list[float] = []
        cases: list[tuple[str, Path | None, str]] = []
        if empty:
            cases.append(("empty", None, "/health"))
        for count in self.cfg["cache_files"]:
            cache = cachetree.build(self.work / f"cache-{count}", count)
            cases.append((f"{count}_health", cache, "/health"))
            cases.append(
                (f"{count}_page", cache, f"/simple/{cachetree.PRIVATE_PROJECT}/")
            )
        # One untimed start of each first, as in measure(): the run's first
        # start writes what the later ones only read.
        servers.start_twistd_web(self.runs / "startup-twistd-web").stop()
        for n in range(rounds):
            for key, cache, path in cases:
                web = servers.start_twistd_web(self.runs / "startup-twistd-web")
                web.stop()
                floor.append(web.startup_s or 0.0)
                folder = self.runs / f"startup-{key}-{n}"
                r = servers.start_pypicache(
                    cache or folder / "cache",
                    self.upstream.index_url,
                    folder,
                    ready_path=path,
                )
                r.stop()
                runs.setdefault(key, []).append(r.startup_s or 0.0)
        out["twistd_web"] = round(statistics.median(floor), 3)
        out["twistd_web_runs"] = [round(t, 3) for t in floor]
        for key, times in runs.items():
            out[key] = round(statistics.median(times), 3)
            out[f"{key}_x_twistd_web"] = round(out[key] / out["twistd_web"], 2)
            if rounds > 1:
                out[f"{key}_runs"] = [round(t, 3) for t in times]

        def said(key: str) -> str:
            return f"{out[key]} s ({out[f'{key}_x_twistd_web']}x twistd web)"

        print(
            f"  twistd -n web --path <empty folder> (Twisted's own floor): {out['twistd_web']} s",
            flush=True,
        )
        if empty:
            print(f"  pypicache start-up, empty cache: {said('empty')}", flush=True)
        for count in self.cfg["cache_files"]:
            print(
                f"  pypicache start-up, {count:,} files in the cache: /health {said(f'{count}_health')}, first page {said(f'{count}_page')}",
                flush=True,
            )
        return out

    def single_flight(self) -> dict[str, Any]:
        """8 clients ask a fresh pypicache for one cold file at once (its page
        cold too): how many times its upstream is asked for it.  The upstream is
        bench/upstream.py here, whose ``/_stats`` counts the GETs."""
        root = self.work / f"upstream-{self.cfg['mode']}"
        process, port = procs.start_upstream(
            root / "files", self.runs / "fakeindex.log"
        )
        r = servers.start_pypicache(
            self.runs / "single-flight" / "cache",
            f"http://{HOST}:{port}/simple/",
            self.runs / "single-flight",
        )
        try:
            filename = self.manifest["medium"]
            url = f"{r.base}/packages/bench-medium/{filename}"
            before = procs.upstream_stats(port)["file_gets"].get(filename, 0)
            with ThreadPoolExecutor(8) as pool:
                answers = list(
                    pool.map(lambda _: clients.download(url, hash_it=True), range(8))
                )
            fetches = procs.upstream_stats(port)["file_gets"].get(filename, 0) - before
        finally:
            r.stop()
            procs.stop(process)
        expected = sha256_of(root / "files" / filename)
        good = sum(1 for a in answers if a["status"] == 200 and a["sha256"] == expected)
        print(
            f"  pypicache: 8 concurrent cold GETs of {filename}: {fetches} upstream fetch(es), {good}/8 verified",
            flush=True,
        )
        return {
            "file": filename,
            "clients": 8,
            "upstream_fetches": fetches,
            "verified": good,
        }

    def ui_pages(self) -> dict[str, Any]:
        """The web interface's project page of ``many_files`` files, rendered
        on the server: ``bench/uipages.py`` in a process of its own (a reactor
        of its own; the objects of this checkout)."""
        out = self.runs / "ui-pages.json"
        subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve().parent / "uipages.py"),
                "--work",
                str(self.work),
                "--files",
                str(self.cfg["many_files"]),
                "--json",
                str(out),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        figures: dict[str, Any] = json.loads(out.read_text())
        for case in ("one", "one_group", "many", "many_older"):
            f = figures[case]
            print(
                f"  pypicache: UI page {case}: cold {f['cold_ms']} ms "
                f"(CPU {f['cold_cpu_ms']} ms), "
                + (
                    f"description rendered {f['rendered_ms']} ms "
                    f"(CPU {f['rendered_cpu_ms']} ms), "
                    if "rendered_ms" in f
                    else ""
                )
                + f"warm {f['warm_ms']} ms, {f['gzip_bytes']:,} B gzipped",
                flush=True,
            )
        return figures
