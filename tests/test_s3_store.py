"""What the S3 store does beyond the storage contract (tests/test_store_contract.py):
answering at once from a fresh view, presigned redirects, other daemons' changes,
and the options that choose it."""

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.python.filepath import FilePath

from pypicache.concurrency import result_now
from pypicache.storage.records import RELEASES
from pypicache.storage.s3.bucket import Bucket
from pypicache.storage.s3.keys import Keys
from pypicache.storage.s3.settings import S3Settings
from pypicache.storage.s3.store import S3Store
from pypicache.tap.options import Options
from tests.test_store_contract import CONTENT, WHEEL, put


async def s3_store(s3, threads, folder, **kwargs) -> S3Store:
    settings = S3Settings.from_mapping(
        {"storage": s3.url("pypi"), "s3-endpoint-url": s3.endpoint}
    )
    bucket = await Bucket.open(settings, threads)
    return S3Store(
        bucket, Keys("pypi"), FilePath(str(folder)), reactor, deferToThread, **kwargs
    )


@pytest_twisted.ensureDeferred
async def test_a_fresh_view_answers_at_once(s3, threads, tmp_path):
    """Once a project's record is read, is_private, files and find answer at
    once (pages are built synchronously from them), and so does opening a
    local copy; the view is revalidated once it is older than max_age."""
    store = await s3_store(s3, threads, tmp_path, max_age=1.0)
    stored = await put(store, area=RELEASES)
    assert result_now(store.is_private("foo")) is True
    assert result_now(store.files("foo")) == [stored]
    assert result_now(store.find("foo", WHEEL)) == stored
    assert result_now(store.open(stored)).path.getContent() == CONTENT
    await deferLater(reactor, 1.1)
    assert not store.is_private("foo").called  # revalidated first
    assert await store.is_private("foo") is True


@pytest_twisted.ensureDeferred
async def test_another_daemon_sees_a_commit_after_max_age(s3, threads, tmp_path):
    """A file committed through one store is listed by another on the same
    bucket once its view is revalidated, fetched into its own folder, and
    changes its generation."""
    one = await s3_store(s3, threads, tmp_path / "one", max_age=0.5)
    two = await s3_store(s3, threads, tmp_path / "two", max_age=0.5)
    assert await two.files("foo") == []
    generation = two.generation("foo")
    stored = await put(one, area=RELEASES)
    await deferLater(reactor, 0.6)
    [seen] = await two.files("foo")
    assert seen.info == stored.info and two.generation("foo") != generation
    opened = await two.open(seen)
    assert opened.path.path.startswith(str(tmp_path / "two"))
    assert opened.path.getContent() == CONTENT


@pytest_twisted.ensureDeferred
async def test_redirect_gives_a_presigned_url(s3, threads, tmp_path):
    """With s3-redirect an archive opens as a presigned URL of the bucket,
    which serves its bytes without credentials."""
    store = await s3_store(s3, threads, tmp_path, redirect=True)
    stored = await put(store)
    opened = await store.open(stored)
    assert opened.url is not None and "Signature" in opened.url
    response = await treq.get(opened.url)
    assert response.code == 200
    assert await response.content() == CONTENT


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(
        ["--cache", "/tmp/x", "--index-url", "http://127.0.0.1:1/simple/", *args]
    )
    return options


def test_storage_options():
    """--storage defaults to the filesystem; s3:// reads the s3-* settings;
    bad settings are refused with S3; the eviction limits are taken (they
    evict from the bucket), and so are --workers and named upstreams
    (tests/test_s3_workers.py, test_s3_upstreams.py)."""
    assert parse().s3 is None and parse()["storage"] == "filesystem"
    assert parse("--storage", "s3://bucket", "--workers", "2")["workers"] == 2
    named = parse(
        "--storage", "s3://bucket", "--upstream", "x=http://127.0.0.1:2/simple/"
    )
    assert [spec.name for spec in named["upstream"]] == ["x"]
    options = parse(
        "--storage", "s3://bucket/prefix", "--s3-endpoint-url", "http://m:9000"
    )
    assert options.s3.location.bucket == "bucket"
    assert options.s3.addressing_style == "path"
    limited = parse("--storage", "s3://bucket", "--max-cache-size", "1G")
    assert limited["max-cache-size"] == 1024**3
    for args, message in [
        (["--storage", "ftp://x"], "s3://bucket/prefix"),
        (["--storage", "s3://b", "--s3-checksums", "never"], "s3-checksums"),
    ]:
        with pytest.raises(usage.UsageError, match=message):
            parse(*args)


@pytest_twisted.ensureDeferred
async def test_a_large_file_goes_up_in_parts(s3, threads, tmp_path):
    """A file larger than the part size is uploaded in parts (nothing left
    open in the bucket) and opens, through another daemon's store, with
    its bytes."""
    store = await s3_store(s3, threads, tmp_path / "one")
    store.bucket.part_size = 5 * 1024 * 1024
    content = b"PK" + bytes(range(256)) * (6 * 4096)  # 6 MiB and 2 bytes
    stored = await put(store, content=content)
    assert await store.bucket.open_uploads() == []
    other = await s3_store(s3, threads, tmp_path / "two")
    [seen] = await other.files("foo")
    assert (await other.open(seen)).path.getContent() == content
    assert seen.info == stored.info
