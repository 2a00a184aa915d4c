# -*- test-case-name: tests.test_fakeindex -*-
"""
A fake upstream package index for tests: PyPI-shaped pages, recording, fault injection.

L{FakeIndex} is a leaf C{Resource} serving, from dist files registered with
L{FakeIndex.add}::

    /simple/                      project list (HTML, or PEP 691 JSON in "json" mode)
    /simple/<project>/            PEP 503 HTML / PEP 691 JSON page (API 1.1, PEP 700)
    /files/<filename>             the dist file, streamed (never read whole)
    /files/<filename>.metadata    PEP 658 metadata (of wheels added with metadata=True)
    /packages/<aa>/<bb>/<60 hex>/<filename>[.metadata]
                                  the same, in the public file host's layout: the
                                  blake2b-256 hex digest of the file cut 2/2/60
                                  (the pages link there when C{file_layout} is
                                  C{"hosted"}; a path with another digest 404s)

The pages are literal templates written here, independent of anything pypicache
renders.  The two modes differ on purpose:

- C{"html"}: always C{text/html}, whatever C{Accept} says; file URLs are
  B{relative} (C{../../files/<filename>}).
- C{"json"}: PEP 691 JSON when C{Accept} prefers C{application/vnd.pypi.simple.v1+json}
  (q-values honoured, C{?format=} too), else HTML, with C{Vary: Accept}; file URLs
  (in both answers) are B{absolute} (C{http://127.0.0.1:PORT/files/<filename>}, the
  host and port the request came in on), as the public index points at another host.

A non-normalized or slash-less project URL gets a 301 to C{/simple/<normalized>/};
an unknown project a 404.  Pages carry an ETag and a Last-Modified and answer 304
to C{If-None-Match} (or, without it, C{If-Modified-Since}); every L{FakeIndex.add} or
L{FakeIndex.remove} makes a new ETag and a later Last-Modified.  Files are sent with
C{Content-Length} and C{application/octet-stream}, no C{Content-Encoding}.  By
default C{Range} is ignored (200 with the whole file, no C{Accept-Ranges}); with
C{ranges = True} a single range of a dist file (C{bytes=a-b}, C{a-}, C{-n}) gets
a 206 with C{Content-Range} (416 if unsatisfiable), and L{FakeIndex.range_fault}
makes one file's range answers wrong.  With C{offer_metadata = False} no page
advertises a C{.metadata} and none is served, whatever L{FakeIndex.add} said.
Bytes of file bodies sent are counted by served name in C{bytes_sent}.

Every request is recorded in L{FakeIndex.requests}.  Faults (L{FakeIndex.corrupt},
L{FakeIndex.truncate}, L{FakeIndex.die_midway}, L{FakeIndex.reset_midway},
L{FakeIndex.stall}, L{FakeIndex.drip}, L{FakeIndex.hold}) are keyed by the
served file name, so C{"x.whl.metadata"} works as well as C{"x.whl"}.  Pages have
their own, keyed by project: L{FakeIndex.hold_page} (hang before the headers),
L{FakeIndex.stall_page} (hang after them), L{FakeIndex.drip_page},
L{FakeIndex.reset_page}, L{FakeIndex.slow_page}, L{FakeIndex.page_status} and
L{FakeIndex.page_body} (any status, headers and raw body bytes); L{FakeIndex.heal}
and L{FakeIndex.heal_page} undo them.

Time (L{FakeIndex.slow_page}, L{FakeIndex.die_midway}, the drips) goes through
C{clock}; only L{start_fake_index} touches the global reactor, and it fills C{clock}
in.  In memory, wrap a L{FakeIndex} in C{treq.testing.StubTreq} or
C{RequestTraversalAgent} and pass a C{task.Clock()}.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import socket
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple
from urllib.parse import quote

import attrs
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

__all__ = [
    "FakeIndex",
    "Hold",
    "RecordedRequest",
    "RunningIndex",
    "start_fake_index",
    "JSON_TYPE",
]

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
_HTML_V1 = "application/vnd.pypi.simple.v1+html"
_KINDS = {JSON_TYPE: "json", _HTML_V1: "v1html", "text/html": "html"}  # for ETags
_CHUNK = 64 * 1024
# Last-Modified of generation n is this instant plus n seconds (whole seconds,
# strictly increasing, so If-Modified-Since comparisons are exact).
_EPOCH = 1704164645  # 2024-01-02T03:04:05Z


class RecordedRequest(NamedTuple):
    """One request as the fake index saw it; headers are lowercased, repeats joined."""

    method: str
    path: str
    headers: dict[str, str]


@attrs.define
class _Dist:
    """A registered dist file and what its page says about it."""

    path: Path
    filename: str
    project: str
    version: Version
    size: int
    sha256: str
    blake2b: str
    yanked: bool | str | None
    requires_python: str | None
    upload_time: str | None
    metadata: bytes | None
    metadata_sha256: str | None
    #: Its PEP 740 provenance object, served at ``/integrity/<file>/provenance``.
    provenance: bytes | None = None


class Hold:
    """
    Requests for one file (or page) parked until L{release}.

    :ivar arrived: how many requests have reached the hold so far (including any
        whose client has since gone away).
    :ivar waiting: requests still parked (connected) right now.
    """

    def __init__(self, on_release: Callable[[], None]) -> None:
        self.arrived = 0
        self._parked: list[tuple[Request, Callable[[], None]]] = []
        self._watchers: list[tuple[int, Deferred[None]]] = []
        self._on_release = on_release
        self.released = False

    @property
    def waiting(self) -> int:
        return len(self._parked)

    def wait_for(self, n: int = 1) -> Deferred[None]:
        """A Deferred that fires once C{n} requests have arrived at the hold."""
        if self.arrived >= n:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._watchers.append((n, d))
        return d

    def release(self) -> None:
        """Let every parked request (and every later one) through."""
        self.released = True
        self._on_release()
        parked, self._parked = self._parked, []
        for _request, go in parked:
            go()

    def _park(self, request: Request, go: Callable[[], None]) -> None:
        entry = (request, go)
        self._parked.append(entry)
        self.arrived += 1

        def gone(_: object) -> None:
            if entry in self._parked:
                self._parked.remove(entry)

        request.notifyFinish().addErrback(gone)
        ready = [w for w in self._watchers if w[0] <= self.arrived]
        self._watchers = [w for w in self._watchers if w[0] > self.arrived]
        for _, d in ready:
            d.callback(None)


_Ending = Literal["finish", "truncate", "die", "reset", "stall"]


@attrs.define
class _Delivery:
    """How a body is sent: its ending, after how many bytes, and how fast.

    :ivar after: bytes sent before an ending other than C{"finish"} (None: half).
    :ivar drip: seconds between single bytes (None: as fast as the transport takes them).
    """

    ending: _Ending = "finish"
    after: int | None = None
    drip: float | None = None


@implementer(IPushProducer)
class _Sender:
    """
    Streams a file into a request as a push producer: it writes until the
    transport pauses it and resumes when the transport has drained, so at most
    about one buffer is ever in memory (no cooperator; the clock only for
    drips and for the endings that wait).

    Endings: C{"finish"} sends everything; the others stop after
    C{delivery.after} bytes (half by default) and then close cleanly
    (C{"truncate"}), abort (C{"die"}), send a TCP reset (C{"reset"}), or keep the
    connection open and silent for ever (C{"stall"}).
    """

    def __init__(
        self,
        request: Request,
        source: BinaryIO,
        size: int,
        *,
        delivery: _Delivery,
        corrupt: bool,
        clock: IReactorTime | None,
        tally: Callable[[int], None] = lambda n: None,
        rate: float | None = None,
    ) -> None:
        self._tally = tally
        self._rate = rate
        self._request = request
        self._source = source
        self._size = size
        ending = delivery.ending
        after = size // 2 if delivery.after is None else min(delivery.after, size)
        self._limit = size if ending == "finish" else after
        self._ending = ending
        self._drip = delivery.drip
        self._corrupt = corrupt
        self._clock = clock
        self._sent = 0
        self._paused = False
        self._done = False
        self._pumping = False
        self._timer: IDelayedCall | None = None

    def start(self) -> None:
        self._request.notifyFinish().addBoth(lambda _: self._close())
        self._request.registerProducer(self, True)
        self._pump()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        self._close()

    def _close(self) -> None:
        self._done = True
        self._source.close()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    def _pump(self) -> None:
        if self._pumping or (self._timer is not None and self._timer.active()):
            return  # already running, or waiting for the next drip
        self._pumping = True
        try:
            exhausted = False
            while not self._paused and not self._done and self._sent < self._limit:
                size = 1 if self._drip else _CHUNK
                data = self._source.read(min(size, self._limit - self._sent))
                if not data:  # the file shrank under us: stop short
                    exhausted = True
                    break
                self._sent += len(data)
                self._tally(len(data))
                if self._corrupt and self._sent == self._size:
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                self._request.write(data)
                pause = self._drip or (len(data) / self._rate if self._rate else 0)
                if pause and self._sent < self._limit:
                    assert self._clock is not None, "drips need FakeIndex.clock"
                    self._timer = self._clock.callLater(pause, self._pump)
                    return
            if not self._done and (exhausted or self._sent >= self._limit):
                self._end()
        finally:
            self._pumping = False

    def _end(self) -> None:
        request = self._request
        self._done = True
        self._source.close()
        request.unregisterProducer()
        if self._ending == "finish":
            request.finish()
        elif self._ending == "truncate":
            # Flushes what was written, then a clean FIN: short of Content-Length.
            request.loseConnection()
        elif self._ending == "stall":
            # Headers (written now if no byte was) and some bytes out, then
            # silence on an open connection, until the client gives up.
            request.write(b"")
        else:
            # Give the written half a moment to reach the client, then drop the
            # connection without flushing anything still buffered ("die"), or
            # with a TCP reset ("reset": no lingering on close).
            transport = request.transport
            assert self._clock is not None, "die_midway needs FakeIndex.clock"
            self._clock.callLater(0.1, _abort, transport, self._ending == "reset")


def _abort(transport: Any, reset: bool) -> None:
    """Drop a connection; with C{reset}, the peer gets an RST instead of a FIN."""
    if reset:
        handle = transport.getHandle()
        if handle is not None and handle.fileno() != -1:
            handle.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
    transport.abortConnection()


def _read_wheel_metadata(path: Path) -> bytes | None:
    """The C{*.dist-info/METADATA} bytes of a wheel, or None if it has none."""
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            parts = name.split("/")
            if len(parts) == 2 and parts[0].endswith(".dist-info"):
                if parts[1] == "METADATA":
                    return zf.read(name)
    return None


def _file_digests(path: Path) -> tuple[str, str]:
    """The file's sha256 and blake2b-256 (the file host's path) hex digests."""
    sha256, blake2b = hashlib.sha256(), hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha256.update(chunk)
            blake2b.update(chunk)
    return sha256.hexdigest(), blake2b.hexdigest()


def _parse_accept(header: str) -> list[tuple[str, float]]:
    """C{Accept} as (media type, q) pairs."""
    result = []
    for item in header.split(","):
        fields = [f.strip() for f in item.split(";")]
        if not fields[0]:
            continue
        q = 1.0
        for param in fields[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        result.append((fields[0].lower(), q))
    return result


def _negotiate(accept: str | None) -> str:
    """
    Pick the answer's content type for "json" mode: the JSON type if the client
    ranks it above every HTML type it accepts, else an HTML type.
    """
    if not accept:
        return "text/html"
    json_q = html_q = 0.0
    html_type = "text/html"
    for media, q in _parse_accept(accept):
        if media in (JSON_TYPE, "application/vnd.pypi.simple.latest+json"):
            json_q = max(json_q, q)
        elif media in (_HTML_V1, "application/vnd.pypi.simple.latest+html"):
            if q > html_q:
                html_q, html_type = q, _HTML_V1
        elif media in ("text/html", "text/*", "*/*"):
            if q > html_q:
                html_q, html_type = q, "text/html"
    if json_q > 0 and json_q >= html_q:
        return JSON_TYPE
    return html_type


class FakeIndex(Resource):
    """
    A PyPI-shaped upstream index over a set of dist files; see the module docstring.

    :ivar requests: every request received, in order, as L{RecordedRequest}s.
    :ivar violations: requests received after L{forbid}.
    :ivar clock: used by L{slow_page} and L{die_midway}; L{start_fake_index} sets
        it to the global reactor when it is None.
    """

    isLeaf = True
    #: Honour C{Range} on dist files (206); False: ignore it (200, whole file).
    ranges = False
    #: Advertise and serve the C{.metadata} of wheels added with C{metadata=True}.
    offer_metadata = True
    #: Bytes per second each file body is sent at (None: as fast as it goes),
    #: on C{clock}: a slower link than loopback, for benchmarks.
    rate: float | None = None
    #: C{Cache-Control} sent with pages and with files (as the public index does);
    #: set to None on an instance to send none.
    page_cache_control: str | None = "max-age=600, public"
    file_cache_control: str | None = "max-age=365000000, immutable, public"
    #: Where pages link files: C{"files"} (C{/files/<filename>}) or
    #: C{"hosted"} (C{/packages/<aa>/<bb>/<60 hex>/<filename>}, the public
    #: file host's layout); both are served either way.
    file_layout: Literal["files", "hosted"] = "files"

    def __init__(
        self,
        files_dir: Path | str,
        mode: str = "json",
        *,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        :param files_dir: where L{add} looks for relative file names.
        :param mode: C{"html"} or C{"json"}.
        :param clock: see C{clock}.
        """
        super().__init__()
        if mode not in ("html", "json"):
            raise ValueError(f"mode must be 'html' or 'json', not {mode!r}")
        self.files_dir = Path(files_dir)
        self.mode = mode
        self.clock = clock
        self.requests: list[RecordedRequest] = []
        self.violations: list[RecordedRequest] = []
        self._dists: dict[str, _Dist] = {}  # filename -> dist
        self._generation: dict[str, int] = {}  # project -> generation
        self._tick = 0
        self._forbidden = False
        self._corrupt: set[str] = set()
        self._range_faults: dict[str, str] = {}
        self.bytes_sent: dict[str, int] = {}
        self._deliveries: dict[str, _Delivery] = {}  # served name -> delivery
        self._page_deliveries: dict[str, _Delivery] = {}  # project -> delivery
        self._page_bodies: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self._file_holds: dict[str, Hold] = {}
        self._page_holds: dict[str, Hold] = {}
        self._page_status: dict[str, int] = {}
        self._slow: dict[str, float] = {}

    # -- set-up -------------------------------------------------------------

    def add(
        self,
        path: Path | str,
        *,
        yanked: bool | str | None = None,
        requires_python: str | None = None,
        upload_time: str | None = "2024-01-02T03:04:05.123456Z",
        metadata: bool = True,
        provenance: bytes | None = None,
    ) -> str:
        """
        Register (or re-register) a dist file under its project.

        The file is served from where it is (relative paths are taken under
        C{files_dir}); its sha256 is computed now, in chunks.  Adding a file again
        replaces its entry; either way the project's page changes (new ETag).

        :param yanked: None/False: not yanked; True: yanked with no reason; a str:
            yanked with that reason.
        :param requires_python: the page's C{data-requires-python} /
            C{requires-python} (not taken from the file).
        :param upload_time: the JSON C{upload-time}, or None to leave it out.
        :param metadata: for wheels, advertise and serve PEP 658 core metadata.
        :param provenance: a PEP 740 provenance object, linked from JSON pages.
        :returns: the project's normalized name.
        """
        path = self.files_dir / path
        filename = path.name
        try:
            name, version, *_ = parse_wheel_filename(filename)
            is_wheel = True
        except InvalidWheelFilename:
            try:
                name, version = parse_sdist_filename(filename)
            except InvalidSdistFilename:
                raise ValueError(f"not a dist file name: {filename!r}") from None
            is_wheel = False
        meta = _read_wheel_metadata(path) if (metadata and is_wheel) else None
        project = canonicalize_name(name)
        sha256, blake2b = _file_digests(path)
        self._dists[filename] = _Dist(
            path=path,
            filename=filename,
            project=project,
            version=version,
            size=path.stat().st_size,
            sha256=sha256,
            blake2b=blake2b,
            yanked=yanked,
            requires_python=requires_python,
            upload_time=upload_time,
            metadata=meta,
            metadata_sha256=hashlib.sha256(meta).hexdigest() if meta else None,
            provenance=provenance,
        )
        self._touch(project)
        return project

    def remove(self, filename: str) -> None:
        """Stop listing and serving a file (its page changes; an empty project 404s)."""
        dist = self._dists.pop(filename)
        self._touch(dist.project)

    def _touch(self, project: str) -> None:
        self._tick += 1
        self._generation[project] = self._tick

    def projects(self) -> list[str]:
        """The normalized names of the projects with at least one file."""
        return sorted({d.project for d in self._dists.values()})

    def sha256(self, filename: str) -> str:
        """The sha256 the pages advertise for C{filename}."""
        return self._dists[filename].sha256

    def hosted_path(self, filename: str) -> str:
        """C{<aa>/<bb>/<60 hex>/<filename>}: where the file host layout keeps
        C{filename} (the blake2b-256 of its bytes, as the public index cuts it)."""
        digest = self._dists[filename].blake2b
        return f"{digest[:2]}/{digest[2:4]}/{digest[4:]}/{quote(filename)}"

    def _link(self, base: str, dist: _Dist) -> str:
        """A file's URL on a page: below C{base}, as C{file_layout} says."""
        if self.file_layout == "hosted":
            return base + "packages/" + self.hosted_path(dist.filename)
        return base + "files/" + quote(dist.filename)

    # -- recording ----------------------------------------------------------

    def count(self, path_substring: str, method: str | None = None) -> int:
        """How many recorded requests have C{path_substring} in their path."""
        return sum(
            1
            for r in self.requests
            if path_substring in r.path and (method is None or r.method == method)
        )

    def downloads(self, served_name: str) -> int:
        """
        How many GETs asked for exactly C{/files/<served_name>} or its
        C{/packages/<aa>/<bb>/<60 hex>/<served_name>} (unlike L{count},
        C{"x.whl"} does not also match C{"x.whl.metadata"}).
        """
        name = quote(served_name)
        return sum(
            1
            for r in self.requests
            if r.method == "GET"
            and (
                r.path == "/files/" + name
                or (r.path.startswith("/packages/") and r.path.endswith("/" + name))
            )
        )

    def paths(self) -> list[str]:
        """The recorded request paths, in order."""
        return [r.path for r in self.requests]

    def forbid(self) -> None:
        """Answer 500 to every later request and record it in C{violations}."""
        self._forbidden = True

    def allow(self) -> None:
        """Undo L{forbid}."""
        self._forbidden = False

    # -- faults -------------------------------------------------------------

    def corrupt(self, filename: str) -> None:
        """Serve C{filename} with its last byte flipped: same length, wrong hash."""
        self._corrupt.add(filename)

    def range_fault(self, filename: str, kind: str | None) -> None:
        """Answer ranges of C{filename} wrongly (None: rightly again).

        C{"ignore"}: 200 with the whole file; C{"shifted"}: the range one byte
        later (and says so); C{"short"}: the C{Content-Range} asked for but
        half the bytes (a matching C{Content-Length}); C{"unlabelled"}: no
        C{Content-Range}; C{"size"}: a C{Content-Range} total one byte more
        than the file; C{"flip"}: the right range with its 101st byte flipped.
        """
        if kind is None:
            self._range_faults.pop(filename, None)
        else:
            self._range_faults[filename] = kind

    def total_bytes_sent(self) -> int:
        """Bytes of file bodies (archives and C{.metadata}) sent in all."""
        return sum(self.bytes_sent.values())

    def truncate(self, filename: str) -> None:
        """Send the full C{Content-Length} but half the body, then close cleanly."""
        self._deliveries[filename] = _Delivery("truncate")

    def die_midway(self, filename: str, drip: float | None = None) -> None:
        """Send half the body (one byte every C{drip} seconds, if given), then
        C{abortConnection()} (0.1 s later, on C{clock})."""
        self._deliveries[filename] = _Delivery("die", drip=drip)

    def reset_midway(self, filename: str) -> None:
        """Send half the body, then a TCP reset (0.1 s later, on C{clock})."""
        self._deliveries[filename] = _Delivery("reset")

    def stall(self, filename: str, after: int | None = None) -> None:
        """
        Send the headers (with the full C{Content-Length}) and C{after} bytes of
        the body (None: half; 0: none), then nothing more on an open connection.
        """
        self._deliveries[filename] = _Delivery("stall", after)

    def drip(self, filename: str, interval: float) -> None:
        """Send the whole body one byte every C{interval} seconds (on C{clock})."""
        self._deliveries[filename] = _Delivery("finish", drip=interval)

    def heal(self, filename: str) -> None:
        """Undo L{corrupt}, L{truncate}, L{die_midway}, L{reset_midway}, L{stall}
        and L{drip} for C{filename}."""
        self._corrupt.discard(filename)
        self._deliveries.pop(filename, None)

    def hold(self, filename: str) -> Hold:
        """Park every request for C{filename} until the returned hold is released."""
        hold = Hold(lambda: self._unhold(self._file_holds, filename, hold))
        self._file_holds[filename] = hold
        return hold

    def hold_page(self, project: str) -> Hold:
        """Park every request for a project's page until the hold is released."""
        project = canonicalize_name(project)
        hold = Hold(lambda: self._unhold(self._page_holds, project, hold))
        self._page_holds[project] = hold
        return hold

    @staticmethod
    def _unhold(holds: dict[str, Hold], key: str, hold: Hold) -> None:
        if holds.get(key) is hold:
            del holds[key]

    def page_status(self, project: str, code: int | None) -> None:
        """Answer the project's page with status C{code} (None: back to normal)."""
        project = canonicalize_name(project)
        if code is None:
            self._page_status.pop(project, None)
        else:
            self._page_status[project] = code

    def slow_page(self, project: str, seconds: float | None) -> None:
        """Delay the project's page by C{seconds} on C{clock} (None or 0: no delay)."""
        project = canonicalize_name(project)
        if seconds:
            self._slow[project] = seconds
        else:
            self._slow.pop(project, None)

    def page_body(
        self,
        project: str,
        body: bytes,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        """
        Answer the project's page with exactly this status, these headers (a
        C{Content-Type} of C{text/html} unless given; C{Content-Encoding} and
        the like are sent as given, the body is not encoded to match) and these
        raw body bytes.
        """
        self._page_bodies[canonicalize_name(project)] = (status, headers or {}, body)

    def stall_page(self, project: str, after: int = 0) -> None:
        """Send the page's headers and C{after} bytes of it, then nothing more."""
        self._page_deliveries[canonicalize_name(project)] = _Delivery("stall", after)

    def drip_page(self, project: str, interval: float) -> None:
        """Send the page one byte every C{interval} seconds (on C{clock})."""
        self._page_deliveries[canonicalize_name(project)] = _Delivery(
            "finish", drip=interval
        )

    def reset_page(self, project: str) -> None:
        """Send half of the page, then a TCP reset."""
        self._page_deliveries[canonicalize_name(project)] = _Delivery("reset")

    def heal_page(self, project: str) -> None:
        """Undo every page fault of a project but its holds: L{page_body},
        L{page_status}, L{slow_page}, L{stall_page}, L{drip_page}, L{reset_page}."""
        project = canonicalize_name(project)
        for faults in (
            self._page_bodies,
            self._page_status,
            self._slow,
            self._page_deliveries,
        ):
            faults.pop(project, None)

    # -- serving ------------------------------------------------------------

    def render(self, request: Request) -> bytes | int:
        headers = {
            k.decode("latin-1").lower(): ", ".join(v.decode("latin-1") for v in vs)
            for k, vs in request.requestHeaders.getAllRawHeaders()
        }
        record = RecordedRequest(
            request.method.decode("latin-1"), request.uri.decode("latin-1"), headers
        )
        self.requests.append(record)
        if self._forbidden:
            self.violations.append(record)
            return self._plain(
                request, 500, "forbidden: this test must not reach upstream"
            )
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return self._plain(request, 405, "method not allowed")
        segments = [s.decode("utf-8", "replace") for s in request.postpath]
        if segments[:1] == ["simple"]:
            rest = segments[1:]
            if rest in ([], [""]):
                if rest == []:
                    return self._redirect(request, "/simple/")
                return self._root(request)
            if len(rest) <= 2 and (len(rest) == 1 or rest[1] == ""):
                return self._project(request, rest[0], slash=len(rest) == 2)
        if len(segments) == 2 and segments[0] == "files":
            return self._file(request, segments[1])
        if len(segments) == 5 and segments[0] == "packages":
            return self._hosted_file(request, segments[1:])
        if len(segments) == 3 and segments[0] == "integrity":
            dist = self._dists.get(segments[1])
            if dist is not None and dist.provenance is not None:
                request.setHeader(b"content-type", b"application/json")
                return dist.provenance

        return self._plain(request, 404, "not found")

    def _plain(self, request: Request, code: int, text: str) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (text + "\n").encode()

    def _redirect(self, request: Request, location: str) -> bytes:
        request.setResponseCode(301)
        request.setHeader(b"location", location.encode())
        return b""

    def _content_type(self, request: Request) -> str:
        if self.mode == "html":
            return "text/html"
        request.setHeader(b"vary", b"Accept")
        fmt = request.args.get(b"format")
        if fmt:
            return _negotiate(fmt[0].decode("latin-1"))
        return _negotiate(request.getHeader("accept"))

    def _not_modified(self, request: Request, etag: str, generation: int) -> bool:
        """Set validators; True (and status 304) if the client's copy is current."""
        if self.page_cache_control:
            request.setHeader(b"cache-control", self.page_cache_control.encode())
        request.setHeader(b"etag", etag.encode())
        last_modified = _EPOCH + generation
        request.setHeader(b"last-modified", http.datetimeToString(last_modified))
        inm = request.getHeader("if-none-match")
        if inm is not None:
            tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
            match = etag in tags or "*" in tags
        else:
            ims = request.getHeader(b"if-modified-since")
            try:
                match = ims is not None and http.stringToDatetime(ims) >= last_modified
            except ValueError:
                match = False
        if match:
            request.setResponseCode(http.NOT_MODIFIED)
        return match

    def _root(self, request: Request) -> bytes:
        content_type = self._content_type(request)
        generation = max(self._generation.values(), default=0)
        etag = f'"root-{generation}-{_KINDS[content_type]}"'
        if self._not_modified(request, etag, generation):
            return b""
        request.setHeader(b"content-type", content_type.encode())
        projects = self.projects()
        if content_type == JSON_TYPE:
            entries = ", ".join(f'{{"name": {json.dumps(p)}}}' for p in projects)
            return f"""{{
  "meta": {{"api-version": "1.1"}},
  "projects": [{entries}]
}}
""".encode()
        links = "\n".join(
            f'    <a href="{quote(p)}/">{html.escape(p)}</a><br />' for p in projects
        )
        return f"""<!DOCTYPE html>
<html>
  <head>
    <meta name="pypi:repository-version" content="1.1">
    <title>Simple index</title>
  </head>
  <body>
{links}
  </body>
</html>
""".encode()

    def _project(self, request: Request, name: str, slash: bool) -> bytes | int:
        project = canonicalize_name(name)
        if name != project or not slash:
            return self._redirect(request, f"/simple/{quote(project)}/")
        hold = self._page_holds.get(project)
        if hold is not None:
            hold._park(request, lambda: self._finish_page(request, project))
            return NOT_DONE_YET
        delay = self._slow.get(project)
        if delay:
            assert self.clock is not None, "slow_page needs FakeIndex.clock"
            call: IDelayedCall = self.clock.callLater(
                delay, self._finish_page, request, project
            )
            request.notifyFinish().addErrback(
                lambda _: call.cancel() if call.active() else None
            )
            return NOT_DONE_YET
        return self._deliver_page(request, project)

    def _finish_page(self, request: Request, project: str) -> None:
        if request._disconnected:
            return
        body = self._deliver_page(request, project)
        if body is not NOT_DONE_YET:
            assert isinstance(body, bytes)
            request.write(body)
            request.finish()

    def _deliver_page(self, request: Request, project: str) -> bytes | int:
        """The page, returned whole or sent by a L{_Sender} for a delivery fault."""
        body = self._page(request, project)
        delivery = self._page_deliveries.get(project)
        if delivery is None or request.method == b"HEAD" or not body:
            return body
        request.setHeader(b"content-length", str(len(body)).encode())
        _Sender(
            request,
            io.BytesIO(body),
            len(body),
            delivery=delivery,
            corrupt=False,
            clock=self.clock,
        ).start()
        return NOT_DONE_YET

    def _page(self, request: Request, project: str) -> bytes:
        raw = self._page_bodies.get(project)
        if raw is not None:
            status, headers, body = raw
            request.setResponseCode(status)
            for name, value in headers.items():
                request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
            return body
        forced = self._page_status.get(project)
        if forced is not None:
            return self._plain(request, forced, f"{forced} forced by the test")
        dists = sorted(
            (d for d in self._dists.values() if d.project == project),
            key=lambda d: (d.version, d.filename),
        )
        if not dists:
            return self._plain(request, 404, f"no project {project}")
        content_type = self._content_type(request)
        kind = _KINDS[content_type]
        generation = self._generation[project]
        if self._not_modified(request, f'"{project}-{generation}-{kind}"', generation):
            return b""
        request.setHeader(b"content-type", content_type.encode())
        if self.mode == "json":
            host = request.getHost()
            base = f"http://{host.host}:{host.port}/"
        else:
            base = "../../"
        if content_type == JSON_TYPE:
            return self._json_page(project, dists, base)
        return self._html_page(project, dists, base)

    def _html_page(self, project: str, dists: list[_Dist], base: str) -> bytes:
        anchors = []
        for d in dists:
            attrs_ = [f'href="{html.escape(self._link(base, d))}#sha256={d.sha256}"']
            if d.requires_python is not None:
                attrs_.append(
                    f'data-requires-python="{html.escape(d.requires_python)}"'
                )
            if d.metadata_sha256 is not None and self.offer_metadata:
                attrs_.append(f'data-core-metadata="sha256={d.metadata_sha256}"')
                attrs_.append(f'data-dist-info-metadata="sha256={d.metadata_sha256}"')
            if d.yanked:
                reason = d.yanked if isinstance(d.yanked, str) else ""
                attrs_.append(f'data-yanked="{html.escape(reason)}"')
            anchors.append(
                f'    <a {" ".join(attrs_)}>{html.escape(d.filename)}</a><br />'
            )
        links = "\n".join(anchors)
        return f"""<!DOCTYPE html>
<html>
  <head>
    <meta name="pypi:repository-version" content="1.1">
    <title>Links for {html.escape(project)}</title>
  </head>
  <body>
    <h1>Links for {html.escape(project)}</h1>
{links}
  </body>
</html>
""".encode()

    def _json_page(self, project: str, dists: list[_Dist], base: str) -> bytes:
        files = []
        for d in dists:
            meta = (
                f'{{"sha256": "{d.metadata_sha256}"}}'
                if d.metadata_sha256 is not None and self.offer_metadata
                else "false"
            )
            upload = (
                f', "upload-time": {json.dumps(d.upload_time)}'
                if d.upload_time is not None
                else ""
            )
            url = json.dumps(self._link(base, d))
            if d.provenance is not None:
                provenance = json.dumps(
                    f"{base}integrity/{quote(d.filename)}/provenance"
                )
                upload += f', "provenance": {provenance}'
            files.append(f"""{{
      "filename": {json.dumps(d.filename)},
      "url": {url},
      "hashes": {{"sha256": "{d.sha256}"}},
      "requires-python": {json.dumps(d.requires_python)},
      "core-metadata": {meta},
      "dist-info-metadata": {meta},
      "yanked": {json.dumps(d.yanked or False)},
      "size": {d.size}{upload}
    }}""")
        versions = sorted({d.version for d in dists})
        joined = ",\n    ".join(files)
        return f"""{{
  "meta": {{"api-version": "1.1"}},
  "name": {json.dumps(project)},
  "versions": {json.dumps([str(v) for v in versions])},
  "files": [
    {joined}
  ]
}}
""".encode()

    def _file(self, request: Request, served_name: str) -> bytes | int:
        filename, is_metadata = served_name, False
        if served_name.endswith(".metadata"):
            filename, is_metadata = served_name.removesuffix(".metadata"), True
        dist = self._dists.get(filename)
        if dist is None or (
            is_metadata and (dist.metadata is None or not self.offer_metadata)
        ):
            return self._plain(request, 404, f"no file {served_name}")
        hold = self._file_holds.get(served_name)
        if hold is not None:
            hold._park(
                request, lambda: self._send(request, dist, served_name, is_metadata)
            )
            return NOT_DONE_YET
        self._send(request, dist, served_name, is_metadata)
        return NOT_DONE_YET

    def _hosted_file(self, request: Request, segments: list[str]) -> bytes | int:
        """C{/packages/<aa>/<bb>/<60 hex>/<served name>}: the file if the
        digest in the path is its own, as on the public file host."""
        served_name = segments[3]
        dist = self._dists.get(served_name.removesuffix(".metadata"))
        if dist is None or "".join(segments[:3]) != dist.blake2b:
            return self._plain(request, 404, f"no file at {'/'.join(segments)}")
        return self._file(request, served_name)

    def _send(
        self, request: Request, dist: _Dist, served_name: str, is_metadata: bool
    ) -> None:
        if request._disconnected:
            return
        source: BinaryIO
        if is_metadata:
            assert dist.metadata is not None
            source, size = io.BytesIO(dist.metadata), len(dist.metadata)
        else:
            source, size = open(dist.path, "rb"), dist.size
        request.setHeader(b"content-type", b"application/octet-stream")
        if self.file_cache_control:
            request.setHeader(b"cache-control", self.file_cache_control.encode())
        corrupt = served_name in self._corrupt
        wanted = request.getHeader("range")
        fault = self._range_faults.get(served_name)
        honoured = not is_metadata and (self.ranges or fault) and fault != "ignore"
        if honoured:
            request.setHeader(b"accept-ranges", b"bytes")
        if honoured and wanted is not None:
            chosen = _parse_range(wanted, size)
            if chosen is None:
                source.close()
                request.setResponseCode(416)
                request.setHeader(b"content-range", f"bytes */{size}".encode())
                request.setHeader(b"content-length", b"0")
                request.finish()
                return
            source, size, corrupt = self._range_answer(
                request, source, size, chosen, fault
            )
        request.setHeader(b"content-length", str(size).encode())
        if request.method == b"HEAD" or size == 0:
            source.close()
            request.finish()
            return

        def tally(n: int) -> None:
            self.bytes_sent[served_name] = self.bytes_sent.get(served_name, 0) + n

        _Sender(
            request,
            source,
            size,
            delivery=self._deliveries.get(served_name, _Delivery()),
            corrupt=corrupt,
            clock=self.clock,
            tally=tally,
            rate=self.rate,
        ).start()

    def _range_answer(
        self,
        request: Request,
        source: BinaryIO,
        total: int,
        chosen: tuple[int, int],
        fault: str | None,
    ) -> tuple[BinaryIO, int, bool]:
        """Set up a 206 for bytes C{chosen} (with C{fault}); the body's source and size."""
        first, last = chosen
        if fault == "shifted" and last + 1 < total:
            first, last = first + 1, last + 1
        source.seek(first)
        body = source.read(last - first + 1)
        source.close()
        if fault == "flip":
            at = min(100, len(body) - 1)
            body = body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1 :]
        label = f"bytes {first}-{last}/{total + 1 if fault == 'size' else total}"
        if fault == "short":
            body = body[: len(body) // 2]
        request.setResponseCode(206)
        if fault != "unlabelled":
            request.setHeader(b"content-range", label.encode())
        return io.BytesIO(body), len(body), False


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The first and last byte of a single C{bytes=} range, or None if unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec or size == 0:
        return None
    first_text, _, last_text = spec.strip().partition("-")
    try:
        if not first_text:
            length = int(last_text)
            return (max(0, size - length), size - 1) if length > 0 else None
        first = int(first_text)
        last = int(last_text) if last_text else size - 1
    except ValueError:
        return None
    if first >= size or last < first:
        return None
    return first, min(last, size - 1)


# -- running it on the real reactor -------------------------------------------


class _TrackingChannel(http.HTTPChannel):
    """An HTTPChannel that its site can find and drop."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.open_channels.add(self)

    def connectionLost(self, reason: Any) -> None:
        self.factory.open_channels.discard(self)
        super().connectionLost(reason)
        waiters, self.factory.lost_waiters = self.factory.lost_waiters, []
        for d in waiters:
            d.callback(None)


class _QuietSite(Site):
    """A Site with no access log that remembers its open connections."""

    protocol = _TrackingChannel
    noisy = False

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)
        self.open_channels: set[_TrackingChannel] = set()
        self.lost_waiters: list[Deferred[None]] = []

    def log(self, request: Request) -> None:
        pass


@attrs.define
class RunningIndex:
    """A L{FakeIndex} listening on 127.0.0.1.

    :ivar url: C{http://127.0.0.1:PORT/simple/}
    :ivar root: C{http://127.0.0.1:PORT/}
    """

    index: FakeIndex
    url: str
    root: str
    port: int
    _listening: Any
    _site: _QuietSite

    async def stop(self) -> None:
        """
        Stop listening and drop every open connection, so later requests fail
        with connection refused. Stopping twice is harmless.
        """
        if not self._listening.connected:
            return
        await self._listening.stopListening()
        while self._site.open_channels:
            d: Deferred[None] = Deferred()
            self._site.lost_waiters.append(d)
            for channel in list(self._site.open_channels):
                if channel.transport is not None:
                    channel.transport.abortConnection()
            await d


async def start_fake_index(index: FakeIndex, port: int = 0) -> RunningIndex:
    """
    Listen on 127.0.0.1 (an ephemeral port, or C{port} to come back on an old
    one) with a L{Site} over C{index}; sets C{index.clock} to the global reactor
    if it has none.  The only user of the global reactor in this module.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint

    if index.clock is None:
        index.clock = reactor
    site = _QuietSite(index)
    listening = await TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(
        site
    )
    actual = listening.getHost().port
    root = f"http://127.0.0.1:{actual}/"
    return RunningIndex(index, root + "simple/", root, actual, listening, site)
