"""``twistd pypicache --workers 2 --storage s3://...``: worker processes that
share one local folder (their locks, their local copies) and one bucket.

The bucket is the shared state, as between daemons; the local folder adds
what workers of one host share: one upstream download of a cold file across
workers, and the local copies.
"""

from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults

from pypicache.storage.records import MIRROR, RELEASES
from pypicache.storage.s3.keys import Keys
from tests.fakeindex import FakeIndex
from tests.s3server import S3Bucket
from tests.test_crash import bounded
from tests.test_s3_streaming import open_bucket
from tests.test_workers import dists, start_workers  # noqa: F401


@pytest_twisted.async_yield_fixture()
async def s3workers(
    tmp_path: Path, s3: S3Bucket, dists: dict[str, Path]  # noqa: F811
) -> Any:
    """Two workers on one bucket, in front of an upstream offering ``big``."""
    index = FakeIndex(tmp_path / "upstream", "json")
    index.add(dists["big"])
    running = await start_workers(
        tmp_path, index, "--storage", s3.url("pypi"), "--s3-endpoint-url", s3.endpoint
    )
    try:
        yield running
    finally:
        await running.close()


@pytest_twisted.ensureDeferred
async def test_workers_on_s3_share_downloads_and_uploads(
    s3workers, dists, s3, threads  # noqa: F811
):
    """On S3, a cold file asked on both workers at once is downloaded from
    upstream once and stored in the bucket; an upload through one worker is
    served by the other; two uploads of one filename with other bytes, one
    on each worker, give one 201 and one 409."""
    workers = s3workers
    on = await workers.pinned()
    name = dists["big"].name
    path = f"/packages/shared/{name}"
    answers = await bounded(
        gatherResults(
            [
                Deferred.fromCoroutine(workers.request(on[n], "GET", path))
                for n in (1, 2)
            ]
        )
    )
    expected = dists["big"].read_bytes()
    assert [code for code, _ in answers] == [200, 200], (
        answers[0][1][:300],
        answers[1][1][:300],
        workers.twistd.output.decode(errors="replace")[-6000:],
    )
    assert all(body == expected for _, body in answers)
    assert workers.index.downloads(name) == 1
    bucket = await open_bucket(s3, threads)
    keys = Keys("pypi")
    for _ in range(100):
        if await bucket.head(keys.archive(MIRROR, "shared", name)) is not None:
            break
    assert (await bucket.head(keys.archive(MIRROR, "shared", name))).size == len(
        expected
    )

    upload = dists["upload"].read_bytes()
    other = dists["upload_other"].read_bytes()
    mine = f"/packages/mine/{dists['upload'].name}"
    codes = await bounded(
        gatherResults(
            [
                Deferred.fromCoroutine(workers.request(on[1], "PUT", mine, upload)),
                Deferred.fromCoroutine(workers.request(on[2], "PUT", mine, other)),
            ]
        )
    )
    assert sorted(code for code, _ in codes) == [201, 409], codes
    winner = upload if codes[0][0] == 201 else other
    for n in (1, 2):
        code, body = await workers.request(on[n], "GET", mine)
        assert (code, body) == (200, winner)
    assert await bucket.head(keys.archive(RELEASES, "mine", dists["upload"].name))
