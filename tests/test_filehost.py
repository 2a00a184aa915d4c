"""Lock files install through the cache: files served under the public file
host's layout, ``/packages/<2 hex>/<2 hex>/<60 hex>/<filename>``.

The fake upstream links its files in that layout (``file_layout = "hosted"``,
the blake2b-256 of each file), so a real ``uv lock`` against it records those
URLs; the prefix swapped, ``uv sync --frozen`` installs through pypicache.
"""

import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList

from pypicache.index.filehost import blake2b_digest, digest_path, hosted_path
from pypicache.proxy.rules import Rules
from tests.clients import clean_env, run, uv_binary
from tests.daemon import start_world
from tests.packages import build_sdist, build_wheel
from tests.test_fastlane import lanes_for, request
from tests.test_rules import HideVersion
from tests.webclient import put


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """app -> lib (wheels) and srconly (an sdist) -> leaf; an older lib."""
    d = tmp_path_factory.mktemp("tree")
    return {
        "app": build_wheel(d, "app", "1.0", requires=["lib>=1", "srconly"]),
        "lib1": build_wheel(d, "lib", "1.0"),
        "lib": build_wheel(d, "lib", "2.0", requires=["leaf"]),
        "srconly": build_sdist(d, "srconly", "0.5", requires=["leaf"]),
        "leaf": build_wheel(d, "leaf", "3.0"),
        "secret": build_wheel(d, "secret-thing", "1.0"),
    }


async def hosted_world(tmp_path, tree, **options):
    """A fake upstream linking its files in the file host's layout, and a daemon."""
    files = [p for key, p in tree.items() if key != "secret"]
    world = await start_world(tmp_path, files, timeout=10, **options)
    world.index.file_layout = "hosted"
    return world


@pytest_twisted.async_yield_fixture()
async def world(tmp_path, tree):
    world = await hosted_world(tmp_path, tree)
    yield world
    await world.stop()


def hosted(world, path: Path) -> str:
    """The daemon's path for a file in the file host's layout."""
    return "packages/" + world.index.hosted_path(path.name)


def user_agents(requests) -> set[str]:
    return {r.headers.get("user-agent", "") for r in requests}


def test_the_layout_is_blake2b_256_cut_2_2_60():
    """The path of a file is the blake2b-256 hex digest of its bytes cut 2/2/60,
    as the public index's upload code lays it out; malformed paths 404."""
    digest = blake2b_digest(b"some bytes")
    assert len(digest) == 64
    assert digest_path(digest) == f"{digest[:2]}/{digest[2:4]}/{digest[4:]}"
    assert hosted_path(digest[:2], digest[2:4], digest[4:], "x-1.0.tar.gz").endswith(
        "/x-1.0.tar.gz"
    )
    for first, second, rest, name in (
        ("AB", "cd", "0" * 60, "x-1.0.tar.gz"),  # upper case
        ("ab", "cg", "0" * 60, "x-1.0.tar.gz"),  # not hex
        ("ab", "cd", "0" * 59, "x-1.0.tar.gz"),  # short
        ("ab", "cd", "0" * 60, "x-1.0-py3-none-any.whl.metadata"),
    ):
        with pytest.raises(Exception) as raised:
            hosted_path(first, second, rest, name)
        assert raised.value.code == 404


async def _lock(tmp_path: Path, world) -> tuple[Path, dict]:
    """``uv lock`` a project needing ``app`` against the fake upstream."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "locked"\nversion = "0"\nrequires-python = ">=3.8"\n'
        'dependencies = ["app"]\n\n[tool.uv]\npackage = false\n'
    )
    env = clean_env(tmp_path / "lock")
    args = [uv_binary(), "lock", "--no-config", "--python", sys.executable]
    result = await run([*args, "--default-index", world.upstream.url], env, project)
    result.check()
    return project, env


async def _sync(tmp_path: Path, project: Path, name: str):
    """``uv sync --frozen`` in ``project``, with a fresh uv cache and venv."""
    env = clean_env(tmp_path / name)
    args = [uv_binary(), "sync", "--frozen", "--no-config", "--python", sys.executable]
    return await run(args, env, project)


def _installed(project: Path) -> set[str]:
    return {
        p.name.split("-")[0]
        for p in project.glob(".venv/lib/python*/site-packages/*.dist-info")
    }


async def test_uv_sync_frozen_installs_a_lock_through_the_cache(tmp_path, world, tree):
    """``uv lock`` against the upstream records its file-host URLs; with their
    prefix swapped by ``sed`` (as docs/lockfiles.rst says), ``uv sync
    --frozen`` installs through pypicache: each file fetched once by it (never
    by uv), verified and stored. A second install, in a fresh environment with
    an empty uv cache, is answered from the cache without any upstream request."""
    project, _ = await _lock(tmp_path, world)
    lock = (project / "uv.lock").read_text()
    upstream_files = world.upstream.root + "packages/"
    for key in ("app", "lib", "srconly", "leaf"):
        assert upstream_files + world.index.hosted_path(tree[key].name) in lock
    before = len(world.index.requests)
    daemon_files = world.daemon.url + "packages/"
    sed = ["sed", "-i", f"s#{upstream_files}#{daemon_files}#g", "uv.lock"]
    (await run(sed, clean_env(tmp_path / "sed"), project)).check()
    assert upstream_files not in (project / "uv.lock").read_text()

    (await _sync(tmp_path, project, "sync1")).check()
    assert _installed(project) == {"app", "lib", "srconly", "leaf"}
    asked = world.index.requests[before:]
    assert asked and user_agents(asked) == {"pypicache"}
    for key in ("app", "lib", "srconly", "leaf"):
        name = tree[key].name
        fetched = [r for r in asked if r.path.endswith("/" + name)]
        assert [r.path for r in fetched] == ["/" + hosted(world, tree[key])]
        await world.stored(name.split("-")[0], name)

    world.index.forbid()
    (project / ".venv").rename(tmp_path / "old-venv")
    (await _sync(tmp_path, project, "sync2")).check()
    assert _installed(project) == {"app", "lib", "srconly", "leaf"}
    assert world.index.violations == []


async def test_a_path_the_upstream_does_not_list_404s(world, tree):
    """A well-formed path whose digest is not the upstream's for that filename
    answers 404 with the reason, and nothing is fetched; once the file is
    stored, the wrong path still 404s, without asking the upstream."""
    name = tree["lib"].name
    wrong = f"packages/00/11/{'2' * 60}/{name}"
    answer = await world.daemon.get(wrong)
    assert answer.code == 404
    assert "is not at /packages/00/11/" in await answer.text()
    assert world.index.downloads(name) == 0 and world.mirror_files("lib") == []

    right = await world.daemon.get(hosted(world, tree["lib"]))
    assert right.code == 200
    assert await right.content() == tree["lib"].read_bytes()
    await world.stored("lib", name)
    world.index.forbid()
    for path in (wrong, wrong.replace("packages/00/", "packages/0g/")):
        answer = await world.daemon.get(path)
        assert answer.code == 404
        await answer.content()
    answer = await world.daemon.get(f"packages/00/11/{'2' * 60}/not-a-dist.txt")
    assert answer.code == 400
    await answer.content()
    assert world.index.violations == []


async def _outcome(daemon, path):
    """GET ``path``: (status, body), body ``None`` if cut off, (None, None) if failed."""
    try:
        response = await daemon.get(path)
    except Exception:
        return None, None
    try:
        return response.code, await response.content()
    except Exception:
        return response.code, None


async def test_a_wrong_hash_aborts_and_stores_nothing(world, tree):
    """Upstream bytes that do not match the page's sha256: concurrent clients
    of the file-host path share one download, none gets a complete body, and
    nothing is stored."""
    name = tree["lib"].name
    world.index.corrupt(name)
    path = hosted(world, tree["lib"])
    outcomes = await DeferredList(
        [Deferred.fromCoroutine(_outcome(world.daemon, path)) for _ in range(3)]
    )
    for _, (code, body) in outcomes:
        assert body != tree["lib"].read_bytes()
        assert code != 200 or body is None
    assert world.index.downloads(name) == 1
    assert world.mirror_files("lib") == []


async def test_served_as_the_project_path_serves(world, tree):
    """HEAD, Range and If-None-Match answer as at ``/packages/<project>/<file>``
    (the same ETag), before and after the file is stored."""
    name = tree["leaf"].name
    path = hosted(world, tree["leaf"])
    head = await world.daemon.head(path)
    assert head.code == 200
    assert head.headers.getRawHeaders("etag") is not None
    answer = await world.daemon.get(path)
    assert await answer.content() == tree["leaf"].read_bytes()
    await world.stored("leaf", name)
    plain = await world.daemon.get(f"packages/leaf/{name}")
    await plain.content()
    answer = await world.daemon.get(path)
    await answer.content()
    etag = answer.headers.getRawHeaders("etag")
    assert etag == plain.headers.getRawHeaders("etag")
    assert answer.headers.getRawHeaders("cache-control") == plain.headers.getRawHeaders(
        "cache-control"
    )
    ranged = await world.daemon.get(path, headers={"Range": "bytes=0-9"})
    assert ranged.code == 206
    assert await ranged.content() == tree["leaf"].read_bytes()[:10]
    cached = await world.daemon.get(path, headers={"If-None-Match": etag[0]})
    assert cached.code == 304
    await cached.content()
    assert world.index.downloads(name) == 1


async def test_stored_files_come_from_the_fast_lane(tmp_path, tree):
    """A stored file under the file-host path is answered by the fast lane,
    byte for byte as twisted.web answers it (GET, HEAD, HTTP/1.0, 304)."""
    world = await hosted_world(tmp_path, tree)
    lanes = await lanes_for(world)
    try:
        name = tree["leaf"].name
        answer = await world.daemon.get(hosted(world, tree["leaf"]))
        await answer.content()
        await world.stored("leaf", name)
        lanes.calls.clear()
        target = "/" + hosted(world, tree["leaf"])
        first = await lanes.same(request("GET", target, close=True))
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        assert first.endswith(tree["leaf"].read_bytes())
        await lanes.same(request("HEAD", target, close=True))
        await lanes.same(request("GET", target, version="HTTP/1.0"))
        await lanes.same(request("GET", target, {"If-None-Match": "*"}, close=True))
        assert lanes.calls == []
    finally:
        await lanes.stop()


async def test_rules_and_private_projects_apply(tmp_path, tree):
    """The rules refuse a file under its file-host path as under its project
    path (404, the rule's reason), stored or not; a private file has no
    file-host path; a private project is never looked up upstream."""
    rule = HideVersion("-1.0-")
    world = await hosted_world(tmp_path, tree, rules=Rules((rule,)))
    try:
        d = world.daemon
        await (await d.get("simple/lib/")).content()
        for stored in (False, True):
            answer = await d.get(hosted(world, tree["lib1"]))
            assert answer.code == 404
            assert "held back by a test rule" in await answer.text()
            if not stored:
                rule.on = False
                ok = await d.get(hosted(world, tree["lib1"]))
                assert ok.code == 200
                await ok.content()
                await world.stored("lib", tree["lib1"].name)
                rule.on, rule.turn = True, 1
        assert world.index.downloads(tree["lib1"].name) == 1

        rule.on = False
        assert (await put(d, tree["secret"])).code == 201
        digest = blake2b_digest(tree["secret"].read_bytes())
        path = f"packages/{digest_path(digest)}/{tree['secret'].name}"
        answer = await d.get(path)
        assert answer.code == 404
        assert "no upstream file URL" in await answer.text()
        other = f"packages/{digest_path(digest)}/secret_thing-2.0-py3-none-any.whl"
        answer = await d.get(other)
        assert answer.code == 404
        await answer.content()
        assert world.asked_about("secret") == []
    finally:
        await world.stop()
