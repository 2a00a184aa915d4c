"""Exceptions that carry the HTTP status they answer with."""


class PypicacheError(Exception):
    """An error with a one-line reason for the client and the status to send."""

    code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
