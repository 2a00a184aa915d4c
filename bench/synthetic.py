"""
The benchmark's synthetic upstream, built once into the work folder and reused:

- ``files/``: every wheel and sdist, flat, with a ``<wheel>.metadata`` (PEP 658)
  beside each wheel;
- ``simple/``: the pages pre-rendered as static files, so that nginx can serve
  them as they are: ``simple/index.html`` and ``index.json`` (the project list),
  and for each project ``simple/<project>/index.html`` (PEP 503 HTML) and
  ``index.json`` (PEP 691 JSON, API 1.1), each with a gzipped twin
  (``index.html.gz``) for nginx's ``gzip_static``.  File URLs are relative
  (``../../files/<name>``), so the same pages work behind any port or proxy.

The projects: a tree of 30 (``bench-root`` needs its children in a ternary tree
and a cousin, so there are diamonds), ``bench-root`` also needs ``bench-many``
(3,000 tiny wheels, 300 with ``--quick``), ``bench-big`` (one 300 MB wheel of
random bytes, 30 MB) and ``bench-medium`` (32 MB, 4 MB).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import html
import json
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

from packaging.utils import (
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version
from procs import MB

from tests.packages import build_sdist, build_wheel, sha256_of

#: Bump when what build() writes changes, so old work folders are rebuilt.
BUILD_VERSION = 2
UPLOAD_TIME = "2024-01-02T03:04:05Z"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"


def tree_name(i: int) -> str:
    return "bench-root" if i == 0 else f"bench-dep-{i:02d}"


def tree_requires(i: int, n: int) -> list[str]:
    """Node i of a ternary tree of n nodes needs its children, plus a shared
    cousin (diamonds); the root also needs the many-file project."""
    deps = [3 * i + k for k in (1, 2, 3) if 3 * i + k < n]
    if 3 * i + 4 < n:
        deps.append(3 * i + 4)
    extra = ["bench-many>=0.0"] if i == 0 else []
    return [f"{tree_name(d)}>=1.0" for d in deps] + extra


def build_big_wheel(directory: Path, name: str, version: str, size: int) -> Path:
    """A wheel whose payload is ``size`` random (incompressible) bytes, ZIP_STORED.

    Written in 1 MB chunks, never held in memory, with a correct RECORD.
    """
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
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: big\n\n".encode(),
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


def build(directory: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Write the upstream into ``directory`` (reused if already built alike);
    return its manifest."""
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
    files = directory / "files"
    files.mkdir(parents=True)
    started = time.perf_counter()
    n = cfg["tree_projects"]
    print(f"Building the upstream in {directory} ...", flush=True)
    for i in range(n):
        for version in cfg["tree_versions"]:
            build_wheel(
                files,
                tree_name(i),
                version,
                requires=tree_requires(i, n),
                module_body=f"# {tree_name(i)} {version}\n" + "X = 1\n" * 50,
            )
        build_sdist(
            files, tree_name(i), cfg["tree_versions"][-1], requires=tree_requires(i, n)
        )
    t_tree = time.perf_counter() - started
    t0 = time.perf_counter()
    many = [
        build_wheel(files, "bench-many", f"{k // 100}.{k % 100}")
        for k in range(cfg["many_files"])
    ]
    t_many = time.perf_counter() - t0
    t0 = time.perf_counter()
    big = build_big_wheel(files, "bench-big", "1.0", cfg["big_bytes"])
    t_big = time.perf_counter() - t0
    medium = build_big_wheel(files, "bench-medium", "1.0", cfg["medium_bytes"])
    t0 = time.perf_counter()
    projects = render_pages(files, directory / "simple")
    t_pages = time.perf_counter() - t0
    manifest = {
        "config": wanted,
        "big": big.name,
        "big_sha256": sha256_of(big),
        "medium": medium.name,
        "many_first": many[0].name,
        "projects": projects,
        "build_seconds": {
            "tree": round(t_tree, 2),
            "many": round(t_many, 2),
            "big": round(t_big, 2),
            "pages": round(t_pages, 2),
            "total": round(time.perf_counter() - started, 2),
        },
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    print(
        f"  built in {manifest['build_seconds']['total']:.1f} s "
        f"(tree {t_tree:.1f} s, {cfg['many_files']} files {t_many:.1f} s, "
        f"{cfg['big_bytes'] // MB} MB wheel {t_big:.1f} s, pages {t_pages:.1f} s)",
        flush=True,
    )
    return manifest


def project_of(filename: str) -> str:
    if filename.endswith(".whl"):
        return canonicalize_name(parse_wheel_filename(filename)[0])
    return canonicalize_name(parse_sdist_filename(filename)[0])


def wheel_metadata(path: Path) -> bytes:
    """The ``METADATA`` member of a wheel (its ``.dist-info`` folder's)."""
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return zf.read(name)


def _write(path: Path, body: bytes) -> None:
    """A page and its gzipped twin (for nginx's gzip_static)."""
    path.write_bytes(body)
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(body, 6, mtime=0))


def render_pages(files: Path, simple: Path) -> dict[str, int]:
    """Write every project's HTML and JSON page, and the ``.metadata`` files;
    return the number of files of each project."""
    by_project: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(files.iterdir()):
        if not path.name.endswith((".whl", ".tar.gz")):
            continue
        entry: dict[str, Any] = {
            "filename": path.name,
            "url": f"../../files/{path.name}",
            "hashes": {"sha256": sha256_of(path)},
            "size": path.stat().st_size,
            "upload-time": UPLOAD_TIME,
        }
        if path.name.endswith(".whl"):
            metadata = wheel_metadata(path)
            (files / (path.name + ".metadata")).write_bytes(metadata)
            digest = {"sha256": hashlib.sha256(metadata).hexdigest()}
            entry["core-metadata"] = digest
            entry["data-dist-info-metadata"] = digest
        by_project.setdefault(project_of(path.name), []).append(entry)
    meta = {"api-version": "1.1"}
    for project, entries in by_project.items():
        folder = simple / project
        folder.mkdir(parents=True)
        versions = sorted({_version(e["filename"]) for e in entries}, key=Version)
        page = {"meta": meta, "name": project, "files": entries, "versions": versions}
        _write(folder / "index.json", json.dumps(page).encode())
        links = []
        for e in entries:
            attrs = ""
            if "core-metadata" in e:
                value = f"sha256={e['core-metadata']['sha256']}"
                attrs = (
                    f' data-dist-info-metadata="{value}" data-core-metadata="{value}"'
                )
            href = html.escape(f"{e['url']}#sha256={e['hashes']['sha256']}")
            links.append(
                f'    <a href="{href}"{attrs}>{html.escape(e["filename"])}</a><br />\n'
            )
        body = (
            '<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" content="1.1">\n'
            f"    <title>Links for {project}</title>\n  </head>\n  <body>\n"
            f"    <h1>Links for {project}</h1>\n{''.join(links)}  </body>\n</html>\n"
        )
        _write(folder / "index.html", body.encode())
    names = sorted(by_project)
    _write(
        simple / "index.json",
        json.dumps({"meta": meta, "projects": [{"name": p} for p in names]}).encode(),
    )
    anchors = "".join(f'    <a href="{p}/">{p}</a>\n' for p in names)
    _write(
        simple / "index.html",
        f"<!DOCTYPE html>\n<html>\n  <body>\n{anchors}  </body>\n</html>\n".encode(),
    )
    return {p: len(e) for p, e in by_project.items()}


def _version(filename: str) -> str:
    if filename.endswith(".whl"):
        return str(parse_wheel_filename(filename)[1])
    return str(parse_sdist_filename(filename)[1])
