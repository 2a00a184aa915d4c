# -*- test-case-name: tests.test_uploads -*-
"""A received file: an upload body spooled to a temporary file and hashed as it was copied."""

import hashlib
from typing import IO

import attrs

from pypicache.storage.atomic import TempFile

CHUNK_SIZE = 64 * 1024


@attrs.define
class FilePart:
    """A file part of a form, written to a temporary file while it was hashed."""

    name: str
    filename: str | None
    temp: TempFile
    size: int
    hashes: dict[str, str]


class UploadHasher:
    """The digests a client may send with an upload, computed in one pass."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5()
        self.blake2_256 = hashlib.blake2b(digest_size=32)

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        self.md5.update(data)
        self.blake2_256.update(data)

    def digests(self) -> dict[str, str]:
        return {
            "sha256": self.sha256.hexdigest(),
            "md5": self.md5.hexdigest(),
            "blake2_256": self.blake2_256.hexdigest(),
        }


def copy_body(content: IO[bytes], temp: TempFile) -> FilePart:
    """Copy a whole raw request body into ``temp``, hashing it (blocking)."""
    content.seek(0)
    hasher = UploadHasher()
    size = 0
    try:
        while chunk := content.read(CHUNK_SIZE):
            temp.write(chunk)
            hasher.update(chunk)
            size += len(chunk)
    except BaseException:
        temp.discard()
        raise
    return FilePart("body", None, temp, size, hasher.digests())
