"""
The soak's upstream index, in its own process::

    python bench/soak_upstream.py DIR PORT [--cold-dir DIR] [--cold-prefix soak-cold-]

Like ``bench/upstream.py``: serves every ``*.whl`` / ``*.tar.gz`` in ``DIR``
with ``tests.fakeindex.FakeIndex`` in "json" mode on ``127.0.0.1:PORT`` (``0``:
any free port) and prints ``READY <port>`` once listening.  Two differences,
both so that a long soak measures the daemon and not this process:

- **Projects made on demand.**  The first ``GET /simple/<prefix><anything>/``
  builds that project's wheels (``tests.packages.build_wheel``, see
  :func:`cold_wheels`) into ``--cold-dir`` and registers them, so the soak never
  runs out of projects the daemon has not seen ("cold pages").
- **Sharded.**  ``FakeIndex`` renders a page by looking at every file it holds
  and records every request.  Here each project lives in one of 64
  ``FakeIndex`` instances (by a hash of its name; file requests go to the shard
  of the project their name parses to), and the request record is emptied after
  each request, so a page costs the same after 50,000 projects as after 10.

``GET /_stats`` answers JSON counters: ``requests``, ``page_gets``,
``file_gets``, ``generated_projects`` and ``generated_seconds`` (time spent
building wheels).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tests.fakeindex import FakeIndex
from tests.packages import build_wheel
from upstream import serve  # bench/upstream.py, beside this script

SHARDS = 64


def cold_wheels(directory: Path, project: str) -> list[Path]:
    """The files of a project made on demand: a tiny wheel and a ~32 kB one.

    Deterministic for a given name (the payload is derived from it), so the
    client can trust the sha256 the daemon's page advertises and check it.
    """
    payload = hashlib.shake_128(project.encode()).hexdigest(16 * 1024)  # 32 kB
    return [
        build_wheel(directory, project, "1.0"),
        build_wheel(directory, project, "1.1", module_body=f"DATA = {payload!r}\n"),
    ]


def project_of(segments: list[bytes]) -> tuple[str | None, bool]:
    """The normalized project a request is about, and whether it is a page request."""
    if len(segments) >= 2 and segments[0] == b"simple" and segments[1]:
        return canonicalize_name(segments[1].decode("utf-8", "replace")), True
    if len(segments) == 2 and segments[0] == b"files":
        name = segments[1].decode("utf-8", "replace").removesuffix(".metadata")
        try:
            return canonicalize_name(parse_wheel_filename(name)[0]), False
        except InvalidWheelFilename:
            try:
                return canonicalize_name(parse_sdist_filename(name)[0]), False
            except InvalidSdistFilename:
                return None, False
    return None, False


class SoakIndex(Resource):
    """Routes each request to the ``FakeIndex`` shard of its project."""

    isLeaf = True

    def __init__(self, files_dir: Path, cold_dir: Path, cold_prefix: str) -> None:
        super().__init__()
        self._shards = [FakeIndex(files_dir, "json") for _ in range(SHARDS)]
        for shard in self._shards:
            shard.clock = reactor
        self._cold_dir = cold_dir
        self._cold_prefix = canonicalize_name(cold_prefix.rstrip("-")) + "-"
        self._known: set[str] = set()
        self.counters = {
            "requests": 0,
            "page_gets": 0,
            "file_gets": 0,
            "generated_projects": 0,
            "generated_seconds": 0.0,
        }

    def shard(self, project: str) -> FakeIndex:
        return self._shards[zlib.crc32(project.encode()) % SHARDS]

    def add(self, path: Path) -> str:
        """Register a dist file with the shard of its project; returns the project."""
        name = path.name
        try:
            project = canonicalize_name(parse_wheel_filename(name)[0])
        except InvalidWheelFilename:
            project = canonicalize_name(parse_sdist_filename(name)[0])
        self.shard(project).add(path)
        self._known.add(project)
        return project

    def render(self, request: Request) -> bytes | int:
        segments = list(request.postpath)
        if segments == [b"_stats"]:
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-store")
            return json.dumps(self.counters).encode()
        self.counters["requests"] += 1
        project, is_page = project_of(segments)
        if project is None:
            return self._shards[0].render(request)
        if request.method == b"GET":
            self.counters["page_gets" if is_page else "file_gets"] += 1
        if (
            is_page
            and project not in self._known
            and project.startswith(self._cold_prefix)
        ):
            started = time.perf_counter()
            for path in cold_wheels(self._cold_dir, project):
                self.add(path)
            self.counters["generated_projects"] += 1
            self.counters["generated_seconds"] += time.perf_counter() - started
        shard = self.shard(project)
        try:
            return shard.render(request)
        finally:
            del shard.requests[:]


class QuietSite(Site):
    """No access log: the daemon's is the one that matters."""

    noisy = False

    def log(self, request: Request) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("port", type=int)
    parser.add_argument(
        "--cold-dir",
        type=Path,
        help="where projects made on demand go (default DIR/cold)",
    )
    parser.add_argument("--cold-prefix", default="soak-cold-")
    args = parser.parse_args()
    cold_dir = args.cold_dir or args.directory / "cold"
    cold_dir.mkdir(parents=True, exist_ok=True)
    index = SoakIndex(args.directory, cold_dir, args.cold_prefix)
    for path in sorted(args.directory.iterdir()):
        if path.name.endswith((".whl", ".tar.gz")):
            index.add(path)

    async def start() -> int:
        endpoint = TCP4ServerEndpoint(reactor, args.port, interface="127.0.0.1")
        return (await endpoint.listen(QuietSite(index))).getHost().port

    serve(start)


if __name__ == "__main__":
    main()
