# -*- test-case-name: tests.test_proxy -*-
"""Route groups on one Klein app, and the small request helpers the groups share.

A route group is an object whose methods are marked with :func:`route`;
:func:`register` adds every marked method of a group to a Klein app, bound to
that group. So each group holds only the collaborators it needs, and every
route still lives in one URL map (one group may answer ``GET`` and another
``PUT`` for the same path).

:class:`Body` is a response built once and sent many times (the installer's
pages): :func:`send_body` answers with its ``Content-Length`` and ``ETag``
(``304`` to a matching ``If-None-Match``), never chunked, and writes a large
body in pieces as the connection drains, so that the transport never copies
the whole body into one buffer again.
"""

import functools
import hashlib
import re
from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar
from urllib.parse import quote

import attrs
from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IPushProducer
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from pypicache.errors import NotFound
from pypicache.index.names import normalize, parse_filename

if TYPE_CHECKING:
    from klein import Klein

F = TypeVar("F", bound=Callable[..., Any])

_ROUTES = "_pypicache_routes"


def route(url: str, **options: Any) -> Callable[[F], F]:
    """Mark a method as the handler of ``url`` (``options`` as for ``Klein.route``)."""

    def mark(method: F) -> F:
        method.__dict__.setdefault(_ROUTES, []).append((url, options))
        return method

    return mark


def _bound(method: Callable[..., Any]) -> Callable[..., Any]:
    def handle(request: IRequest, **url_vars: Any) -> Any:
        return method(request, **url_vars)

    handle.__name__ = method.__name__
    return handle


def klein_app() -> "Klein":
    """A Klein app whose routes compile their URL builders on first use
    (see :mod:`pypicache.web.kleinapp`).

    Klein and werkzeug are imported here, by the first site made, not with
    this module: the daemon makes its Klein app at the first request the fast
    path and the fast lane leave to it (:class:`pypicache.web.app.KleinLater`).
    """
    from pypicache.web.kleinapp import new_app

    return new_app()


def register(app: "Klein", group: object) -> None:
    """Add every method of ``group`` marked with :func:`route` to ``app``."""
    kind = type(group)
    for name in dir(kind):
        for url, options in getattr(getattr(kind, name), _ROUTES, ()):
            endpoint = f"{kind.__name__}.{name}"
            app.route(url, endpoint=endpoint, **options)(_bound(getattr(group, name)))


def query_arg(request: IRequest, name: bytes) -> str | None:
    """The first value of a query argument, as text."""
    values = request.args.get(name)
    return values[0].decode("utf-8", "replace") if values else None


def header(request: IRequest, name: bytes) -> str | None:
    """A request header as text, or ``None``."""
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


def redirect(request: IRequest, location: str) -> bytes:
    """Answer ``301`` with a relative ``Location`` (works behind any proxy prefix)."""
    request.setResponseCode(301)
    request.setHeader(b"location", location.encode("utf-8"))
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return f"Moved to {location}\n".encode()


def base_url(request: IRequest) -> str:
    """This server's URL as the client addressed it (scheme and ``Host``)."""
    host = (header(request, b"host") or "localhost").split(",")[0].strip()
    return f"{'https' if request.isSecure() else 'http'}://{host}/"


@functools.lru_cache(maxsize=4096)
def project_of(project: str, filename: str) -> str:
    """The normalized project of ``filename``, which must be ``project``'s.

    Remembered for the names asked for most (parsing a wheel's name is a
    good part of serving a small one); errors are not.

    :raises BadRequest: for unsafe names; :raises NotFound: for another project's file.
    """
    name, _ = parse_filename(filename)
    if normalize(project) != name:
        raise NotFound(f"{filename!r} is not a file of project {project!r}")
    return name


#: What :func:`~urllib.parse.quote` leaves as it is (its always-safe
#: characters and ``/``): most names, which need not go through it.
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~/-]*")


def _quoted(text: str) -> str:
    """``quote(text)``, at once for a name it would not change (a page of
    3,000 files quotes 6,000 names: half of rendering it, else)."""
    return text if _UNQUOTED.fullmatch(text) else quote(text)


def file_url(project: str, filename: str) -> str:
    """The URL of a file relative to a project page (``/simple/<p>/``, ``/local/<p>/``)."""
    return _files_folder(project) + _quoted(filename)


def file_urls(project: str) -> Callable[[str], str]:
    """:func:`file_url` of ``project`` for many files (its folder made once)."""
    folder = _files_folder(project)
    return lambda filename: folder + _quoted(filename)


def _files_folder(project: str) -> str:
    """The folder, relative to a project page, that its files are served in."""
    return f"../../packages/{_quoted(project)}/"


# -- pre-built bodies ----------------------------------------------------------

#: What a TCP transport sends at once. It joins whatever was written since its
#: buffer last drained into one buffer: so a body is written in pieces, one per
#: drained buffer, each sent as it is, not copied (see :meth:`Body.of`).
PIECE = FileDescriptor.SEND_LIMIT


def _pieces(data: bytes) -> tuple[bytes, ...]:
    """Cut a body for sending: its first :data:`PIECE` bytes (the transport joins
    them with the headers), then the most whole multiples of ``PIECE`` that fit
    (sent straight from the piece), then the rest (which, left at the end of a
    larger piece, the transport would copy)."""
    if len(data) <= PIECE:
        return (data,)
    whole = PIECE + (len(data) - PIECE) // PIECE * PIECE
    return tuple(p for p in (data[:PIECE], data[PIECE:whole], data[whole:]) if p)


@attrs.frozen
class Body:
    """A response body built once and sent as is, with its representation's headers.

    :ivar pieces: the body, cut by :func:`_pieces`.
    :ivar length: the ``Content-Length`` value.
    :ivar etag: a strong ``ETag`` (quoted), of these bytes.
    :ivar headers: ``Content-Type``, ``Content-Encoding``...: sent with a ``200``.
    :ivar vary: the ``Vary`` value, sent with ``200`` and ``304`` alike.
    :ivar former: the ETag of another body of the same representation sent
        before this one (a page gzipped faster for its first clients), which
        a ``304`` answers too (:func:`validated`); ``None``: none.
    """

    pieces: tuple[bytes, ...]
    length: bytes
    etag: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    vary: bytes | None = None
    former: bytes | None = None

    @classmethod
    def of(
        cls,
        data: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        vary: bytes | None = None,
        etag: bytes | None = None,
        former: bytes | None = None,
    ) -> "Body":
        """Split ``data`` into pieces; the ETag defaults to a digest of ``data``."""
        if etag is None:
            etag = (
                b'"' + hashlib.blake2b(data, digest_size=16).hexdigest().encode() + b'"'
            )
        return cls(_pieces(data), b"%d" % len(data), etag, tuple(headers), vary, former)

    @property
    def size(self) -> int:
        return sum(map(len, self.pieces))

    def data(self) -> bytes:
        return b"".join(self.pieces)


def etag_matches(if_none_match: bytes | None, etag: bytes) -> bool:
    """Whether an ``If-None-Match`` value names ``etag`` (weak comparison) or is ``*``."""
    if not if_none_match:
        return False
    for tag in if_none_match.split(b","):
        tag = tag.strip()
        if tag == b"*" or tag.removeprefix(b"W/") == etag:
            return True
    return False


def validated(if_none_match: bytes | None, body: Body) -> bytes | None:
    """The ETag a ``304`` to ``If-None-Match`` names: ``body``'s, or its
    :attr:`~Body.former` one if that is what the client holds (its stored
    bytes are still a current form of the page, and a cache updates the
    response whose ETag the ``304`` names); ``None``: no ``304``."""
    if etag_matches(if_none_match, body.etag):
        return body.etag
    if body.former is not None and etag_matches(if_none_match, body.former):
        return body.former
    return None


def send_body(request: IRequest, body: Body) -> Any:
    """Answer with ``body``: ``Content-Length``, never chunked; ``HEAD`` gets no bytes.

    :returns: what a Klein route returns: bytes, or a resource that writes
        the pieces of a large body as the connection drains.
    """
    set_header = request.responseHeaders.setRawHeaders
    if body.vary is not None:
        set_header(b"vary", [body.vary])
    held = validated(request.getHeader(b"if-none-match"), body)
    set_header(b"etag", [held or body.etag])
    if held is not None:
        request.setResponseCode(304)
        for name, value in body.headers:
            if name == b"cache-control":  # a 304 carries it as a 200 would
                set_header(name, [value])
        return b""
    for name, value in body.headers:
        set_header(name, [value])
    set_header(b"content-length", [body.length])
    if len(body.pieces) == 1 or request.method == b"HEAD":
        return body.pieces[0]
    return _PieceSender(body.pieces)


@implementer(IPushProducer)
class _PieceSender(Resource):
    """Writes a body's pieces, one more each time the transport has sent the last."""

    isLeaf = True

    def __init__(self, pieces: tuple[bytes, ...]) -> None:
        super().__init__()
        self._pieces = pieces
        self._next = 0
        self._paused = False
        self._stopped = False
        self._request: Any = None

    def render(self, request: Any) -> Any:
        self._request = request
        request.notifyFinish().addErrback(lambda _: self.stopProducing())
        request.registerProducer(self, True)
        self.resumeProducing()
        return NOT_DONE_YET

    def resumeProducing(self) -> None:
        self._paused = False
        request, pieces = self._request, self._pieces
        # Writing a piece fills the transport's buffer, which pauses us at once.
        while not (self._paused or self._stopped) and self._next < len(pieces):
            self._next += 1
            request.write(pieces[self._next - 1])
        if self._next == len(pieces) and not self._stopped:
            self._stopped = True
            request.unregisterProducer()
            request.finish()

    def pauseProducing(self) -> None:
        self._paused = True

    def stopProducing(self) -> None:
        self._stopped = True


@functools.lru_cache(maxsize=256)
def accepts_gzip(accept_encoding: bytes | None) -> bool:
    """Whether an ``Accept-Encoding`` value accepts gzip (``gzip;q=0`` refuses it).

    Remembered per value: clients send a handful of distinct ones.
    """
    if not accept_encoding:
        return False
    star = False
    for item in accept_encoding.lower().split(b","):
        coding, *params = item.split(b";")
        q = 1.0
        for param in params:
            name, _, value = param.partition(b"=")
            if name.strip() == b"q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        coding = coding.strip()
        if coding in (b"gzip", b"x-gzip"):
            return q > 0
        if coding == b"*":
            star = q > 0
    return star
