"""Bytes straight to a plain TCP socket, ahead of the transport's buffer.

The fast lane (:mod:`~pypicache.web.fastlane`) sends a ready answer with one
``sendmsg`` (or ``sendfile`` from an in-memory file) when the transport holds
nothing, so that it leaves in this turn of the reactor without a copy; what the
socket does not take goes through the transport as usual.
"""

import os
import socket
from typing import Any

from twisted.internet import tcp


def _socket_of(transport: Any) -> Any:
    """The socket of ``transport`` if bytes may go to it directly: a plain TCP
    connection (no TLS), connected, with nothing buffered; else ``None``."""
    if (
        type(transport) is tcp.Server
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport.dataBuffer
        and not transport._tempDataLen
    ):
        return transport.socket
    return None


def send_now(transport: Any, pieces: list[bytes], file: int = -1) -> tuple[bytes, ...]:
    """Send ``pieces`` straight to the socket where the transport allows it
    (one ``sendmsg``, no copy, no wait for the reactor's next turn); return
    what is left to send, the transport's to write as it drains.

    With ``file`` (an in-memory file holding ``pieces[1:]``), those go by
    ``sendfile`` from it once ``pieces[0]`` is sent. Only when nothing is
    buffered in the transport, so bytes keep their order; on a socket error
    the rest is left, and the transport finds out when it writes it.
    """
    sock = _socket_of(transport)
    if sock is None:
        return tuple(pieces)
    sent = 0
    try:
        if file < 0:
            sent = sock.send(pieces[0]) if len(pieces) == 1 else sock.sendmsg(pieces)
        else:
            # MSG_MORE: the headers leave with the file's first bytes.
            sent = sock.send(pieces[0], socket.MSG_MORE)
            if sent == len(pieces[0]):
                size = sent + sum(map(len, pieces[1:]))
                while sent < size:
                    done = os.sendfile(
                        sock.fileno(), file, sent - len(pieces[0]), size - sent
                    )
                    if not done:
                        break
                    sent += done
    except OSError:
        pass  # full (EAGAIN), or gone: the rest goes through the transport
    return _after(pieces, sent)


def _after(pieces: list[bytes], sent: int) -> tuple[bytes, ...]:
    """What is left of ``pieces`` once their first ``sent`` bytes are sent."""
    if not sent:
        return tuple(pieces)
    left: list[bytes] = []
    for piece in pieces:
        if sent >= len(piece):
            sent -= len(piece)
        elif sent:
            left.append(piece[sent:])
            sent = 0
        else:
            left.append(piece)
    return tuple(left)
