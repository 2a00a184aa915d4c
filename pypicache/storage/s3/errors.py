# -*- test-case-name: tests.test_s3_bucket -*-
"""What a bucket operation may fail with, from botocore's exceptions."""

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pypicache.errors import Conflict, PypicacheError


class BucketError(PypicacheError):
    """The object store failed or could not be reached (a ``502`` if it
    reaches a client: the store is the daemon's upstream here)."""

    code = 502


class PreconditionFailed(BucketError):
    """A conditional write lost: the object exists (``If-None-Match: *``), or
    changed or vanished since it was read (``If-Match``).

    :ivar conflict: ``True`` for S3's ``409 ConditionalRequestConflict`` (a
        concurrent conditional write to the key was under way); retry both
        kinds after reading the object again.
    """

    code = 409

    def __init__(self, message: str, key: str, conflict: bool = False) -> None:
        super().__init__(message)
        self.key = key
        self.conflict = conflict


class InvalidRange(BucketError):
    """A range that starts past the end of the object."""

    code = 416


class RecordConflict(Conflict):
    """Another file is recorded under this filename (other bytes): the
    project's record keeps the first."""


def status_of(error: Any) -> int | None:
    """The HTTP status of a botocore ``ClientError`` (``None`` if none)."""
    meta = getattr(error, "response", {}).get("ResponseMetadata", {})
    status = meta.get("HTTPStatusCode")
    return int(status) if status is not None else None


def code_of(error: Any) -> str:
    """The S3 error code of a botocore ``ClientError`` (``""`` if none)."""
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


def is_missing_key(error: Any) -> bool:
    """Whether a botocore ``ClientError`` says the key does not exist (a 404
    other than ``NoSuchBucket``: a missing bucket is a misconfiguration, not
    an absent object; a ``HEAD`` has no body to tell them apart)."""
    return status_of(error) == 404 and code_of(error) != "NoSuchBucket"


def translate(error: Exception, operation: str, key: str) -> Exception:
    """The :class:`BucketError` to raise for a botocore exception.

    412 ``PreconditionFailed``, 409 ``ConditionalRequestConflict`` and a 404 in
    answer to ``If-Match`` (the object is gone) become :class:`PreconditionFailed`;
    416 :class:`InvalidRange`; anything else (other errors, no connection, no
    credentials) :class:`BucketError` naming the operation and the key.
    Anything not from botocore is returned as it is.
    """
    if isinstance(error, ClientError):
        status, code = status_of(error), code_of(error)
        if status == 412 or code == "PreconditionFailed":
            return PreconditionFailed(f"{operation} {key}: precondition failed", key)
        if status == 409 and code == "ConditionalRequestConflict":
            return PreconditionFailed(
                f"{operation} {key}: a concurrent conditional write", key, conflict=True
            )
        if status == 416:
            return InvalidRange(f"{operation} {key}: range not satisfiable")
        message = error.response.get("Error", {}).get("Message") or code
        return BucketError(
            f"The object store failed: {operation} {key}: {status} {code} {message}".strip()
        )
    if isinstance(error, BotoCoreError):
        return BucketError(f"The object store failed: {operation} {key}: {error}")
    return error
