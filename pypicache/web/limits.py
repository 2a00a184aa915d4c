# -*- test-case-name: tests.test_uploads -*-
"""A request that refuses bodies over a size limit before spooling them."""

from typing import Any

from twisted.logger import Logger
from twisted.web import server

log = Logger()

DEFAULT_MAX_BODY = 1024**3


class LimitedRequest(server.Request):
    """A ``Request`` with a body limit, that leaves form parsing to the routes.

    A ``Content-Length`` over :attr:`max_body_size` is answered ``413`` at
    once (before any of the body is read), and so is a chunked body once it
    grows past it; the connection is then closed.
    """

    max_body_size = DEFAULT_MAX_BODY

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(channel, *args, **kwargs)
        self._body_size = 0
        self._refused = False

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body_size:
            super().gotLength(0)
            self._refuse(length)
        else:
            super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._body_size += len(data)
        if self._body_size > self.max_body_size:
            self._refuse(self._body_size)
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return
        super().requestReceived(command, path, version)

    def _refuse(self, size: int) -> None:
        self._refused = True
        # HTTPChannel answers "Expect: 100-continue" right after gotLength: that
        # would follow the 413 with a "100 Continue" asking for the body.
        self.requestHeaders.removeHeader(b"expect")
        message = (
            f"Request body of {size} bytes is over the limit of {self.max_body_size} bytes "
            "(--max-upload-size)\n"
        ).encode()
        log.warn(
            "Refused a body of {size} bytes (limit {limit})",
            size=size,
            limit=self.max_body_size,
        )
        transport = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Connection: close\r\nContent-Length: "
            + str(len(message)).encode()
            + b"\r\n\r\n"
            + message
        )
        self.channel.loseConnection()


def limited_request_factory(max_body_size: int) -> type[LimitedRequest]:
    """A :class:`LimitedRequest` class with the given limit, for ``Site.requestFactory``."""
    return type("LimitedRequest", (LimitedRequest,), {"max_body_size": max_body_size})
