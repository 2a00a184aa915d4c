# -*- test-case-name: tests.test_s3_bucket -*-
"""The blocking halves of the bucket's transfers (run in its threads): a part
of a file read in place, whole-file ``PUT``, multipart steps, atomic downloads.

Nothing here holds a whole file in memory: a part is a window on the open
file that botocore reads (to checksum, sign and send) as a stream.
"""

import io
import os
import re
from typing import IO, Any, Mapping

import attrs
from botocore.exceptions import ClientError
from twisted.python.filepath import FilePath

from pypicache.storage.atomic import (
    fsync_directory,
    write_atomically,
)
from pypicache.storage.s3.errors import is_missing_key

#: Bytes read (from a response) or written (to a file) at a time.
CHUNK = 256 * 1024

#: User metadata of an object: lower-case ASCII names; S3 caps the whole at 2 KB.
_META_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,127}")
MAX_METADATA = 2048


@attrs.frozen
class ObjectInfo:
    """What a ``HEAD`` (or a ``GET``) says of an object.

    :ivar etag: as S3 sends it, quotes included (pass it back as it is).
    :ivar last_modified: POSIX seconds.
    """

    key: str
    size: int
    etag: str
    metadata: Mapping[str, str] = attrs.field(factory=dict)
    last_modified: float | None = None
    content_type: str | None = None

    @classmethod
    def from_response(cls, key: str, response: Mapping[str, Any]) -> "ObjectInfo":
        modified = response.get("LastModified")
        return cls(
            key=key,
            size=int(response.get("ContentLength", response.get("Size", 0))),
            etag=response.get("ETag", ""),
            metadata=dict(response.get("Metadata") or {}),
            last_modified=modified.timestamp() if modified is not None else None,
            content_type=response.get("ContentType"),
        )


def check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """User metadata as S3 keeps it (names are sent as ``x-amz-meta-<name>``
    headers and come back lower-cased).

    :raises ValueError: a name that is not lower-case ASCII, a value that is
        not printable ASCII, or more than 2 KB in all.
    """
    total = 0
    for name, value in metadata.items():
        if not _META_NAME.fullmatch(name):
            raise ValueError(
                f"metadata name {name!r}: lower-case ASCII letters, digits, - and _"
            )
        if not (value.isascii() and value.isprintable()):
            raise ValueError(f"metadata {name}: the value must be printable ASCII")
        total += len(name) + len(value)
    if total > MAX_METADATA:
        raise ValueError(f"metadata of {total} bytes: S3 keeps at most {MAX_METADATA}")
    return dict(metadata)


class FileWindow(io.RawIOBase):
    """``length`` bytes of an open file from ``offset``, as a seekable stream
    of their own (what botocore reads one part of a multipart upload from)."""

    def __init__(self, file: IO[bytes], offset: int, length: int) -> None:
        super().__init__()
        self._file, self._offset, self._length = file, offset, length
        self._position = 0

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}
        self._position = max(0, min(self._length, base[whence] + offset))
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        left = self._length - self._position
        if size is None or size < 0 or size > left:
            size = left
        if size <= 0:
            return b""
        self._file.seek(self._offset + self._position)
        data = self._file.read(size)
        self._position += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def conditions(if_none_match: bool, if_match: str | None) -> dict[str, str]:
    """The parameters of a conditional request: ``If-None-Match: *`` (create
    only), ``If-Match`` on an ETag (that version only)."""
    found = {"IfNoneMatch": "*"} if if_none_match else {}
    if if_match is not None:
        found["IfMatch"] = if_match
    return found


def put_file(
    client: Any, bucket: str, key: str, path: str, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """One ``PutObject`` of a whole file, streamed from the disk."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return client.put_object(
            Bucket=bucket,
            Key=key,
            Body=FileWindow(f, 0, size),
            ContentLength=size,
            **extra,
        )


@attrs.define
class Multipart:
    """One multipart upload of a local file, step by step (each step blocks).

    With request checksums on (botocore's default), as s3transfer does: the
    upload declares CRC32, every part carries its own, the completion lists them.
    """

    client: Any
    bucket: str
    key: str
    path: str
    upload_id: str
    algorithm: str | None

    @classmethod
    def create(
        cls, client: Any, bucket: str, key: str, path: str, extra: Mapping[str, Any]
    ) -> "Multipart":
        """Start the upload (``extra``: metadata, content type)."""
        mode = getattr(client.meta.config, "request_checksum_calculation", None)
        algorithm = "CRC32" if mode != "when_required" else None
        checksum = {"ChecksumAlgorithm": algorithm} if algorithm else {}
        created = client.create_multipart_upload(
            Bucket=bucket, Key=key, **extra, **checksum
        )
        return cls(client, bucket, key, path, created["UploadId"], algorithm)

    def _params(self) -> dict[str, Any]:
        return {"Bucket": self.bucket, "Key": self.key, "UploadId": self.upload_id}

    def send(self, number: int, offset: int, length: int) -> dict[str, Any]:
        """Send part ``number``: ``length`` bytes of the file from ``offset``,
        read as they are sent; return what the completion lists of it."""
        checksum = {"ChecksumAlgorithm": self.algorithm} if self.algorithm else {}
        with open(self.path, "rb") as f:
            response = self.client.upload_part(
                PartNumber=number,
                Body=FileWindow(f, offset, length),
                ContentLength=length,
                **self._params(),
                **checksum,
            )
        sent = {"ETag": str(response["ETag"]), "PartNumber": number}
        member = f"Checksum{self.algorithm}"
        if self.algorithm and member in response:
            sent[member] = response[member]
        return sent

    def complete(
        self, parts: list[dict[str, Any]], condition: Mapping[str, str]
    ) -> str:
        """Make the object of ``parts`` visible (if ``condition``, of
        :func:`conditions`, holds); return its ETag."""
        done = self.client.complete_multipart_upload(
            MultipartUpload={"Parts": parts}, **self._params(), **condition
        )
        return str(done["ETag"])

    def abort(self) -> None:
        """Drop the parts sent; nothing becomes visible."""
        self.client.abort_multipart_upload(**self._params())


def download(client: Any, bucket: str, key: str, path: str) -> ObjectInfo | None:
    """Fetch ``key`` into ``path``: streamed into a locked temporary file beside
    it, synced, renamed into place, the folder synced. ``None`` (and nothing
    written) if there is no such object; on any failure nothing is left.

    :raises InsufficientStorage: the disk is full.
    :raises botocore.exceptions.ClientError: the store failed.
    """

    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if is_missing_key(e):
            return None
        raise
    body = response["Body"]
    target = FilePath(os.path.abspath(path))
    try:
        # iter_chunks checks the length S3 announced at the end.
        write_atomically(target, body.iter_chunks(CHUNK))
    finally:
        body.close()
    fsync_directory(target.parent())
    return ObjectInfo.from_response(key, response)
