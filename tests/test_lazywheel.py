"""Core metadata for every wheel, read by ranges when the upstream offers no ``.metadata``."""

import hashlib
import io
import json
import os
import sys
import zipfile

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import DeferredList, ensureDeferred

from pypicache.index.model import DistFile
from pypicache.proxy.lazywheel import metadata_from
from pypicache.proxy.merging import advertised
from pypicache.proxy.ranges import Missing, Pieces, SparseFile
from tests.clients import clean_env, pip_install, run, uv_binary
from tests.daemon import start_world
from tests.packages import build_wheel

JSON = "application/vnd.pypi.simple.v1+json"


def own_metadata(path) -> bytes:
    """The ``*.dist-info/METADATA`` member of a wheel, as zipfile reads it."""
    with zipfile.ZipFile(path) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return zf.read(name)


def metadata_first_wheel(directory, name: str, size: int) -> "os.PathLike":
    """A wheel whose ``.dist-info`` comes first and ``size`` random bytes after it,
    so that its METADATA lies far from the tail (and, deflated, is ~30 KB)."""
    path = directory / f"{name}-1.0-py3-none-any.whl"
    dist_info = f"{name}-1.0.dist-info"
    text = "".join(
        f"Classifier: Topic :: Thing {i} :: {os.urandom(8).hex()}\n"
        for i in range(2000)
    )
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n{text}".encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{dist_info}/METADATA", metadata)
        zf.writestr(
            f"{dist_info}/WHEEL",
            "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{name}/__init__.py", os.urandom(size), zipfile.ZIP_STORED)
        zf.writestr(f"{dist_info}/RECORD", "")
    return path


def zip64_wheel(directory, name: str) -> "os.PathLike":
    """A small wheel written with zip64 end records (as zipfile writes them past
    65,535 members: the limit is lowered while it is written)."""
    path = directory / f"{name}-1.0-py3-none-any.whl"
    limit = zipfile.ZIP_FILECOUNT_LIMIT
    zipfile.ZIP_FILECOUNT_LIMIT = 2
    try:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{name}/__init__.py", os.urandom(300_000), zipfile.ZIP_STORED)
            zf.writestr(
                f"{name}-1.0.dist-info/METADATA",
                f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
            )
            zf.writestr(f"{name}-1.0.dist-info/RECORD", "")
    finally:
        zipfile.ZIP_FILECOUNT_LIMIT = limit
    assert b"PK\x06\x06" in path.read_bytes()[-200:]
    return path


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """app -> lib (1.0 and 2.0) -> leaf, all wheels; and a wheel with its METADATA up front."""
    d = tmp_path_factory.mktemp("lazytree")
    return {
        "app": build_wheel(d, "app", "1.0", requires=["lib>=1"]),
        "lib1": build_wheel(d, "lib", "1.0"),
        "lib2": build_wheel(
            d,
            "lib",
            "2.0",
            requires=["leaf"],
            module_body="X = %r\n" % os.urandom(200_000).hex(),
        ),
        "leaf": build_wheel(d, "leaf", "3.0"),
        "front": metadata_first_wheel(d, "front", 300_000),
        "wide": zip64_wheel(d, "wide"),
    }


async def no_metadata_world(tmp_path, tree, mode="json", ranges=True, **options):
    """A daemon in front of an upstream that offers no ``.metadata``."""
    world = await start_world(tmp_path, list(tree.values()), mode, timeout=5, **options)
    world.index.offer_metadata = False
    world.index.ranges = ranges
    return world


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


async def kept(world, path):
    """The ``.metadata`` kept for a wheel, once written (in the background)."""
    project = path.name.split("-")[0]
    where = world.cache / "mirror" / project / (path.name + ".metadata")
    for _ in range(200):
        if where.exists():
            return where
        await sleep(0.02)
    raise AssertionError(f"{where} was never written")


def wheel_requests(world, filename):
    """The upstream's requests for the wheel itself: (method, Range header or None)."""
    return [
        (r.method, r.headers.get("range"))
        for r in world.index.requests
        if r.path == f"/files/{filename}"
    ]


async def get_metadata(world, path):
    filename = path.name
    project = filename.split("-")[0]
    response = await world.daemon.get(f"packages/{project}/{filename}.metadata")
    return response.code, await response.content()


# -- pure: the sparse file and the reader over it ------------------------------


def test_pieces_merge_and_name_what_is_missing():
    """Pieces join overlapping and touching ranges, and a read names the first gap."""
    pieces = Pieces(100)
    pieces.add(10, b"a" * 10)
    pieces.add(30, b"c" * 10)
    with pytest.raises(Missing) as missing:
        pieces.read(5, 35)
    assert (missing.value.start, missing.value.end) == (5, 10)
    with pytest.raises(Missing) as missing:
        pieces.read(12, 35)
    assert (missing.value.start, missing.value.end) == (20, 30)
    pieces.add(15, b"b" * 15)
    assert pieces.read(10, 40) == b"a" * 5 + b"b" * 15 + b"c" * 10
    assert pieces.held == 30
    assert pieces.next_start(0) == 10 and pieces.next_start(10) == 100
    with pytest.raises(ValueError):
        pieces.add(95, b"x" * 10)


def test_sparse_reader_gives_the_members_own_bytes(tree):
    """Over the ranges it asks for, the reader returns exactly the wheel's METADATA."""
    data = tree["front"].read_bytes()
    pieces = Pieces(len(data))
    pieces.add(len(data) - 65536, data[-65536:])
    asked = []
    while True:
        try:
            content = metadata_from(pieces, tree["front"].name)
            break
        except Missing as m:
            asked.append((m.start, m.end))
            pieces.add(m.start, data[m.start : m.end])
    assert content == own_metadata(tree["front"])
    assert asked and pieces.held < len(data) / 2


def test_sparse_file_seeks_like_a_file():
    """SparseFile seeks from the start, the current position and the end."""
    pieces = Pieces(10)
    pieces.add(0, b"0123456789")
    f = SparseFile(pieces)
    assert f.seek(-3, io.SEEK_END) == 7 and f.read() == b"789"
    f.seek(2)
    f.seek(2, io.SEEK_CUR)
    assert f.read(2) == b"45" and f.tell() == 6
    with pytest.raises(OSError):
        f.seek(-11, io.SEEK_END)


# -- pages ---------------------------------------------------------------------


def test_what_pages_offer_of_core_metadata():
    """Every wheel offers core metadata (its hash when known, the upstream's
    first); an sdist only what the upstream offers."""
    digests = {"w-2.0-py3-none-any.whl": "d" * 64}.get
    wheel = DistFile("w-1.0-py3-none-any.whl")
    assert advertised(wheel, digests) is True
    assert advertised(DistFile("w-2.0-py3-none-any.whl"), digests) == {
        "sha256": "d" * 64
    }
    upstream = DistFile("w-2.0-py3-none-any.whl", core_metadata={"sha256": "u" * 64})
    assert advertised(upstream, digests) == {"sha256": "u" * 64}
    assert advertised(DistFile("s-1.0.tar.gz"), digests) is False
    assert advertised(DistFile("s-1.0.tar.gz", core_metadata=True), digests) is True


@pytest.mark.parametrize("mode", ["html", "json"])
@pytest_twisted.ensureDeferred
async def test_every_wheel_offers_core_metadata(tmp_path, tree, mode):
    """With no .metadata upstream, pages still offer core metadata for every wheel
    (true: hash unknown), then its sha256 once it is kept, in HTML and JSON."""
    world = await no_metadata_world(tmp_path, tree, mode, page_ttl=0)
    try:
        lib2 = tree["lib2"].name
        response = await world.daemon.get("simple/lib/", headers={"Accept": JSON})
        files = {
            f["filename"]: f for f in json.loads(await response.content())["files"]
        }
        assert files[lib2]["core-metadata"] is True
        html = await (await world.daemon.get("simple/lib/")).text()
        assert 'data-core-metadata="true"' in html
        assert 'data-dist-info-metadata="true"' in html
        code, content = await get_metadata(world, tree["lib2"])
        assert code == 200
        digest = hashlib.sha256(content).hexdigest()
        # A new version of the page (page_ttl=0: revalidated) gives the hash.
        response = await world.daemon.get("simple/lib/", headers={"Accept": JSON})
        files = {
            f["filename"]: f for f in json.loads(await response.content())["files"]
        }
        assert files[lib2]["core-metadata"] == {"sha256": digest}
        assert files[tree["lib1"].name]["core-metadata"] is True
        html = await (await world.daemon.get("simple/lib/")).text()
        assert f'data-core-metadata="sha256={digest}"' in html
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_upstream_metadata_hash_is_not_remembered_again(tmp_path, tree):
    """A ``.metadata`` fetched from an upstream whose page gives its hash is
    kept on disk, and pages offer the upstream's hash, but its digest is not
    remembered in memory too (5 MB of them in a ten-minute soak)."""
    world = await start_world(tmp_path, list(tree.values()), "json", timeout=5)
    try:
        path = tree["lib2"]
        code, content = await get_metadata(world, path)
        assert code == 200
        assert (await kept(world, path)).read_bytes() == content
        kept_metadata = world.daemon.app.mirror._kept
        assert not kept_metadata.knows(path.name)
        response = await world.daemon.get("simple/lib/", headers={"Accept": JSON})
        files = {
            f["filename"]: f for f in json.loads(await response.content())["files"]
        }
        digest = hashlib.sha256(content).hexdigest()
        assert files[path.name]["core-metadata"] == {"sha256": digest}
    finally:
        await world.stop()


# -- reading METADATA by ranges --------------------------------------------------


@pytest.mark.parametrize(
    "key, mode",
    [("lib2", "json"), ("front", "json"), ("wide", "json"), ("front", "html")],
)
@pytest_twisted.ensureDeferred
async def test_metadata_read_by_ranges_is_the_wheels_own(tmp_path, tree, key, mode):
    """The .metadata of an uncached wheel (METADATA near the end, at the start,
    zip64 records; its size on the page or not, in HTML) is read with Range
    requests only (a fraction of the wheel), is byte-identical to its METADATA,
    and is kept."""
    world = await no_metadata_world(tmp_path, tree, mode)
    try:
        path = tree[key]
        code, content = await get_metadata(world, path)
        assert code == 200
        assert content == own_metadata(path)
        asked = wheel_requests(world, path.name)
        assert asked and all(r is not None for _, r in asked)
        if key == "front":  # METADATA far from the tail: more than one range
            assert len(asked) > 1
        assert world.index.bytes_sent[path.name] < path.stat().st_size / 2
        assert (await kept(world, path)).read_bytes() == content
        project = path.name.split("-")[0]
        assert not (world.cache / "mirror" / project / path.name).exists()
        # Served from disk afterwards.
        before = len(world.index.requests)
        assert await get_metadata(world, path) == (200, content)
        assert len(world.index.requests) == before
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_upstream_without_ranges_means_the_whole_wheel(tmp_path, tree):
    """An upstream that answers 200 to Range: the wheel is downloaded (verified,
    stored) and its METADATA served, the same bytes."""
    world = await no_metadata_world(tmp_path, tree, ranges=False)
    try:
        path = tree["lib2"]
        code, content = await get_metadata(world, path)
        assert (code, content) == (200, own_metadata(path))
        assert (world.cache / "mirror" / "lib" / path.name).exists()
        assert ("GET", None) in wheel_requests(world, path.name)
    finally:
        await world.stop()


@pytest.mark.parametrize("fault", ["shifted", "short", "unlabelled", "size", "flip"])
@pytest_twisted.ensureDeferred
async def test_wrong_range_answers_fall_back_to_the_whole_wheel(tmp_path, tree, fault):
    """A 206 that is not what was asked (another range, fewer bytes, no or a
    wrong Content-Range, flipped bytes) is never served: the whole wheel is."""
    world = await no_metadata_world(tmp_path, tree)
    try:
        path = tree["front"]
        world.index.range_fault(path.name, fault)
        code, content = await get_metadata(world, path)
        assert (code, content) == (200, own_metadata(path))
        assert ("GET", None) in wheel_requests(world, path.name)
        assert (world.cache / "mirror" / "front" / path.name).exists()
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_past_the_byte_limit_the_whole_wheel_is_read(tmp_path, tree, monkeypatch):
    """A wheel that would need more range bytes than the limit is downloaded whole."""
    import pypicache.proxy.lazywheel

    monkeypatch.setattr(pypicache.proxy.lazywheel, "MAX_FETCHED", 100_000)
    world = await no_metadata_world(tmp_path, tree)
    try:
        path = tree["front"]
        code, content = await get_metadata(world, path)
        assert (code, content) == (200, own_metadata(path))
        assert ("GET", None) in wheel_requests(world, path.name)
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_a_wheel_with_two_dist_info_folders_has_no_metadata(tmp_path, tree):
    """A wheel the whole-file reader refuses is refused by ranges too: after the
    whole download, 404, and nothing kept."""
    path = tmp_path / "two-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for folder in ("two-1.0.dist-info", "other-1.0.dist-info"):
            zf.writestr(f"{folder}/METADATA", "Metadata-Version: 2.1\nName: two\n")
    world = await no_metadata_world(tmp_path, {"two": path})
    try:
        code, body = await get_metadata(world, path)
        assert code == 404, body
        assert not (world.cache / "mirror" / "two" / (path.name + ".metadata")).exists()
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_upstream_faults_answer_502_and_504(tmp_path, tree):
    """A range read that breaks (connection cut) is a 502, one that stalls a 504;
    nothing is kept."""
    world = await no_metadata_world(tmp_path, tree, page_ttl=600)
    try:
        await world.daemon.get("simple/lib/")
        path = tree["lib2"]
        world.index.die_midway(path.name)
        code, body = await get_metadata(world, path)
        assert code == 502, body
        world.index.stall(path.name, after=0)
        code, body = await get_metadata(world, path)
        assert code == 504, body
        assert not (world.cache / "mirror" / "lib" / (path.name + ".metadata")).exists()
        world.index.heal(path.name)
        await world.upstream.stop()
        code, body = await get_metadata(world, path)
        assert code == 502 and b"nreachable" in body
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_concurrent_clients_share_one_set_of_range_reads(tmp_path, tree):
    """Five clients asking for the same .metadata cause one set of range reads."""
    world = await no_metadata_world(tmp_path, tree)
    try:
        path = tree["front"]
        await world.daemon.get("simple/front/")
        hold = world.index.hold(path.name)
        requests = [get_metadata(world, path) for _ in range(5)]
        answers = DeferredList(
            [ensureDeferred(r) for r in requests], consumeErrors=True
        )
        await hold.wait_for(1)
        hold.release()
        results = await answers
        expected = own_metadata(path)
        assert all(ok and value == (200, expected) for ok, value in results)
        alone = await no_metadata_world(tmp_path / "alone", tree)
        try:
            await get_metadata(alone, path)
            assert len(wheel_requests(world, path.name)) == len(
                wheel_requests(alone, path.name)
            )
        finally:
            await alone.stop()
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_the_wheel_arriving_later_is_checked_against_what_was_kept(
    tmp_path, tree
):
    """When the wheel arrives, the .metadata kept ahead of it is checked: kept
    (with its hash recorded) if it is the wheel's own, else replaced by it."""
    world = await no_metadata_world(tmp_path, tree)
    try:
        for key, tamper in (("lib2", False), ("leaf", True)):
            path = tree[key]
            project = path.name.split("-")[0]
            code, content = await get_metadata(world, path)
            assert code == 200
            kept_file = await kept(world, path)
            if tamper:
                kept_file.write_bytes(b"Metadata-Version: 2.1\nName: wrong\n")
            response = await world.daemon.get(f"packages/{project}/{path.name}")
            assert await response.content() == path.read_bytes()
            await world.stored(project, path.name)  # the client had it once verified
            for _ in range(100):  # checked in a thread after the wheel is stored
                sidecar = world.cache / "mirror" / project / (path.name + ".json")
                info = json.loads(sidecar.read_text())["file"]
                if isinstance(info["core_metadata"], dict):
                    break
                await sleep(0.05)
            own = own_metadata(path)
            assert kept_file.read_bytes() == own
            assert info["core_metadata"] == {"sha256": hashlib.sha256(own).hexdigest()}
            assert await get_metadata(world, path) == (200, own)
    finally:
        await world.stop()


# -- real clients ----------------------------------------------------------------


def assert_resolved_by_ranges(world, chosen, whole_after=False):
    """Each chosen wheel's metadata was read by ranges, and no wheel was downloaded
    whole (``whole_after``: before the last range read, when the versions were chosen).
    """
    files = [r for r in world.index.requests if r.path.startswith("/files/")]
    ranged = [i for i, r in enumerate(files) if r.headers.get("range")]
    whole = [i for i, r in enumerate(files) if not r.headers.get("range")]
    assert {files[i].path.rsplit("/", 1)[1] for i in ranged} >= set(chosen)
    if whole_after:
        assert not whole or min(whole) > max(ranged), [r.path for r in files]
    else:
        assert not whole, [files[i].path for i in whole]
    assert world.index.count(".metadata") == 0


@pytest_twisted.ensureDeferred
async def test_pip_resolves_with_metadata_read_by_ranges(tmp_path, tree):
    """pip install --dry-run through the proxy picks lib 2.0 from metadata read
    by ranges, before any wheel is downloaded whole; a real install then works."""
    world = await no_metadata_world(tmp_path, tree)
    try:
        result = await pip_install(
            world.daemon.url + "simple/",
            ["app"],
            tmp_path / "t",
            tmp_path,
            ["--dry-run", "--report", str(tmp_path / "report.json")],
        )
        result.check()
        report = json.loads((tmp_path / "report.json").read_text())
        chosen = {
            i["metadata"]["name"]: i["metadata"]["version"] for i in report["install"]
        }
        assert chosen == {"app": "1.0", "lib": "2.0", "leaf": "3.0"}
        # pip (23) downloads the chosen wheels after resolving, even with --dry-run.
        wheels = [tree[k].name for k in ("app", "lib2", "leaf")]
        assert_resolved_by_ranges(world, wheels, whole_after=True)
        result = await pip_install(
            world.daemon.url + "simple/", ["app"], tmp_path / "t", tmp_path
        )
        result.check()
        assert {p.name.split("-")[0] for p in (tmp_path / "t").glob("*.dist-info")} == {
            "app",
            "lib",
            "leaf",
        }
    finally:
        await world.stop()


@pytest.mark.parametrize("mode", ["html", "json"])
@pytest_twisted.ensureDeferred
async def test_uv_resolves_with_metadata_read_by_ranges(tmp_path, tree, mode):
    """uv pip compile through the proxy resolves from metadata read by ranges,
    with no wheel downloaded whole."""
    world = await no_metadata_world(tmp_path, tree, mode)
    try:
        (tmp_path / "req.in").write_text("app\n")
        result = await run(
            [
                uv_binary(),
                "pip",
                "compile",
                "--no-config",
                "--index-url",
                world.daemon.url + "simple/",
                "--python",
                sys.executable,
                "req.in",
            ],
            clean_env(tmp_path),
            cwd=tmp_path,
        )
        result.check()
        assert "lib==2.0" in result.out and "leaf==3.0" in result.out
        assert_resolved_by_ranges(
            world, [tree[k].name for k in ("app", "lib2", "leaf")]
        )
    finally:
        await world.stop()
