"""The S3 bucket layer (``pypicache.storage.s3``) against moto's standalone
S3 server on loopback: settings, conditional writes, multipart uploads,
atomic downloads, ranges, presigned URLs, credentials, threads."""

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.web.client import Agent, HTTPConnectionPool

from pypicache.errors import InsufficientStorage, NotFound
from pypicache.storage.records import TEMP_PREFIX
from pypicache.storage.s3 import transfer
from pypicache.storage.s3.bucket import NOT_MODIFIED, Bucket
from pypicache.storage.s3.errors import BucketError, InvalidRange, PreconditionFailed
from pypicache.storage.s3.settings import (
    MIN_PART_SIZE,
    S3ConfigError,
    S3Settings,
)
from pypicache.storage.s3.threads import BucketThreads
from tests.s3server import ACCESS_KEY_ID, S3Bucket

MiB = 1024 * 1024


def settings_of(s3: S3Bucket, **more: Any) -> S3Settings:
    return S3Settings.from_mapping(
        {"storage": s3.url("pypicache"), "s3-endpoint-url": s3.endpoint, **more}
    )


@pytest.fixture
def bucket(s3: S3Bucket, threads: BucketThreads) -> Bucket:
    settings = settings_of(s3, **{"s3-part-size": "5M"})
    return Bucket(settings.client(), s3.bucket, threads, part_size=settings.part_size)


def write_file(path: Path, size: int) -> str:
    """Fill ``path`` with ``size`` pseudo-random bytes; return their sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        block = os.urandom(MiB)
        written = 0
        while written < size:
            piece = block[: min(MiB, size - written)]
            f.write(piece)
            digest.update(piece)
            written += len(piece)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# Conditional writes and reads


@pytest_twisted.ensureDeferred
async def test_create_only_put_fails_the_second_time(bucket: Bucket) -> None:
    """``put(if_none_match=True)`` creates a key once; the second gets
    PreconditionFailed and the first contents stay."""
    etag = await bucket.put("k", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailed) as failed:
        await bucket.put("k", b"second", if_none_match=True)
    assert failed.value.key == "k"
    assert await bucket.get("k") == (b"first", etag)


@pytest_twisted.ensureDeferred
async def test_if_match_update_needs_the_current_etag(bucket: Bucket) -> None:
    """An If-Match write with a stale ETag fails; with the current one it
    replaces the object; on a missing object it fails too."""
    old = await bucket.put("k", b"v1")
    new = await bucket.put("k", b"v2", if_match=old)
    with pytest.raises(PreconditionFailed):
        await bucket.put("k", b"v3", if_match=old)
    newest = await bucket.put("k", b"v3", if_match=new)
    assert await bucket.get("k") == (b"v3", newest)
    with pytest.raises(PreconditionFailed):
        await bucket.put("gone", b"x", if_match=newest)


@pytest_twisted.ensureDeferred
async def test_conditional_get(bucket: Bucket) -> None:
    """``get`` with the current ETag answers NOT_MODIFIED (a 304), with an
    old one the new contents, and None for a missing key."""
    assert await bucket.get("k") is None
    old = await bucket.put("k", b"v1")
    assert await bucket.get("k", etag=old) is NOT_MODIFIED
    new = await bucket.put("k", b"v2")
    assert await bucket.get("k", etag=old) == (b"v2", new)


# Uploads and downloads


@pytest_twisted.ensureDeferred
async def test_small_file_is_one_put_with_metadata(
    bucket: Bucket, tmp_path: Path
) -> None:
    """A file below the part size goes up in one PUT (a plain MD5 ETag) with
    its user metadata, which ``head`` gives back with the size."""
    path = tmp_path / "small.whl"
    path.write_bytes(b"wheel bytes")
    etag = await bucket.upload_file(
        "files/small.whl", str(path), metadata={"sha256": "ab" * 32}, if_none_match=True
    )
    assert etag == '"%s"' % hashlib.md5(b"wheel bytes").hexdigest()
    info = await bucket.head("files/small.whl")
    assert info is not None
    assert (info.size, info.etag, dict(info.metadata)) == (
        11,
        etag,
        {"sha256": "ab" * 32},
    )
    assert info.last_modified is not None
    assert await bucket.head("files/other.whl") is None
    with pytest.raises(PreconditionFailed):
        await bucket.upload_file("files/small.whl", str(path), if_none_match=True)
    with pytest.raises(ValueError):
        await bucket.upload_file("x", str(path), metadata={"Bad Name": "v"})


@pytest.mark.parametrize("checksums", ["when_supported", "when_required"])
@pytest_twisted.ensureDeferred
async def test_multipart_upload_round_trips(
    s3: S3Bucket, threads: BucketThreads, tmp_path: Path, checksums: str
) -> None:
    """A file larger than the part size goes up in parts (its ETag says how
    many; each part with a CRC32 unless checksums are off), comes back byte
    for byte through download_to, and leaves no open upload behind;
    create-only, a second upload fails on completion and is aborted."""
    settings = settings_of(s3, **{"s3-part-size": "5M", "s3-checksums": checksums})
    bucket = Bucket(settings.client(), s3.bucket, threads, part_size=settings.part_size)
    part_checksums: list[bool] = []
    bucket.client.meta.events.register(
        "before-send.s3.UploadPart",
        lambda request, **kw: part_checksums.append(
            "x-amz-checksum-crc32" in {k.lower() for k in request.headers.keys()}
        ),
    )
    source = tmp_path / "big.tar.gz"
    digest = write_file(source, 2 * MIN_PART_SIZE + 12345)
    etag = await bucket.upload_file(
        "files/big.tar.gz", str(source), metadata={"sha256": digest}, if_none_match=True
    )
    assert etag.strip('"').endswith("-3")
    assert part_checksums == [checksums == "when_supported"] * 3
    target = tmp_path / "copy" / "big.tar.gz"
    target.parent.mkdir()
    info = await bucket.download_to("files/big.tar.gz", str(target))
    assert info is not None and info.metadata == {"sha256": digest}
    assert sha256_file(target) == digest
    assert os.listdir(target.parent) == ["big.tar.gz"]
    with pytest.raises(PreconditionFailed):
        await bucket.upload_file("files/big.tar.gz", str(source), if_none_match=True)
    assert await bucket.open_uploads() == []
    assert (await bucket.head("files/big.tar.gz")).etag == etag  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_failed_multipart_upload_leaves_nothing(
    bucket: Bucket, tmp_path: Path, monkeypatch: Any
) -> None:
    """When a part cannot be sent (here: the disk fails reading part 2), the
    upload is aborted: no object under the key and no open upload."""
    source = tmp_path / "big.whl"
    write_file(source, 2 * MIN_PART_SIZE + 1)
    real = transfer.Multipart.send

    def failing(self: Any, number: int, offset: int, length: int) -> Any:
        if number == 2:
            raise OSError(5, "Input/output error")
        return real(self, number, offset, length)

    monkeypatch.setattr(transfer.Multipart, "send", failing)
    with pytest.raises(OSError):
        await bucket.upload_file("files/big.whl", str(source))
    assert await bucket.head("files/big.whl") is None
    assert await bucket.open_uploads() == []


@pytest_twisted.ensureDeferred
async def test_download_to_is_atomic(
    bucket: Bucket, tmp_path: Path, monkeypatch: Any
) -> None:
    """download_to replaces the target only once the whole object is synced:
    a missing key gives None and a failed download (the disk full at fsync)
    a 507, both leaving the old file as it was and no temporary file."""
    target = tmp_path / "a.whl"
    target.write_bytes(b"old")
    await bucket.put("a.whl", b"new contents")
    assert await bucket.download_to("missing.whl", str(target)) is None

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(transfer.os, "fsync", full)
        with pytest.raises(InsufficientStorage):
            await bucket.download_to("a.whl", str(target))
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.whl"]
    info = await bucket.download_to("a.whl", str(target))
    assert info is not None and info.size == len(b"new contents")
    assert target.read_bytes() == b"new contents"
    assert [n for n in os.listdir(tmp_path) if n.startswith(TEMP_PREFIX)] == []


# Ranges


@pytest_twisted.ensureDeferred
async def test_read_range_streams_chunks(bucket: Bucket) -> None:
    """read_range hands the consumer the bytes of an inclusive range in
    chunks of at most ``chunk_size``, waiting for the Deferred the consumer
    returns before reading on; open-ended ranges run to the end."""
    data = bytes(range(256)) * 40
    await bucket.put("r", data, content_type="application/octet-stream")
    chunks: list[bytes] = []

    def slow(chunk: bytes) -> Any:
        chunks.append(chunk)
        return deferLater(reactor, 0.001)

    info = await bucket.read_range("r", 100, 5099, slow, chunk_size=1000)
    assert b"".join(chunks) == data[100:5100]
    assert [len(c) for c in chunks] == [1000] * 5
    assert info.size == 5000
    tail: list[bytes] = []
    await bucket.read_range("r", len(data) - 10, None, tail.append)
    assert b"".join(tail) == data[-10:]
    with pytest.raises(InvalidRange):
        await bucket.read_range("r", len(data) + 5, None, tail.append)
    with pytest.raises(NotFound):
        await bucket.read_range("nothing", 0, 10, tail.append)


@pytest_twisted.ensureDeferred
async def test_read_range_stops_when_the_consumer_fails(bucket: Bucket) -> None:
    """A consumer that raises (a client gone) stops the reading: the error
    comes out and no more chunks are read."""
    await bucket.put("r", b"x" * 10_000)
    seen: list[int] = []

    def gone(chunk: bytes) -> None:
        seen.append(len(chunk))
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        await bucket.read_range("r", 0, None, gone, chunk_size=1000)
    assert seen == [1000]


@pytest_twisted.ensureDeferred
async def test_cancelled_read_range_closes_the_response(bucket: Bucket) -> None:
    """Cancelling a read_range (Klein does it when the client goes away)
    while the consumer holds it back stops the reading and closes the S3
    response: its connection is not left half read."""
    await bucket.put("r", b"x" * 10_000)
    bodies: list[Any] = []
    bucket.client.meta.events.register(
        "after-call.s3.GetObject", lambda parsed, **kw: bodies.append(parsed["Body"])
    )
    held = Deferred()
    reading = Deferred.fromCoroutine(
        bucket.read_range("r", 0, None, lambda chunk: held, chunk_size=1000)
    )
    while not bodies or not held.callbacks:
        await deferLater(reactor, 0.01)
    reading.cancel()
    with pytest.raises(CancelledError):
        await reading
    assert bodies[0]._raw_stream.closed


# Listing, deleting, presigning


@pytest_twisted.ensureDeferred
async def test_list_every_page_and_delete(bucket: Bucket) -> None:
    """list gives every key under a prefix, across pages, sorted; delete
    removes one, and deleting a missing key is no error."""
    for name in ["p/c", "p/a", "p/b", "q/a", "p/d"]:
        await bucket.put(name, b"x")
    assert await bucket.list("p/", page_size=2) == ["p/a", "p/b", "p/c", "p/d"]
    await bucket.delete("p/b")
    await bucket.delete("p/never")
    assert await bucket.list("p/") == ["p/a", "p/c", "p/d"]
    assert [i.size for i in await bucket.list_info("q/")] == [1]


@pytest_twisted.ensureDeferred
async def test_presigned_url_fetched_with_treq(bucket: Bucket) -> None:
    """A presigned URL gives the object's bytes to a client with no
    credentials (treq), honouring a Range header too."""
    await bucket.put("files/a.whl", b"presigned bytes")
    url = await bucket.presign("files/a.whl", expires=60)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url
    pool = HTTPConnectionPool(reactor, persistent=False)
    client = HTTPClient(Agent(reactor, pool=pool))
    try:
        response = await client.get(url)
        assert response.code == 200
        assert await response.content() == b"presigned bytes"
        response = await client.get(url, headers={"Range": "bytes=0-8"})
        assert response.code == 206
        assert await response.content() == b"presigned"
    finally:
        await pool.closeCachedConnections()


# Credentials, threads, failures


def record_requests(bucket: Bucket) -> list[tuple[str, str]]:
    """Record the Authorization header and the thread of each request."""
    seen: list[tuple[str, str]] = []

    def before_send(request: Any, **kwargs: Any) -> None:
        auth = request.headers.get("Authorization", b"")
        seen.append(
            (
                auth.decode() if isinstance(auth, bytes) else auth,
                threading.current_thread().name,
            )
        )

    bucket.client.meta.events.register("before-send.s3", before_send)
    return seen


@pytest_twisted.ensureDeferred
async def test_credentials_from_the_environment(
    s3: S3Bucket, threads: BucketThreads, monkeypatch: Any
) -> None:
    """Without keys in the settings, the client signs with the environment's
    AWS_ACCESS_KEY_ID; keys in the settings win over it. Requests are sent
    from the bucket's own threads, never the reactor's."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-environment")
    bucket = await Bucket.open(settings_of(s3), threads)
    seen = record_requests(bucket)
    await bucket.put("k", b"v")
    assert "Credential=from-the-environment/" in seen[0][0]
    assert "pypicache-s3" in seen[0][1]
    assert threading.current_thread().name != seen[0][1]

    explicit = await Bucket.open(
        settings_of(
            s3, **{"s3-access-key-id": "explicit", "s3-secret-access-key": "s"}
        ),
        threads,
    )
    seen = record_requests(explicit)
    await explicit.get("k")
    assert "Credential=explicit/" in seen[0][0]
    assert ACCESS_KEY_ID not in seen[0][0]


@pytest_twisted.ensureDeferred
async def test_credentials_from_a_shared_file_profile(
    s3: S3Bucket, threads: BucketThreads, monkeypatch: Any, tmp_path: Path
) -> None:
    """With ``s3-profile`` and no keys in the environment, the client signs
    with the profile's keys from the shared credentials file; a profile that
    is not there is a configuration error naming ``s3-profile``."""
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[pypicache]\naws_access_key_id = from-the-file\n"
        "aws_secret_access_key = file-secret\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    bucket = await Bucket.open(settings_of(s3, **{"s3-profile": "pypicache"}), threads)
    seen = record_requests(bucket)
    await bucket.put("k", b"v")
    assert "Credential=from-the-file/" in seen[0][0]
    with pytest.raises(S3ConfigError, match="s3-profile"):
        await Bucket.open(settings_of(s3, **{"s3-profile": "nowhere"}), threads)


@pytest_twisted.ensureDeferred
async def test_store_failures_are_bucket_errors(
    s3: S3Bucket, threads: BucketThreads
) -> None:
    """A missing bucket or an endpoint that does not answer gives a
    BucketError (a 502 naming the operation and the key), not botocore's own."""
    settings = settings_of(s3)
    missing = Bucket(settings.client(), "no-such-bucket", threads)
    with pytest.raises(BucketError, match="PUT k: 404 NoSuchBucket") as failed:
        await missing.put("k", b"v")
    assert failed.value.code == 502
    dead = S3Settings.from_mapping(
        {
            "storage": "s3://bucket",
            "s3-endpoint-url": "http://127.0.0.1:9",
            "s3-max-attempts": 1,
        }
    )
    unreachable = await Bucket.open(dead, threads)
    with pytest.raises(BucketError, match="GET k"):
        await unreachable.get("k")
