# -*- test-case-name: tests.test_s3_bucket -*-
"""``Bucket``: the S3 operations pypicache needs, asynchronous, over one botocore client.

Every blocking call runs in the bucket's own threads (``run_blocking``, see
:class:`~pypicache.storage.s3.threads.BucketThreads`), never on the reactor
thread. botocore's exceptions become :mod:`pypicache.storage.s3.errors`:
a lost conditional write is :class:`PreconditionFailed`, anything else
:class:`BucketError` (a ``502``).

Conditional writes: ``put`` and ``upload_file`` send ``If-None-Match: *``
(create only) or ``If-Match: <etag>`` (replace only that version); S3 answers
``412`` when the condition fails and ``409 ConditionalRequestConflict`` when
another conditional write to the key raced it. A multipart upload checks its
condition when it completes; a failed one is aborted, so no part stays billed
and nothing is visible.
"""

from __future__ import annotations

import enum
import math
import os
from typing import Any, Awaitable, Callable, Mapping

from botocore.exceptions import ClientError
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from pypicache.concurrency import RunBlocking
from pypicache.errors import NotFound
from pypicache.storage.s3.errors import (
    PreconditionFailed,
    is_missing_key,
    status_of,
    translate,
)
from pypicache.storage.s3.settings import MAX_PARTS, S3Settings
from pypicache.storage.s3.transfer import (
    Multipart,
    ObjectInfo,
    check_metadata,
    conditions,
    download,
    put_file,
)

log = Logger()

#: Bytes handed to a :meth:`Bucket.read_range` consumer at a time.
RANGE_CHUNK = 64 * 1024


class NotModified(enum.Enum):
    NOT_MODIFIED = "not modified"


#: What :meth:`Bucket.get` returns when the object still has the given ETag.
NOT_MODIFIED = NotModified.NOT_MODIFIED

#: Takes one chunk of a range; may return a Deferred to pause the reading
#: until it fires (backpressure from a slow client).
Consumer = Callable[[bytes], "Deferred[Any] | Awaitable[Any] | None"]


class Bucket:
    """One bucket through one botocore client (thread-safe, shared by the
    threads of ``run_blocking``).

    :param client: a botocore S3 client (:meth:`S3Settings.client`).
    :param name: the bucket's name.
    :param run_blocking: runs a blocking callable in the bucket's threads.
    :param part_size: bytes per part of multipart uploads (and the size from
        which a file is sent in parts).
    :param presign_expiry: default lifetime of a presigned URL, in seconds.
    """

    def __init__(
        self,
        client: Any,
        name: str,
        run_blocking: RunBlocking,
        part_size: int = 16 * 1024 * 1024,
        presign_expiry: int = 300,
    ) -> None:
        self.client = client
        self.name = name
        self._run_blocking = run_blocking
        self.part_size = part_size
        self.presign_expiry = presign_expiry

    @classmethod
    async def open(cls, settings: S3Settings, run_blocking: RunBlocking) -> "Bucket":
        """Make the client (in a thread: botocore reads its models and
        resolves credentials) and the bucket of ``settings``."""
        client = await run_blocking(settings.client)
        return cls(
            client,
            settings.location.bucket,
            run_blocking,
            part_size=settings.part_size,
            presign_expiry=settings.presign_expiry,
        )

    async def _call(
        self, operation: str, key: str, f: Callable[..., Any], *args: Any
    ) -> Any:
        """``f(*args)`` in a thread, botocore's errors translated."""

        def call() -> Any:
            try:
                return f(*args)
            except Exception as e:
                raise translate(e, operation, key) from e

        return await self._run_blocking(call)

    def _api(self, method: str, key: str, **params: Any) -> Callable[[], Any]:
        bound = getattr(self.client, method)
        return lambda: bound(Bucket=self.name, Key=key, **params)

    async def get(
        self, key: str, etag: str | None = None
    ) -> "tuple[bytes, str] | NotModified | None":
        """A small object whole, with its ETag; :data:`NOT_MODIFIED` if it
        still has ``etag`` (a conditional ``GET``, answered ``304``); ``None``
        if there is no such object."""

        params = {"IfNoneMatch": etag} if etag else {}
        request = self._api("get_object", key, **params)

        def fetch() -> Any:
            try:
                response = request()
            except ClientError as e:
                if status_of(e) == 304:
                    return NOT_MODIFIED
                if is_missing_key(e):
                    return None
                raise
            with response["Body"] as body:
                return body.read(), response["ETag"]

        return await self._call("GET", key, fetch)

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str = "application/json",
    ) -> str:
        """Write a small object whole; return its new ETag.

        :param if_match: replace only the version with this ETag.
        :param if_none_match: create only: fail if the key exists.
        :raises PreconditionFailed: the condition did not hold (or a concurrent
            conditional write raced this one: ``conflict`` is set).
        """
        params = {"Body": data, "ContentType": content_type}
        request = self._api(
            "put_object", key, **params, **conditions(if_none_match, if_match)
        )

        def send() -> Any:
            try:
                return request()
            except ClientError as e:
                if is_missing_key(e) and if_match is not None:
                    raise PreconditionFailed(f"PUT {key}: the object is gone", key)
                raise

        response = await self._call("PUT", key, send)
        return str(response["ETag"])

    async def head(self, key: str) -> ObjectInfo | None:
        """What S3 knows of ``key`` (size, ETag, user metadata, last
        modified), or ``None`` if there is no such object."""

        request = self._api("head_object", key)

        def fetch() -> Any:
            try:
                return ObjectInfo.from_response(key, request())
            except ClientError as e:
                if is_missing_key(e):
                    return None
                raise

        return await self._call("HEAD", key, fetch)

    async def upload_file(
        self,
        key: str,
        local_path: str,
        *,
        metadata: Mapping[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
        part_size: int | None = None,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Store the file at ``local_path`` under ``key``; return the ETag.

        Files up to ``part_size`` bytes go in one ``PUT``, larger ones in a
        multipart upload, each part read from the disk as it is sent (parts
        grow if the file would need more than 10,000). Nothing is visible under
        ``key`` until the whole file is: a multipart upload that fails is
        aborted.

        :param metadata: user metadata (``x-amz-meta-*``): lower-case ASCII
            names, printable ASCII values.
        :param if_none_match: create only (``If-None-Match: *`` on the
            ``PUT`` or on ``CompleteMultipartUpload``).
        :param if_match: replace only the version with this ETag (likewise).
        :raises PreconditionFailed: the condition did not hold.
        :raises ValueError: bad metadata.
        """
        extra: dict[str, Any] = {
            "Metadata": check_metadata(metadata or {}),
            "ContentType": content_type,
        }
        part = part_size or self.part_size
        size = (await self._run_blocking(os.stat, local_path)).st_size
        condition = conditions(if_none_match, if_match)
        if size <= part:
            extra.update(condition)
            response = await self._call(
                "PUT", key, put_file, self.client, self.name, key, local_path, extra
            )
            return str(response["ETag"])
        part = max(part, math.ceil(size / MAX_PARTS))
        upload = await self._call(
            "CreateMultipartUpload",
            key,
            Multipart.create,
            self.client,
            self.name,
            key,
            local_path,
            extra,
        )
        try:
            parts = []
            for number, offset in enumerate(range(0, size, part), start=1):
                length = min(part, size - offset)
                parts.append(
                    await self._call(
                        "UploadPart", key, upload.send, number, offset, length
                    )
                )
            return await self._call(
                "CompleteMultipartUpload", key, upload.complete, parts, condition
            )
        except BaseException:
            try:
                await self._call("AbortMultipartUpload", key, upload.abort)
            except Exception:
                # The first failure matters more; a lifecycle rule on the
                # bucket removes what is left.
                log.failure("Could not abort the multipart upload of {key}", key=key)
            raise

    async def open_uploads(self, prefix: str = "") -> list[tuple[str, str, float]]:
        """The multipart uploads under way (or left behind) under ``prefix``:
        ``(key, upload id, POSIX seconds it started)``."""

        def fetch() -> list[tuple[str, str, float]]:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.name, Prefix=prefix
            )
            return [
                (u["Key"], u["UploadId"], u["Initiated"].timestamp())
                for page in pages
                for u in page.get("Uploads", [])
            ]

        return await self._call("ListMultipartUploads", prefix, fetch)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Drop a multipart upload and the parts sent (its key shows nothing)."""
        abort = self._api("abort_multipart_upload", key, UploadId=upload_id)
        await self._call("AbortMultipartUpload", key, abort)

    async def download_to(self, key: str, local_path: str) -> ObjectInfo | None:
        """Fetch ``key`` (a small object: metadata, provenance) into
        ``local_path`` atomically (temporary file beside it, fsync, rename; a
        failure leaves nothing); ``None`` if absent. Holds a thread throughout
        (archives are fetched a chunk per call: :meth:`open_object`).

        :raises InsufficientStorage: the disk is full."""
        return await self._call(
            "GET", key, download, self.client, self.name, key, local_path
        )

    async def open_object(
        self, key: str, byte_range: str | None = None
    ) -> "tuple[Any, dict[str, Any]] | None":
        """Start a streamed ``GET`` of ``key`` (of ``byte_range``, as in a
        ``Range`` header): its body (read it with :meth:`read_body`, close it
        in a thread) and the response; ``None`` if there is no such object."""
        ranged = {"Range": byte_range} if byte_range else {}
        request = self._api("get_object", key, **ranged)

        def open_body() -> Any:
            try:
                return request()
            except ClientError as e:
                if is_missing_key(e):
                    return None
                raise

        response = await self._call("GET", key, open_body)
        return None if response is None else (response["Body"], response)

    async def read_body(self, key: str, step: Callable[[], Any]) -> Any:
        """``step()`` (reading a body of :meth:`open_object`) in a thread."""
        return await self._call("GET", key, step)

    async def read_range(
        self,
        key: str,
        start: int,
        end: int | None,
        consumer: Consumer,
        chunk_size: int = RANGE_CHUNK,
    ) -> ObjectInfo:
        """Stream bytes ``start`` to ``end`` (inclusive, as in a ``Range``
        header; ``None``: to the end) of ``key`` to ``consumer``, a chunk at a
        time; it may return a Deferred (or awaitable) to pause the reading.
        Nothing is buffered beyond one chunk. Returns what the ``GET`` said
        of the object (``size`` is that of the range).

        :raises NotFound: there is no such object.
        :raises InvalidRange: ``start`` is past the end of the object.
        """
        wanted = f"bytes={start}-{'' if end is None else end}"
        opened = await self.open_object(key, wanted)
        if opened is None:
            raise NotFound(f"No object {key}")
        body, response = opened
        try:
            while True:
                chunk = await self._call("GET", key, body.read, chunk_size)
                if not chunk:
                    break
                waiting = consumer(chunk)
                if waiting is not None:
                    await waiting
        finally:
            # Closing an unfinished body drops its connection: never pooled
            # with bytes left unread.
            await self._run_blocking(body.close)
        return ObjectInfo.from_response(key, response)

    async def list(self, prefix: str = "", page_size: int | None = None) -> list[str]:
        """Every key under ``prefix`` (all pages of ``ListObjectsV2``), sorted."""
        return [info.key for info in await self.list_info(prefix, page_size)]

    async def list_info(
        self, prefix: str = "", page_size: int | None = None
    ) -> list[ObjectInfo]:
        """Every object under ``prefix`` with its size, ETag and last
        modified (no user metadata: listings do not carry it), sorted by key.

        :param page_size: keys per request (``None``: the service's 1000).
        """
        paging = {"PageSize": page_size} if page_size else {}

        def fetch() -> list[ObjectInfo]:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.name, Prefix=prefix, PaginationConfig=paging
            )
            return [
                ObjectInfo.from_response(item["Key"], item)
                for page in pages
                for item in page.get("Contents", [])
            ]

        return sorted(await self._call("LIST", prefix, fetch), key=lambda i: i.key)

    async def delete(self, key: str, if_match: str | None = None) -> None:
        """Delete ``key`` if it is there (``if_match``: if it has that ETag)."""
        params = conditions(False, if_match)
        await self._call("DELETE", key, self._api("delete_object", key, **params))

    async def presign(self, key: str, expires: int | None = None) -> str:
        """A URL that GETs ``key`` without credentials for ``expires`` seconds
        (default: the bucket's ``presign_expiry``). Computed locally, in a
        thread: credentials may need refreshing first."""
        params = {"Bucket": self.name, "Key": key}
        seconds = expires or self.presign_expiry
        return await self._call(
            "presign",
            key,
            lambda: self.client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=seconds
            ),
        )
