"""Rendered pages ready to send: a page's body per format and encoding, kept
per page version (:class:`RenderCache`), and how each form is made."""

import functools
import gzip
from collections import OrderedDict
from typing import Callable, Hashable

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
        return entry[1] if entry is not None and entry[0] == version else None

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


def gzipped(plain: Body) -> Body:
    """The gzip form of a page (``mtime=0``: the same page compresses to the same bytes)."""
    return Body.of(
        gzip.compress(plain.data(), 6, mtime=0),
        plain.headers + ((b"content-encoding", b"gzip"),),
        VARY,
        etag=plain.etag[:-1] + b'-gzip"',
    )
