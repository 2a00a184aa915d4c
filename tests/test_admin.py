"""pypicache-admin: cleanup, verify, export and import, beside a real daemon."""

import io
import json
import tarfile
from pathlib import Path

import attrs
import pytest_twisted
from twisted.python.filepath import FilePath

from pypicache.storage.filesystem import FilesystemStore
from pypicache.tap.admin import main
from tests.clients import pip_install
from tests.test_eviction import DAY, Run, dists, run  # noqa: F401 (fixtures)


def admin(*argv: str) -> tuple[int, str]:
    """Run ``pypicache-admin argv`` in this process; its exit status and output."""
    out = io.StringIO()
    code = main(list(argv), out, io.StringIO())
    return code, out.getvalue()


def snapshot(cache: Path) -> dict[str, tuple[int, int]]:
    """Every file of the cache but lock files, with its size and modification time."""
    return {
        str(p.relative_to(cache)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in cache.rglob("*")
        if p.is_file() and "locks" not in p.parts
    }


@pytest_twisted.ensureDeferred
async def test_cleanup_dry_run_changes_nothing_then_cleanup_evicts(run):  # noqa: F811
    """cleanup --dry-run lists what would go and the space freed and changes
    no file; cleanup itself then removes exactly that, while the daemon runs,
    and the daemon's /local/ stops listing it at once."""
    await run.start()
    await run.install("olda", "keep")
    await run.stop_daemon()
    run.age("olda", 40 * DAY)
    run.age("keep", 1 * DAY)
    await run.start()
    before = snapshot(run.cache)

    code, out = admin(
        "cleanup", "--cache", str(run.cache), "--evict-unused-after", "30d", "--dry-run"
    )

    assert code == 0
    assert f"would evict olda/{run.dists['olda'].name}" in out
    assert "keep/" not in out
    assert "1 files" in out and "would be freed" in out
    assert snapshot(run.cache) == before

    code, out = admin(
        "cleanup", "--cache", str(run.cache), "--evict-unused-after", "30d"
    )
    assert code == 0
    assert f"evicted olda/{run.dists['olda'].name}" in out
    assert run.mirrored() == {"keep"}
    code, _ = await run.get("local/olda/")
    assert code == 404


def test_cleanup_needs_a_limit(tmp_path):
    """cleanup without --max-cache-size or --evict-unused-after is a usage error."""
    (tmp_path / "cache").mkdir()
    code, _ = admin("cleanup", "--cache", str(tmp_path / "cache"))
    assert code == 2


def _corrupt(path: Path) -> None:
    """Flip bytes in the middle of ``path``, keeping its size."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))


@pytest_twisted.ensureDeferred
async def test_verify_finds_corrupt_files(run):  # noqa: F811
    """verify reports a corrupt mirrored file and a corrupt private one, moves
    the mirrored one aside (it is fetched again on demand) and leaves the
    private one; its exit status says something was wrong."""
    await run.start()
    await run.install("olda", "keep")
    run.add_private()
    private = run.cache / "private/releases/priv" / run.dists["priv"].name
    _corrupt(run.archive("olda"))
    _corrupt(private)

    code, out = admin("verify", "--cache", str(run.cache))

    assert code == 1
    assert f"CORRUPT mirror/olda/{run.dists['olda'].name}: sha256" in out
    assert f"moved to corrupt/olda/{run.dists['olda'].name}" in out
    assert f"CORRUPT private/releases/priv/{run.dists['priv'].name}" in out
    assert "left in place (private)" in out
    assert "3 files checked, 2 corrupt." in out
    assert not run.archive("olda").exists()
    assert (run.cache / "corrupt/olda" / run.dists["olda"].name).exists()
    assert private.exists()
    await run.install("olda", target="t2")
    assert run.archive("olda").exists()
    _, out = admin("verify", "--cache", str(run.cache))
    assert "3 files checked, 1 corrupt." in out


def test_verify_passes_a_sound_cache(tmp_path, dists):  # noqa: F811
    """verify of a cache that matches its records exits 0."""
    cache = Run(tmp_path, dists)
    cache.add_private()
    code, out = admin("verify", "--cache", str(cache.cache))
    assert (code, out) == (0, "1 files checked, 0 corrupt.\n")


def _private_index(cache: Run) -> None:
    """priv to install, keep yanked, drop deleted (a tombstone)."""
    for name in ("priv", "keep", "drop"):
        cache.add_private(name)
    store = FilesystemStore(FilePath(str(cache.cache)))
    keep = store.find_now("keep", cache.dists["keep"].name)
    store.update(keep, attrs.evolve(keep.info, yanked="broken"))  # fires at once
    store.remove(store.find_now("drop", cache.dists["drop"].name))


@pytest_twisted.ensureDeferred
async def test_export_then_import_on_a_fresh_cache(tmp_path, dists):  # noqa: F811
    """export writes the private index (files, records with yanks,
    tombstones); import restores it on a fresh cache (its folder made if
    missing, as on a new server), where pip installs from /local/, the yank
    and the tombstone hold, and a second import changes nothing."""
    old = Run(tmp_path / "old", dists)
    _private_index(old)
    tar_path = tmp_path / "private.tar"
    code, out = admin("export", "--cache", str(old.cache), str(tar_path))
    assert code == 0, out
    assert "3 private archives" not in out  # drop was deleted
    assert "2 private archives written" in out

    new = Run(tmp_path / "new", dists)
    assert not new.cache.exists()
    code, out = admin("import", "--cache", str(new.cache), str(tar_path))
    assert code == 0, out
    assert "2 private archives imported, 0 already there." in out
    tombstone = new.cache / "private/.deleted/drop" / (dists["drop"].name + ".json")
    assert json.loads(tombstone.read_text())["sha256"]
    code, out = admin("import", "--cache", str(new.cache), str(tar_path))
    assert "0 private archives imported, 2 already there." in out

    await new.start()
    try:
        await new.upstream.stop()
        new.upstream = None
        result = await pip_install(
            new.url + "local/", ["priv"], tmp_path / "t", tmp_path
        )
        result.check()
        assert list((tmp_path / "t").glob("priv-1.0.dist-info"))
        code, body = await new.get(
            "local/keep/", accept="application/vnd.pypi.simple.v1+json"
        )
        assert code == 200
        assert json.loads(body)["files"][0]["yanked"] == "broken"
        code, _ = await new.get(f"packages/drop/{dists['drop'].name}")
        assert code in (404, 410)
    finally:
        await new.close()


def test_import_refuses_a_tampered_tar(tmp_path, dists):  # noqa: F811
    """An archive that does not match its record in the tar refuses the whole
    import, and nothing is stored."""
    old = Run(tmp_path / "old", dists)
    _private_index(old)
    tar_path = tmp_path / "private.tar"
    assert admin("export", "--cache", str(old.cache), str(tar_path))[0] == 0
    tampered = tmp_path / "tampered.tar"
    with tarfile.open(tar_path) as source, tarfile.open(tampered, "w") as target:
        for member in source:
            data = source.extractfile(member).read()
            if member.name.endswith(".whl") and "priv" in member.name:
                data = data[:100] + bytes(b ^ 1 for b in data[100:110]) + data[110:]
            target.addfile(member, io.BytesIO(data))
    new = tmp_path / "new"
    new.mkdir()
    code, out = admin("import", "--cache", str(new), str(tampered))
    assert code == 1
    assert "Refused, nothing imported" in out and "sha256" in out
    assert not [p for p in new.rglob("*") if p.is_file() and "locks" not in p.parts]


def test_import_refuses_paths_outside_private(tmp_path):
    """A tar member outside private/ (or climbing out of it) is refused."""
    tar_path = tmp_path / "evil.tar"
    with tarfile.open(tar_path, "w") as tar:
        info = tarfile.TarInfo("private/../mirror/x/x-1.0-py3-none-any.whl")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    (tmp_path / "cache").mkdir()
    code, out = admin("import", "--cache", str(tmp_path / "cache"), str(tar_path))
    assert code == 1 and "is not a file of private/" in out
    assert not (tmp_path / "mirror").exists()


def test_export_and_import_carry_local_yanks(tmp_path):
    """export puts the local yanks (DIR/local-yanks.json) in the tar; import
    adds those the cache lacks and keeps its own decisions as they are; a
    second import adds nothing; a broken record refuses the import."""
    from pypicache.storage.yanks import YANKS_FILE, change_record, read_record

    old = tmp_path / "old"
    (old / "private").mkdir(parents=True)
    lock = str(tmp_path / "old.lock")
    change_record(FilePath(str(old)), lock, "requests", "releases", "2.99.0", "bad", 1)
    change_record(FilePath(str(old)), lock, "six", "files", "six-1.0.tar.gz", "", 2)
    tar_path = tmp_path / "private.tar"
    code, out = admin("export", "--cache", str(old), str(tar_path))
    assert code == 0, out
    with tarfile.open(tar_path) as tar:
        assert YANKS_FILE in tar.getnames()

    new = tmp_path / "new"
    new.mkdir()
    lock = str(tmp_path / "new.lock")
    change_record(FilePath(str(new)), lock, "requests", "releases", "2.99.0", "ours", 3)
    code, out = admin("import", "--cache", str(new), str(tar_path))
    assert code == 0 and "1 local yanks imported." in out, out
    record = read_record(FilePath(str(new)))
    assert record["requests"]["releases"]["2.99.0"]["reason"] == "ours"
    assert record["six"]["files"]["six-1.0.tar.gz"]["reason"] == ""
    code, out = admin("import", "--cache", str(new), str(tar_path))
    assert code == 0 and "local yanks imported" not in out, out

    broken = tmp_path / "broken.tar"
    with tarfile.open(broken, "w") as tar:
        info = tarfile.TarInfo(YANKS_FILE)
        info.size = 2
        tar.addfile(info, io.BytesIO(b"[]"))
    code, out = admin("import", "--cache", str(new), str(broken))
    assert code == 1 and "not a record of local yanks" in out, out
