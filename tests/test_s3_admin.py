"""``pypicache-admin export``, ``import``, ``withdrawn`` and ``token`` on a
bucket (``--storage s3://...``), run as the real command against moto's
server, with real daemons on the bucket; and orphaned archives (uploaded,
never listed): replaced by an upload once old, removed by ``cleanup``."""

import hashlib
import io
import json
import sys
import tarfile
import time

import bcrypt
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python.filepath import FilePath

from pypicache.storage.filesystem import FilesystemStore
from pypicache.storage.interface import AlreadyStored
from pypicache.storage.records import MIRROR, PRERELEASES, RELEASES
from pypicache.storage.s3 import orphans
from pypicache.storage.s3.errors import BucketError
from pypicache.storage.s3.keys import Keys
from pypicache.storage.s3.store import S3Store
from pypicache.tap import adminbucket
from pypicache.tap.admin import main
from tests.clients import clean_env, run, twine_upload
from tests.daemon import start_world
from tests.fakeindex import FakeIndex, start_fake_index
from tests.packages import build_wheel
from tests.test_s3_daemon import S3Daemon
from tests.test_s3_store import s3_store
from tests.test_store_contract import info_for, put

MINE = "mine-1.0-py3-none-any.whl"
MINE_RC = "mine-2.0rc1-py3-none-any.whl"
GONE = "gone-1.0-py3-none-any.whl"
LIB = "lib-1.0-py3-none-any.whl"
YANKS = {"yanks": {"lib": {"files": {LIB: {"reason": "broken", "at": 5.0}}}}}
STATUS = {"status": "archived", "reason": "moved to mine2"}


async def admin(s3, tmp_path, command: str, *args: str, prefix: str = "pypi"):
    """``python -m pypicache.tap.admin COMMAND --storage s3://BUCKET/PREFIX ...``."""
    argv = [sys.executable, "-m", "pypicache.tap.admin", *command.split()]
    argv += ["--storage", s3.url(prefix), "--s3-endpoint-url", s3.endpoint, *args]
    return await run(argv, {**clean_env(tmp_path), **s3.env}, cwd=tmp_path)


async def admin_on_folder(tmp_path, *args: str):
    argv = [sys.executable, "-m", "pypicache.tap.admin", *args]
    return await run(argv, clean_env(tmp_path), cwd=tmp_path)


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


async def _fill(store) -> None:
    """Two private archives (one with core metadata), a deleted one, a
    mirrored one, a local yank and a project's status."""
    await put(store, "mine", MINE, RELEASES, b"mine 1", metadata=b"Name: mine\n")
    await put(store, "mine", MINE_RC, PRERELEASES, b"mine 2")
    gone = await put(store, "gone", GONE, RELEASES, b"gone")
    await store.remove(gone)
    await put(store, "lib", LIB, MIRROR, b"mirrored")
    await store.change_state("local-yanks.json", lambda d: YANKS)
    await store.change_state("private/status/mine.json", lambda d: STATUS)


async def _check_filled(store, stored_at: dict) -> None:
    """What :func:`_fill` stored is in ``store`` (but the mirrored file)."""
    files = {s.info.filename: s for s in await store.files("mine")}
    assert sorted(files) == [MINE, MINE_RC]
    assert files[MINE].info.hashes["sha256"] == _sha(b"mine 1")
    assert files[MINE_RC].area == PRERELEASES
    assert {n: s.stored_at for n, s in files.items()} == stored_at
    assert (await store.open_metadata("mine", MINE)).path.getContent() == (
        b"Name: mine\n"
    )
    assert (await store.tombstone("gone", GONE))["sha256"] == _sha(b"gone")
    assert await store.files("lib") == []
    yanks = await store.read_state("local-yanks.json")
    assert yanks.data["yanks"]["lib"]["files"][LIB]["reason"] == "broken"
    assert (await store.read_state("private/status/mine.json")).data == STATUS


@pytest_twisted.ensureDeferred
async def test_export_and_import_round_trip_between_bucket_and_folder(
    s3, threads, tmp_path
):
    """``export --storage`` writes the private index of a bucket (archives
    with their records and core metadata, tombstones, statuses, local yanks;
    no mirrored file) as the folder's export does: ``import --cache`` restores
    it into a fresh folder; that folder's export imports into another prefix
    of the bucket, upload times kept; imported again, everything is already
    there; a tar with other bytes under a stored name is refused whole."""
    store = await s3_store(s3, threads, tmp_path / "a")
    await _fill(store)
    stored_at = {s.info.filename: s.stored_at for s in await store.files("mine")}

    result = await admin(s3, tmp_path, "export", str(tmp_path / "bucket.tar"))
    assert result.ok, result
    assert "2 private archives written to" in result.out, result
    with tarfile.open(tmp_path / "bucket.tar") as tar:
        names = set(tar.getnames())
    assert f"private/releases/mine/{MINE}.metadata" in names
    assert f"private/.deleted/gone/{GONE}.json" in names
    assert not any("lib" in n and n != "local-yanks.json" for n in names), names

    folder = tmp_path / "restored"
    result = await admin_on_folder(
        tmp_path, "import", "--cache", str(folder), str(tmp_path / "bucket.tar")
    )
    assert result.ok, result
    assert "2 private archives imported, 0 already there." in result.out, result
    assert "1 local yanks imported." in result.out, result
    await _check_filled(FilesystemStore(FilePath(str(folder))), stored_at)

    result = await admin_on_folder(
        tmp_path, "export", "--cache", str(folder), str(tmp_path / "folder.tar")
    )
    assert result.ok, result
    tar = str(tmp_path / "folder.tar")
    result = await admin(s3, tmp_path, "import", tar, prefix="copy")
    assert result.ok, result
    assert "2 private archives imported, 0 already there." in result.out, result
    copy = S3Store(
        store.bucket,
        Keys("copy"),
        FilePath(str(tmp_path / "c")),
        reactor,
        deferToThread,
    )
    await _check_filled(copy, stored_at)
    again = await admin(s3, tmp_path, "import", tar, prefix="copy")
    assert again.ok, again
    assert "0 private archives imported, 2 already there." in again.out, again

    other = tmp_path / "other"
    mine = FilesystemStore(FilePath(str(other)))
    await put(mine, "mine", MINE, RELEASES, b"other bytes")
    await put(mine, "new", "new-1.0-py3-none-any.whl", RELEASES, b"new")
    result = await admin_on_folder(
        tmp_path, "export", "--cache", str(other), str(tmp_path / "other.tar")
    )
    assert result.ok, result
    refused = await admin(s3, tmp_path, "import", str(tmp_path / "other.tar"))
    assert refused.code == 1, refused
    assert "Refused, nothing imported" in refused.out, refused
    assert f"{MINE}: other bytes are stored under this name" in refused.out
    assert await store.reread(RELEASES, "new", "new-1.0-py3-none-any.whl") is None
    found = await store.reread(RELEASES, "mine", MINE)
    assert found.info.hashes["sha256"] == _sha(b"mine 1")


@pytest_twisted.ensureDeferred
async def test_import_into_a_bucket_checks_every_archive_first(s3, threads, tmp_path):
    """A tar whose archive does not match its record is refused whole:
    nothing of it is listed, and no object is written under a final key."""
    folder = tmp_path / "src"
    source = FilesystemStore(FilePath(str(folder)))
    await put(source, "good", "good-1.0-py3-none-any.whl", RELEASES, b"good")
    bad = await put(source, "bad", "bad-1.0-py3-none-any.whl", RELEASES, b"bad")
    bad.path.setContent(b"BAD")  # same size, other bytes
    tar = tmp_path / "bad.tar"
    with tarfile.open(tar, "w") as out:
        out.add(str(folder / "private"), arcname="private")
    result = await admin(s3, tmp_path, "import", str(tar))
    assert result.code == 1, result
    assert "Refused, nothing imported" in result.out and "sha256" in result.out
    store = await s3_store(s3, threads, tmp_path / "a")
    assert await store.bucket.list("pypi/") == []


@pytest_twisted.ensureDeferred
async def test_withdrawn_on_a_bucket(s3, threads, tmp_path):
    """A file the upstream withdrew, noted by a daemon on the bucket, is
    hidden from /local/ by another running daemon on that bucket and listed
    by ``pypicache-admin withdrawn --storage ...`` (text and ``--json``), as
    it is for a folder."""
    wheels = [build_wheel(tmp_path / "up", "lib", v) for v in ("1.0", "2.0")]
    store = await s3_store(s3, threads, tmp_path / "a")
    world = await start_world(
        tmp_path, wheels, s3_bucket=store.bucket, s3_prefix="pypi"
    )
    other = S3Daemon(tmp_path, "b", s3, world.upstream.url)
    try:
        d = world.daemon
        for wheel in wheels:
            answer = await d.get(f"packages/lib/{wheel.name}")
            assert answer.code == 200
            await answer.content()
        for _ in range(100):
            if len(await store.read_files(["lib"])) == 2:
                break
            await deferLater(reactor, 0.1)
        world.index.remove(wheels[1].name)
        assert (await d.client.post(d.url + "+refresh/lib")).code == 200
        assert wheels[1].name not in await (await d.get("simple/lib/")).text()
        for _ in range(100):
            if await store.state_names("withdrawn"):
                break
            await deferLater(reactor, 0.1)
        await other.start()
        code, text = await other.get("local/lib/")
        assert code == 200 and wheels[0].name in text, text
        assert wheels[1].name not in text, text

        listed = await admin(s3, tmp_path, "withdrawn")
        assert listed.ok, listed
        assert f"lib {wheels[1].name} withdrawn since " in listed.out, listed
        assert "1 withdrawn files kept on disk." in listed.out, listed
        as_json = await admin(s3, tmp_path, "withdrawn", "--json")
        entries = [json.loads(line) for line in as_json.out.splitlines()]
        assert [(e["project"], e["filename"]) for e in entries] == [
            ("lib", wheels[1].name)
        ]
    finally:
        await other.stop()
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_a_token_made_on_the_bucket_works_on_every_daemon(s3, tmp_path):
    """``token create --storage ...`` (no daemon on this host, no --cache)
    writes the token into the bucket's shared state: a daemon on the bucket
    takes it for an upload within its 2 s delay, scoped to its project;
    ``token list`` shows it; once ``token revoke`` ran, it is refused."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "htpasswd").write_text(f"alice:{hashed}\n")
    index = FakeIndex(tmp_path, "json")
    upstream = await start_fake_index(index)
    daemon = S3Daemon(tmp_path, "a", s3, upstream.url)
    dist = tmp_path / "dist"
    app = [build_wheel(dist, "app", v) for v in ("1.0", "2.0")]
    other = build_wheel(dist, "other", "1.0")
    try:
        await daemon.start("--auth-file", str(tmp_path / "htpasswd"))
        made = await admin(
            s3, tmp_path, "token create", "--user", "ci", "--project", "app"
        )
        assert made.ok, made
        token = made.out.strip()
        token_id = token.split("-")[1]
        assert f"Token {token_id} for ci" in made.err

        async def upload(wheel):
            return await twine_upload(
                daemon.url, [wheel], tmp_path, username="__token__", password=token
            )

        await deferLater(reactor, 2.5)  # the daemon's view of the tokens
        (await upload(app[0])).check()
        refused = await upload(other)
        assert not refused.ok and "403" in refused.out + refused.err, refused

        listed = await admin(s3, tmp_path, "token list")
        assert listed.ok and f"{token_id}  ci  app  active" in listed.out, listed
        revoked = await admin(s3, tmp_path, "token revoke", token_id)
        assert revoked.ok and f"Revoked token {token_id} of ci." in revoked.out
        await deferLater(reactor, 2.5)  # the daemon's view of the tokens
        refused = await upload(app[1])
        assert not refused.ok and "401" in refused.out + refused.err, refused
        listed = await admin(s3, tmp_path, "token list")
        assert f"{token_id}  ci  app  revoked" in listed.out, listed
        unknown = await admin(s3, tmp_path, "token revoke", "000000000000")
        assert unknown.code == 1 and "No token '000000000000'" in unknown.err
    finally:
        await daemon.stop()
        await upstream.stop()


# -- orphans: archives uploaded, never listed ----------------------------------


async def _orphan(store, project: str, filename: str, content: bytes) -> str:
    """Leave ``content`` under the archive key of ``filename``, unlisted (a
    daemon killed between the archive and its record)."""
    key = store.keys.archive(RELEASES, project, filename)
    await store.bucket.put(key, content, content_type="application/octet-stream")
    return key


async def _commit(store, project: str, filename: str, content: bytes):
    temp = store.open_temp(project, RELEASES)
    temp.write(content)
    try:
        return await store.commit(
            temp, info_for(filename, content), None, project, RELEASES, replace=False
        )
    finally:
        temp.discard()


@pytest_twisted.ensureDeferred
async def test_an_old_orphan_gives_way_to_one_upload(
    s3, threads, tmp_path, monkeypatch
):
    """Other bytes under the name of a fresh unlisted archive (a commit in
    flight elsewhere) are refused (409); once the archive is older than
    ORPHAN_AFTER it is an orphan, and of two concurrent uploads of other
    bytes exactly one replaces it (If-Match on its ETag) and is listed, with
    the object holding its bytes; the other is refused. A commit whose record
    would come later than RECORD_WITHIN after its upload began lists nothing."""
    store = await s3_store(s3, threads, tmp_path / "a")
    key = await _orphan(store, "mine", MINE, b"orphan")
    with pytest.raises(AlreadyStored):
        await _commit(store, "mine", MINE, b"first")
    monkeypatch.setattr(orphans, "ORPHAN_AFTER", 1.0)
    await deferLater(reactor, 2.5)  # S3's Last-Modified has a 1 s resolution
    twin = await s3_store(s3, threads, tmp_path / "b")
    results = await DeferredList(
        [
            Deferred.fromCoroutine(_commit(store, "mine", MINE, b"first")),
            Deferred.fromCoroutine(_commit(twin, "mine", MINE, b"second")),
        ],
        consumeErrors=True,
    )
    won = [r for ok, r in results if ok]
    lost = [r for ok, r in results if not ok]
    assert len(won) == 1 and len(lost) == 1, results
    assert lost[0].check(AlreadyStored)
    listed = await store.reread(RELEASES, "mine", MINE)
    data, _ = await store.bucket.get(key)
    assert listed.info.hashes["sha256"] == _sha(data) == won[0].info.hashes["sha256"]
    assert data in (b"first", b"second")

    monkeypatch.setattr("pypicache.storage.s3.store.RECORD_WITHIN", -1.0)
    with pytest.raises(BucketError, match="not listed"):
        await _commit(store, "late", "late-1.0-py3-none-any.whl", b"late")
    assert await store.reread(RELEASES, "late", "late-1.0-py3-none-any.whl") is None


@pytest_twisted.ensureDeferred
async def test_uploads_and_cleanup_on_orphans(s3, threads, tmp_path, monkeypatch):
    """Through a daemon on the bucket: twine's upload of other bytes under
    the name of a fresh unlisted archive is a 409; once it is an orphan
    (older than ORPHAN_AFTER) the upload replaces it and its bytes are
    served. ``pypicache-admin cleanup --storage ...`` names the old orphans
    (``--dry-run``), then removes them (and what is kept beside them), never
    a fresh unlisted archive nor a listed one."""
    store = await s3_store(s3, threads, tmp_path / "a")
    world = await start_world(tmp_path, [], s3_bucket=store.bucket, s3_prefix="pypi")
    try:
        wheel = build_wheel(tmp_path / "dist", "mine", "1.0")
        await _orphan(store, "mine", wheel.name, b"left behind")
        refused = await twine_upload(world.daemon.url, [wheel], tmp_path)
        assert not refused.ok and "409" in refused.out + refused.err, refused
        monkeypatch.setattr(orphans, "ORPHAN_AFTER", 5.0)
        await deferLater(reactor, 6.0)
        (await twine_upload(world.daemon.url, [wheel], tmp_path)).check()
        answer = await world.daemon.get(f"packages/mine/{wheel.name}")
        assert await answer.content() == wheel.read_bytes()

        old = await _orphan(store, "old", "old-1.0-py3-none-any.whl", b"old")
        await store.bucket.put(old + ".metadata", b"Name: old\n")
        await deferLater(reactor, 6.0)
        fresh = await _orphan(store, "new", "new-1.0-py3-none-any.whl", b"new")
        now = time.time()  # what cleanup judges by, however long it takes
        monkeypatch.setattr(adminbucket, "_now", lambda: now)
        argv = ["--storage", s3.url("pypi"), "--s3-endpoint-url", s3.endpoint]
        argv += ["--evict-unused-after", "90d"]
        out = io.StringIO()
        assert await deferToThread(main, ["cleanup", *argv, "-n"], out, out) == 0
        assert f"would remove orphan {old} (3 bytes)" in out.getvalue(), out
        assert f"would remove orphan {old}.metadata" in out.getvalue(), out
        assert fresh not in out.getvalue() and "mine" not in out.getvalue(), out
        assert await store.bucket.head(old) is not None
        out = io.StringIO()
        assert await deferToThread(main, ["cleanup", *argv], out, out) == 0
        assert f"removed orphan {old} (3 bytes)" in out.getvalue(), out
        assert "2 orphaned objects" in out.getvalue(), out
        assert await store.bucket.head(old) is None
        assert await store.bucket.head(old + ".metadata") is None
        assert await store.bucket.head(fresh) is not None
        assert await store.reread(RELEASES, "mine", wheel.name) is not None
    finally:
        await world.stop()
