"""Exceptions that carry the HTTP status they answer with."""

from typing import Any


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
        return self.message.encode("utf-8") + b"\n"


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


class UpstreamError(PypicacheError):
    """The upstream could not be reached or answered with a server error."""

    code = 502


class UpstreamTimeout(PypicacheError):
    """The upstream did not answer in time."""

    code = 504


class HashMismatch(UpstreamError):
    """The bytes from upstream do not match the hash the index gave."""
