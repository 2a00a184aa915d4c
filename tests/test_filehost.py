"""Lock files install through the cache: files served under the public file
host's layout, ``/packages/<2 hex>/<2 hex>/<60 hex>/<filename>``.

The fake upstream links its files in that layout (``file_layout = "hosted"``,
the blake2b-256 of each file), so a real ``uv lock`` against it records those
URLs; the prefix swapped, ``uv sync --frozen`` installs through pypicache.
"""

import shutil
import sys
from pathlib import Path

import pytest
import pytest_twisted
from packaging.version import Version
from twisted.internet.defer import Deferred, DeferredList

from pypicache.errors import NotFound
from pypicache.index.filehost import blake2b_digest, digest_path, hosted_path
from pypicache.proxy.rules import Rules
from tests.clients import clean_env, run, uv_binary
from tests.daemon import start_world
from tests.fakeindex import FakeIndex
from tests.packages import build_sdist, build_wheel
from tests.test_fastlane import lanes_for, request
from tests.test_proxy import _outcome
from tests.test_rules import HideVersion
from tests.test_upstreams import two, wheels  # noqa: F401 (fixtures)
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


def test_the_layout_is_blake2b_256_cut_2_2_60(tree):
    """The path of a file is the blake2b-256 hex digest of its bytes cut 2/2/60,
    as the public index's upload code lays it out (and the fake upstream, on
    its own, too); malformed paths 404."""
    digest = blake2b_digest(b"some bytes")
    assert len(digest) == 64
    assert digest_path(digest) == f"{digest[:2]}/{digest[2:4]}/{digest[4:]}"
    fake = FakeIndex(tree["leaf"].parent)
    fake.add(tree["leaf"].name)
    own = digest_path(blake2b_digest(tree["leaf"].read_bytes()))
    assert fake.hosted_path(tree["leaf"].name) == f"{own}/{tree['leaf'].name}"
    assert hosted_path(digest[:2], digest[2:4], digest[4:], "x-1.0.tar.gz").endswith(
        "/x-1.0.tar.gz"
    )
    for first, second, rest, name in (
        ("AB", "cd", "0" * 60, "x-1.0.tar.gz"),  # upper case
        ("ab", "cg", "0" * 60, "x-1.0.tar.gz"),  # not hex
        ("ab", "cd", "0" * 59, "x-1.0.tar.gz"),  # short
        ("ab", "cd", "0" * 60, "x-1.0-py3-none-any.whl.metadata"),
    ):
        with pytest.raises(NotFound):
            hosted_path(first, second, rest, name)


DOC = Path(__file__).resolve().parent.parent / "docs" / "lockfiles.rst"

#: The placeholder the docs use for pypicache's URL.
PLACEHOLDER = "http://localhost:8080"


def doc_blocks(title: str) -> list[list[str]]:
    """The literal blocks (their command lines) of one section of docs/lockfiles.rst."""
    lines = DOC.read_text().splitlines()
    start = lines.index(title) + 2
    blocks: list[list[str]] = []
    in_block = False
    for i, line in enumerate(lines[start:], start):
        if i + 1 < len(lines) and set(lines[i + 1]) == {"-"} and line:
            break  # the next section's title
        if line.endswith("::"):
            blocks.append([])
            in_block = True
        elif in_block and line.startswith("    "):
            blocks[-1].append(line.strip())
        elif in_block and line:
            in_block = False
    return blocks


async def hermetic_env(tmp_path: Path, name: str) -> dict:
    """A clean environment whose ``uv pip`` and ``pip`` act on a fresh venv."""
    env = clean_env(tmp_path / name)
    venv = tmp_path / name / "venv"
    made = await run([sys.executable, "-m", "venv", "--without-pip", venv], env)
    made.check()
    shim = venv / "bin" / "pip"
    shim.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -m pip --python "{venv}/bin/python" '
        '--isolated --no-cache-dir --disable-pip-version-check "$@"\n'
    )
    shim.chmod(0o755)
    env["PATH"] = f"{venv / 'bin'}:{Path(uv_binary()).parent}:{env['PATH']}"
    env["VIRTUAL_ENV"] = str(venv)
    env["UV_PYTHON"] = str(venv / "bin" / "python")
    return env


async def run_doc_block(block: list[str], world, env: dict, cwd: Path) -> list:
    """Run a documented block line by line with ``sh``, pypicache's URL for
    the docs' placeholder; every line must succeed."""
    results = []
    for line in block:
        line = line.replace(PLACEHOLDER, world.daemon.url.rstrip("/"))
        results.append((await run(["sh", "-c", line], env, cwd)).check())
    return results


def _pip_reads_pylock() -> bool:
    from pip import __version__

    return Version(__version__) >= Version("26.1")


async def _lock(tmp_path: Path, world) -> Path:
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
    return project


def _installed(site: Path) -> set[str]:
    return {
        p.name.split("-")[0] for p in site.glob("lib/python*/site-packages/*.dist-info")
    }


LOCKED = {"app", "lib", "srconly", "leaf"}


def _fetched_once_by_the_daemon(world, tree, asked) -> None:
    """Each locked file was fetched by the daemon, once, at its file-host path."""
    assert asked and user_agents(asked) == {"pypicache"}
    for key in LOCKED:
        fetched = [r.path for r in asked if r.path.endswith("/" + tree[key].name)]
        assert fetched == ["/" + hosted(world, tree[key])]


async def test_uv_sync_frozen_installs_a_lock_through_the_cache(tmp_path, world, tree):
    """``uv lock`` against the upstream records its file-host URLs; with them
    rewritten by docs/lockfiles.rst's own commands, ``uv sync --frozen``
    installs through pypicache: each file fetched once by it (never by uv),
    verified and stored. A second install, in a fresh environment with an
    empty uv cache, is answered from the cache without any upstream request."""
    project = await _lock(tmp_path, world)
    lock = (project / "uv.lock").read_text()
    upstream_files = world.upstream.root + "packages/"
    for key in LOCKED:
        assert upstream_files + world.index.hosted_path(tree[key].name) in lock
    env = await hermetic_env(tmp_path, "sync1")
    (hosts,) = await run_doc_block(
        doc_blocks("Replacing the prefix")[1], world, env, project
    )
    assert hosts.out.split() == [world.upstream.root.rstrip("/")]
    before = len(world.index.requests)
    sed, sync = doc_blocks("uv: ``uv sync --frozen``")[0]
    await run_doc_block([sed, sync], world, env, project)
    assert upstream_files not in (project / "uv.lock").read_text()
    assert _installed(project / ".venv") == LOCKED
    _fetched_once_by_the_daemon(world, tree, world.index.requests[before:])
    for key in LOCKED:
        await world.stored(tree[key].name.split("-")[0], tree[key].name)

    world.index.forbid()
    (project / ".venv").rename(tmp_path / "old-venv")
    await run_doc_block([sync], world, await hermetic_env(tmp_path, "sync2"), project)
    assert _installed(project / ".venv") == LOCKED
    assert world.index.violations == []


async def test_pylock_and_exported_requirements_install_through_the_cache(
    tmp_path, world, tree
):
    """A ``pylock.toml`` exported from the lock, rewritten as the docs say,
    installs through pypicache with ``uv pip install`` (and with ``pip
    install -r pylock.toml`` where pip can); the lock exported as hashed
    requirements installs through ``/simple/`` from what is cached, without
    an upstream request."""
    project = await _lock(tmp_path, world)
    (export,), (sed, pip), (uv,) = doc_blocks("pip and uv: ``pylock.toml``")
    env = await hermetic_env(tmp_path, "uv")
    before = len(world.index.requests)
    await run_doc_block([export, sed, uv], world, env, project)
    assert (
        world.upstream.root + "packages/" not in (project / "pylock.toml").read_text()
    )
    assert _installed(Path(env["VIRTUAL_ENV"])) == LOCKED
    _fetched_once_by_the_daemon(world, tree, world.index.requests[before:])
    for key in LOCKED:
        await world.stored(tree[key].name.split("-")[0], tree[key].name)

    world.index.forbid()
    if _pip_reads_pylock():
        env = await hermetic_env(tmp_path, "pip")
        await run_doc_block([pip], world, env, project)
        assert _installed(Path(env["VIRTUAL_ENV"])) == LOCKED
    # uv's way to keep uv.lock as it is: hashed requirements through /simple/.
    env = await hermetic_env(tmp_path, "export")
    await run_doc_block(doc_blocks("uv: ``uv sync --frozen``")[1], world, env, project)
    assert _installed(Path(env["VIRTUAL_ENV"])) == LOCKED
    assert world.index.violations == []


async def test_poetry_exports_install_through_the_cache(tmp_path, world, tree):
    """A ``poetry.lock`` (made by real poetry against the upstream, here a
    source standing in for the public index) exported to ``pylock.toml``
    carries the file-host URLs: rewritten as the docs say, it installs through
    pypicache; exported as hashed requirements it installs through
    ``/simple/`` from the cache, without an upstream request. Needs poetry
    with poetry-plugin-export on ``PATH``."""
    poetry = shutil.which("poetry")
    if poetry is None:
        pytest.skip("poetry (with poetry-plugin-export) is not installed")
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "plocked"\nversion = "0"\nrequires-python = ">=3.8"\n'
        'dependencies = ["app"]\n\n[tool.poetry]\npackage-mode = false\n\n'
        f'[[tool.poetry.source]]\nname = "upstream"\nurl = "{world.upstream.url}"\n'
        'priority = "primary"\n'
    )
    env = clean_env(tmp_path / "lock")
    (await run([poetry, "lock", "--no-interaction"], env, project)).check()
    env = await hermetic_env(tmp_path, "pylock")
    (export, sed, install), exported = doc_blocks("poetry")
    await run_doc_block([export], world, env, project)  # asks the source for links
    before = len(world.index.requests)
    await run_doc_block([sed, install], world, env, project)
    assert _installed(Path(env["VIRTUAL_ENV"])) == LOCKED
    _fetched_once_by_the_daemon(world, tree, world.index.requests[before:])
    for key in LOCKED:
        await world.stored(tree[key].name.split("-")[0], tree[key].name)
    world.index.forbid()
    env = await hermetic_env(tmp_path, "requirements")
    await run_doc_block(exported, world, env, project)
    assert _installed(Path(env["VIRTUAL_ENV"])) == LOCKED
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


async def test_a_stored_file_needs_no_upstream_even_with_a_stale_page(tmp_path, tree):
    """With every page stale at once (``page_ttl=0``), a stored file is still
    served under its file-host path from the cached page's word, without an
    upstream request."""
    world = await hosted_world(tmp_path, tree, page_ttl=0)
    try:
        path, name = hosted(world, tree["leaf"]), tree["leaf"].name
        await (await world.daemon.get(path)).content()
        await world.stored("leaf", name)
        world.index.forbid()
        for _ in range(2):
            answer = await world.daemon.get(path)
            assert answer.code == 200
            assert await answer.content() == tree["leaf"].read_bytes()
        assert world.index.violations == []
    finally:
        await world.stop()


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


async def test_routed_and_named_upstreams(two, wheels):  # noqa: F811 (fixtures)
    """A routed project's file is found on its own upstream's page under the
    file-host path, at ``/packages/...`` and ``/upstreams/<name>/packages/...``
    alike; the default upstream's file of the same project (an impostor) is
    never fetched there."""
    two.default.file_layout = two.pytorch.file_layout = "hosted"
    torch = wheels["torch"]
    path = "packages/" + two.pytorch.hosted_path(torch.name)
    for prefix in ("", "upstreams/pytorch/"):
        answer = await two.daemon.get(prefix + path)
        assert answer.code == 200
        assert await answer.content() == torch.read_bytes()
    impostor = "packages/" + two.default.hosted_path(wheels["impostor"].name)
    answer = await two.daemon.get(impostor)
    assert answer.code == 404
    await answer.content()
    assert two.asked(two.default, "torch") == []
