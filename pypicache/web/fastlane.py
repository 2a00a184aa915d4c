# -*- test-case-name: tests.test_fastlane -*-
"""The fast lane: hot reads answered below twisted.web, from the connection's bytes.

:class:`FastChannel` is the site's ``HTTPChannel``. When no request is in
progress on its connection, it looks for a complete request head in what
arrived; if :mod:`~pypicache.web.heads` reads it and
:class:`~pypicache.web.ready.ReadyAnswers` has its answer, the whole response
(status line, ``Server``, ``Date``, the answer's headers, the body) goes out
in one ``transport.write``, and the access log gets its line through the
site's ``log``, as for any request. The next pipelined request is looked at
the same way. Any other request without a body (an answer that needs waiting,
an error, a redirect) is handed to ``HTTPChannel``, which answers it as it
always has (a cold installer read with its route as its resource, below the
guard and Klein: :mod:`~pypicache.web.coldlane`); what it cannot read (a
body, a head it would refuse or one past 8 KB) goes to ``HTTPChannel`` with
every byte after it. Once the channel is done with a request, its buffered
bytes come back here (``setLineMode`` calls ``dataReceived``).

What ``HTTPChannel`` does is kept: ``Connection: close`` and HTTP/1.0 close
the connection after the answer (with the same ``Connection`` header), the
idle timeout is reset by each read, answers go out in request order, and a
body larger than one piece is written piece by piece as the transport drains,
the connection's later requests waiting (buffered, with backpressure) until
it is sent.
"""

import time
from typing import Any, Callable

from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.web.http import (
    HTTPChannel,
    _GenericHTTPChannelProtocol,
    _nameEncoder,
    datetimeToString,
)
from twisted.web.server import version as SERVER
from zope.interface import implementer

from pypicache.web.heads import RequestHead, parse_head
from pypicache.web.ready import ON_DISK, Ready, ReadyAnswers, status_line
from pypicache.web.sendfile import FileRest
from pypicache.web.socketsend import send_now

#: A request head longer than this is left to twisted.web (which allows 16 KB).
MAX_HEAD = 8192

#: The attribute of a ``Request`` holding its cold read's route call
#: (:class:`~pypicache.web.coldlane.ColdCall`), which ``PypicacheSite``
#: gives it as its resource instead of the guard and Klein.
COLD_CALL = "pypicache_cold"

_END = b"\r\n\r\n"
_SERVER = b"Server: " + SERVER + b"\r\n"


def _has_body(head: RequestHead) -> bool:
    return b"content-length" in head.headers or b"transfer-encoding" in head.headers


#: The last first pieces joined with their headers (see :func:`_joined`).
_JOINED: dict[bytes, tuple[bytes, bytes]] = {}
_JOINED_MAX = 8


def _joined(prefix: bytes, piece: bytes) -> bytes:
    """``prefix + piece``, remembered while the headers stay the same.

    A large body's first piece (:data:`~pypicache.web.routing.PIECE` bytes)
    goes out joined with the headers; the headers change once a second
    (``Date``), so the same join is reused by every answer meanwhile instead
    of copying the piece each time.
    """
    kept = _JOINED.get(prefix)
    if kept is not None and kept[0] is piece:
        return kept[1]
    joined = prefix + piece
    if len(_JOINED) >= _JOINED_MAX:
        _JOINED.pop(next(iter(_JOINED)))
    _JOINED[prefix] = (piece, joined)
    return joined


class _KnownPeer:
    """A connection's peer address (what a request head's ``getClientAddress``
    asks, for the access policy and the access log), read once: it never
    changes, and ``getPeer`` makes a new address object each time."""

    __slots__ = ("_peer",)

    def __init__(self, transport: Any) -> None:
        self._peer = transport.getPeer()

    def getPeer(self) -> Any:
        return self._peer


class _Clock:
    """The ``Date`` header line, made once a second (``datetimeToString``'s text)."""

    second = -1
    line = b""

    @classmethod
    def date_line(cls) -> bytes:
        now = time.time()
        second = int(now)
        if second != cls.second:
            cls.line = b"Date: " + datetimeToString(now) + b"\r\n"
            cls.second = second
        return cls.line


class FastChannel(HTTPChannel):
    """An ``HTTPChannel`` that answers ready hot reads itself.

    :param answers: what the lane can answer.
    :param turns: the reactor's split turns (:class:`~pypicache.web.turns.Turns`):
        a request the lane cannot answer waits, its connection not read,
        for the costly part of a turn before it goes to ``HTTPChannel``.
    """

    def __init__(
        self, answers: ReadyAnswers, hsts: bytes | None = None, turns: Any = None
    ) -> None:
        super().__init__()
        self._answers = answers
        self._hsts = hsts
        self._turns = turns
        #: The bytes from a request that waits for its turn, and what came after.
        self._waiting: bytes | None = None
        #: Its turn has come: it goes to twisted.web without a second look.
        self._its_turn = False
        #: Header lines every answer here carries (HSTS over TLS).
        self._extra = b""
        self._head = b""  # the start of a request head, until it is complete
        self._sender: Any = None
        #: Cold reads' routes (:mod:`~pypicache.web.coldlane`), if any.
        self._cold = getattr(answers, "cold", None)

    def connectionMade(self) -> None:
        super().connectionMade()
        self._peer = _KnownPeer(self.transport)
        if self._hsts is not None and ISSLTransport.providedBy(self.transport):
            self._extra = b"Strict-Transport-Security: " + self._hsts + b"\r\n"

    def _idle(self) -> bool:
        """Whether ``HTTPChannel`` holds no part of a request: the next bytes
        start a new one."""
        return (
            self.line_mode
            and not self._handlingRequest
            and not self._busyReceiving
            and not self._buffer
            and self.persistent
            and not self.transport.disconnecting
            and self._HTTPChannel__first_line == 1  # type: ignore[attr-defined]
            and not self._HTTPChannel__header  # type: ignore[attr-defined]
        )

    def dataReceived(self, data: bytes) -> None:
        if self._waiting is not None:
            self._waiting += data  # after the request that waits, in order
            return
        if not self._idle():
            HTTPChannel.dataReceived(self, data)
            return
        self.resetTimeout()
        buffer = self._head + data if self._head else data
        self._head = b""
        while buffer:
            end = buffer.find(_END, 0, MAX_HEAD)
            if end < 0:
                if len(buffer) < MAX_HEAD:
                    self._head = buffer  # wait for the rest of the head
                    return
                break
            head = parse_head(buffer[:end], self._peer)
            if head is None or _has_body(head):
                break  # its framing is twisted.web's to read
            if self._its_turn:
                self._its_turn = False
                ready = None
            else:
                ready = self._answers.answer(head)
            if ready is None or ready is ON_DISK:
                if ready is None and self._wait_turn(buffer):
                    return
                # twisted.web answers it (a cold installer read through its
                # route, below Klein); if it did at once, read on here.
                call = None if self._cold is None else self._cold.call_for(head)
                if call is None:
                    HTTPChannel.dataReceived(self, buffer[: end + 4])
                else:
                    self._cold_request(head, call)
                buffer = buffer[end + 4 :]
                if not self._idle():
                    break
                continue
            buffer = buffer[end + 4 :]
            if not self._send(head, ready, buffer):
                return
        if buffer and not (self._idle() and self._wait_turn(buffer)):
            HTTPChannel.dataReceived(self, buffer)

    def _cold_request(self, head: RequestHead, call: Any) -> None:
        """Hand a cold read to twisted.web as ``HTTPChannel`` would, from its
        head read here: its ``Request`` made and given its headers (as
        ``lineReceived``, ``headerReceived``, ``allHeadersReceived`` and
        ``allContentReceived`` do for a head without a body, ``Expect`` or
        ``Upgrade``), carrying its route call (:data:`COLD_CALL`), which the
        site gives it as its resource."""
        request = self.requestFactory(self, len(self.requests))
        self.requests.append(request)
        add = request.requestHeaders.addRawHeader
        for name, value in head.raw:
            add(_nameEncoder.encode(name), value)
        request.parseCookies()
        version = head.clientproto
        self.persistent = self.checkPersistence(request, version)
        request.gotLength(0)
        if self.timeOut:
            self._savedTimeOut = self.setTimeout(None)
        self._handlingRequest = True
        self.setRawMode()
        request.__dict__[COLD_CALL] = call
        request.requestReceived(head.method, head.uri, version)

    def _wait_turn(self, data: bytes) -> bool:
        """Keep ``data`` (from a request the lane leaves to ``HTTPChannel``)
        for the costly part of the reactor's turn, the connection paused;
        ``False`` if it may go now."""
        turns = self._turns
        if turns is None or turns.now:
            return False
        self._waiting = data
        self._networkProducer.pauseProducing()
        turns.later(self._take_turn)
        return True

    def _take_turn(self) -> None:
        """The kept request's turn: read it (and what followed) on."""
        data, self._waiting = self._waiting, None
        if data is None:
            return  # the connection was lost meanwhile
        if not self._waitingForTransport:
            self._networkProducer.resumeProducing()
        self._its_turn = True
        try:
            self.dataReceived(data)
        finally:
            self._its_turn = False

    def _send(self, head: RequestHead, ready: Ready, rest: bytes) -> bool:
        """Send an answer; ``True`` if the next request may be read at once
        (else ``rest`` is dropped with a closed connection, or kept for later)."""
        keep_alive = head.keep_alive
        version = head.clientproto
        prefix = status_line(version, ready.code)
        if version == b"HTTP/1.1" and not keep_alive:
            prefix += b"Connection: close\r\n"
        prefix += _SERVER + _Clock.date_line() + self._extra + ready.headers + b"\r\n"
        head.code = ready.code
        head.sentLength = ready.sent
        body = ready.body
        if len(body) > 1:
            left = send_now(self.transport, [prefix, *body], ready.file)
            if left:
                sent = len(prefix) + ready.sent - sum(map(len, left))
                if ready.file >= 0 and sent >= len(prefix):
                    # The rest by sendfile as the socket drains, as nginx does.
                    self._send_later(
                        head,
                        lambda done: FileRest(
                            self.transport,
                            ready.file,
                            sent - len(prefix),
                            ready.sent,
                            done,
                        ),
                        rest,
                        keep_alive,
                    )
                    return False
                if left[0] is prefix:
                    left = (_joined(prefix, body[0]),) + left[2:]
                self._send_pieces(head, left, rest, keep_alive)
                return False
        else:
            data = prefix + body[0] if body else prefix
            for piece in send_now(self.transport, [data]):
                self.transport.write(piece)
        self._done(head, keep_alive)
        return keep_alive and not self.transport.disconnecting

    def _done(self, head: RequestHead, keep_alive: bool) -> None:
        """The answer is written: log it; close the connection if it must."""
        self.site.log(head)
        if not keep_alive:
            self.persistent = False
            self.loseConnection()

    def _send_pieces(
        self,
        head: RequestHead,
        pieces: tuple[bytes, ...],
        rest: bytes,
        keep_alive: bool,
    ) -> None:
        """Write a large answer's pieces through the transport as it drains."""
        self._send_later(
            head,
            lambda done: _Pieces(self.transport, pieces, done),
            rest,
            keep_alive,
        )

    def _send_later(
        self,
        head: RequestHead,
        sender: Callable[[Callable[[], None]], Any],
        rest: bytes,
        keep_alive: bool,
    ) -> None:
        """Send the rest of a large answer with the producer ``sender(done)``,
        as ``HTTPChannel`` handles a request: later requests are buffered
        until it is sent."""
        self._handlingRequest = True
        self.setRawMode()
        if rest:
            self._dataBuffer.append(rest)
        if self.timeOut:
            self._savedTimeOut = self.setTimeout(None)

        def sent() -> None:
            self._sender = None
            self.unregisterProducer()
            if not self._waitingForTransport:
                self._networkProducer.resumeProducing()
            self._done(head, keep_alive)
            if keep_alive:
                self._handlingRequest = False
                if self._savedTimeOut:
                    self.setTimeout(self._savedTimeOut)
                data = b"".join(self._dataBuffer)
                self._dataBuffer = []
                self.setLineMode(data)

        self._sender = sender(sent)
        self.registerProducer(self._sender, True)
        self._sender.resumeProducing()

    def connectionLost(self, reason: Any) -> None:
        self._waiting = None
        if self._sender is not None:
            self._sender.stopProducing()
            self._sender = None
        super().connectionLost(reason)


@implementer(IPushProducer)
class _Pieces:
    """Writes pieces one at a time, each once the transport has sent the last."""

    def __init__(
        self, transport: Any, pieces: tuple[bytes, ...], sent: Callable[[], None]
    ) -> None:
        self._transport = transport
        self._pieces = pieces
        self._sent = sent
        self._next = 0
        self._paused = False
        self._stopped = False

    def resumeProducing(self) -> None:
        self._paused = False
        pieces = self._pieces
        # Writing a piece fills the transport's buffer, which pauses us at once.
        while not (self._paused or self._stopped) and self._next < len(pieces):
            self._next += 1
            self._transport.write(pieces[self._next - 1])
        if self._next == len(pieces) and not self._stopped:
            self._stopped = True
            self._sent()

    def pauseProducing(self) -> None:
        self._paused = True

    def stopProducing(self) -> None:
        self._stopped = True


def fast_protocol(site: Any) -> Any:
    """The protocol of a site with a fast lane (``site.ready``): the
    ``HTTPChannel`` twisted.web would use (HTTP/2 where TLS negotiates it),
    as a :class:`FastChannel`."""
    return _GenericHTTPChannelProtocol(
        FastChannel(site.ready, site.hsts, getattr(site, "turns", None))
    )
