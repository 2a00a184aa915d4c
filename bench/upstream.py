"""
The benchmark's upstream index, in its own process::

    python bench/upstream.py DIR PORT [--no-metadata] [--rate MB/s]

Serves every ``*.whl`` / ``*.tar.gz`` in ``DIR`` with ``tests.fakeindex.FakeIndex``
in "json" mode (PEP 691 JSON or HTML by ``Accept``, absolute file URLs, PEP 658
metadata, files streamed from disk) on ``127.0.0.1:PORT`` (``0``: any free port). With ``--no-metadata`` it
offers no ``.metadata`` files (as many registries and mirrors) and answers
``Range`` requests with ``206``; with ``--rate`` each file body is sent at that
many MB/s (a link slower than loopback).
Once listening it prints one line, ``READY <port>``, on stdout.

``GET /_stats`` answers JSON counters read from the index's request record:
``{"requests": N, "file_gets": {filename: n}, "metadata_gets": {...},
"page_gets": {project: n}, "range_gets": N, "file_bytes": N}`` (GETs only;
``HEAD`` is not a fetch; ``file_gets`` counts range requests too,
``file_bytes`` is the bytes of file bodies sent).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Coroutine
from urllib.parse import unquote

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.web.server import Request

from tests.fakeindex import FakeIndex, start_fake_index


class StatsIndex(FakeIndex):
    """A FakeIndex that also answers ``/_stats`` (not recorded)."""

    def render(self, request: Request) -> bytes | int:
        if request.postpath == [b"_stats"]:
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-store")
            return json.dumps(self.stats()).encode()
        return super().render(request)

    def stats(self) -> dict:
        files: collections.Counter[str] = collections.Counter()
        metadata: collections.Counter[str] = collections.Counter()
        pages: collections.Counter[str] = collections.Counter()
        ranges = 0
        for r in self.requests:
            if r.method != "GET":
                continue
            ranges += "range" in r.headers
            path = unquote(r.path.split("?", 1)[0])
            if path.startswith("/files/"):
                name = path[len("/files/") :]
                if name.endswith(".metadata"):
                    metadata[name[: -len(".metadata")]] += 1
                else:
                    files[name] += 1
            elif path.startswith("/simple/") and path != "/simple/":
                pages[path[len("/simple/") :].strip("/")] += 1
        return {
            "requests": len(self.requests),
            "file_gets": dict(files),
            "metadata_gets": dict(metadata),
            "page_gets": dict(pages),
            "range_gets": ranges,
            "file_bytes": self.total_bytes_sent(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description="the benchmark's upstream index")
    parser.add_argument("directory", type=Path)
    parser.add_argument("port", type=int)
    parser.add_argument("--no-metadata", action="store_true")
    parser.add_argument("--rate", type=float, help="MB/s per file body")
    args = parser.parse_args()
    directory, port = args.directory, args.port
    index = StatsIndex(directory, "json")
    if args.no_metadata:
        index.offer_metadata = False
        index.ranges = True
    if args.rate:
        index.rate = args.rate * 1024 * 1024
    for path in sorted(directory.iterdir()):
        if path.name.endswith((".whl", ".tar.gz")):
            index.add(path.name)

    async def start() -> int:
        return (await start_fake_index(index, port)).port

    serve(start)


def serve(start: Callable[[], Coroutine[Any, Any, int]]) -> None:
    """Run the reactor; once ``start()`` gives the port, print ``READY <port>``."""

    async def announce() -> None:
        print(f"READY {await start()}", flush=True)

    def go() -> None:
        d = Deferred.fromCoroutine(announce())

        def failed(f):  # type: ignore[no-untyped-def]
            print(f"FAILED {f.getErrorMessage()}", flush=True)
            reactor.stop()

        d.addErrback(failed)

    reactor.callWhenRunning(go)
    reactor.run()


if __name__ == "__main__":
    main()
