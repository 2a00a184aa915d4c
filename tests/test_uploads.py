"""Private packages on loopback: real twine, uv and pip against the daemon.

Uploads (the legacy API of ``twine upload``/``uv publish``, ``PUT``, ``POST
/uploadpackage/``), what is refused (conflicts, digests, names, path tricks,
broken archives, oversized bodies), deleting and yanking, and private projects
shadowing the upstream. Every daemon runs in front of a fake upstream that
records each request, so "the upstream was never asked about this name" is
checked, not assumed. Who may upload is in ``test_uploads_auth.py``.
"""

import calendar
import hashlib
import io
import json
import os
import re
import shutil
import socket
import time
import zipfile
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from tests.clients import clean_env, pip_install, run, twine_upload, uv_publish
from tests.daemon import RunningDaemon, World, start_daemon, start_world
from tests.fakeindex import JSON_TYPE
from tests.packages import build_sdist, build_wheel
from tests.webclient import Answer, multipart, put, send

WHEEL = "alpha-1.0-py3-none-any.whl"
SDIST = "alpha-1.0.tar.gz"


# -- set-up --------------------------------------------------------------------


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """Every archive the tests upload, built once (reproducibly) per module."""
    d = tmp_path_factory.mktemp("dists")
    other = tmp_path_factory.mktemp("other")
    upstream = tmp_path_factory.mktemp("upstream")
    return {
        "alpha_whl": build_wheel(d, "alpha", "1.0", requires_python=">=3.8"),
        "alpha_sdist": build_sdist(d, "alpha", "1.0"),
        # Same filename as alpha_whl, other bytes.
        "alpha_whl_other": build_wheel(
            other, "alpha", "1.0", module_body="CHANGED = True"
        ),
        "beta_whl": build_wheel(d, "beta", "0.1"),
        "beta_sdist": build_sdist(d, "beta", "0.1"),
        "gamma_rc": build_wheel(d, "gamma", "2.0rc1"),
        "yankme_1": build_wheel(d, "yankme", "1.0"),
        "yankme_2": build_wheel(d, "yankme", "2.0"),
        "yankme_2_sdist": build_sdist(d, "yankme", "2.0"),
        "shadow_1": build_wheel(d, "shadow", "1.0"),
        "shadow_9": build_wheel(upstream, "shadow", "9.0"),
        "public": build_wheel(upstream, "public", "1.0"),
    }


async def make_world(tmp_path: Path, dists, **options) -> World:
    return await start_world(
        tmp_path, [dists["shadow_9"], dists["public"]], timeout=5, **options
    )


@pytest_twisted.async_yield_fixture()
async def world(tmp_path, dists):
    w = await make_world(tmp_path, dists)
    yield w
    await w.stop()


def snapshot(cache: Path) -> dict[str, tuple[int, int]]:
    """Every file under the cache, with its size and modification time."""
    found = {}
    for root, _, names in os.walk(cache):
        for name in names:
            path = Path(root, name)
            stat = path.stat()
            found[str(path.relative_to(cache))] = (stat.st_size, stat.st_mtime_ns)
    return found


def private_files(cache: Path) -> list[str]:
    """The archives and sidecars in the private areas, relative to the cache."""
    return sorted(
        str(p.relative_to(cache))
        for p in (cache / "private").rglob("*")
        if p.is_file()
        and not p.parent.name.startswith(".")
        and p.parent.parent.name in ("releases", "prereleases")
    )


def installed(target: Path) -> set[str]:
    """``name-version`` of every distribution pip installed into ``target``."""
    return {p.name[: -len(".dist-info")] for p in target.glob("*.dist-info")}


# -- HTTP helpers -------------------------------------------------------------


def legacy_fields(
    filename: str, content: bytes, **overrides: str | None
) -> list[tuple[str, str]]:
    """The fields twine sends with an upload; an override of ``None`` leaves a field out."""
    name, version = re.match(
        r"([^-]+)-([^-]+?)(?:-.*\.whl|\.tar\.gz)$", filename
    ).groups()
    fields = {
        ":action": "file_upload",
        "protocol_version": "1",
        "metadata_version": "2.1",
        "name": name,
        "version": version,
        "filetype": "bdist_wheel" if filename.endswith(".whl") else "sdist",
        "pyversion": "py3" if filename.endswith(".whl") else "source",
        "sha256_digest": hashlib.sha256(content).hexdigest(),
        "md5_digest": hashlib.md5(content).hexdigest(),
        "blake2_256_digest": hashlib.blake2b(content, digest_size=32).hexdigest(),
    }
    fields.update(overrides)
    return [(k, v) for k, v in fields.items() if v is not None]


async def post_form(
    daemon: RunningDaemon, path: str, fields, files, headers=None
) -> Answer:
    """POST a hand-built ``multipart/form-data`` body of ``fields`` and ``files``."""
    content_type, body = multipart(fields, files)
    return await send(
        daemon, "POST", path, body, {"Content-Type": content_type, **(headers or {})}
    )


async def legacy_upload(
    daemon: RunningDaemon,
    archive: Path,
    filename: str | None = None,
    path: str = "/",
    **overrides: str | None,
) -> Answer:
    """Upload ``archive`` as twine does (fields and digests), by hand."""
    content = archive.read_bytes()
    filename = filename or archive.name
    fields = legacy_fields(filename, content, **overrides)
    return await post_form(
        daemon, path, fields, [("content", filename.encode(), content)]
    )


async def page(daemon: RunningDaemon, path: str) -> dict:
    """A project page as PEP 691 JSON."""
    answer = await send(daemon, "GET", path, headers={"Accept": JSON_TYPE})
    assert answer.code == 200, answer
    return answer.json()


def by_filename(page_json: dict) -> dict[str, dict]:
    """The file entries of a PEP 691 page, by filename."""
    return {f["filename"]: f for f in page_json["files"]}


# -- real clients -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_twine_and_uv_publish_then_pip_install(world, dists):
    """twine and uv publish a wheel and an sdist each; pip installs them through /local/ and /simple/.

    The projects are private from their first upload: the upstream never hears of them.
    """
    daemon = world.daemon
    result = await twine_upload(
        daemon.url, [dists["alpha_whl"], dists["alpha_sdist"]], world.tmp_path
    )
    result.check()
    result = await uv_publish(
        daemon.url, [dists["beta_whl"], dists["beta_sdist"]], world.tmp_path
    )
    result.check()
    assert set(private_files(world.cache)) == {
        f"private/releases/alpha/{SDIST}",
        f"private/releases/alpha/{SDIST}.json",
        f"private/releases/alpha/{WHEEL}",
        f"private/releases/alpha/{WHEEL}.json",
        f"private/releases/alpha/{WHEEL}.metadata",
        "private/releases/beta/beta-0.1-py3-none-any.whl",
        "private/releases/beta/beta-0.1-py3-none-any.whl.json",
        "private/releases/beta/beta-0.1-py3-none-any.whl.metadata",
        "private/releases/beta/beta-0.1.tar.gz",
        "private/releases/beta/beta-0.1.tar.gz.json",
    }
    for key in ("alpha_whl", "alpha_sdist", "beta_whl", "beta_sdist"):
        stored = (
            world.cache / "private" / "releases" / key.split("_")[0] / dists[key].name
        )
        assert stored.read_bytes() == dists[key].read_bytes()

    result = await pip_install(
        daemon.url + "local/", ["alpha", "beta"], world.tmp_path / "t1", world.tmp_path
    )
    result.check()
    assert installed(world.tmp_path / "t1") == {"alpha-1.0", "beta-0.1"}
    # Through /simple/, with the sdists: pip builds them offline.
    result = await pip_install(
        daemon.url + "simple/",
        ["alpha", "beta"],
        world.tmp_path / "t2",
        world.tmp_path,
        ["--no-binary", "alpha,beta"],
    )
    result.check()
    assert installed(world.tmp_path / "t2") == {"alpha-1.0", "beta-0.1"}
    assert "alpha-1.0.tar.gz" in result.out and "beta-0.1.tar.gz" in result.out
    assert world.asked_about("alpha") == [] and world.asked_about("beta") == []


@pytest_twisted.ensureDeferred
async def test_twine_reupload_identical_then_conflicting(world, dists):
    """twine re-uploading identical bytes succeeds and changes nothing; other bytes fail with 409."""
    daemon = world.daemon
    assert (await put(daemon, dists["alpha_whl"])).code == 201
    before = snapshot(world.cache)
    env = {**clean_env(world.tmp_path), "COLUMNS": "300"}
    result = await twine_upload(
        daemon.url, [dists["alpha_whl"]], world.tmp_path, env=env
    )
    result.check()  # twine exits 0: a CI re-run needs no --skip-existing
    assert snapshot(world.cache) == before

    result = await twine_upload(
        daemon.url, [dists["alpha_whl_other"]], world.tmp_path, env=env
    )
    assert result.code == 1, result
    output = " ".join((result.out + result.err).split())
    assert "409" in output and "File already exists" in output, result
    assert snapshot(world.cache) == before


@pytest_twisted.ensureDeferred
async def test_legacy_conflict_reason_and_body(world, dists):
    """The 409 of the upload API has a reason phrase and a body that begin 'File already exists'."""
    daemon = world.daemon
    first = await legacy_upload(daemon, dists["alpha_whl"])
    assert (first.code, first.body) == (200, f"Stored: {WHEEL}\n".encode())
    again = await legacy_upload(daemon, dists["alpha_whl"], path="/legacy/")
    assert again.code == 200, again
    before = snapshot(world.cache)
    conflict = await legacy_upload(daemon, dists["alpha_whl_other"], path="/legacy")
    assert conflict.code == 409
    assert conflict.phrase.startswith(b"File already exists")
    assert conflict.body.startswith(b"File already exists")
    assert snapshot(world.cache) == before
    answer = await send(daemon, "GET", f"/packages/alpha/{WHEEL}")
    assert answer.body == dists["alpha_whl"].read_bytes()


@pytest_twisted.ensureDeferred
async def test_deleted_filename_is_remembered(world, dists):
    """After a delete, the filename is refused (409) for other bytes, and accepted again for the same."""
    daemon = world.daemon
    assert (await put(daemon, dists["alpha_whl"])).code == 201
    assert (await send(daemon, "DELETE", f"/packages/alpha/{WHEEL}")).code == 204
    conflict = await put(daemon, dists["alpha_whl_other"], filename=WHEEL)
    assert conflict.code == 409
    assert conflict.phrase.startswith(
        b"File already exists"
    ) and conflict.body.startswith(b"File already exists")
    conflict = await legacy_upload(daemon, dists["alpha_whl_other"])
    assert conflict.code == 409, conflict
    assert not (world.cache / "private" / "releases" / "alpha" / WHEEL).exists()
    restored = await put(daemon, dists["alpha_whl"])
    assert restored.code == 201, restored


@pytest_twisted.ensureDeferred
async def test_uv_publish_check_url_skips_identical_files(world, dists):
    """Re-running `uv publish --check-url <daemon>/simple/` over stored files succeeds without re-uploading."""
    daemon = world.daemon
    for key in ("beta_whl", "beta_sdist"):
        assert (await put(daemon, dists[key])).code == 201
    before = snapshot(world.cache)
    result = await uv_publish(
        daemon.url,
        [dists["beta_whl"], dists["beta_sdist"]],
        world.tmp_path,
        extra_args=["--check-url", daemon.url + "simple/"],
    )
    result.check()
    assert (result.out + result.err).count("already exists") == 2, result
    assert snapshot(world.cache) == before
    assert world.asked_about("beta") == []


# -- what is refused ----------------------------------------------------------


@pytest.mark.parametrize("field", ["sha256_digest", "md5_digest", "blake2_256_digest"])
@pytest_twisted.ensureDeferred
async def test_digest_mismatch(world, dists, field):
    """A digest that does not match the bytes received is a 400 naming it; nothing is stored."""
    before = snapshot(world.cache)
    answer = await legacy_upload(world.daemon, dists["alpha_whl"], **{field: "0" * 64})
    assert answer.code == 400
    assert field.encode() in answer.body
    assert snapshot(world.cache) == before


@pytest_twisted.ensureDeferred
async def test_digests_are_optional_and_case_insensitive(world, dists):
    """An upload without digests, or with upper-case ones, is taken."""
    content = dists["alpha_whl"].read_bytes()
    answer = await legacy_upload(
        world.daemon,
        dists["alpha_whl"],
        sha256_digest=hashlib.sha256(content).hexdigest().upper(),
        md5_digest=None,
        blake2_256_digest=None,
    )
    assert answer.code == 200, answer
    answer = await legacy_upload(
        world.daemon,
        dists["alpha_sdist"],
        sha256_digest=None,
        md5_digest=None,
        blake2_256_digest=None,
    )
    assert answer.code == 200, answer


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"name": "beta"}, b"name"),
        ({"version": "1.1"}, b"version"),
        ({"version": "not a version"}, b"version"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_form_disagrees_with_filename(world, dists, overrides, reason):
    """A form name or version that disagrees with the filename is a 400; nothing is stored."""
    before = snapshot(world.cache)
    answer = await legacy_upload(world.daemon, dists["alpha_whl"], **overrides)
    assert answer.code == 400 and reason in answer.body, answer
    assert snapshot(world.cache) == before


@pytest_twisted.ensureDeferred
async def test_equivalent_names_and_versions_accepted(world, dists):
    """The form may spell the name and version differently, as long as they normalize alike."""
    answer = await legacy_upload(
        world.daemon, dists["alpha_whl"], name="Alpha", version="1.0.0"
    )
    assert answer.code == 200, answer


@pytest.mark.parametrize(
    "filename", ["alpha-1.1-py3-none-any.whl", "beta-1.0-py3-none-any.whl"]
)
@pytest_twisted.ensureDeferred
async def test_archive_metadata_disagrees_with_filename(world, dists, filename):
    """An archive whose own metadata names another version or project is a 400, by PUT and by form."""
    before = snapshot(world.cache)
    answer = await put(world.daemon, dists["alpha_whl"], filename=filename)
    assert answer.code == 400 and b"metadata" in answer.body, answer
    answer = await legacy_upload(world.daemon, dists["alpha_whl"], filename=filename)
    assert answer.code == 400 and b"metadata" in answer.body, answer
    assert snapshot(world.cache) == before


@pytest.mark.parametrize("action", ["remove_pkg", "doc_upload", "", None])
@pytest_twisted.ensureDeferred
async def test_other_actions_refused(world, dists, action):
    """Any :action but file_upload (or none) is a clear 400."""
    before = snapshot(world.cache)
    answer = await legacy_upload(
        world.daemon, dists["alpha_whl"], **{":action": action}
    )
    assert answer.code == 400
    assert b":action" in answer.body and b"file_upload" in answer.body
    assert snapshot(world.cache) == before


@pytest_twisted.ensureDeferred
async def test_upload_without_content_or_form(world, dists):
    """A form without a 'content' file part, or a body that is not a form, is a 400."""
    answer = await post_form(world.daemon, "/", legacy_fields(WHEEL, b""), [])
    assert answer.code == 400 and b"content" in answer.body, answer
    answer = await send(
        world.daemon,
        "POST",
        "/",
        b"name=alpha",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.code == 400 and b"multipart" in answer.body, answer
    truncated = multipart(
        legacy_fields(WHEEL, b"x"), [("content", WHEEL.encode(), b"x" * 1000)]
    )
    answer = await send(
        world.daemon, "POST", "/", truncated[1][:-200], {"Content-Type": truncated[0]}
    )
    assert answer.code == 400, answer
    assert [p for p in snapshot(world.cache) if not p.startswith("pages/")] == []


def _zip_without_metadata() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        # A fixed time: the bytes are in the test's id, which every pytest-xdist
        # worker must collect alike.
        archive.writestr(
            zipfile.ZipInfo("alpha/__init__.py", (2024, 1, 2, 3, 4, 6)), ""
        )
    return buffer.getvalue()


@pytest.mark.parametrize(
    "filename, content",
    [
        (WHEEL, b"this is not a zip file" * 10),
        (WHEEL, _zip_without_metadata()),
        (SDIST, b"\x1f\x8b\x08\x00 not really gzip" * 10),
        (SDIST, b""),
        ("alpha-1.0.zip", b"PK\x03\x04 broken"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_broken_archive(world, filename, content, dists):
    """An archive that does not open, has no metadata, or is empty is a 400; nothing is stored."""
    before = snapshot(world.cache)
    answer = await send(world.daemon, "PUT", f"/packages/alpha/{filename}", content)
    assert answer.code == 400, answer
    answer = await post_form(
        world.daemon,
        "/",
        legacy_fields(filename.replace(".zip", ".tar.gz"), content),
        [("content", filename.encode(), content)],
    )
    assert answer.code == 400, answer
    assert snapshot(world.cache) == before


@pytest.mark.parametrize(
    "filename",
    [
        "alpha-1.0.txt",
        "alpha-1.0.egg",
        "alpha.whl",
        "alpha-1.0-py3-none-any.whl.metadata",
    ],
)
@pytest_twisted.ensureDeferred
async def test_not_a_distribution_filename(world, dists, filename):
    """Only wheels and sdists are taken."""
    answer = await put(
        world.daemon, dists["alpha_whl"], project="alpha", filename=filename
    )
    assert answer.code == 400, answer


# -- path tricks ---------------------------------------------------------------

#: Filenames as they appear in a PUT URL (percent-encoding is the client's).
PUT_TRICKS = [
    b"..%2Falpha-1.0.tar.gz",  # encoded separator
    b"%2e%2e%2falpha-1.0.tar.gz",
    b"..",  # a dot segment
    b"%2e%2e",
    b".%2e",
    b"%2Ftmp%2Falpha-1.0.tar.gz",  # absolute, encoded
    b"a%5Calpha-1.0.tar.gz",  # encoded backslash
    b"..\\alpha-1.0.tar.gz",  # raw backslash
    b"alpha-1.0.tar.gz%00",  # NUL
    b"alpha-1.0.tar.gz%00.whl",
    b"%252e%252e%252falpha-1.0.tar.gz",  # double-encoded: '%2e%2e%2f' reaches the route
    b"alpha-1.0.tar.gz%252f",
    b".alpha-1.0.tar.gz",  # hidden, as temporary files are
    b".tmp-0123456789abcdef",
]


@pytest.mark.parametrize("trick", PUT_TRICKS, ids=lambda t: t.decode())
@pytest_twisted.ensureDeferred
async def test_path_tricks_by_put(world, dists, trick):
    """A PUT filename with separators, dots, NUL, backslashes (plain or encoded) is a 400; nothing is written."""
    before = snapshot(world.cache)
    body = dists["alpha_sdist"].read_bytes()
    for prefix in (b"/packages/alpha/", b"/packages/source/a/alpha/"):
        answer = await send(world.daemon, "PUT", prefix + trick, body)
        assert answer.code == 400, (prefix + trick, answer)
    assert snapshot(world.cache) == before


@pytest.mark.parametrize(
    "path",
    [
        b"/packages/alpha//tmp/alpha-1.0.tar.gz",
        b"/packages/alpha/x/../alpha-1.0.tar.gz",
        b"/packages/alpha/a/alpha-1.0.tar.gz",
    ],
)
@pytest_twisted.ensureDeferred
async def test_literal_separators_in_put_url(world, dists, path):
    """A PUT URL with more segments than the route (literal '/', './..') is refused and writes nothing."""
    before = snapshot(world.cache)
    answer = await send(world.daemon, "PUT", path, dists["alpha_sdist"].read_bytes())
    assert answer.code in (400, 404), answer
    assert snapshot(world.cache) == before


#: Filenames as the client writes them into Content-Disposition.
FORM_TRICKS = [
    b"../alpha-1.0.tar.gz",
    b"a/alpha-1.0.tar.gz",
    b"/tmp/alpha-1.0.tar.gz",
    b"..\\alpha-1.0.tar.gz",
    b"C:\\\\tmp\\\\alpha-1.0.tar.gz",  # a Windows path, backslash-escaped as old IE sent it
    b"C:\\tmp\\alpha-1.0.tar.gz",
    b"\\\\\\\\server\\\\share\\\\alpha-1.0.tar.gz",
    b"alpha-1.0.tar.gz\x00.whl",
    b"..%2Falpha-1.0.tar.gz",
    b"%2e%2e%2falpha-1.0.tar.gz",
    b"%2Ftmp%2Falpha-1.0.tar.gz",
    b"alpha-1.0.tar.gz%00",
    b"..",
    b".alpha-1.0.tar.gz",
]


@pytest.mark.parametrize(
    "trick",
    FORM_TRICKS,
    ids=lambda t: t.decode(errors="replace").replace("\x00", "NUL"),
)
@pytest_twisted.ensureDeferred
async def test_path_tricks_in_form_filename(world, dists, trick):
    """A multipart filename with separators, dots, NUL, backslashes (plain or encoded) is a 400; nothing is written."""
    before = snapshot(world.cache)
    content = dists["alpha_sdist"].read_bytes()
    fields = legacy_fields(SDIST, content)
    answer = await post_form(world.daemon, "/", fields, [("content", trick, content)])
    assert answer.code == 400, answer
    answer = await post_form(
        world.daemon, "/uploadpackage/", [], [("sdist", trick, content)]
    )
    assert answer.code == 400, answer
    assert snapshot(world.cache) == before


@pytest_twisted.ensureDeferred
async def test_no_temporary_files_left(world, dists):
    """Refused and accepted uploads alike leave no temporary file behind, and none named after the client's input."""
    daemon = world.daemon
    await legacy_upload(daemon, dists["alpha_whl"], sha256_digest="0" * 64)
    await post_form(
        daemon,
        "/",
        legacy_fields(SDIST, b"junk"),
        [("content", SDIST.encode(), b"junk")],
    )
    await post_form(
        daemon, "/uploadpackage/", [], [("sdist", b"../evil-1.0.tar.gz", b"junk")]
    )
    await put(daemon, dists["alpha_whl"])
    await put(daemon, dists["alpha_whl_other"], filename=WHEEL)
    leftovers = [p for p in snapshot(world.cache) if "/.tmp-" in "/" + p or "evil" in p]
    assert leftovers == []
    assert sorted(os.listdir(world.cache / "private" / ".incoming")) == []


# -- size limit ----------------------------------------------------------------


def _exchange(
    port: int, head: bytes, body: bytes = b"", wait: float = 5.0
) -> tuple[bytes, float, bool]:
    """Send request headers (and maybe some body) on a raw socket, then read until the server closes.

    Runs in a thread (blocking socket) while the daemon runs on the reactor.

    :returns: what came back, how long it took, whether the server closed the connection.
    """
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(head)
        if body:
            try:
                sock.sendall(body)
            except OSError:
                pass
        received = b""
        closed = False
        try:
            while chunk := sock.recv(65536):
                received += chunk
            closed = True
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = True
    return received, time.monotonic() - started, closed


@pytest_twisted.async_yield_fixture()
async def small(tmp_path, dists):
    """A daemon that takes bodies of 4000 bytes at most."""
    w = await make_world(tmp_path, dists, max_upload_size=4000)
    yield w
    await w.stop()


@pytest.mark.parametrize("expect", [False, True], ids=["plain", "expect-100-continue"])
@pytest_twisted.ensureDeferred
async def test_oversized_refused_before_body(small, expect):
    """A Content-Length over --max-upload-size gets 413 before a byte of the body is sent, and the connection closes.

    With ``Expect: 100-continue`` the client is never told to go on.
    """
    port = small.daemon.port.getHost().port
    head = (
        b"PUT /packages/alpha/alpha-1.0.tar.gz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Length: 1000000000\r\nContent-Type: application/octet-stream\r\n"
        + (b"Expect: 100-continue\r\n" if expect else b"")
        + b"\r\n"
    )
    received, took, closed = await deferToThread(_exchange, port, head)
    assert received.startswith(b"HTTP/1.1 413 "), received
    assert b"--max-upload-size" in received
    assert b"100 Continue" not in received
    assert closed and took < 4
    _, _, body = received.partition(b"\r\n\r\n")
    assert body.endswith(b"\n") and body.count(b"HTTP/1.1") == 0
    assert os.listdir(small.cache / "private" / ".incoming") == []


@pytest_twisted.ensureDeferred
async def test_oversized_chunked_body_refused(small):
    """A chunked body is refused with 413 once it grows past the limit."""
    port = small.daemon.port.getHost().port
    head = (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/form-data; boundary=xyz\r\n\r\n"
    )
    chunk = b"x" * 3000
    body = b"%x\r\n%s\r\n" % (len(chunk), chunk) * 2
    received, _, closed = await deferToThread(_exchange, port, head, body)
    assert received.startswith(b"HTTP/1.1 413 "), received
    assert closed
    assert os.listdir(small.cache / "private" / ".incoming") == []


@pytest_twisted.ensureDeferred
async def test_upload_within_limit_works(small, dists):
    """Bodies under the limit are taken as usual."""
    answer = await put(small.daemon, dists["alpha_whl"])
    assert answer.code == 201, answer
    big = await send(
        small.daemon, "PUT", "/packages/alpha/alpha-1.0.tar.gz", b"\0" * 5000
    )
    assert big.code == 413 and b"--max-upload-size" in big.body


# -- PUT and /uploadpackage/ ---------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_put_201_json_then_identical_200(world, dists):
    """PUT stores a file with 201 and a JSON description; the same bytes again are a 200 that changes nothing."""
    daemon = world.daemon
    content = dists["alpha_whl"].read_bytes()
    answer = await put(daemon, dists["alpha_whl"])
    assert answer.code == 201
    assert answer.header("content-type") == "application/json"
    assert answer.json() == {
        "stored": True,
        "project": "alpha",
        "version": "1.0",
        "filename": WHEEL,
        "sha256": hashlib.sha256(content).hexdigest(),
        "size": len(content),
        "url": f"/packages/alpha/{WHEEL}",
    }
    before = snapshot(world.cache)
    again = await put(daemon, dists["alpha_whl"])
    assert again.code == 200 and again.json()["stored"] is False
    assert snapshot(world.cache) == before
    # The original pypicache's path for sdists works too.
    answer = await send(
        daemon,
        "PUT",
        f"/packages/source/a/alpha/{SDIST}",
        dists["alpha_sdist"].read_bytes(),
    )
    assert answer.code == 201 and answer.json()["filename"] == SDIST
    assert (
        world.cache / "private" / "releases" / "alpha" / SDIST
    ).read_bytes() == dists["alpha_sdist"].read_bytes()


@pytest_twisted.ensureDeferred
async def test_concurrent_conflicting_uploads(world, dists):
    """Two uploads of one filename with different bytes at once: one is stored, the other is a 409."""
    first = Deferred.fromCoroutine(put(world.daemon, dists["alpha_whl"]))
    second = Deferred.fromCoroutine(put(world.daemon, dists["alpha_whl_other"]))
    answers = [await first, await second]
    assert sorted(a.code for a in answers) == [201, 409]
    stored = (
        world.cache / "private/releases/alpha" / dists["alpha_whl"].name
    ).read_bytes()
    winner = dists["alpha_whl"] if answers[0].code == 201 else dists["alpha_whl_other"]
    assert stored == winner.read_bytes()


@pytest_twisted.ensureDeferred
async def test_put_under_another_project(world, dists):
    """A PUT URL whose project is not the file's is refused and writes nothing."""
    before = snapshot(world.cache)
    answer = await put(world.daemon, dists["alpha_whl"], project="beta")
    assert 400 <= answer.code < 500 and WHEEL.encode() in answer.body, answer
    assert snapshot(world.cache) == before


@pytest.mark.parametrize("path", ["/uploadpackage/", "/uploadpackage"])
@pytest_twisted.ensureDeferred
async def test_uploadpackage_multipart(world, dists, path):
    """POST /uploadpackage/ with a curl-shaped `-F sdist=@file` answers 201 and JSON; a wheel goes the same way."""
    daemon = world.daemon
    with open(dists["alpha_sdist"], "rb") as f:
        response = await daemon.client.post(
            daemon.url + path.lstrip("/"), files={"sdist": (SDIST, f)}
        )
    assert response.code == 201
    body = json.loads(await response.content())
    assert (body["filename"], body["project"], body["version"], body["stored"]) == (
        SDIST,
        "alpha",
        "1.0",
        True,
    )
    with open(dists["alpha_whl"], "rb") as f:
        response = await daemon.client.post(
            daemon.url + path.lstrip("/"), files={"package": (WHEEL, f)}
        )
    assert response.code == 201
    assert json.loads(await response.content())["filename"] == WHEEL
    assert (world.cache / "private" / "releases" / "alpha" / WHEEL).exists()


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest_twisted.ensureDeferred
async def test_uploadpackage_with_real_curl(world, dists):
    """`curl -X POST -F sdist=@dist/x.tar.gz http://host/uploadpackage/`, as the original pypicache documented."""
    result = await run(
        [
            "curl",
            "-sS",
            "-X",
            "POST",
            "-F",
            f"sdist=@{dists['alpha_sdist']}",
            world.daemon.url + "uploadpackage/",
        ],
        clean_env(world.tmp_path),
    )
    result.check()
    assert json.loads(result.out)["filename"] == SDIST


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/simple/alpha/"),
        ("POST", "/simple/"),
        ("PUT", "/simple/alpha/"),
        ("POST", "/local/alpha/"),
        ("POST", "/local/"),
        ("POST", "/simple"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_upload_to_index_pages_is_405(world, dists, method, path):
    """An upload sent to /simple/... or /local/... is a 405 that says where to upload."""
    content = dists["alpha_whl"].read_bytes()
    content_type, body = multipart(
        legacy_fields(WHEEL, content), [("content", WHEEL.encode(), content)]
    )
    answer = await send(
        world.daemon, method, path, body, {"Content-Type": content_type}
    )
    assert answer.code == 405, answer
    assert (
        b"twine upload --repository-url" in answer.body
        and b"PUT /packages/" in answer.body
    )
    assert answer.header("allow") == "GET, HEAD"
    assert private_files(world.cache) == []


# -- storage and pages -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_storage_areas_pages_and_metadata(world, dists):
    """Releases and pre-releases go to their own folders; pages show sha256, size, upload-time,
    requires-python and core metadata, and the wheel's .metadata is served."""
    daemon = world.daemon
    started = time.time()
    assert (await legacy_upload(daemon, dists["alpha_whl"])).code == 200
    assert (await put(daemon, dists["gamma_rc"])).code == 201
    assert (world.cache / "private" / "releases" / "alpha" / WHEEL).is_file()
    assert (
        world.cache / "private" / "prereleases" / "gamma" / dists["gamma_rc"].name
    ).is_file()
    assert not (world.cache / "private" / "releases" / "gamma").exists()
    assert not (world.cache / "mirror" / "alpha").exists()

    content = dists["alpha_whl"].read_bytes()
    with zipfile.ZipFile(dists["alpha_whl"]) as archive:
        metadata = archive.read("alpha-1.0.dist-info/METADATA")
    for view in ("simple", "local"):
        entry = by_filename(await page(daemon, f"/{view}/alpha/"))[WHEEL]
        assert entry["hashes"] == {"sha256": hashlib.sha256(content).hexdigest()}
        assert entry["size"] == len(content)
        assert entry["requires-python"] == ">=3.8"
        assert entry["yanked"] is False
        assert entry["core-metadata"] == {
            "sha256": hashlib.sha256(metadata).hexdigest()
        }
        assert entry["upload-time"].endswith("Z")
        moment = calendar.timegm(
            time.strptime(entry["upload-time"][:19], "%Y-%m-%dT%H:%M:%S")
        )
        assert started - 2 <= moment <= time.time() + 2
    answer = await send(daemon, "GET", entry["url"].replace("../..", "") + ".metadata")
    assert answer.code == 200 and answer.body == metadata
    html = (await send(daemon, "GET", "/simple/alpha/")).body.decode()
    assert f'data-core-metadata="sha256={hashlib.sha256(metadata).hexdigest()}"' in html
    assert 'data-requires-python="&gt;=3.8"' in html
    # Pre-releases are listed like releases.
    gamma = by_filename(await page(daemon, "/simple/gamma/"))
    assert list(gamma) == [dists["gamma_rc"].name]
    assert world.asked_about("alpha") == [] and world.asked_about("gamma") == []


# -- deleting and yanking ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_yank_seen_by_pip_then_delete(world, dists):
    """pip skips a yanked file unless pinned with ==; the flag shows in HTML and JSON; deletes answer 204.

    Deleting a project's last file leaves it private: its page is empty, and the upstream is never asked.
    """
    daemon = world.daemon
    for key in ("yankme_1", "yankme_2", "yankme_2_sdist"):
        assert (await put(daemon, dists[key])).code == 201
    two = dists["yankme_2"].name
    form = multipart([("reason", "broken build")], [])
    answer = await send(
        daemon,
        "POST",
        f"/packages/yankme/{two}/yank",
        form[1],
        {"Content-Type": form[0]},
    )
    assert answer.code == 204, answer
    answer = await send(daemon, "POST", "/packages/yankme/yankme-2.0.tar.gz/yank")
    assert answer.code == 204, answer
    files = by_filename(await page(daemon, "/simple/yankme/"))
    assert files["yankme-2.0.tar.gz"]["yanked"] is True  # no reason given
    answer = await send(
        daemon,
        "POST",
        "/packages/yankme/yankme-2.0.tar.gz/yank",
        b"reason=no+sdist",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )  # curl -d reason=...
    assert answer.code == 204, answer

    files = by_filename(await page(daemon, "/simple/yankme/"))
    assert files[two]["yanked"] == "broken build"
    assert files["yankme-2.0.tar.gz"]["yanked"] == "no sdist"
    assert files[dists["yankme_1"].name]["yanked"] is False
    html = (await send(daemon, "GET", "/simple/yankme/")).body.decode()
    assert re.search(
        f'{re.escape(two)}#sha256=[0-9a-f]+" data-yanked="broken build"', html
    )
    assert re.search(
        r'yankme-2\.0\.tar\.gz#sha256=[0-9a-f]+" data-yanked="no sdist"', html
    )
    assert (
        "yankme-1.0-py3-none-any.whl#sha256=" in html and html.count("data-yanked") == 2
    )
    sidecar = json.loads(
        (world.cache / "private" / "releases" / "yankme" / f"{two}.json").read_bytes()
    )
    assert sidecar["file"]["yanked"] == "broken build"

    result = await pip_install(
        daemon.url + "simple/", ["yankme"], world.tmp_path / "t1", world.tmp_path
    )
    result.check()
    assert installed(world.tmp_path / "t1") == {"yankme-1.0"}
    result = await pip_install(
        daemon.url + "simple/", ["yankme==2.0"], world.tmp_path / "t2", world.tmp_path
    )
    result.check()
    assert installed(world.tmp_path / "t2") == {"yankme-2.0"}
    assert "broken build" in result.out + result.err  # pip's warning names the reason

    # DELETE on the yank URL unyanks.
    assert (await send(daemon, "DELETE", f"/packages/yankme/{two}/yank")).code == 204
    assert by_filename(await page(daemon, "/simple/yankme/"))[two]["yanked"] is False
    assert (
        'data-yanked="broken build"'
        not in (await send(daemon, "GET", "/simple/yankme/")).body.decode()
    )

    # Delete a release (every file of it), then the last file.
    assert (await send(daemon, "DELETE", "/simple/yankme/2.0/")).code == 204
    assert list(by_filename(await page(daemon, "/simple/yankme/"))) == [
        dists["yankme_1"].name
    ]
    assert not (world.cache / "private" / "releases" / "yankme" / two).exists()
    assert (await send(daemon, "GET", f"/packages/yankme/{two}")).code == 404
    assert (await send(daemon, "DELETE", "/simple/yankme/2.0")).code == 404
    assert (
        await send(daemon, "DELETE", f"/packages/yankme/{dists['yankme_1'].name}")
    ).code == 204
    assert by_filename(await page(daemon, "/simple/yankme/")) == {}
    assert world.asked_about("yankme") == []


@pytest_twisted.ensureDeferred
async def test_delete_release_without_slash_and_unknown(world, dists):
    """DELETE /simple/<p>/<version> works without the slash; unknown files and releases are 404."""
    daemon = world.daemon
    assert (await put(daemon, dists["alpha_whl"])).code == 201
    assert (await put(daemon, dists["alpha_sdist"])).code == 201
    assert (await send(daemon, "DELETE", "/simple/alpha/1.0")).code == 204
    assert private_files(world.cache) == []
    assert (await send(daemon, "DELETE", f"/packages/alpha/{WHEEL}")).code == 404
    assert (await send(daemon, "POST", f"/packages/alpha/{WHEEL}/yank")).code == 404
    assert (await send(daemon, "DELETE", "/simple/alpha/2.0/")).code == 404
    assert (await send(daemon, "DELETE", "/simple/alpha/not-a-version/")).code == 400


@pytest_twisted.ensureDeferred
async def test_cached_mirror_file_can_be_deleted_and_yanked_locally(world, dists):
    """DELETE /packages/... drops a cached mirror copy too; yanking a mirrored
    file is a local yank (tests/test_local_yanks.py), its sidecar untouched."""
    daemon = world.daemon
    name = dists["public"].name
    assert (await send(daemon, "GET", f"/packages/public/{name}")).code == 200
    await world.stored("public", name)  # the client had it once verified
    assert (world.cache / "mirror" / "public" / name).exists()
    sidecar = (world.cache / "mirror" / "public" / f"{name}.json").read_bytes()
    assert (await send(daemon, "POST", f"/packages/public/{name}/yank")).code == 204
    assert (world.cache / "mirror" / "public" / f"{name}.json").read_bytes() == sidecar
    assert (await send(daemon, "DELETE", f"/packages/public/{name}")).code == 204
    assert not (world.cache / "mirror" / "public" / name).exists()
    # Not private: the next request fetches it again.
    assert (await send(daemon, "GET", f"/packages/public/{name}")).code == 200
    assert world.index.downloads(name) == 2


# -- private names shadow the upstream ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_private_project_shadows_upstream(world, dists):
    """A private project also on the upstream (with a higher version): pip gets the private one,
    and the upstream never hears the name, not even for a file only it has."""
    daemon = world.daemon
    assert (await put(daemon, dists["shadow_1"])).code == 201
    result = await pip_install(
        daemon.url + "simple/", ["shadow"], world.tmp_path / "t", world.tmp_path
    )
    result.check()
    assert installed(world.tmp_path / "t") == {"shadow-1.0"}
    assert list(by_filename(await page(daemon, "/simple/shadow/"))) == [
        dists["shadow_1"].name
    ]
    answer = await send(daemon, "GET", f"/packages/shadow/{dists['shadow_9'].name}")
    assert answer.code == 404
    answer = await send(
        daemon, "GET", f"/packages/shadow/{dists['shadow_9'].name}.metadata"
    )
    assert answer.code == 404
    assert world.asked_about("shadow") == []
    # Other projects still come from the upstream.
    assert list(by_filename(await page(daemon, "/simple/public/"))) == [
        dists["public"].name
    ]


@pytest_twisted.ensureDeferred
async def test_refused_upload_does_not_make_a_project_private(world, dists):
    """An upload that is refused writes nothing, so the name still comes from the upstream."""
    answer = await legacy_upload(
        world.daemon, dists["shadow_1"], sha256_digest="0" * 64
    )
    assert answer.code == 400
    assert list(by_filename(await page(world.daemon, "/simple/shadow/"))) == [
        dists["shadow_9"].name
    ]


@pytest_twisted.ensureDeferred
async def test_project_stays_private_after_its_last_file_is_deleted(world, dists):
    """Deleting a private project's only file does not hand its name back to the upstream."""
    daemon = world.daemon
    assert (await put(daemon, dists["shadow_1"])).code == 201
    assert (
        await send(daemon, "DELETE", f"/packages/shadow/{dists['shadow_1'].name}")
    ).code == 204
    assert by_filename(await page(daemon, "/simple/shadow/")) == {}
    assert (
        await send(daemon, "GET", f"/packages/shadow/{dists['shadow_9'].name}")
    ).code == 404
    assert world.asked_about("shadow") == []
    # A daemon started afresh on the same folder remembers it too.
    again = await start_daemon(world.upstream.url, world.cache, timeout=5)
    try:
        assert by_filename(await page(again, "/simple/shadow/")) == {}
    finally:
        await again.stop()
    assert world.asked_about("shadow") == []


@pytest_twisted.ensureDeferred
async def test_mirror_private_merges_upstream(tmp_path, dists):
    """With --mirror-private NAME, a private project's page also lists the upstream's files."""
    w = await make_world(tmp_path, dists, mirror_private=["shadow"])
    try:
        assert (await put(w.daemon, dists["shadow_1"])).code == 201
        files = by_filename(await page(w.daemon, "/simple/shadow/"))
        assert set(files) == {dists["shadow_1"].name, dists["shadow_9"].name}
        assert w.asked_about("shadow") != []
        answer = await send(
            w.daemon, "GET", f"/packages/shadow/{dists['shadow_9'].name}"
        )
        assert answer.code == 200 and answer.body == dists["shadow_9"].read_bytes()
        # /local/ shows what is on disk.
        assert dists["shadow_1"].name in by_filename(
            await page(w.daemon, "/local/shadow/")
        )
    finally:
        await w.stop()


@pytest_twisted.ensureDeferred
async def test_second_daemon_on_the_same_cache_sees_uploads_at_once(world, dists):
    """Two daemons on one cache folder (as workers are): an upload through one
    makes the project private in the other at once, even on a page it had
    already rendered from the upstream, and the same filename with other bytes
    through the other is a conflict."""
    other = await start_daemon(world.upstream.url, world.cache, timeout=5)
    try:
        before = await page(other, "/simple/shadow/")
        assert list(by_filename(before)) == [dists["shadow_9"].name]
        assert (await put(world.daemon, dists["shadow_1"])).code == 201
        after = await page(other, "/simple/shadow/")
        assert list(by_filename(after)) == [dists["shadow_1"].name]
        assert (await put(world.daemon, dists["alpha_whl"])).code == 201
        conflict = await put(other, dists["alpha_whl_other"], filename=WHEEL)
        assert conflict.code == 409, conflict
    finally:
        await other.stop()
