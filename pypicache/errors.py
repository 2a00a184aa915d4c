"""Exceptions that carry the HTTP status they answer with."""

from typing import Any

#: Longest message sent back: error bodies may quote what a client sent.
MAX_MESSAGE = 1000


class PypicacheError(Exception):
    """An error with a one-line reason for the client and the status to send."""

    code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def apply(self, request: Any) -> bytes:
        """Set the status (with the message as its reason phrase) and return the body.

        Clients such as twine show only the status line, so the reason is there too.
        """
        phrase = "".join(c if c.isprintable() else " " for c in self.message)[:200]
        request.setResponseCode(self.code, phrase.encode("latin-1", "replace"))
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        if self.code == 401:
            request.setHeader(b"www-authenticate", b'Basic realm="pypicache"')
        for name, value in self.headers().items():
            request.setHeader(name, value)
        body = self.message
        if len(body) > MAX_MESSAGE:
            body = body[:MAX_MESSAGE] + "…"
        return body.encode("utf-8", "replace") + b"\n"

    def headers(self) -> dict[bytes, bytes]:
        """Headers this error adds to its answer."""
        return {}


class BadRequest(PypicacheError):
    code = 400


class Unauthorized(PypicacheError):
    code = 401


class Forbidden(PypicacheError):
    code = 403


class NotFound(PypicacheError):
    code = 404


class MethodNotAllowed(PypicacheError):
    code = 405


class NotAcceptable(PypicacheError):
    code = 406


class Conflict(PypicacheError):
    code = 409


class PayloadTooLarge(PypicacheError):
    code = 413


class UnprocessableEntity(PypicacheError):
    code = 422


class TooManyRequests(PypicacheError):
    """Too many requests (or failed attempts) from one client; retry later."""

    code = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[bytes, bytes]:
        return {b"retry-after": str(max(1, int(self.retry_after + 0.999))).encode()}


class InsufficientStorage(PypicacheError):
    """The disk (or the store behind it) is full."""

    code = 507


class UpstreamError(PypicacheError):
    """The upstream could not be reached or answered with a server error."""

    code = 502


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time."""

    code = 504


class HashMismatch(UpstreamError):
    """The bytes from upstream do not match the hash the index gave."""
