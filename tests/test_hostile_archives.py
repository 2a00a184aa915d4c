# -*- test-case-name: tests.test_hostile_archives -*-
"""Hostile archives, forms and ranges: every one a short 4xx, never a 500, a hang or a leftover file.

Archives are built here with zipfile and tarfile, then patched byte by byte
where the libraries refuse to write what an attacker would (deflate64 entries,
encrypted flags, corrupt streams, sizes that lie). They are uploaded through
every upload route, served by a fake upstream and cached, and read directly
by :mod:`pypicache.index.archives`. Ranges are sent raw, with a deadline on
every request, so that a hang fails the test instead of hanging it.
"""

import hashlib
import io
import struct
import tarfile
import tracemalloc
import uuid
import zipfile
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, ensureDeferred

from pypicache.errors import BadRequest
from pypicache.index.archives import (
    MAX_METADATA,
    inspect_archive,
    read_wheel_metadata,
    sdist_members,
)
from pypicache.web.files import MAX_RANGES, byte_spans
from tests.daemon import start_world
from tests.packages import build_wheel, metadata_text
from tests.webclient import Answer, multipart, send

BOMB_SIZE = 64 * 1024 * 1024
DEADLINE = 10


# -- building hostile archives ---------------------------------------------------


def _zip(entries: list[tuple[str, bytes, int, int]]) -> bytes:
    """A zip of ``(name, data, unix mode, compression method)`` entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data, mode, method in entries:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 2, 3, 4, 6))
            info.compress_type = method
            info.external_attr = mode << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def _wheel_entries(name: str, metadata: bytes | None = None, mode: int = 0o644):
    dist_info = f"{name}-1.0.dist-info"
    meta = metadata_text(name, "1.0").encode() if metadata is None else metadata
    return [
        (f"{name}/__init__.py", b"", 0o644, zipfile.ZIP_DEFLATED),
        (f"{dist_info}/METADATA", meta, mode, zipfile.ZIP_DEFLATED),
        (f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\n", 0o644, zipfile.ZIP_DEFLATED),
        (f"{dist_info}/RECORD", b"", 0o644, zipfile.ZIP_DEFLATED),
    ]


def _patch(
    raw: bytes,
    name: str,
    *,
    method: int | None = None,
    flags: int = 0,
    size: int | None = None,
    garbage: bool = False,
) -> bytes:
    """Rewrite one zip entry in both its local and its central header.

    :param method: a new compression method (9 is deflate64).
    :param flags: general purpose bits to set (1 is "encrypted").
    :param size: a new (lying) uncompressed size.
    :param garbage: overwrite the entry's compressed bytes with ``0xff``.
    """
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        info = archive.getinfo(name)
    data = bytearray(raw)
    local = info.header_offset
    assert data[local : local + 4] == b"PK\x03\x04"
    central = data.find(b"PK\x01\x02" + bytes(data[local + 4 : local + 6]))
    while data[central + 46 : central + 46 + len(name)] != name.encode():
        central = data.find(b"PK\x01\x02", central + 4)
    for header, at_flags, at_method, at_size in (
        (local, 6, 8, 22),
        (central, 8, 10, 24),
    ):
        old_flags = struct.unpack_from("<H", data, header + at_flags)[0]
        struct.pack_into("<H", data, header + at_flags, old_flags | flags)
        if method is not None:
            struct.pack_into("<H", data, header + at_method, method)
        if size is not None:
            struct.pack_into("<I", data, header + at_size, size)
    if garbage:
        name_length, extra_length = struct.unpack_from("<HH", data, local + 26)
        start = local + 30 + name_length + extra_length
        data[start : start + info.compress_size] = b"\xff" * info.compress_size
    return bytes(data)


def _bomb_wheel(name: str, real: int = BOMB_SIZE) -> bytes:
    """A wheel whose METADATA is ``real`` bytes (valid headers, then padding), deflated."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr(f"{name}/__init__.py", b"")
        with zf.open(f"{name}-1.0.dist-info/METADATA", "w", force_zip64=True) as f:
            head = metadata_text(name, "1.0").encode()
            f.write(head)
            left = real - len(head)
            while left > 0:
                f.write(b"x" * min(left, 1 << 20))
                left -= 1 << 20
        zf.writestr(f"{name}-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0\n")
    return buffer.getvalue()


def hostile_wheel(kind: str, name: str = "hostile") -> bytes:
    """A wheel of project ``name`` 1.0 broken in the way ``kind`` says."""
    meta = f"{name}-1.0.dist-info/METADATA"
    entries = _wheel_entries(name)
    if kind == "deflate64":
        stored = [(n, d, m, zipfile.ZIP_STORED) for n, d, m, _ in entries]
        return _patch(_zip(stored), meta, method=9)
    if kind == "encrypted":
        return _patch(_zip(entries), meta, flags=0x1)
    if kind == "corrupt-deflate":
        return _patch(_zip(entries), meta, garbage=True)
    if kind == "lying-size":
        # Declares 100 bytes; the stream holds megabytes.
        return _patch(_bomb_wheel(name, 8 * 1024 * 1024), meta, size=100)
    if kind == "bomb":
        return _bomb_wheel(name)
    if kind == "symlink":
        return _zip(_wheel_entries(name, b"../../etc/passwd", 0o120777))
    if kind == "fifo":
        return _zip(_wheel_entries(name, b"", 0o010644))
    if kind == "two-dist-info":
        other = "other-1.0.dist-info/METADATA"
        return _zip(entries + [(other, b"Name: other\n", 0o644, 8)])
    if kind == "no-metadata":
        return _zip([e for e in entries if not e[0].endswith("METADATA")])
    if kind == "dot-dot":
        return _zip(entries + [("../evil.py", b"", 0o644, 8)])
    if kind == "truncated":
        whole = _zip(entries)
        return whole[: len(whole) // 2]
    raise AssertionError(kind)


def _tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.mtime, info.mode = 1704164646, info.mode or 0o644
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _member(name: str, data: bytes | None = None, **fields) -> tuple:
    info = tarfile.TarInfo(name)
    if data is not None:
        info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def hostile_sdist(kind: str) -> tuple[str, bytes]:
    """An sdist of ``hostile`` 1.0 broken in the way ``kind`` says: (filename, bytes)."""
    top = "hostile-1.0"
    pkg_info = metadata_text("hostile", "1.0", metadata_version="2.2").encode()
    base = [
        _member(top, type=tarfile.DIRTYPE, mode=0o755),
        _member(f"{top}/pyproject.toml", b"[project]\nname = 'hostile'\n"),
    ]
    good = _member(f"{top}/PKG-INFO", pkg_info)
    special = {
        "pkg-info-symlink": dict(type=tarfile.SYMTYPE, linkname="pyproject.toml"),
        "pkg-info-hardlink": dict(
            type=tarfile.LNKTYPE, linkname=f"{top}/pyproject.toml"
        ),
        "pkg-info-directory": dict(type=tarfile.DIRTYPE, mode=0o755),
        "pkg-info-fifo": dict(type=tarfile.FIFOTYPE),
        "pkg-info-device": dict(type=tarfile.CHRTYPE, devmajor=1, devminor=3),
    }
    if kind in special:
        return f"{top}.tar.gz", _tar_gz(
            base + [_member(f"{top}/PKG-INFO", **special[kind])]
        )
    if kind == "dot-dot":
        extra = [_member(f"{top}/../../evil.py", b"x = 1\n")]
    elif kind == "absolute":
        extra = [_member("/tmp/evil.py", b"x = 1\n")]
    elif kind == "symlink-out":
        extra = [_member(f"{top}/escape", type=tarfile.SYMTYPE, linkname="../../x")]
    elif kind == "pkg-info-too-large":
        big = pkg_info + b"\n" + b"x" * MAX_METADATA
        return f"{top}.tar.gz", _tar_gz(base + [_member(f"{top}/PKG-INFO", big)])
    elif kind == "truncated":
        whole = _tar_gz(base + [good])
        return f"{top}.tar.gz", whole[: len(whole) // 2]
    elif kind == "zip-deflate64":
        raw = _zip([(f"{top}/PKG-INFO", pkg_info, 0o644, zipfile.ZIP_STORED)])
        return f"{top}.zip", _patch(raw, f"{top}/PKG-INFO", method=9)
    else:
        raise AssertionError(kind)
    return f"{top}.tar.gz", _tar_gz(base + [good] + extra)


WHEEL = "hostile-1.0-py3-none-any.whl"

#: (name, kind, a word the 400's reason must contain)
HOSTILE = [
    *[
        (f"wheel-{kind}", kind, reason)
        for kind, reason in [
            ("deflate64", "method 9"),
            ("encrypted", "encrypted"),
            ("corrupt-deflate", "not a readable archive"),
            ("lying-size", "not a readable archive"),
            ("bomb", "larger than"),
            ("symlink", "symlink"),
            ("fifo", "FIFO"),
            ("two-dist-info", ".dist-info folders"),
            ("no-metadata", "METADATA"),
            ("dot-dot", "outside"),
            ("truncated", "not a readable archive"),
        ]
    ],
    *[
        (f"sdist-{kind}", kind, reason)
        for kind, reason in [
            ("pkg-info-symlink", "symlink"),
            ("pkg-info-hardlink", "hardlink"),
            ("pkg-info-directory", "directory"),
            ("pkg-info-fifo", "FIFO"),
            ("pkg-info-device", "device"),
            ("dot-dot", "outside"),
            ("absolute", "outside"),
            ("symlink-out", "outside"),
            ("pkg-info-too-large", "larger than"),
            ("truncated", "not a readable archive"),
            ("zip-deflate64", "method 9"),
        ]
    ],
]


@pytest.fixture(scope="module")
def hostile() -> dict[str, tuple[str, bytes]]:
    """Every hostile archive, by case name: (filename, bytes); built once."""
    built = {}
    for case, kind, _ in HOSTILE:
        if case.startswith("wheel-"):
            built[case] = (WHEEL, hostile_wheel(kind))
        else:
            built[case] = hostile_sdist(kind)
    return built


# -- reading them directly -------------------------------------------------------


@pytest.mark.parametrize("case, kind, reason", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_inspect_refuses_with_reason(tmp_path, hostile, case, kind, reason):
    """inspect_archive (uploads, the folder scan) refuses each hostile archive with a BadRequest naming why."""
    filename, content = hostile[case]
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(BadRequest) as e:
        inspect_archive(str(path), filename)
    assert reason in e.value.message
    assert str(tmp_path) not in e.value.message  # no server paths


@pytest.mark.parametrize(
    "kind", ["deflate64", "encrypted", "corrupt-deflate", "lying-size", "bomb"]
)
def test_best_effort_metadata_is_none(tmp_path, kind):
    """read_wheel_metadata (caching, the JSON API) gives None for a hostile wheel, holding far less than the bomb."""
    path = tmp_path / WHEEL
    path.write_bytes(hostile_wheel(kind))
    tracemalloc.start()
    try:
        assert read_wheel_metadata(str(path)) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * MAX_METADATA


def test_metadata_at_the_limit_is_read(tmp_path):
    """A METADATA of exactly MAX_METADATA bytes is still read; one more byte is refused."""
    head = metadata_text("edge", "1.0").encode()
    for size, ok in ((MAX_METADATA, True), (MAX_METADATA + 1, False)):
        path = tmp_path / "edge-1.0-py3-none-any.whl"
        meta = head + b"x" * (size - len(head))
        path.write_bytes(_zip(_wheel_entries("edge", meta)))
        assert (read_wheel_metadata(str(path)) == meta) is ok


def test_sdist_members_of_a_good_sdist(tmp_path):
    """A well-formed sdist's PKG-INFO and pyproject.toml come back whole."""
    good = tmp_path / "good-1.0.tar.gz"
    top = "good-1.0"
    good.write_bytes(
        _tar_gz([_member(f"{top}/PKG-INFO", b"Name: good\n"), _member(f"{top}/x", b"")])
    )
    assert sdist_members(str(good), good.name, {"PKG-INFO": 100}) == {
        "PKG-INFO": b"Name: good\n"
    }


# -- uploads -------------------------------------------------------------------------


@pytest_twisted.async_yield_fixture(scope="module")
async def world(tmp_path_factory):
    """One daemon (and an empty fake upstream) shared by the refusal tests."""
    w = await start_world(tmp_path_factory.mktemp("hostile"), [], timeout=5)
    yield w
    await w.stop()


def private_files(cache: Path) -> list[str]:
    """Every file under ``private/``, temporary ones included."""
    private = cache / "private"
    return sorted(str(p.relative_to(cache)) for p in private.rglob("*") if p.is_file())


async def deadline(awaitable, seconds: float = DEADLINE):
    """Await a coroutine or Deferred, failing (not hanging) after ``seconds``."""
    d = ensureDeferred(awaitable)
    d.addTimeout(seconds, reactor)
    return await d


def twine_fields(filename: str, content: bytes) -> list[tuple[str, str]]:
    return [
        (":action", "file_upload"),
        ("protocol_version", "1"),
        ("name", "hostile"),
        ("version", "1.0"),
        ("filetype", "bdist_wheel" if filename.endswith(".whl") else "sdist"),
        ("sha256_digest", hashlib.sha256(content).hexdigest()),
    ]


async def upload(daemon, route: str, filename: str, content: bytes) -> Answer:
    """Upload ``content`` as ``filename`` by one of the upload routes."""
    if route == "put":
        return await deadline(
            send(daemon, "PUT", f"/packages/hostile/{filename}", content)
        )
    if route == "twine":
        fields, field = twine_fields(filename, content), "content"
        path = "/"
    else:
        fields, field, path = [], "sdist", "/uploadpackage/"
    content_type, body = multipart(fields, [(field, filename.encode(), content)])
    return await deadline(
        send(daemon, "POST", path, body, {"Content-Type": content_type})
    )


async def assert_refused(world, answer: Answer, *words: str) -> None:
    """A 400 whose reason holds ``words``, no traceback, and the daemon alive."""
    assert answer.code == 400, answer
    for word in words:
        assert word.encode() in answer.body, answer
    assert b"Traceback" not in answer.body and b'File "' not in answer.body
    health = await deadline(send(world.daemon, "GET", "/health"))
    assert health.code == 200


ROUTES = ["put", "twine", "uploadpackage"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case, kind, reason", HOSTILE, ids=[h[0] for h in HOSTILE])
@pytest_twisted.ensureDeferred
async def test_hostile_upload_is_400(world, hostile, route, case, kind, reason):
    """Every hostile archive, by every upload route, is a 400 with its reason; nothing new under private/."""
    filename, content = hostile[case]
    before = private_files(world.cache)
    answer = await upload(world.daemon, route, filename, content)
    await assert_refused(world, answer, reason)
    assert private_files(world.cache) == before


@pytest.mark.parametrize("route", ["twine", "uploadpackage"])
@pytest_twisted.ensureDeferred
async def test_empty_filename_leaves_no_temp_file(world, route):
    """A file part with an empty filename is a 400 and leaves no .tmp- file in private/.incoming."""
    content = hostile_wheel("no-metadata")
    before = private_files(world.cache)
    answer = await upload(world.daemon, route, "", content)
    await assert_refused(world, answer, "filename")
    assert private_files(world.cache) == before
    assert not list((world.cache / "private").rglob(".tmp-*"))


def raw_form(parts: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    """A multipart body of ``(part headers, part body)`` pairs, built by hand."""
    boundary = uuid.uuid4().hex
    body = b"".join(
        f"--{boundary}\r\n{headers}\r\n\r\n".encode() + data + b"\r\n"
        for headers, data in parts
    )
    return (
        f"multipart/form-data; boundary={boundary}",
        body + f"--{boundary}--\r\n".encode(),
    )


def _field(name: str, value: bytes, charset: str | None) -> tuple[str, bytes]:
    headers = f'Content-Disposition: form-data; name="{name}"'
    if charset is not None:
        headers += f"\r\nContent-Type: text/plain; charset={charset}"
    return headers, value


#: (multipart route, the text field that goes wrong)
FORM_ROUTES = [
    ("/", ":action"),
    ("/legacy/", ":action"),
    ("/uploadpackage/", "comment"),
    ("/packages/hostile/hostile-1.0.tar.gz/yank", "reason"),
    ("/requirements.txt", "requirements"),
]


@pytest.mark.parametrize(
    "charset, value",
    [("x-bogus", b"file_upload"), ("base64", b"file_upload"), (None, b"\xff\xfe")],
    ids=["unknown-charset", "not-a-text-codec", "undecodable"],
)
@pytest.mark.parametrize("path, field", FORM_ROUTES, ids=[r[0] for r in FORM_ROUTES])
@pytest_twisted.ensureDeferred
async def test_bad_field_charset_is_400(world, path, field, charset, value):
    """A text field with an unknown charset, or bytes that do not decode, is a 400 naming the field on every multipart route."""
    wheel = hostile_wheel("no-metadata")
    file_part = (
        f'Content-Disposition: form-data; name="content"; filename="{WHEEL}"',
        wheel,
    )
    # The file part comes first, so that it is already spooled when the field fails.
    content_type, body = raw_form([file_part, _field(field, value, charset)])
    before = private_files(world.cache)
    answer = await deadline(
        send(world.daemon, "POST", path, body, {"Content-Type": content_type})
    )
    await assert_refused(world, answer, field)
    assert private_files(world.cache) == before


# -- caching hostile wheels from upstream ----------------------------------------------

UPSTREAM_KINDS = ["bomb", "deflate64", "encrypted", "corrupt-deflate", "lying-size"]


@pytest.fixture(scope="module")
def upstream_wheels(tmp_path_factory) -> dict[str, Path]:
    """Hostile wheels, one project each (``bomb``, ``deflate64``, ...), on disk."""
    d = tmp_path_factory.mktemp("upstream")
    wheels = {}
    for kind in UPSTREAM_KINDS:
        name = kind.replace("-", "_")
        path = d / f"{name}-1.0-py3-none-any.whl"
        path.write_bytes(hostile_wheel(kind, name))
        wheels[kind] = path
    return wheels


@pytest.mark.parametrize("kind", UPSTREAM_KINDS)
@pytest_twisted.ensureDeferred
async def test_hostile_wheel_from_upstream_is_served_without_metadata(
    tmp_path, upstream_wheels, kind
):
    """A hostile wheel from upstream is downloaded and served; no oversized .metadata is stored, and .metadata is a 404."""
    path = upstream_wheels[kind]
    project = path.name.split("-")[0].replace("_", "-")
    w = await start_world(tmp_path, [(path, {"metadata": False})], timeout=5)
    try:
        url = f"/packages/{project}/{path.name}"
        answer = await deadline(send(w.daemon, "GET", url))
        assert answer.code == 200 and answer.body == path.read_bytes()
        answer = await deadline(send(w.daemon, "GET", url + ".metadata"))
        assert answer.code == 404, answer
        answer = await deadline(send(w.daemon, "GET", f"/pypi/{project}/json"))
        assert answer.code == 200, answer
        assert answer.json()["info"]["requires_dist"] is None
        await task.deferLater(reactor, 0.2, lambda: None)  # the background extraction
        stored = list(w.cache.rglob("*.metadata"))
        assert all(p.stat().st_size <= MAX_METADATA for p in stored)
        assert not stored
    finally:
        await w.stop()


# -- ranges -----------------------------------------------------------------------------


def test_byte_spans():
    """Ranges are merged, suffixes clamped, too many ignored, none satisfiable is empty."""
    assert byte_spans(b"bytes=-10000", 9979) == [(0, 9979)]
    assert byte_spans(b"bytes=0-,0-,0-", 100) == [(0, 100)]
    assert byte_spans(b"bytes=0-9,5-19,30-39", 100) == [(0, 20), (30, 10)]
    assert byte_spans(b"bytes=10-19,20-29", 100) == [(10, 20)]
    assert byte_spans(b"bytes=90-200", 100) == [(90, 10)]
    assert byte_spans(b"bytes=100-", 100) == []
    assert byte_spans(b"bytes=-0", 100) == []
    assert byte_spans(b"bytes=5-1", 100) is None
    assert byte_spans(b"items=0-1", 100) is None
    assert byte_spans(b"bytes=x-1", 100) is None
    many = ",".join(f"{2 * i}-{2 * i}" for i in range(MAX_RANGES + 1)).encode()
    assert byte_spans(b"bytes=" + many, 100) is None
    assert byte_spans(b"bytes=" + b",".join([b"500-"] * (MAX_RANGES + 1)), 100) == []


@pytest.fixture(scope="module")
def small_wheel(tmp_path_factory) -> Path:
    """A real wheel smaller than 10,000 bytes (poetry asks for its last 10,000)."""
    path = build_wheel(tmp_path_factory.mktemp("small"), "small", "1.0")
    assert path.stat().st_size < 10_000
    return path


@pytest_twisted.async_yield_fixture()
async def range_world(tmp_path, small_wheel):
    w = await start_world(tmp_path, [small_wheel], timeout=5)
    yield w
    await w.stop()


async def get_range(world, wheel: Path, value: str) -> Answer:
    return await deadline(
        send(
            world.daemon, "GET", f"/packages/small/{wheel.name}", None, {"Range": value}
        )
    )


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "uncached"])
@pytest_twisted.ensureDeferred
async def test_suffix_longer_than_file(range_world, small_wheel, cached):
    """``Range: bytes=-10000`` on a smaller file is a 206 of the whole file with ``bytes 0-<size-1>/<size>``, cached or not."""
    if cached:
        await deadline(
            send(range_world.daemon, "GET", f"/packages/small/{small_wheel.name}")
        )
    content = small_wheel.read_bytes()
    answer = await get_range(range_world, small_wheel, "bytes=-10000")
    assert answer.code == 206, answer
    assert (
        answer.header("content-range") == f"bytes 0-{len(content) - 1}/{len(content)}"
    )
    assert answer.body == content


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "uncached"])
@pytest_twisted.ensureDeferred
async def test_thousands_of_ranges_send_the_file_once(range_world, small_wheel, cached):
    """3,000 ranges in one header get the whole file once (200), never 3,000 copies."""
    if cached:
        await deadline(
            send(range_world.daemon, "GET", f"/packages/small/{small_wheel.name}")
        )
    content = small_wheel.read_bytes()
    answer = await get_range(
        range_world, small_wheel, "bytes=" + ",".join(["0-"] * 3000)
    )
    assert answer.code == 200, answer
    assert answer.body == content
    spread = ",".join(f"{i}-{i}" for i in range(0, 2000, 2))  # 1,000 ranges
    answer = await get_range(range_world, small_wheel, "bytes=" + spread)
    assert answer.code == 200 and answer.body == content


@pytest_twisted.ensureDeferred
async def test_overlapping_and_unsatisfiable_ranges(range_world, small_wheel):
    """Overlapping ranges are merged into one part; ranges past the end are a 416."""
    content = small_wheel.read_bytes()
    await deadline(
        send(range_world.daemon, "GET", f"/packages/small/{small_wheel.name}")
    )
    answer = await get_range(range_world, small_wheel, "bytes=0-99,50-149,0-99")
    assert answer.code == 206, answer
    assert answer.header("content-range") == f"bytes 0-149/{len(content)}"
    assert answer.body == content[:150]
    answer = await get_range(range_world, small_wheel, "bytes=0-9,100-109")
    assert answer.code == 206 and answer.header("content-type").startswith(
        "multipart/byteranges"
    )
    assert content[:10] in answer.body and len(answer.body) < 1000
    for value in ["bytes=99999-", "bytes=" + ",".join(["99999-"] * 20)]:
        answer = await get_range(range_world, small_wheel, value)
        assert answer.code == 416, answer
        assert answer.header("content-range") == f"bytes */{len(content)}"


@pytest_twisted.ensureDeferred
async def test_range_while_downloading_waits_for_the_file(range_world, small_wheel):
    """A Range request for a file still downloading is answered (206) once it is stored, not left hanging."""
    hold = range_world.index.hold(small_wheel.name)
    first = Deferred.fromCoroutine(
        send(range_world.daemon, "GET", f"/packages/small/{small_wheel.name}")
    )
    await deadline(hold.wait_for(1))
    ranged = Deferred.fromCoroutine(get_range(range_world, small_wheel, "bytes=-100"))
    hold.release()
    content = small_wheel.read_bytes()
    answer = await deadline(ranged)
    assert answer.code == 206 and answer.body == content[-100:]
    assert (await deadline(first)).body == content


@pytest_twisted.ensureDeferred
async def test_range_of_a_failed_download_is_an_error_not_a_hang(
    range_world, small_wheel
):
    """A Range request for a download that fails its hash check gets the error (502), promptly."""
    range_world.index.corrupt(small_wheel.name)
    answer = await get_range(range_world, small_wheel, "bytes=-100")
    assert answer.code == 502, answer


@pytest_twisted.ensureDeferred
async def test_head_of_uncached_file_advertises_ranges(range_world, small_wheel):
    """HEAD of a file not cached yet says ``Accept-Ranges: bytes`` and its length, like a cached one."""
    url = f"/packages/small/{small_wheel.name}"
    for _ in ("uncached", "cached"):
        answer = await deadline(send(range_world.daemon, "HEAD", url))
        assert answer.code == 200, answer
        assert answer.header("accept-ranges") == "bytes"
        assert answer.header("content-length") == str(small_wheel.stat().st_size)
        await deadline(send(range_world.daemon, "GET", url))


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_too_many_members_refused(tmp_path, monkeypatch, kind):
    """An archive with more members than MAX_MEMBERS is refused before its headers pile up in memory."""
    from pypicache.index import archives

    monkeypatch.setattr(archives, "MAX_MEMBERS", 10)
    if kind == "tar":
        path = tmp_path / "many-1.0.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for i in range(11):
                info = tarfile.TarInfo(f"many-1.0/f{i}")
                tar.addfile(info, io.BytesIO(b""))
    else:
        path = tmp_path / "many-1.0.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for i in range(11):
                archive.writestr(f"many-1.0/f{i}", b"")
    with pytest.raises(BadRequest, match="more than 10 members"):
        inspect_archive(str(path), path.name)
