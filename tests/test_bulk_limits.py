"""``POST /requirements.txt`` under hostile input: bounded work, bounded jobs, optional authentication."""

import json
from pathlib import Path

import bcrypt
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from pypicache.bulk import resolve as resolve_module
from tests.daemon import start_world
from tests.packages import build_wheel
from tests.webclient import send

#: A deadline for each request, so that unbounded work fails the test instead of hanging it.
DEADLINE = 60


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> list[Path]:
    """One real wheel the fake upstream serves."""
    d = tmp_path_factory.mktemp("dists")
    return [build_wheel(d, "real", "1.0")]


async def post(world, text: str, query: str = "", **headers: str):
    """POST ``text`` as the raw body; the answer (a :class:`tests.webclient.Answer`)."""
    path = "/requirements.txt" + (f"?{query}" if query else "")
    return await deadline(
        send(
            world.daemon,
            "POST",
            path,
            text.encode(),
            {"Content-Type": "text/plain", **headers},
        )
    )


def deadline(coroutine):
    """A Deferred of ``coroutine`` that fails after :data:`DEADLINE` seconds."""
    return Deferred.fromCoroutine(coroutine).addTimeout(DEADLINE, reactor)


@pytest_twisted.async_yield_fixture()
async def world(tmp_path, wheels):
    w = await start_world(
        tmp_path, wheels, timeout=10, bulk_max_lines=500, bulk_max_projects=300
    )
    yield w
    await w.stop()


@pytest_twisted.ensureDeferred
async def test_unknown_names_cost_one_lookup_each(world, monkeypatch):
    """Hundreds of unknown names are each reported unresolved after one page look-up,
    with no resolution per name: they are set aside before resolving, so the work
    grows linearly, not with the square of the names."""
    resolvers = []

    class CountingResolver(resolve_module.Resolver):
        def __init__(self, *args, **kwargs):
            resolvers.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(resolve_module, "Resolver", CountingResolver)
    names = [f"nosuch{i}" for i in range(250)]
    answer = await post(world, "\n".join(["real", *names]) + "\n")
    assert answer.code == 200, answer
    report = answer.json()
    statuses = {r["name"]: r["status"] for r in report["requirements"]}
    assert statuses["real"] == "resolved"
    assert all(statuses[n] == "unresolved" for n in names)
    reason = next(r for r in report["requirements"] if r["name"] == "nosuch7")["reason"]
    assert reason.startswith("no version satisfies nosuch7 (requested)"), reason
    page_requests = [p for p in world.index.requests if "nosuch" in p.path]
    assert len(page_requests) == len(names)
    assert len(resolvers) == 1


@pytest_twisted.ensureDeferred
async def test_identical_lines_resolved_once(world):
    """Hundreds of identical lines are one requirement: each line is reported resolved,
    and the file is cached once."""
    answer = await post(world, "real>=1\n" * 400)
    assert answer.code == 200, answer
    report = answer.json()
    assert len(report["requirements"]) == 400
    assert {r["status"] for r in report["requirements"]} == {"resolved"}
    assert {r["version"] for r in report["requirements"]} == {"1.0"}
    assert [f["filename"] for f in report["files"]] == ["real-1.0-py3-none-any.whl"]


@pytest_twisted.ensureDeferred
async def test_too_many_lines_is_413(world):
    """A file over --bulk-max-lines is refused with 413 and a reason; nothing is fetched."""
    answer = await post(world, "real\n" * 600)
    assert answer.code == 413, answer
    assert b"--bulk-max-lines" in answer.body
    assert world.file_requests() == []


@pytest_twisted.ensureDeferred
async def test_too_many_projects_is_422(world):
    """A file naming more projects than --bulk-max-projects is refused with 422 and a reason."""
    answer = await post(world, "\n".join(f"p{i}" for i in range(301)))
    assert answer.code == 422, answer
    assert b"301 projects" in answer.body and b"--bulk-max-projects" in answer.body
    assert world.index.requests == []


@pytest.mark.parametrize(
    "query",
    [
        "python-version=3.20000",
        "python-version=3." + "9" * 5000,
        "platform=macosx_20000_0_arm64",
        "platform=manylinux_2_100000_x86_64",
        "abi=" + ",".join(f"cp3{i}" for i in range(40)),
    ],
)
@pytest_twisted.ensureDeferred
async def test_pathological_parameters_are_400(world, query):
    """Version numbers past 99 in Python versions and platform tags, and too many abis,
    are a 400 before any tag is expanded; the daemon stays healthy."""
    answer = await post(world, "real\n", query)
    assert answer.code == 400, answer
    assert len(answer.body) < 2000
    health = await send(world.daemon, "GET", "/health")
    assert health.code == 200


@pytest_twisted.ensureDeferred
async def test_jobs_per_client_bounded(tmp_path, wheels):
    """A client already running --bulk-jobs-per-client jobs gets 429 with Retry-After;
    once its job finishes it may start another."""
    w = await start_world(tmp_path, wheels, timeout=10, bulk_jobs_per_client=1)
    try:
        hold = w.index.hold_page("real")
        first = Deferred.fromCoroutine(post(w, "real\n"))
        await hold.wait_for(1)
        second = await post(w, "real\n")
        assert second.code == 429, second
        assert second.header("retry-after") == "10"
        hold.release()
        assert (await first).code == 200
        assert (await post(w, "real\n")).code == 200
    finally:
        await w.stop()


def htpasswd(path: Path) -> Path:
    """An htpasswd file with one cheap bcrypt entry (alice:secret)."""
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4))
    path.write_bytes(b"alice:" + hashed + b"\n")
    return path


@pytest.mark.parametrize("bulk_auth, expected", [(None, 401), (False, 200)])
@pytest_twisted.ensureDeferred
async def test_bulk_auth(tmp_path, wheels, bulk_auth, expected):
    """With --auth-file, bulk caching needs a user by default (401 without one);
    --bulk-auth no makes it a read again. With a user it works either way."""
    w = await start_world(
        tmp_path,
        wheels,
        timeout=10,
        auth_file=str(htpasswd(tmp_path / "users")),
        bulk_auth=bulk_auth,
    )
    try:
        anonymous = await post(w, "real\n")
        assert anonymous.code == expected, anonymous
        answer = await deadline(
            send(
                w.daemon,
                "POST",
                "/requirements.txt",
                b"real\n",
                {"Content-Type": "text/plain"},
                credentials=("alice", "secret"),
            )
        )
        assert answer.code == 200, answer
        assert json.loads(answer.body)["totals"]["resolved"] == 1
    finally:
        await w.stop()
