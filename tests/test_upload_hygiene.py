"""Upload hygiene: Metadata-Versions packaging knows are taken; sdists that are
not gzip tars, wheels with bzip2/LZMA entries and zip/tar polyglots are refused
with a 400 and a reason, by every upload path (twine, uv publish, PUT,
/uploadpackage/), and skipped with a reason by the folder scan. Nothing refused
leaves a byte on disk.
"""

import bz2
import gzip
import io
import lzma
import struct
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import pytest_twisted
from twisted.python.filepath import FilePath

from pypicache.errors import BadRequest
from pypicache.index.hygiene import (
    check_container,
    check_metadata_version,
    known_metadata_versions,
)
from pypicache.private.scan import scan_private
from pypicache.storage.filesystem import FilesystemStore
from tests.clients import twine_upload, uv_publish
from tests.daemon import start_world
from tests.packages import _wheel_text, _write_wheel, build_sdist, metadata_text
from tests.test_uploads import legacy_fields, post_form, private_files, snapshot
from tests.webclient import send


def make_wheel(
    directory: Path,
    name: str,
    version: str,
    *,
    metadata_version: str = "2.1",
    method: int = zipfile.ZIP_DEFLATED,
    first: tuple[str, bytes] | None = None,
) -> Path:
    """A wheel of ``name`` whose entries use ``method``, optionally with
    ``first`` written as its first entry (a raw ``ZipInfo`` name and extra)."""
    directory.mkdir(parents=True, exist_ok=True)
    plain = directory / "plain.whl"
    dist_info = f"{name}-{version}.dist-info"
    text = metadata_text(name, version, metadata_version=metadata_version)
    _write_wheel(
        plain,
        {f"{name}/__init__.py": b"", f"{dist_info}/METADATA": text.encode()},
        dist_info,
        _wheel_text("py3-none-any"),
    )
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w") as target:
        if first is not None:
            info = zipfile.ZipInfo(first[0], date_time=(2024, 1, 2, 3, 4, 6))
            info.extra = first[1]
            target.writestr(info, b"")
        for entry in source.infolist():
            data = source.read(entry)
            entry.compress_type = method
            target.writestr(entry, data)
    plain.unlink()
    return path


def tar_polyglot_wheel(directory: Path) -> Path:
    """A wheel whose first 512 bytes are also a valid tar header: the rest of
    the header rides in the first entry's extra field, and the checksum is fixed."""
    header = tarfile.TarInfo("payload").tobuf(format=tarfile.USTAR_FORMAT)
    payload = header[35:512]
    extra = struct.pack("<HH", 0xCAFE, len(payload)) + payload
    path = make_wheel(directory, "poly", "1.0", first=("a", extra))
    data = bytearray(path.read_bytes())
    block = data[:512]
    checksum = sum(block[:148]) + 8 * 32 + sum(block[156:512])
    data[148:156] = b"%06o\x00 " % checksum
    path.write_bytes(bytes(data))
    tarfile.TarInfo.frombuf(bytes(data[:512]), "utf-8", "surrogateescape")
    return path


def sdist_bytes(directory: Path, name: str, version: str) -> bytes:
    """A real sdist's tar, uncompressed."""
    with tarfile.open(build_sdist(directory, name, version)) as tar:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as out:
            for member in tar.getmembers():
                out.addfile(
                    member, tar.extractfile(member) if member.isfile() else None
                )
    return buffer.getvalue()


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    """Each refused kind: (filename, bytes, a piece of the reason)."""
    d = tmp_path_factory.mktemp("refused")
    good = make_wheel(d / "good", "plainpkg", "1.0").read_bytes()
    sdist = build_sdist(d / "sdist", "srcpkg", "1.0").read_bytes()
    tar = sdist_bytes(d / "raw", "srcpkg", "1.0")
    zip_tail = io.BytesIO()
    with zipfile.ZipFile(zip_tail, "w") as zf:
        zf.writestr("hidden.py", b"import os")
    return {
        "bzip2-wheel": (
            "bzpkg-1.0-py3-none-any.whl",
            make_wheel(d / "bz", "bzpkg", "1.0", method=zipfile.ZIP_BZIP2).read_bytes(),
            "compressed with bzip2",
        ),
        "lzma-wheel": (
            "lzpkg-1.0-py3-none-any.whl",
            make_wheel(d / "lz", "lzpkg", "1.0", method=zipfile.ZIP_LZMA).read_bytes(),
            "compressed with LZMA",
        ),
        "prepended-wheel": (
            "plainpkg-1.0-py3-none-any.whl",
            b"#!/bin/sh\necho hi\n" + good,
            "data before its first local header",
        ),
        "appended-wheel": (
            "plainpkg-1.0-py3-none-any.whl",
            good + b"trailing bytes after the end record",
            "data after the end record",
        ),
        "tar-polyglot-wheel": (
            "poly-1.0-py3-none-any.whl",
            tar_polyglot_wheel(d / "poly").read_bytes(),
            "also read as a tar",
        ),
        "xz-in-tar-gz": ("srcpkg-1.0.tar.gz", lzma.compress(tar), "looks like xz"),
        "bz2-in-tar-gz": ("srcpkg-1.0.tar.gz", bz2.compress(tar), "looks like bzip2"),
        "plain-tar-as-tar-gz": (
            "srcpkg-1.0.tar.gz",
            tar,
            "looks like uncompressed tar",
        ),
        "zip-after-tar-gz": (
            "srcpkg-1.0.tar.gz",
            sdist + zip_tail.getvalue(),
            "data after its gzip stream",
        ),
        "tar-bz2-name": ("srcpkg-1.0.tar.bz2", bz2.compress(tar), "must be a .tar.gz"),
        "tar-xz-name": ("srcpkg-1.0.tar.xz", lzma.compress(tar), "must be a .tar.gz"),
        "unknown-metadata-version": (
            "future-1.0-py3-none-any.whl",
            make_wheel(d / "fut", "future", "1.0", metadata_version="9.9").read_bytes(),
            "Metadata-Version '9.9'",
        ),
    }


@pytest_twisted.async_yield_fixture()
async def world(tmp_path):
    w = await start_world(tmp_path, [], timeout=5)
    yield w
    await w.stop()


CASES = [
    "bzip2-wheel",
    "lzma-wheel",
    "prepended-wheel",
    "appended-wheel",
    "tar-polyglot-wheel",
    "xz-in-tar-gz",
    "bz2-in-tar-gz",
    "plain-tar-as-tar-gz",
    "zip-after-tar-gz",
    "tar-bz2-name",
    "tar-xz-name",
    "unknown-metadata-version",
]


@pytest.mark.parametrize("case", CASES)
@pytest_twisted.ensureDeferred
async def test_refused_by_put_legacy_and_uploadpackage(world, refused, case):
    """Each refused kind gets a 400 with its reason from PUT, the legacy upload
    API and /uploadpackage/, and nothing is stored."""
    filename, content, reason = refused[case]
    project = filename.split("-")[0]
    before = snapshot(world.cache)
    answers = [
        await send(world.daemon, "PUT", f"/packages/{project}/{filename}", content),
        await post_form(
            world.daemon,
            "/",
            [
                (k, v)
                for k, v in legacy_fields(
                    filename.replace(".tar.bz2", ".tar.gz").replace(
                        ".tar.xz", ".tar.gz"
                    ),
                    content,
                )
                if k != "metadata_version"
            ],
            [("content", filename.encode(), content)],
        ),
        await post_form(
            world.daemon, "/uploadpackage/", [], [("sdist", filename.encode(), content)]
        ),
    ]
    for answer in answers:
        assert answer.code == 400, answer
        assert reason in answer.body.decode(), answer
    assert snapshot(world.cache) == before


@pytest_twisted.ensureDeferred
async def test_refused_by_twine(world, refused, tmp_path):
    """twine uploads a bzip2 wheel, a tar-polyglot wheel and a .tar.gz with a zip
    after its gzip stream: each fails with the server's 400 reason; nothing stored."""
    before = snapshot(world.cache)
    for case in ("bzip2-wheel", "tar-polyglot-wheel", "zip-after-tar-gz"):
        filename, content, reason = refused[case]
        folder = tmp_path / case
        folder.mkdir()
        (folder / filename).write_bytes(content)
        result = await twine_upload(world.daemon.url, [folder / filename], tmp_path)
        assert not result.ok, result
        assert "400" in result.out + result.err, result
        assert reason in " ".join((result.out + result.err).split()), result
    assert snapshot(world.cache) == before


#: What uv publish sends (it refuses bzip2 entries and data around a zip itself).
UV_CASES = [
    "tar-polyglot-wheel",
    "unknown-metadata-version",
    "zip-after-tar-gz",
]


@pytest.mark.parametrize("case", UV_CASES)
@pytest_twisted.ensureDeferred
async def test_refused_by_uv_publish(world, refused, tmp_path, case):
    """uv publish of archives the server refuses fails, with the 400's reason."""
    before = snapshot(world.cache)
    filename, content, reason = refused[case]
    (tmp_path / filename).write_bytes(content)
    result = await uv_publish(world.daemon.url, [tmp_path / filename], tmp_path)
    assert not result.ok, result
    assert "400" in result.err and reason in " ".join(result.err.split()), result
    assert snapshot(world.cache) == before


@pytest_twisted.ensureDeferred
async def test_new_metadata_versions_accepted(world, tmp_path):
    """Wheels of Metadata-Version 2.4 and 2.5 upload with twine and uv publish,
    and are listed."""
    twine_wheel = make_wheel(tmp_path / "a", "metafour", "1.0", metadata_version="2.4")
    uv_wheel = make_wheel(tmp_path / "b", "metafive", "1.0", metadata_version="2.5")
    (await twine_upload(world.daemon.url, [twine_wheel], tmp_path)).check()
    (await uv_publish(world.daemon.url, [uv_wheel], tmp_path)).check()
    put_wheel = make_wheel(tmp_path / "c", "metaput", "1.0", metadata_version="2.5")
    answer = await send(
        world.daemon,
        "PUT",
        f"/packages/metaput/{put_wheel.name}",
        put_wheel.read_bytes(),
    )
    assert answer.code == 201, answer
    assert set(private_files(world.cache)) >= {
        f"private/releases/metafour/{twine_wheel.name}",
        f"private/releases/metafive/{uv_wheel.name}",
        f"private/releases/metaput/{put_wheel.name}",
    }


def test_known_versions_come_from_packaging():
    """What is known is packaging's own list: every version up to its newest
    passes (2.0 too), the next one after it does not (so packaging's next
    release adds it), nor a value that is no version."""
    known = known_metadata_versions()
    assert {"2.1", "2.4", "2.5"} <= set(known)
    for version in (*known, "2.0"):  # 2.0: never standardized, old wheels have it
        check_metadata_version(version, "x")
    major, minor = known[-1].split(".")
    with pytest.raises(BadRequest) as e:
        check_metadata_version(f"{major}.{int(minor) + 1}", "x")
    assert known[-1] in e.value.message
    with pytest.raises(BadRequest):
        check_metadata_version("two", "x")


def test_folder_scan_skips_refused_with_reason(tmp_path, refused):
    """Archives dropped into private/ that uploads would refuse are skipped by
    the scan with the reason, and get no sidecar."""
    store = FilesystemStore(FilePath(str(tmp_path / "cache")))
    drop = tmp_path / "cache" / "private" / "dropped"
    drop.mkdir(parents=True)
    for case in ("lzma-wheel", "tar-polyglot-wheel", "xz-in-tar-gz"):
        filename, content, _ = refused[case]
        (drop / filename).write_bytes(content)
    report = scan_private(store, time.time())
    reasons = {b["path"].rsplit("/", 1)[1]: b["reason"] for b in report.broken}
    assert report.indexed == []
    assert "compressed with LZMA" in reasons["lzpkg-1.0-py3-none-any.whl"]
    assert "also read as a tar" in reasons["poly-1.0-py3-none-any.whl"]
    assert "looks like xz" in reasons["srcpkg-1.0.tar.gz"]
    assert not list(drop.glob("*.json"))


class _Unseekable(io.RawIOBase):
    """A write-only stream: zipfile then writes data descriptors."""

    def __init__(self) -> None:
        self.written = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.written += data
        return len(data)


def _streamed_zip(zip64: bool) -> bytes:
    out = _Unseekable()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):
            with zf.open(f"pkg/m{i}.py", "w", force_zip64=zip64) as f:
                f.write(b"x = 1\n" * 100)
    return bytes(out.written)


def _zip64_end_records(monkeypatch) -> bytes:
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("a.py", b"1")
        zf.writestr("b.py", b"2")
    assert b"PK\x06\x06" in buffer.getvalue()
    return buffer.getvalue()


def _commented_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("a.py", b"1")
        zf.comment = b"built by a tool that comments"
    return buffer.getvalue()


def test_plain_forms_pass(tmp_path, monkeypatch):
    """What real tools write is not refused: data descriptors (zip32 and
    zip64), zip64 end records, a zip comment, a gzip of two members."""
    sdist = build_sdist(tmp_path / "s", "twomember", "1.0").read_bytes()
    raw = gzip.decompress(sdist)
    two_members = gzip.compress(raw[:1024]) + gzip.compress(raw[1024:])
    cases = {
        "dd-1.0-py3-none-any.whl": _streamed_zip(False),
        "dd64-1.0-py3-none-any.whl": _streamed_zip(True),
        "z64-1.0-py3-none-any.whl": _zip64_end_records(monkeypatch),
        "commented-1.0-py3-none-any.whl": _commented_zip(),
        "twomember-1.0.tar.gz": two_members,
    }
    for filename, content in cases.items():
        path = tmp_path / filename
        path.write_bytes(content)
        check_container(str(path), filename)
