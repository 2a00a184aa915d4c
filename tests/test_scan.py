"""Archives dropped into private/ by hand, the rescan, and pypicache-import."""

import io
import json
import shutil
import sys

import pytest
import pytest_twisted

from pypicache.private.importer import main as import_main
from tests.clients import clean_env, pip_install, run
from tests.daemon import spawn_twistd, start_daemon
from tests.packages import build_sdist, build_wheel

DEAD_UPSTREAM = "http://127.0.0.1:1/simple/"


@pytest.fixture
def archives(tmp_path):
    d = tmp_path / "archives"
    return {
        "wheel": build_wheel(d, "dropped", "1.0", requires=["helper"]),
        "helper": build_sdist(d, "helper", "2.0"),
        "pre": build_wheel(d, "dropped", "2.0rc1"),
    }


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest_twisted.ensureDeferred
async def test_rescan_picks_up_dropped_archives(tmp_path, archives):
    """Archives dropped anywhere under private/ appear after POST /+rescan; broken ones are reported, never served."""
    daemon = await start_daemon(DEAD_UPSTREAM, tmp_path / "cache")
    try:
        drop = tmp_path / "cache" / "private" / "from-ci" / "deep"
        drop.mkdir(parents=True)
        shutil.copy(archives["wheel"], drop)
        shutil.copy(archives["helper"], tmp_path / "cache" / "private")
        (drop / "broken-1.0.tar.gz").write_bytes(b"not an archive")
        (drop / "liar-1.0-py3-none-any.whl").write_bytes(archives["wheel"].read_bytes())
        (drop / ".tmp-partial.whl").write_bytes(b"half")
        response = await daemon.get("local/dropped/")
        assert response.code == 404
        await response.content()
        response = await daemon.client.post(daemon.url + "+rescan")
        assert response.code == 200
        report = json.loads(await response.content())
        assert sorted(report["indexed"]) == [
            "private/from-ci/deep/dropped-1.0-py3-none-any.whl",
            "private/helper-2.0.tar.gz",
        ]
        assert {b["path"] for b in report["broken"]} == {
            "private/from-ci/deep/broken-1.0.tar.gz",
            "private/from-ci/deep/liar-1.0-py3-none-any.whl",
        }
        response = await daemon.get(
            "local/dropped/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
        page = json.loads(await response.content())
        [entry] = page["files"]
        assert entry["filename"] == archives["wheel"].name and entry["core-metadata"]
        response = await daemon.get(f"packages/dropped/{archives['wheel'].name}")
        assert await response.content() == archives["wheel"].read_bytes()
        response = await daemon.get("local/broken/")
        assert response.code == 404
        await response.content()
        # A second rescan finds nothing new.
        response = await daemon.client.post(daemon.url + "+rescan")
        report = json.loads(await response.content())
        assert report["indexed"] == [] and report["already_indexed"] == 2
        result = await pip_install(
            daemon.url + "local/", ["dropped"], tmp_path / "t", tmp_path
        )
        result.check()
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_startup_scan_runs_after_listening(tmp_path, archives):
    """twistd indexes dropped-in archives at start-up, after it listens."""
    from twisted.internet import reactor, task

    drop = tmp_path / "cache" / "private"
    drop.mkdir(parents=True)
    shutil.copy(archives["helper"], drop)
    twistd = spawn_twistd(tmp_path, DEAD_UPSTREAM, clean_env(tmp_path))
    try:
        await twistd.port
        for _ in range(100):
            if b"Indexed private/helper-2.0.tar.gz" in twistd.output:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        assert b"Indexed private/helper-2.0.tar.gz" in twistd.output
        assert twistd.output.index(b"Site starting on") < twistd.output.index(
            b"Indexed private/"
        )
    finally:
        await twistd.stop()


def test_import_command(tmp_path, archives):
    """pypicache-import stores archives with the upload rules and reports a summary."""
    cache = tmp_path / "cache"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken-1.0-py3-none-any.whl").write_bytes(b"zip? no")
    out, err = io.StringIO(), io.StringIO()
    status = import_main(
        ["--cache", str(cache), str(tmp_path / "archives"), str(bad)], out, err
    )
    assert status == 1
    assert "3 stored, 0 already there, 1 refused" in out.getvalue()
    assert (
        "refused" in err.getvalue() and "broken-1.0-py3-none-any.whl" in err.getvalue()
    )
    stored = files_under(cache / "private")
    assert "releases/dropped/dropped-1.0-py3-none-any.whl" in stored
    assert "prereleases/dropped/dropped-2.0rc1-py3-none-any.whl" in stored
    assert "releases/helper/helper-2.0.tar.gz" in stored
    assert not [p for p in stored if "tmp" in p]
    out = io.StringIO()
    assert (
        import_main(
            ["--cache", str(cache), str(tmp_path / "archives")], out, io.StringIO()
        )
        == 0
    )
    assert "0 stored, 3 already there, 0 refused" in out.getvalue()


def test_import_refuses_conflicts(tmp_path, archives):
    """An archive with the same name but other bytes than a stored one is refused."""
    cache = tmp_path / "cache"
    assert (
        import_main(
            ["--cache", str(cache), str(archives["helper"])],
            io.StringIO(),
            io.StringIO(),
        )
        == 0
    )
    other = tmp_path / "other"
    build_sdist(other, "helper", "2.0", requires=["something-else"])
    err = io.StringIO()
    assert (
        import_main(
            ["--cache", str(cache), str(other / archives["helper"].name)],
            io.StringIO(),
            err,
        )
        == 1
    )
    assert "File already exists" in err.getvalue()


@pytest_twisted.ensureDeferred
async def test_import_console_script(tmp_path, archives):
    """The installed console script runs."""
    script = shutil.which("pypicache-import") or sys.executable
    args = (
        [script]
        if script != sys.executable
        else [sys.executable, "-m", "pypicache.private.importer"]
    )
    result = await run(
        [*args, "--cache", str(tmp_path / "cache"), str(archives["helper"])],
        clean_env(tmp_path),
    )
    result.check()
    assert "1 stored" in result.out
