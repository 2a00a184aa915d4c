"""A full disk, and uploads that fail while being stored.

A full disk must never hang a client, leak a temporary file or a descriptor, or
stop the daemon serving what it has: uploads that do not fit get ``507`` with a
reason, a download that cannot be stored fails cleanly, cached files are still
served, and the upstream project stays public. Two full disks:

- ``tmpfs``: a real one, a 2 MB tmpfs mounted as the cache folder and filled
  (needs root; skipped, with the reason, where ``mount`` fails);
- ``simulated``: ``open`` in :mod:`pypicache.storage.atomic` hands out files on
  a full disk: writes fill Python's buffer, and fail with ``ENOSPC`` once it is
  handed to the kernel (a larger write, a flush, a close), as a real full disk
  does. Every write of the store goes through that module.

And, whatever the disk: an upload that fails while being stored, or that has a
filename too long to store, never makes the upstream project private, neither
at once nor after a restart.
"""

import builtins
import errno
import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred

from pypicache.storage import atomic, filesystem
from tests.daemon import World, start_daemon, start_world
from tests.fakeindex import JSON_TYPE
from tests.packages import build_wheel
from tests.test_crash import eventually
from tests.test_upstream_faults import ask, assert_settled, fds_into, leftovers
from tests.webclient import multipart, send

DEADLINE = 8.0


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """``lib`` 1.0 and 1.1 upstream, 2.0 for uploading; ``big`` (~120 kB) upstream."""
    d = tmp_path_factory.mktemp("dists")
    data = "".join(f"{i:08x}" for i in range(40_000))
    return {
        "lib": build_wheel(d, "lib", "1.0"),
        "lib11": build_wheel(d, "lib", "1.1"),
        "upload": build_wheel(d, "lib", "2.0"),
        "big": build_wheel(d, "big", "1.0", module_body=f"DATA = {data!r}"),
    }


async def within(coroutine: Any, seconds: float = DEADLINE) -> Any:
    d = Deferred.fromCoroutine(coroutine)
    d.addTimeout(seconds, reactor)
    return await d


async def upload_by_put(world: World, archive: Path, filename: str | None = None):
    filename = filename or archive.name
    return await within(
        send(
            world.daemon,
            "PUT",
            f"/packages/lib/{filename}",
            archive.read_bytes(),
        )
    )


async def upload_by_form(world: World, archive: Path):
    """Upload as twine does: ``POST /`` with a multipart form."""
    content = archive.read_bytes()
    content_type, body = multipart(
        [(":action", "file_upload"), ("name", "lib"), ("version", "2.0")],
        [("content", archive.name.encode(), content)],
    )
    return await within(
        send(world.daemon, "POST", "/", body, {"Content-Type": content_type})
    )


async def upstream_files_listed(world: World, dists: dict[str, Path]) -> None:
    """``/simple/lib/`` is the upstream's page: both upstream files, nothing else."""
    answer = await ask(world.daemon, "simple/lib/", headers={"Accept": JSON_TYPE})
    assert answer.code == 200
    names = {f["filename"] for f in json.loads(answer.body)["files"]}
    assert names == {dists["lib"].name, dists["lib11"].name}
    assert not await world.daemon.app.store.is_private("lib")


def private_files(cache: Path) -> list[str]:
    """Every file under ``private/`` but the (emptied) incoming folder."""
    return sorted(
        str(p.relative_to(cache))
        for p in (cache / "private").rglob("*")
        if p.is_file() and ".incoming" not in p.parts
    )


async def restart(world: World) -> None:
    """A new daemon on the same cache folder (and upstream)."""
    await world.daemon.stop()
    world.daemon = await start_daemon(world.upstream.url, world.cache, timeout=5)


# -- full disks ----------------------------------------------------------------


class _FullFile:
    """A file on a full disk: writes fill Python's buffer (8 kB; none for an
    unbuffered file), then fail."""

    def __init__(self, real: Any, buffered: bool) -> None:
        self._real = real
        self._buffer = io.DEFAULT_BUFFER_SIZE if buffered else 0
        self._pending = 0

    def _full(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def write(self, data: bytes) -> int:
        if data and self._pending + len(data) > self._buffer:
            self._full()
        self._pending += len(data)
        return len(data)

    def flush(self) -> None:
        if self._pending:
            self._full()

    def close(self) -> None:
        self._real.close()
        if self._pending:
            self._pending = 0
            self._full()

    def fileno(self) -> int:
        return self._real.fileno()

    @property
    def closed(self) -> bool:
        return self._real.closed

    def __enter__(self) -> "_FullFile":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class Disk:
    """The cache folder's disk, to be filled and freed."""

    def __init__(self, kind: str, cache: Path) -> None:
        self.kind = kind
        self.cache = cache
        self._patch = pytest.MonkeyPatch()

    def fill(self) -> None:
        if self.kind == "simulated":

            def full_open(path: Any, mode: str = "r", buffering: int = -1):
                real = builtins.open(path, mode, buffering)
                if not set(mode) & set("wxa"):
                    return real
                return _FullFile(real, buffered=buffering != 0)

            self._patch.setattr(atomic, "open", full_open, raising=False)
            return
        fd = os.open(self.cache / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for size in (1 << 16, 1 << 12, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError as e:
                    assert e.errno == errno.ENOSPC
        finally:
            os.close(fd)
        assert os.statvfs(self.cache).f_bavail == 0

    def free(self) -> None:
        self._patch.undo()
        if self.kind == "tmpfs" and (self.cache / "filler").exists():
            os.unlink(self.cache / "filler")


@pytest.fixture(params=["tmpfs", "simulated"])
def disk(request, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    if request.param == "simulated":
        disk = Disk("simulated", cache)
        yield disk
        disk.free()  # even when the test failed with the disk full
        return
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs as the cache folder needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(cache)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield Disk("tmpfs", cache)
    finally:
        if subprocess.run(["umount", str(cache)]).returncode != 0:
            subprocess.run(["umount", "-l", str(cache)])


@pytest_twisted.ensureDeferred
async def test_full_disk(disk, dists, tmp_path):
    """On a full disk: uploads (PUT and twine's form) get 507 with a reason; a cold
    download fails cleanly (507, promptly, no temporary file, no descriptor left);
    cached files and pages are still served, and core metadata (extracted from a
    cached wheel, or fetched from upstream) although it cannot be kept; the
    upstream project stays public. Once space is freed, all works."""
    files = [dists["lib"], dists["lib11"], dists["big"]]
    world = await start_world(tmp_path, files, "json", timeout=5)
    try:
        lib, lib11, big = (d.name for d in files)
        cached = await ask(world.daemon, f"packages/lib/{lib}")
        assert cached.code == 200
        await world.stored("lib", lib)  # the client had it once verified
        metadata = world.cache / "mirror" / "lib" / (lib + ".metadata")
        for _ in range(100):  # extracted in a thread after the answer
            if metadata.exists():
                break
            await task.deferLater(reactor, 0.02, lambda: None)
        await upstream_files_listed(world, dists)
        # As if keeping it had failed: it is extracted again when asked for.
        metadata.unlink()

        disk.fill()
        for upload in (upload_by_put, upload_by_form):
            answer = await upload(world, dists["upload"])
            assert answer.code == 507, answer
            assert b"space" in answer.body
            assert private_files(world.cache) == []
        for project, name in (("lib", lib11), ("big", big)):
            answer = await ask(world.daemon, f"packages/{project}/{name}")
            assert answer.code == 507 and b"space" in answer.body, answer
            assert answer.seconds < 4  # promptly: no hang, no waiting on a timeout
            await assert_settled(world, name)
            assert not [f for f in world.mirror_files(project) if name in f]
        answer = await ask(world.daemon, f"packages/lib/{lib}")
        assert answer.code == 200 and answer.body == dists["lib"].read_bytes()
        for name, version in ((lib, b"1.0"), (lib11, b"1.1")):
            answer = await ask(world.daemon, f"packages/lib/{name}.metadata")
            assert answer.code == 200 and b"Version: " + version in answer.body
        await upstream_files_listed(world, dists)
        # The .metadata just fetched is kept in the background, which fails
        # on the full disk and then removes its temporary file and lock.
        await eventually(
            lambda: leftovers(world.cache) == [] and fds_into(world.cache) == [],
            "the failed keeps to clean up",
        )

        disk.free()
        answer = await ask(world.daemon, f"packages/big/{big}")
        assert answer.code == 200 and answer.body == dists["big"].read_bytes()
        answer = await upload_by_put(world, dists["upload"])
        assert answer.code == 201, answer
    finally:
        await world.stop()


# -- uploads that fail while stored ------------------------------------------


@pytest_twisted.async_yield_fixture
async def world(tmp_path, dists):
    w = await start_world(tmp_path, [dists["lib"], dists["lib11"]], "json", timeout=5)
    yield w
    await w.stop()


@pytest.mark.parametrize("errno_", [errno.ENOSPC, errno.EDQUOT])
@pytest.mark.parametrize("step", ["rename", "sync-folder", "sidecar"])
@pytest_twisted.ensureDeferred
async def test_upload_failing_while_stored_leaves_the_project_public(
    world, dists, monkeypatch, step, errno_
):
    """An upload of a file of a public project that fails while being stored (its
    sidecar cannot be written, the archive cannot be renamed into place, or the
    folder cannot be synced after the rename) answers 507 and leaves nothing under
    private/ but an empty folder: the project's page still lists the upstream
    files, also after a restart on the same cache folder."""
    name = dists["upload"].name
    failing = {"rename": name, "sidecar": name + ".json"}.get(step)
    real_replace = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if os.path.basename(dst) == failing:
            raise OSError(errno_, os.strerror(errno_))
        real_replace(src, dst, *args, **kwargs)

    def sync_folder(folder: Any) -> None:
        raise OSError(errno_, os.strerror(errno_))

    monkeypatch.setattr(os, "replace", replace)
    if step == "sync-folder":
        monkeypatch.setattr(filesystem, "fsync_directory", sync_folder)
    answer = await upload_by_put(world, dists["upload"])
    assert answer.code == 507, answer
    assert private_files(world.cache) == [] and leftovers(world.cache) == []
    await upstream_files_listed(world, dists)
    monkeypatch.undo()
    await restart(world)
    await upstream_files_listed(world, dists)


@pytest_twisted.ensureDeferred
async def test_filename_too_long_is_400_and_stores_nothing(world, dists):
    """A 247-character filename (its ``.metadata`` sidecar would not fit a 255-byte
    name) is refused with 400 before anything is written; the project stays
    public, also after a restart."""
    filename = "lib-2.0+" + "a" * 222 + "-py3-none-any.whl"
    assert len(filename) == 247
    answer = await upload_by_put(world, dists["upload"], filename)
    assert answer.code == 400 and b"too long" in answer.body, answer
    assert private_files(world.cache) == [] and leftovers(world.cache) == []
    assert not (world.cache / "private" / "releases" / "lib").exists()
    await upstream_files_listed(world, dists)
    await restart(world)
    await upstream_files_listed(world, dists)
