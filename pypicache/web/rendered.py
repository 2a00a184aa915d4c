"""Rendered pages ready to send: a page's body per format and encoding, kept
per page version (:class:`RenderCache`), and how each form is made."""

import functools
import gzip
from collections import OrderedDict
from typing import Callable, Hashable, NamedTuple

from pypicache.index.simple import JSON_TYPE, negotiate
from pypicache.web.routing import Body

#: Pages differ by ``Accept`` (HTML or JSON) and ``Accept-Encoding`` (gzip).
VARY = b"Accept, Accept-Encoding"


class RenderCache:
    """Pages ready to send: one version of each page in each format and encoding.

    A page's newer version replaces its older one; past ``max_bytes`` or
    ``max_entries`` the least recently used entries go (the newest always stays).
    """

    def __init__(self, max_bytes: int = 64 * 1024**2, max_entries: int = 1024) -> None:
        self._max_bytes = max_bytes
        self._max_entries = max_entries
        self._bytes = 0
        self._entries: OrderedDict[Hashable, tuple[Hashable, Body]] = OrderedDict()

    def peek(self, slot: Hashable, version: Hashable) -> Body | None:
        """The body of ``slot`` at ``version`` if kept (for bodies built asynchronously)."""
        entry = self._entries.get(slot)
        if entry is None or entry[0] != version:
            return None
        self._entries.move_to_end(slot)
        return entry[1]

    def swap(self, slot: Hashable, version: Hashable, old: Body, new: Body) -> bool:
        """Keep ``new`` in place of ``old`` if ``old`` is still the body of
        ``slot`` at ``version`` (a better form of the same representation,
        made behind it); whether it was."""
        entry = self._entries.get(slot)
        if entry is None or entry[0] != version or entry[1] is not old:
            return False
        self._entries[slot] = (version, new)
        self._bytes += new.size - old.size
        return True

    def get(self, slot: Hashable, version: Hashable, build: Callable[[], Body]) -> Body:
        """The body of ``slot`` at ``version``, built by ``build`` unless kept."""
        entry = self._entries.get(slot)
        if entry is not None and entry[0] == version:
            self._entries.move_to_end(slot)
            return entry[1]
        body = build()
        if entry is not None:
            self._bytes -= entry[1].size
        self._entries[slot] = (version, body)
        self._entries.move_to_end(slot)
        self._bytes += body.size
        while len(self._entries) > 1 and (
            self._bytes > self._max_bytes or len(self._entries) > self._max_entries
        ):
            _, (_, old) = self._entries.popitem(last=False)
            self._bytes -= old.size
        return body


@functools.lru_cache(maxsize=256)
def media_of(accept: bytes | None, format_param: bytes | None) -> str:
    """:func:`negotiate` on the raw values, remembered (clients send few distinct ones)."""
    return negotiate(
        accept.decode("latin-1") if accept is not None else None,
        format_param.decode("utf-8", "replace") if format_param is not None else None,
    )


def plain(data: bytes, media: str, max_age: int | None) -> Body:
    """A page as sent uncompressed; with ``Cache-Control: max-age`` unless ``max_age`` is ``None``."""
    content_type = media.encode() + (b"" if media == JSON_TYPE else b"; charset=utf-8")
    headers = [(b"content-type", content_type)]
    if max_age is not None:
        headers.append((b"cache-control", b"max-age=%d" % max_age))
    return Body.of(data, headers, VARY)


#: The gzip level of the pages kept for the requests to come: nginx's
#: ``gzip_static`` files are made at 6 too.
LEVEL = 6

#: The gzip level of a large page's first body, made while its first clients
#: wait (:func:`render_form`): a 3,000-file page compresses in a third of
#: level 6's time, to 7 to 10 % more bytes; level :data:`LEVEL` is made
#: behind it for the requests after.
QUICK_LEVEL = 1


def gzipped(plain: Body, level: int = LEVEL, former: bytes | None = None) -> Body:
    """The gzip form of a page (``mtime=0``: the same page compresses to the
    same bytes at the same level).

    Its ETag is the plain body's with ``-gzip`` (``-gzip<level>`` for a level
    other than :data:`LEVEL`: each ETag names exactly its bytes).

    :param former: the ETag of the same page gzipped at another level, sent
        before this body was made: conditional requests naming it are
        answered ``304`` too (:func:`~pypicache.web.routing.validated`).
    """
    suffix = b'-gzip"' if level == LEVEL else b'-gzip%d"' % level
    return Body.of(
        gzip.compress(plain.data(), level, mtime=0),
        plain.headers + ((b"content-encoding", b"gzip"),),
        VARY,
        etag=plain.etag[:-1] + suffix,
        former=former,
    )


class Form(NamedTuple):
    """Which body answers a request for a page: the page's slot and version,
    the media type and encoding asked for, and the ``max-age`` sent with it
    (a tuple: one is made per request on the hot path)."""

    slot: Hashable
    version: Hashable
    media: str
    max_age: int | None
    gzip: bool

    def key(self, zipped: bool) -> Hashable:
        """The :class:`RenderCache` slot of this page's plain or gzipped body."""
        return (self.slot, self.media, zipped)


def render_form(
    form: Form,
    render: Callable[[str], bytes],
    identity: Body | None,
    level: int = LEVEL,
) -> tuple[Body, Body | None]:
    """The plain body of ``form`` (``identity`` if already made) and its
    gzipped body if ``form`` asks for gzip (blocking: for a thread, where a
    page of thousands of files is rendered and compressed off the reactor).

    :param render: the page's bytes in a media type; :param level: the gzip level.
    """
    if identity is None:
        identity = plain_form(form, render)
    return identity, gzipped(identity, level) if form.gzip else None


def plain_form(form: Form, render: Callable[[str], bytes]) -> Body:
    """The plain body of ``form``, rendered by ``render`` (the page in a media type)."""
    return plain(render(form.media), form.media, form.max_age)
