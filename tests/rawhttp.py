"""Send bytes to a server exactly as given and read its answer: for requests no client library would send."""

import socket
from typing import NamedTuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread


class RawAnswer(NamedTuple):
    """A status, lower-cased headers and a body; ``status`` 0 if the server closed without answering."""

    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes


def _exchange(port: int, data: bytes, timeout: float) -> bytes:
    """Send ``data`` and read until the server closes (blocking; in a thread)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server may answer and close before reading all of it
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def parse(raw: bytes) -> RawAnswer:
    """The first answer in ``raw``."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split(b" ", 2)[1])
    except (IndexError, ValueError):
        return RawAnswer(0, {}, raw, raw)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode(
            "latin-1"
        )
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        body = body[: int(length)]
    return RawAnswer(status, headers, body, raw)


def request(port: int, data: bytes, timeout: float = 20) -> "Deferred[RawAnswer]":
    """Send ``data`` (which should ask for ``Connection: close``) and parse the answer.

    A server that neither answers nor closes within ``timeout`` fails the
    Deferred (``socket.timeout``), so a hang fails a test instead of stalling it.
    """
    d = deferToThread(_exchange, port, data, timeout)
    d.addCallback(parse)
    return d.addTimeout(timeout + 5, reactor)


def build(
    method: str = "GET",
    target: str = "/",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    host: str = "127.0.0.1",
) -> bytes:
    """An HTTP/1.1 request with ``Connection: close`` and, for a body, its length."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    all_headers = dict(headers or {})
    if body and not any(k.lower() == "content-length" for k in all_headers):
        all_headers["Content-Length"] = str(len(body))
    lines += [f"{k}: {v}" for k, v in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
