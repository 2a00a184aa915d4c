# -*- test-case-name: tests.test_fastlane -*-
"""Request heads read straight from a connection's bytes, for the fast lane.

:func:`parse_head` reads a complete request head (request line and header
lines, without the blank line that ends it) the way ``HTTPChannel`` would, but
accepts only what it is sure of: a ``GET`` or ``HEAD`` in HTTP/1.0 or 1.1,
header lines ``name: value`` with valid names, each header at most once. For
anything else it answers ``None`` and the request goes to twisted.web, which
answers it (a ``400`` included) as it always has.

:class:`RequestHead` is the request as the access log and the access policy
read it: the attributes and methods of a twisted.web ``Request`` they use.
"""

import re
from typing import Any

from twisted.web.http_headers import Headers

#: A header name: an RFC 9110 token (what ``HTTPChannel`` accepts).
_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

#: More header lines than this: left to twisted.web.
MAX_HEADERS = 64


class RequestHead:
    """A ``GET`` or ``HEAD`` request read by :func:`parse_head`.

    :ivar headers: lower-cased names to values (each name once).
    :ivar raw: the header lines' names (as sent) and values, in order.
    :ivar code: the status answered; :ivar sentLength: the body bytes sent
        (set by the fast lane, for the access log).
    """

    __slots__ = (
        "method",
        "uri",
        "clientproto",
        "headers",
        "raw",
        "_transport",
        "code",
        "sentLength",
        "pypicache_cache_hit",
    )

    def __init__(
        self,
        method: bytes,
        uri: bytes,
        clientproto: bytes,
        headers: dict[bytes, bytes],
        raw: list[tuple[bytes, bytes]],
        transport: Any,
    ) -> None:
        self.method = method
        self.uri = uri
        self.clientproto = clientproto
        self.headers = headers
        self.raw = raw
        self._transport = transport
        self.code = 200
        self.sentLength = 0
        #: The fast lane answers only from what is stored (``--json-log``).
        self.pypicache_cache_hit = True

    def getHeader(self, name: bytes) -> bytes | None:
        return self.headers.get(name.lower())

    @property
    def requestHeaders(self) -> Headers:
        """The headers as twisted.web keeps them (built when asked for)."""
        headers = Headers()
        for name, value in self.raw:
            headers.addRawHeader(name, value)
        return headers

    def getClientAddress(self) -> Any:
        return self._transport.getPeer()

    @property
    def path(self) -> bytes:
        """The target without its query (the lane takes none), as ``Request.path``."""
        return self.uri.partition(b"?")[0]

    @property
    def keep_alive(self) -> bool:
        """Whether the connection stays open after the answer, as
        ``HTTPChannel.checkPersistence`` decides: HTTP/1.1 without a ``close``
        among the first ``Connection`` header's space-separated tokens."""
        if self.clientproto != b"HTTP/1.1":
            return False
        connection = self.headers.get(b"connection")
        return connection is None or b"close" not in connection.lower().split(b" ")


#: Heads read lately (a client sends the same head again and again), to what
#: :func:`_read` made of them; at most :data:`_KEPT_MAX` heads of at most
#: :data:`_KEPT_BYTES` bytes each.
_KEPT: dict[bytes, Any] = {}
_KEPT_MAX = 256
_KEPT_BYTES = 2048


def parse_head(head: bytes, transport: Any) -> RequestHead | None:
    """Read a request head (without its final ``CRLF CRLF``), or ``None`` to
    leave it to twisted.web.

    A head read before is not read again: its parts are shared (the headers
    are never changed once read)."""
    parts = _KEPT.get(head, _KEPT)
    if parts is _KEPT:
        parts = _read(head)
        if len(head) <= _KEPT_BYTES:
            if len(_KEPT) >= _KEPT_MAX:
                _KEPT.clear()
            _KEPT[head] = parts
    if parts is None:
        return None
    return RequestHead(*parts, transport)


def _read(
    head: bytes,
) -> tuple[bytes, bytes, bytes, dict[bytes, bytes], list[tuple[bytes, bytes]]] | None:
    """The parts of a :class:`RequestHead` read from ``head``, or ``None``."""
    if (
        b"\0" in head
        or head.count(b"\n") != head.count(b"\r")
        or head.count(b"\r\n") != head.count(b"\n")
    ):
        return None  # bare CR or LF, NUL: twisted.web's to judge
    lines = head.split(b"\r\n")
    if len(lines) > MAX_HEADERS:
        return None
    method, _, rest = lines[0].partition(b" ")
    if method != b"GET" and method != b"HEAD":
        return None
    target, _, version = rest.partition(b" ")
    if version != b"HTTP/1.1" and version != b"HTTP/1.0":
        return None
    headers: dict[bytes, bytes] = {}
    raw = []
    fullmatch = _NAME.fullmatch
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or fullmatch(name) is None:
            return None  # a continuation line, a bad name
        key = name.lower()
        if key in headers:
            return None  # which one counts differs from header to header
        value = value.strip(b" \t")
        headers[key] = value
        raw.append((name, value))
    return method, target, version, headers, raw
