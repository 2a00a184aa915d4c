"""Named upstreams (``--upstream NAME=URL``) on ``--storage s3://...``: each
upstream's files and pages are kept in the bucket under its own prefix
(``<prefix>/upstreams/<name>/``), so another daemon on the bucket serves
them with that upstream stopped, and the local copies are one cache."""

import json
from pathlib import Path
from urllib.parse import urljoin

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater

from pypicache.proxy.upstreams import UpstreamSpec
from pypicache.storage.records import MIRROR
from pypicache.storage.s3.keys import Keys
from tests.clients import pip_install
from tests.daemon import start_daemon
from tests.fakeindex import FakeIndex, start_fake_index
from tests.packages import build_wheel
from tests.test_s3_streaming import open_bucket

JSON = "application/vnd.pypi.simple.v1+json"


@pytest_twisted.ensureDeferred
async def test_a_named_upstream_on_s3(s3, threads, tmp_path: Path):
    """pip installs through ``/upstreams/pytorch/simple/`` of a daemon on
    S3; the wheel is stored in the bucket under that upstream's prefix; a
    second daemon on the bucket, with a fresh local folder and the named
    upstream stopped, lists and serves it from the bucket."""
    default = FakeIndex(tmp_path / "default", "json")
    default_running = await start_fake_index(default)
    pytorch = FakeIndex(tmp_path / "pytorch", "json")
    wheel = build_wheel(tmp_path / "dists", "torch", "2.0")
    pytorch.add(wheel)
    pytorch_running = await start_fake_index(pytorch)
    spec = [UpstreamSpec("pytorch", pytorch_running.url)]
    daemons = []
    try:
        for name in ("a", "b"):
            bucket = await open_bucket(s3, threads)
            daemons.append(
                await start_daemon(
                    default_running.url,
                    tmp_path / name,
                    upstreams=spec,
                    routes=[("torch*", "pytorch")],
                    s3_bucket=bucket,
                    s3_prefix="pypi",
                )
            )
        a, b = daemons
        target = tmp_path / "target"
        result = await pip_install(
            a.url + "upstreams/pytorch/simple/", ["torch"], target, tmp_path
        )
        assert result.code == 0, result
        key = Keys("pypi").upstream("pytorch").archive(MIRROR, "torch", wheel.name)
        for _ in range(100):
            if await bucket.head(key) is not None:
                break
            await deferLater(reactor, 0.05)
        assert (await bucket.head(key)).size == wheel.stat().st_size
        await pytorch_running.stop()
        page_url = b.url + "upstreams/pytorch/simple/torch/"
        response = await b.get(page_url[len(b.url) :], headers={"Accept": JSON})
        assert response.code == 200
        [listed] = json.loads(await treq.content(response))["files"]
        assert listed["filename"] == wheel.name
        file_url = urljoin(page_url, listed["url"])
        got = await b.get(file_url[len(b.url) :])
        assert got.code == 200
        assert await treq.content(got) == wheel.read_bytes()
        assert pytorch.requests and not any(
            wheel.name in r.path for r in default.requests
        )
    finally:
        for daemon in daemons:
            await daemon.stop()
        await default_running.stop()
        if pytorch_running is not None:
            try:
                await pytorch_running.stop()
            except Exception:
                pass
