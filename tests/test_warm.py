"""``POST /+warm`` with lock files written by real uv and poetry against a fake upstream, then offline installs from ``/local/``."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from pypicache.proxy.upstreams import UpstreamSpec
from tests import webclient
from tests.clients import clean_env, pip_install, run, uv_binary, uv_pip_install
from tests.daemon import World, start_daemon, start_world
from tests.fakeindex import FakeIndex, start_fake_index
from tests.packages import build_sdist, build_wheel
from tests.test_bulk_limits import htpasswd

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ALPHA = "alpha-1.0-py3-none-any.whl"
BETA_WHEEL = "beta-1.0-py3-none-any.whl"
BETA_SDIST = "beta-1.0.tar.gz"
#: Every file of the locked set (alpha needs beta; beta has a wheel and an sdist).
LOCKED = sorted([ALPHA, BETA_WHEEL, BETA_SDIST])

PYPROJECT = """\
[project]
name = "app"
version = "0.1"
requires-python = ">=3.9"
dependencies = ["alpha"]
"""


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """alpha 1.0 (a wheel, needs beta), beta 1.0 (a wheel and an sdist), and
    gamma 1.0, which nothing locks (it must never be fetched)."""
    d = tmp_path_factory.mktemp("warm-dists")
    return [
        build_wheel(d, "alpha", "1.0", requires=["beta>=1"]),
        build_wheel(d, "beta", "1.0"),
        build_sdist(d, "beta", "1.0"),
        build_wheel(d, "gamma", "1.0"),
    ]


@pytest_twisted.async_yield_fixture()
async def world(tmp_path, dists):
    w = await start_world(tmp_path, dists, timeout=10)
    yield w
    await w.stop()


async def uv(w, *args: str, cwd: Path) -> None:
    """Run uv hermetically (its own cache, no config) in ``cwd``; fail loudly."""
    (await run([uv_binary(), *args], clean_env(w.tmp_path), cwd=cwd)).check()


def project(w) -> Path:
    folder = w.tmp_path / "app"
    folder.mkdir(exist_ok=True)
    (folder / "pyproject.toml").write_text(PYPROJECT)
    return folder


async def uv_lock(w) -> Path:
    """``uv lock`` of a project needing alpha, against the fake upstream."""
    folder = project(w)
    await uv(w, "lock", "--no-config", "--index-url", w.upstream.url, cwd=folder)
    return folder / "uv.lock"


async def post_warm(w, body: bytes, query: str = "", **kwargs) -> webclient.Answer:
    return await webclient.send(
        w.daemon,
        "POST",
        "/+warm" + (f"?{query}" if query else ""),
        body,
        {"Content-Type": "text/plain", **kwargs.pop("headers", {})},
        **kwargs,
    )


async def warm(w, body: bytes, query: str = "") -> dict:
    answer = await post_warm(w, body, query)
    assert answer.code == 200, answer
    return json.loads(answer.body)


def archives(w, project: str) -> list[str]:
    """The archives of ``project`` in the daemon's mirror (not their sidecars)."""
    return [n for n in w.mirror_files(project) if n.endswith((".whl", ".tar.gz"))]


def statuses(report: dict) -> dict[str, str]:
    return {f["filename"]: f["status"] for f in report["files"]}


async def offline_pip(w, args: list[str]) -> None:
    """pip installs ``args`` from ``/local/`` with the upstream refusing everything."""
    w.index.forbid()
    result = await pip_install(
        w.daemon.url + "local/", args, w.tmp_path / "target", w.tmp_path
    )
    assert result.ok, result
    assert w.index.violations == []
    assert (w.tmp_path / "target" / "alpha").is_dir()
    assert (w.tmp_path / "target" / "beta").is_dir()


@pytest_twisted.ensureDeferred
async def test_uv_lock_warms_exactly_its_files(world):
    """A uv.lock written by ``uv lock`` (sent as the raw body, its format told
    by its content) caches exactly the files it lists, fetched and checked
    against the lock's hashes; the project itself (a virtual source) is
    reported as not acted on; then ``pip install --require-hashes`` of the
    same set (``uv export``) works from /local/ with no upstream request."""
    w = world
    lock = await uv_lock(w)
    report = await warm(w, lock.read_bytes())
    assert report["format"] == "uv"
    assert statuses(report) == {name: "fetched" for name in LOCKED}
    assert report["totals"]["fetched"] == 3 and report["totals"]["failed"] == 0
    assert [(r["name"], r["version"], r["status"]) for r in report["requirements"]] == [
        ("alpha", "1.0", "resolved"),
        ("beta", "1.0", "resolved"),
    ]
    assert (
        report["requirements"][0]["line_number"]
        == lock.read_text().splitlines().index("[[package]]") + 1
    )
    assert [u["line"] for u in report["unparsed"]] == ["app"]
    assert "virtual" in report["unparsed"][0]["reason"]
    for f in report["files"]:
        assert f["sha256"] == w.index.sha256(f["filename"])
    assert archives(w, "alpha") == [ALPHA]
    assert archives(w, "beta") == [BETA_WHEEL, BETA_SDIST]
    assert w.mirror_files("gamma") == []
    # A second time, everything is on disk already.
    again = await warm(w, lock.read_bytes())
    assert statuses(again) == {name: "cached" for name in LOCKED}

    await uv(
        w,
        "export",
        "--no-config",
        "--frozen",
        "--no-emit-project",
        "--format",
        "requirements-txt",
        "-o",
        "hashed.txt",
        cwd=lock.parent,
    )
    await offline_pip(w, ["--require-hashes", "-r", str(lock.parent / "hashed.txt")])


@pytest_twisted.ensureDeferred
async def test_pylock_from_uv_export_as_form_field_with_ndjson(world):
    """A pylock.toml written by ``uv export --format pylock.toml``, sent as the
    multipart field ``lock`` with ``?format=pylock`` and ``Accept:
    application/x-ndjson``: one line per file as it is cached, then the
    totals; then ``uv pip install`` of its pins works from /local/ offline."""
    w = world
    folder = (await uv_lock(w)).parent
    await uv(
        w,
        "export",
        "--no-config",
        "--frozen",
        "--format",
        "pylock.toml",
        "-o",
        "pylock.toml",
        cwd=folder,
    )
    text = (folder / "pylock.toml").read_bytes()
    content_type, body = webclient.multipart([], [("lock", b"pylock.toml", text)])
    answer = await post_warm(
        w,
        body,
        "format=pylock",
        headers={"Content-Type": content_type, "Accept": "application/x-ndjson"},
    )
    assert answer.code == 200, answer
    lines = [json.loads(line) for line in answer.body.splitlines()]
    assert sorted(line["filename"] for line in lines[:-1]) == LOCKED
    assert lines[-1]["totals"]["fetched"] == 3
    assert [r["name"] for r in lines[-1]["requirements"]] == ["alpha", "beta"]

    pins = [
        f"{p['name']}=={p['version']}" for p in tomllib.loads(text.decode())["packages"]
    ]
    w.index.forbid()
    result = await uv_pip_install(
        w.daemon.url + "local/", pins, w.tmp_path / "target", w.tmp_path
    )
    assert result.ok, result
    assert w.index.violations == []


@pytest_twisted.ensureDeferred
async def test_hashed_requirements_from_uv_pip_compile(world):
    """A requirements file from ``uv pip compile --generate-hashes`` caches
    the files of each pinned version whose digests its --hash values allow
    (beta: both its wheel and its sdist; a --hash no file has is noted, a
    line whose hashes match no file is unresolved), then ``pip install
    --require-hashes`` of it works from /local/ offline."""
    w = world
    folder = project(w)
    (folder / "requirements.in").write_text("alpha\n")
    await uv(
        w,
        "pip",
        "compile",
        "--no-config",
        "--generate-hashes",
        "--index-url",
        w.upstream.url,
        "requirements.in",
        "-o",
        "requirements.txt",
        cwd=folder,
    )
    report = await warm(w, (folder / "requirements.txt").read_bytes())
    assert report["format"] == "requirements"
    assert statuses(report) == {name: "fetched" for name in LOCKED}
    # A --hash no file on the page has is noted; a line none match is unresolved.
    odd = (
        f"alpha==1.0 --hash=sha256:{w.index.sha256(ALPHA)} --hash=sha256:{'1' * 64}\n"
        f"gamma==1.0 --hash=sha256:{'2' * 64}\n"
    )
    report = await warm(w, odd.encode())
    alpha, gamma = report["requirements"]
    assert alpha["status"] == "resolved"
    assert alpha["note"] == "no file on the index page has sha256:" + "1" * 64
    assert gamma["status"] == "unresolved"
    assert "no file of gamma 1.0 on the index page" in gamma["reason"]
    assert statuses(report) == {ALPHA: "cached"}
    await offline_pip(w, ["--require-hashes", "-r", str(folder / "requirements.txt")])


def poetry_binary() -> str | None:
    """poetry, installed apart from the test environment (``uv tool install
    poetry``, pipx): it is not in the ``test`` extra, as it pins ``pkginfo<2``
    and would downgrade the one pypicache runs with."""
    beside = Path(sys.executable).with_name("poetry")
    return str(beside) if beside.exists() else shutil.which("poetry")


#: What ``poetry lock`` (Poetry 2.5.1) wrote for PYPROJECT with the fake
#: upstream as its primary source, verbatim: the dists are built
#: reproducibly, so its hashes are theirs (checked below).
POETRY_LOCK = (Path(__file__).parent / "data" / "poetry.lock").read_text()


async def warm_poetry_lock(w, text: bytes) -> None:
    """Warm from a poetry.lock; every file fetched; then pip installs its pins
    from /local/ offline."""
    report = await warm(w, text)
    assert report["format"] == "poetry"
    assert statuses(report) == {name: "fetched" for name in LOCKED}
    pins = [
        f"{p['name']}=={p['version']}" for p in tomllib.loads(text.decode())["package"]
    ]
    await offline_pip(w, pins)


@pytest_twisted.ensureDeferred
async def test_recorded_poetry_lock(world):
    """A poetry.lock as poetry writes it names its files by file name only
    (no URL): they are found on the index pages, cached and checked against
    its hashes; then pip installs its pins from /local/ offline. (The lock
    was written by poetry; where poetry is installed, the next test writes
    one afresh.)"""
    for name in LOCKED:
        assert (
            world.index.sha256(name) in POETRY_LOCK
        ), f"{name} is no longer built alike"
    await warm_poetry_lock(world, POETRY_LOCK.encode())


@pytest.mark.skipif(
    poetry_binary() is None,
    reason="poetry is not installed (uv tool install poetry); test_recorded_poetry_lock stands in",
)
@pytest_twisted.ensureDeferred
async def test_poetry_lock(world):
    """A poetry.lock written now by ``poetry lock`` against the fake upstream
    (a primary source, so the public index is never asked) warms the cache
    for an offline install from /local/."""
    w = world
    folder = w.tmp_path / "poetry-app"
    folder.mkdir()
    (folder / "pyproject.toml").write_text(
        PYPROJECT
        + f'\n[[tool.poetry.source]]\nname = "fake"\nurl = "{w.upstream.url}"\npriority = "primary"\n'
    )
    env = clean_env(w.tmp_path)
    env["POETRY_CACHE_DIR"] = str(w.tmp_path / "poetry-cache")
    env["POETRY_VIRTUALENVS_CREATE"] = "false"
    result = await run(
        [poetry_binary(), "lock", "--no-interaction"], env, cwd=folder, timeout=300
    )
    assert result.ok, result
    await warm_poetry_lock(w, (folder / "poetry.lock").read_bytes())


@pytest_twisted.ensureDeferred
async def test_hash_mismatches_are_reported_per_file_and_nothing_wrong_is_stored(world):
    """A lock whose hash for one file differs from the index page's: that
    file is reported failed and never downloaded. A file whose upstream bytes
    do not match the page (and the lock): failed, not stored. The other files
    are cached."""
    w = world
    lock = await uv_lock(w)
    text = lock.read_text()
    wrong = "0" * 64
    text = text.replace(w.index.sha256(BETA_WHEEL), wrong)
    w.index.corrupt(BETA_SDIST)
    report = await warm(w, text.encode())
    files = {f["filename"]: f for f in report["files"]}
    assert files[ALPHA]["status"] == "fetched"
    assert files[BETA_WHEEL]["status"] == "failed"
    assert (
        "index page gives sha256:" + w.index.sha256(BETA_WHEEL)
        in files[BETA_WHEEL]["reason"]
    )
    assert "not fetched" in files[BETA_WHEEL]["reason"]
    assert files[BETA_SDIST]["status"] == "failed"
    assert "Hash mismatch" in files[BETA_SDIST]["reason"]
    assert report["totals"]["failed"] == 2
    assert w.index.downloads(BETA_WHEEL) == 0
    assert archives(w, "beta") == []


@pytest.mark.parametrize(
    "body, query, code, reason",
    [
        (b"hello world\n", "", 400, "Not a lock file"),
        (b"[metadata]\nnot a lock = 1\n", "", 400, "Not a lock file"),
        (b'version = 1\n[[package]\nname = "x"\n', "format=uv", 400, "line 2"),
        (
            b'lock-version = "1.0"\n\n[[packages]]\nversion = "1.0"\n',
            "",
            422,
            "line 3: [[packages]] entry 1",
        ),
        (
            b'lock-version = "1.0"\n[[packages]]\nname = "alpha"\nversion = "1.0"\n'
            b'wheels = [{url = "http://x.invalid/files/beta-1.0-py3-none-any.whl", hashes = {sha256 = "00"}}]\n',
            "",
            422,
            "is not of project 'alpha'",
        ),
        (
            b"alpha==1.0\n",
            "format=requirements",
            422,
            "line 1 ('alpha==1.0'): no --hash",
        ),
        (b"alpha>=1.0 --hash=sha256:00\n", "", 422, "not pinned"),
        (b"alpha==1.0\n", "format=cargo", 400, "Unknown format 'cargo'"),
        (b"alpha==1.0\n", "deps=false", 400, "Unknown parameter 'deps'"),
        (b"\xff\xfe", "", 400, "not UTF-8"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_locks_are_refused_with_the_entry(world, body, query, code, reason):
    """Unreadable input is a 400 and a readable non-lock a 422, each with a
    reason naming the line or entry; nothing is fetched."""
    answer = await post_warm(world, body, query)
    assert answer.code == code, answer
    assert reason in answer.body.decode(), answer
    assert world.file_requests() == []


@pytest_twisted.ensureDeferred
async def test_warm_needs_a_user_like_bulk_caching(tmp_path, dists):
    """With --auth-file, POST /+warm needs a user (401 without one), as POST
    /requirements.txt does (--bulk-auth)."""
    w = await start_world(
        tmp_path, dists, timeout=10, auth_file=str(htpasswd(tmp_path / "users"))
    )
    try:
        lock = (await uv_lock(w)).read_bytes()
        assert (await post_warm(w, lock)).code == 401
        answer = await post_warm(w, lock, credentials=("alice", "secret"))
        assert answer.code == 200, answer
        assert json.loads(answer.body)["totals"]["fetched"] == 3
    finally:
        await w.stop()


@pytest_twisted.ensureDeferred
async def test_files_come_from_the_upstream_the_project_is_routed_to(tmp_path):
    """A lock whose beta comes from a second index (to which the daemon routes
    beta, --route) while the default upstream has another beta 1.0 wheel of
    the same name: beta is fetched from the second index and matches the
    lock, alpha from the default one; then the set installs offline."""
    (tmp_path / "default").mkdir()
    (tmp_path / "second").mkdir()
    default, second = FakeIndex(tmp_path, "json"), FakeIndex(tmp_path, "json")
    default.add(build_wheel(tmp_path / "default", "alpha", "1.0", requires=["beta"]))
    default.add(
        build_wheel(tmp_path / "default", "beta", "1.0", module_body="X = 'impostor'")
    )
    second.add(build_wheel(tmp_path / "second", "beta", "1.0"))
    servers = [await start_fake_index(default), await start_fake_index(second)]
    daemon = await start_daemon(
        servers[0].url,
        tmp_path / "cache",
        upstreams=[UpstreamSpec("second", servers[1].url)],
        routes=[("beta", "second")],
    )
    w = World(default, servers[0], daemon, tmp_path)
    try:
        folder = project(w)
        await uv(
            w, "lock", "--no-config", "--index-url", servers[0].url,
            "--extra-index-url", servers[1].url, cwd=folder,
        )  # fmt: skip
        report = await warm(w, (folder / "uv.lock").read_bytes())
        assert statuses(report) == {ALPHA: "fetched", BETA_WHEEL: "fetched"}
        beta = next(f for f in report["files"] if f["filename"] == BETA_WHEEL)
        assert beta["sha256"] == second.sha256(BETA_WHEEL) != default.sha256(BETA_WHEEL)
        assert second.downloads(BETA_WHEEL) == 1 and default.downloads(BETA_WHEEL) == 0
        second.forbid()
        await uv(
            w, "export", "--no-config", "--frozen", "--no-emit-project", "--format",
            "requirements-txt", "-o", "hashed.txt", cwd=folder,
        )  # fmt: skip
        await offline_pip(w, ["--require-hashes", "-r", str(folder / "hashed.txt")])
        assert second.violations == []
    finally:
        await daemon.stop()
        for server in servers:
            await server.stop()


@pytest_twisted.ensureDeferred
async def test_warm_shares_the_clients_bulk_job_limit(tmp_path, dists):
    """A POST /+warm under way counts against --bulk-jobs-per-client as a
    POST /requirements.txt does: another job of either kind from the same
    client is a 429 with Retry-After until it ends."""
    w = await start_world(tmp_path, dists, timeout=10, bulk_jobs_per_client=1)
    try:
        lock = (await uv_lock(w)).read_bytes()
        hold = w.index.hold_page("alpha")
        first = Deferred.fromCoroutine(post_warm(w, lock))
        await hold.wait_for(1)
        for path, body in (("/+warm", lock), ("/requirements.txt", b"gamma\n")):
            busy = await webclient.send(
                w.daemon, "POST", path, body, {"Content-Type": "text/plain"}
            )
            assert busy.code == 429, busy
            assert busy.header("retry-after") == "10"
        hold.release()
        assert (await first).code == 200
        assert (await post_warm(w, lock)).code == 200
    finally:
        await w.stop()
