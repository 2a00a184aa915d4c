"""Per-project records and cached pages in a bucket (``pypicache.storage.s3.records``),
against moto's standalone S3 server on loopback: the key layout, conditional
read-modify-write from several daemons, revalidation within the max age."""

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import Clock

from pypicache.errors import BadRequest
from pypicache.index.model import DistFile, ProjectPage
from pypicache.storage.records import MIRROR, RELEASES, CachedPage
from pypicache.storage.s3.bucket import NOT_MODIFIED, Bucket
from pypicache.storage.s3.errors import BucketError, RecordConflict
from pypicache.storage.s3.keys import Keys
from pypicache.storage.s3.records import (
    FileRecord,
    PageRecords,
    ProjectRecord,
    ProjectRecords,
)
from pypicache.storage.s3.settings import S3Settings
from pypicache.storage.s3.threads import BucketThreads
from tests.s3server import S3Bucket


def daemon_bucket(s3: S3Bucket, threads: BucketThreads) -> Bucket:
    """A bucket with a client of its own, as one daemon would have."""
    settings = S3Settings.from_mapping(
        {"storage": s3.url("pypicache"), "s3-endpoint-url": s3.endpoint}
    )
    return Bucket(settings.client(), s3.bucket, threads)


KEYS = Keys("pypicache")


def count_gets(bucket: Bucket) -> list[int]:
    """Record the HTTP status of every GetObject the bucket's client makes."""
    statuses: list[int] = []

    def after_call(http_response: Any, **kwargs: Any) -> None:
        statuses.append(http_response.status_code)

    bucket.client.meta.events.register("after-call.s3.GetObject", after_call)
    return statuses


def wheel(name: str, sha: str = "a" * 64, area: str = RELEASES) -> FileRecord:
    return FileRecord(
        info=DistFile(filename=name, hashes={"sha256": sha}, size=3),
        area=area,
        stored_at=1_700_000_000.0,
        origin=None if area != MIRROR else "https://files.example",
    )


def test_key_layout() -> None:
    """Records, pages and files have their documented keys under the
    prefix; a named upstream has the same layout under its own; a project
    name that is not normalized or an unsafe filename never makes a key."""
    assert KEYS.project_record("foo-bar") == "pypicache/projects/foo-bar.json"
    assert KEYS.page("foo") == "pypicache/pages/foo.json"
    assert (
        KEYS.archive(RELEASES, "foo", "foo-1.0.tar.gz")
        == "pypicache/files/private/releases/foo/foo-1.0.tar.gz"
    )
    assert (
        KEYS.metadata(MIRROR, "foo", "foo-1.0-py3-none-any.whl")
        == "pypicache/files/mirror/foo/foo-1.0-py3-none-any.whl.metadata"
    )
    assert KEYS.provenance(MIRROR, "foo", "f.whl").endswith("/f.whl.provenance")
    assert Keys().page("foo") == "pages/foo.json"
    assert (
        KEYS.upstream("torch").page("foo") == "pypicache/upstreams/torch/pages/foo.json"
    )
    assert KEYS.project_of("pypicache/projects/foo.json") == "foo"
    assert KEYS.project_of("pypicache/pages/foo.json") is None
    for bad in ["Foo_Bar", "../x", "a/b"]:
        with pytest.raises(BadRequest):
            KEYS.project_record(bad)
    with pytest.raises(BadRequest):
        KEYS.archive(MIRROR, "foo", "../foo-1.0.tar.gz")
    with pytest.raises(ValueError):
        KEYS.archive("elsewhere", "foo", "foo-1.0.tar.gz")


def test_record_round_trips_through_json() -> None:
    """A record with files and tombstones reads back equal from its JSON."""
    record = (
        ProjectRecord("foo")
        .with_file(wheel("foo-1.0.tar.gz"))
        .with_file(wheel("foo-1.0-py3-none-any.whl", area=MIRROR))
        .without_file("foo-0.9.tar.gz", {"sha256": "b" * 64, "deleted_at": 1.0})
    )
    again = ProjectRecord.from_bytes("foo", record.to_bytes(), '"etag"')
    assert again == record and again.etag == '"etag"'
    assert again.private
    assert not ProjectRecord("foo").with_file(wheel("f.whl", area=MIRROR)).private
    with pytest.raises(BucketError, match="damaged"):
        ProjectRecord.from_bytes("foo", b"{not json", None)


@pytest_twisted.ensureDeferred
async def test_add_creates_then_updates_the_record(
    s3: S3Bucket, threads: BucketThreads
) -> None:
    """The first add creates the record (create-only), later ones update it;
    adding the same file again writes nothing; another file under the same
    filename is a RecordConflict; remove leaves the tombstone given."""
    records = ProjectRecords(daemon_bucket(s3, threads), KEYS, reactor)
    first = await records.add("foo", wheel("foo-1.0.tar.gz"))
    assert first.etag is not None and list(first.files) == ["foo-1.0.tar.gz"]
    second = await records.add("foo", wheel("foo-1.1.tar.gz"))
    assert sorted(second.files) == ["foo-1.0.tar.gz", "foo-1.1.tar.gz"]
    again = await records.add("foo", wheel("foo-1.1.tar.gz"))
    assert again.etag == second.etag
    with pytest.raises(RecordConflict):
        await records.add("foo", wheel("foo-1.1.tar.gz", sha="b" * 64))
    replaced = await records.add(
        "foo", wheel("foo-1.1.tar.gz", sha="b" * 64), replace=True
    )
    assert replaced.files["foo-1.1.tar.gz"].info.hashes == {"sha256": "b" * 64}
    removed = await records.remove("foo", "foo-1.0.tar.gz", {"sha256": "a" * 64})
    assert list(removed.files) == ["foo-1.1.tar.gz"]
    assert removed.tombstones == {"foo-1.0.tar.gz": {"sha256": "a" * 64}}
    fresh = ProjectRecords(daemon_bucket(s3, threads), KEYS, reactor)
    assert await fresh.get("foo") == removed
    assert (await fresh.get("bar")) == ProjectRecord("bar")
    assert await fresh.projects() == ["foo"]


@pytest_twisted.ensureDeferred
async def test_concurrent_adds_from_two_daemons_all_survive(
    s3: S3Bucket, threads: BucketThreads
) -> None:
    """Two daemons (two clients, two views) adding files to one project at
    the same time lose none of each other's entries: a write made from a
    stale record fails its If-Match and is made again on a fresh read."""
    one = ProjectRecords(daemon_bucket(s3, threads), KEYS, reactor)
    two = ProjectRecords(daemon_bucket(s3, threads), KEYS, reactor)
    names = [f"foo-1.{n}.tar.gz" for n in range(8)]
    adds = [
        (one if n % 2 else two).add("foo", wheel(name)) for n, name in enumerate(names)
    ]
    results = await DeferredList([_d(a) for a in adds], consumeErrors=True)
    assert all(ok for ok, _ in results), results
    assert one.conflicts + two.conflicts > 0
    reader = ProjectRecords(daemon_bucket(s3, threads), KEYS, reactor)
    assert sorted((await reader.get("foo")).files) == sorted(names)


@pytest_twisted.ensureDeferred
async def test_concurrent_same_filename_other_bytes_one_wins(
    s3: S3Bucket, threads: BucketThreads
) -> None:
    """Two daemons recording the same new filename with other bytes at once:
    exactly one succeeds, the other gets a RecordConflict, and the record
    holds the winner's file."""
    one = ProjectRecords(daemon_bucket(s3, threads), KEYS, reactor)
    two = ProjectRecords(daemon_bucket(s3, threads), KEYS, reactor)
    results = await DeferredList(
        [
            _d(one.add("foo", wheel("foo-1.0.tar.gz", sha="1" * 64))),
            _d(two.add("foo", wheel("foo-1.0.tar.gz", sha="2" * 64))),
        ],
        consumeErrors=True,
    )
    outcomes = sorted(ok for ok, _ in results)
    assert outcomes == [False, True]
    failure = next(r for ok, r in results if not ok)
    assert failure.check(RecordConflict)
    winner = next(r for ok, r in results if ok)
    reader = ProjectRecords(daemon_bucket(s3, threads), KEYS, reactor)
    assert (await reader.get("foo")).files == winner.files


@pytest_twisted.ensureDeferred
async def test_views_revalidate_after_max_age_with_304s(
    s3: S3Bucket, threads: BucketThreads
) -> None:
    """A daemon's view is used without a request while younger than max_age;
    older, it is revalidated with a conditional GET, answered 304 while
    nothing changed; another daemon's change shows at the first
    revalidation after it."""
    clock = Clock()
    bucket = daemon_bucket(s3, threads)
    gets = count_gets(bucket)
    reader = ProjectRecords(bucket, KEYS, clock, max_age=2.0)
    writer = ProjectRecords(daemon_bucket(s3, threads), KEYS, reactor)
    await writer.add("foo", wheel("foo-1.0.tar.gz"))

    assert list((await reader.get("foo")).files) == ["foo-1.0.tar.gz"]
    assert gets == [200]
    clock.advance(1.5)
    await reader.get("foo")
    assert gets == [200]
    clock.advance(1.0)
    await reader.get("foo")
    assert gets == [200, 304]

    await writer.add("foo", wheel("foo-1.1.tar.gz"))
    assert list((await reader.get("foo")).files) == ["foo-1.0.tar.gz"]
    assert gets == [200, 304]
    clock.advance(2.5)
    assert sorted((await reader.get("foo")).files) == [
        "foo-1.0.tar.gz",
        "foo-1.1.tar.gz",
    ]
    assert gets == [200, 304, 200]
    assert reader.requests == {"fetched": 2, "not_modified": 1, "absent": 0}


@pytest_twisted.ensureDeferred
async def test_concurrent_gets_share_one_request(
    s3: S3Bucket, threads: BucketThreads
) -> None:
    """Gets of one project arriving while its view is being revalidated
    share that one request."""
    bucket = daemon_bucket(s3, threads)
    gets = count_gets(bucket)
    records = ProjectRecords(bucket, KEYS, reactor)
    results = await DeferredList([_d(records.get("foo")) for _ in range(5)])
    assert [r.project for _, r in results] == ["foo"] * 5
    assert gets == [404]


@pytest_twisted.ensureDeferred
async def test_damaged_record_is_an_error_not_overwritten(
    s3: S3Bucket, threads: BucketThreads
) -> None:
    """A record damaged by hand makes reads and changes fail with a
    BucketError; nothing overwrites it."""
    bucket = daemon_bucket(s3, threads)
    await bucket.put(KEYS.project_record("foo"), b"[]")
    records = ProjectRecords(bucket, KEYS, reactor)
    with pytest.raises(BucketError, match="damaged"):
        await records.add("foo", wheel("foo-1.0.tar.gz"))
    assert await bucket.get(KEYS.project_record("foo")) is not None


@pytest_twisted.ensureDeferred
async def test_pages_round_trip(s3: S3Bucket, threads: BucketThreads) -> None:
    """A cached page is written, read back with its ETag, revalidated
    (NOT_MODIFIED), and dropped."""
    pages = PageRecords(daemon_bucket(s3, threads), KEYS)
    assert await pages.read("foo") is None
    cached = CachedPage(
        page=ProjectPage(name="foo", files=(DistFile("foo-1.0.tar.gz", url="u"),)),
        fetched_at=1_700_000_000.0,
        etag='"upstream"',
    )
    etag = await pages.write("foo", cached)
    assert await pages.read("foo") == (cached, etag)
    assert await pages.read("foo", etag=etag) is NOT_MODIFIED
    await pages.drop("foo")
    assert await pages.read("foo") is None


def _d(coroutine: Any) -> Any:
    return Deferred.fromCoroutine(coroutine)
