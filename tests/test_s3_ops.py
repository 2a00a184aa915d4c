"""Eviction, metrics and ``pypicache-admin`` on a bucket (``--storage s3://...``):
the bucket's eviction and its lease in process, then real daemons and the
admin command against moto's server, with the fake index as the upstream."""

import io
import json
import sys
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.python.filepath import FilePath

from pypicache.concurrency import NotReady, result_now
from pypicache.errors import NotFound
from pypicache.storage.capacity import EvictionPass
from pypicache.storage.eviction import GRACE
from pypicache.storage.records import MIRROR, RELEASES
from pypicache.storage.s3.eviction import BucketEvictor
from pypicache.storage.s3.lease import LEASE_SECONDS, Lease
from pypicache.storage.s3.store import S3Store
from pypicache.storage.s3.view import ANSWER_MARGIN
from pypicache.tap.admin import main
from tests.clients import clean_env, pip_install, run, twine_upload
from tests.daemon import start_world
from tests.fakeindex import FakeIndex, start_fake_index
from tests.packages import build_wheel
from tests.test_s3_daemon import S3Daemon, _bytes
from tests.test_s3_store import s3_store
from tests.test_store_contract import put

OLD = "old-1.0-py3-none-any.whl"
NEW = "new-1.0-py3-none-any.whl"
MINE = "mine-1.0-py3-none-any.whl"


@pytest_twisted.ensureDeferred
async def test_bucket_eviction_takes_the_least_recently_used_mirrored_file(
    s3, threads, tmp_path
):
    """Over the cap, a pass on the bucket evicts the least recently used
    mirrored file (out of its record, then its objects) and keeps the newer
    one and the private one, which does not count; while another holder has
    the bucket's eviction lease, a pass only counts. A daemon whose view
    still lists the evicted file gets NotFound (a 404), never a 500."""
    store = await s3_store(s3, threads, tmp_path / "a")
    other = await s3_store(s3, threads, tmp_path / "b", max_age=60.0)
    old = await put(store, "old", OLD, content=b"o" * 1000)
    await put(store, "new", NEW, content=b"n" * 1000)
    mine = await put(store, "mine", MINE, area=RELEASES, content=b"m" * 5000)
    assert await other.find("old", OLD) is not None  # its view, kept a minute
    later = time.time() + 3 * GRACE
    used = {f"old/{OLD}": int(later - 2 * GRACE), f"new/{NEW}": int(later - GRACE)}

    holder = BucketEvictor(other, deferToThread)
    assert await holder.lease.acquire()
    asked = EvictionPass(None, used, later, 1500, None)
    busy = await BucketEvictor(store, deferToThread).run(asked)
    assert busy.busy and not busy.evicted and (busy.total, busy.files) == (2000, 2)
    await holder.lease.release()

    result = await BucketEvictor(store, deferToThread).run(asked)
    assert [e.key for e in result.evicted] == [f"old/{OLD}"]
    assert (result.total, result.files) == (1000, 1)
    assert await store.reread(MIRROR, "old", OLD) is None
    assert await store.bucket.head(store._key(old)) is None
    assert await store.find("new", NEW) is not None
    assert await store.find("mine", MINE) is not None
    assert await store.bucket.head(store._key(mine)) is not None

    stale = await other.find("old", OLD)
    assert stale is not None  # listed by a view older than the eviction
    with pytest.raises(NotFound):
        await other.open(stale)


@pytest_twisted.ensureDeferred
async def test_the_lease_has_one_holder(s3, threads, tmp_path):
    """Of two holders, one takes the lease; the other takes it only once it
    expired, and the first then learns it lost it (its renewal fails); a
    released lease is taken at once."""
    store = await s3_store(s3, threads, tmp_path)
    clock = Clock()
    clock.advance(time.time())
    key = store.keys.lease("evict")
    a = Lease(store.bucket, key, clock, "a")
    b = Lease(store.bucket, key, clock, "b")
    assert await a.acquire() and a.held
    assert not await b.acquire()
    clock.advance(LEASE_SECONDS + 1)
    assert await b.acquire()
    assert not await a.renew() and not a.held
    await b.release()
    assert await a.acquire()
    data, _ = await store.bucket.get(key)
    assert json.loads(data)["holder"] == "a"


@pytest_twisted.ensureDeferred
async def test_files_at_once_leave_is_private_at_once(s3, threads, tmp_path):
    """files answers at once only while is_private would too (the page built
    from it asks is_private at once in the same turn): a view in its last
    ANSWER_MARGIN seconds is revalidated first, never half answered."""
    made = await s3_store(s3, threads, tmp_path / "w")
    await put(made, "proj", NEW)
    clock = Clock()
    clock.advance(time.time())
    store = S3Store(
        made.bucket, made.keys, FilePath(str(tmp_path / "r")), clock, deferToThread
    )
    assert [s.info.filename for s in await store.files("proj")] == [NEW]
    clock.advance(store.records.max_age - ANSWER_MARGIN / 2)
    later = store.files("proj")
    with pytest.raises(NotReady):
        result_now(later)
    await later
    assert result_now(store.files("proj")) and not result_now(store.is_private("proj"))


async def admin(s3, tmp_path, *args: str):
    """``python -m pypicache.tap.admin ARGS`` pointed at the test's bucket."""
    command = [sys.executable, "-m", "pypicache.tap.admin", args[0]]
    command += ["--storage", s3.url("pypi"), "--s3-endpoint-url", s3.endpoint]
    command += args[1:]
    return await run(command, {**clean_env(tmp_path), **s3.env}, cwd=tmp_path)


def age_record(s3, project: str, filename: str, seconds_ago: float) -> None:
    """Make ``filename`` of ``project`` look stored ``seconds_ago`` in its record."""
    from tests.s3server import S3Server

    client = S3Server(s3.endpoint, None, None).client()  # type: ignore[arg-type]
    key = f"pypi/projects/{project}.json"
    record = json.loads(client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
    record["files"][filename]["stored_at"] = time.time() - seconds_ago
    client.put_object(Bucket=s3.bucket, Key=key, Body=json.dumps(record).encode())


def mirror_bytes(s3) -> int:
    from tests.s3server import S3Server

    client = S3Server(s3.endpoint, None, None).client()  # type: ignore[arg-type]
    listed = client.list_objects_v2(Bucket=s3.bucket, Prefix="pypi/files/mirror/")
    return sum(item["Size"] for item in listed.get("Contents", []))


async def stats(daemon: S3Daemon) -> dict:
    code, text = await daemon.get("+stats")
    assert code == 200, text
    return json.loads(text)


@pytest_twisted.ensureDeferred
async def test_daemons_evict_count_and_refetch_on_one_bucket(s3, tmp_path):
    """Three daemons on one bucket. Files installed through A are in the
    bucket; ``pypicache-admin cleanup --dry-run`` against the bucket names
    the least recently used one; C, started with ``--max-cache-size``, evicts
    it and keeps the other mirrored file and the private upload; C's
    metrics show the bucket's mirror; B then serves the evicted file by
    fetching it from the upstream again; ``pypicache-admin verify`` finds
    every file in the bucket sound."""
    index = FakeIndex(tmp_path, "json")
    cold = build_wheel(tmp_path / "upstream", "cold", "1.0")
    warm = build_wheel(tmp_path / "upstream", "warm", "1.0")
    index.add(cold)
    index.add(warm)
    upstream = await start_fake_index(index)
    daemons = {n: S3Daemon(tmp_path, n, s3, upstream.url) for n in "abc"}
    try:
        a, b, c = daemons["a"], daemons["b"], daemons["c"]
        await a.start()
        await b.start()
        mine = build_wheel(tmp_path / "dist", "mine", "1.0")
        (await twine_upload(a.url, [mine], tmp_path)).check()
        for project in ("cold", "warm"):
            result = await pip_install(
                a.url + "simple/", [project], tmp_path / f"t-{project}", tmp_path
            )
            result.check()
        for _ in range(100):  # stored (and recorded) once verified
            code, text = await a.get("local/warm/")
            if code == 200 and warm.name in text:
                break
            await deferLater(reactor, 0.1)
        age_record(s3, "cold", cold.name, 2 * 86400)
        age_record(s3, "warm", warm.name, 86400)
        cap = mirror_bytes(s3) - 1

        dry = await admin(s3, tmp_path, "cleanup", "--max-cache-size", str(cap), "-n")
        assert dry.ok, dry
        assert f"would evict cold/{cold.name}" in dry.out, dry
        assert "warm" not in dry.out.split("1 files")[0], dry

        await c.start("--max-cache-size", str(cap))
        for _ in range(100):
            figures = await stats(c)
            if figures["evicted_files"]:
                break
            await deferLater(reactor, 0.1)
        assert figures["evicted_files"] == 1, figures
        assert figures["cache_files"] == 1, figures
        assert figures["cache_size_bytes"] == mirror_bytes(s3), figures
        code, text = await c.get("metrics")
        assert "pypicache_cache_files 1.0" in text, text
        for project, there in (("cold", False), ("warm", True), ("mine", True)):
            code, text = await c.get(f"local/{project}/")
            assert (code == 200) is there, (project, code, text)

        before = index.downloads(cold.name)
        code, body = await _bytes(b, f"packages/cold/{cold.name}")
        assert code == 200 and body == cold.read_bytes()
        assert index.downloads(cold.name) == before + 1

        checked = await admin(s3, tmp_path, "verify")
        assert checked.ok, checked
        assert "0 corrupt" in checked.out, checked
    finally:
        for daemon in daemons.values():
            await daemon.stop()
        await upstream.stop()


@pytest_twisted.ensureDeferred
async def test_admin_verify_and_cleanup_on_a_bucket(s3, threads, tmp_path):
    """``pypicache-admin verify --storage ...`` reads every listed archive
    back: a corrupt mirrored one is removed (record, then object), a corrupt
    private one only reported, exit 1; ``cleanup`` while another holder has
    the eviction lease evicts nothing and exits 1."""
    store = await s3_store(s3, threads, tmp_path / "a")
    bad = await put(store, "old", OLD, content=b"o" * 100)
    await put(store, "new", NEW, content=b"n" * 100)
    mine = await put(store, "mine", MINE, area=RELEASES, content=b"m" * 100)
    for stored in (bad, mine):
        await store.bucket.put(store._key(stored), b"x" * 100)
    argv = ["--storage", s3.url("pypi"), "--s3-endpoint-url", s3.endpoint]
    out = io.StringIO()
    assert await deferToThread(main, ["verify", *argv], out, io.StringIO()) == 1
    lines = out.getvalue().splitlines()
    assert lines[-1] == "3 files checked, 2 corrupt.", lines
    assert any("mine" in line and "left in place (private)" in line for line in lines)
    assert any("old" in line and "removed" in line for line in lines)
    assert await store.reread(MIRROR, "old", OLD) is None
    assert await store.bucket.head(store._key(bad)) is None
    assert await store.reread(RELEASES, "mine", MINE) is not None

    holder = BucketEvictor(store, deferToThread)
    assert await holder.lease.acquire()
    err = io.StringIO()
    cleanup = ["cleanup", *argv, "--evict-unused-after", "1s"]
    assert await deferToThread(main, cleanup, io.StringIO(), err) == 1
    assert "Another process is evicting" in err.getvalue()
    assert await store.reread(MIRROR, "new", NEW) is not None


@pytest_twisted.ensureDeferred
async def test_a_view_listing_an_evicted_file_fetches_it_again(s3, threads, tmp_path):
    """A daemon whose view of a project (kept a minute here) still lists a
    mirrored file that another daemon evicted from the bucket answers its
    request with the file fetched again from the upstream: not a 404, not a
    500."""
    wheel = build_wheel(tmp_path / "up", "cold", "1.0")
    other = await s3_store(s3, threads, tmp_path / "other")
    world = await start_world(
        tmp_path, [wheel], s3_bucket=other.bucket, s3_prefix="pypi"
    )
    try:
        world.daemon.app.store.records.max_age = 60.0
        stored = await put(other, "cold", wheel.name, content=wheel.read_bytes())
        response = await world.daemon.get("local/cold/")
        assert wheel.name in await response.text()  # the daemon's view lists it
        await other.remove(stored)  # evicted through another daemon
        assert world.index.downloads(wheel.name) == 0
        response = await world.daemon.get(f"packages/cold/{wheel.name}")
        assert response.code == 200
        assert await response.content() == wheel.read_bytes()
        assert world.index.downloads(wheel.name) == 1
    finally:
        await world.stop()
