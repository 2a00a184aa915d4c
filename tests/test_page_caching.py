"""HTTP caching of index pages: ``ETag``, ``Content-Length``, ``304`` and
``Cache-Control: max-age=<page-max-age>`` on ``/simple/``; ``/local/`` as before."""

import json
from pathlib import Path

import pytest
import pytest_twisted
from twisted.web.client import readBody

from tests.clients import clean_env, pip_install_args, run
from tests.daemon import spawn_twistd, start_world
from tests.fakeindex import FakeIndex, start_fake_index
from tests.packages import build_wheel
from tests.test_crash import STARTUP, bounded

PAGES = ["simple/", "simple/app/", "local/", "local/app/"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build_wheel(tmp_path_factory.mktemp("dists"), "app", "1.0")


async def _get(world, path, headers=None):
    """GET with a bare Agent: the wire's headers, nothing decoded."""
    response = await world.daemon.raw_get(path, headers or {})
    return response, await readBody(response)


def _header(response, name):
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


@pytest.mark.parametrize("max_age", [600, 0, 37])
@pytest_twisted.ensureDeferred
async def test_simple_pages_carry_cache_control_local_ones_do_not(
    tmp_path, wheel, max_age
):
    """/simple/ pages and the /simple/ list carry max-age=<page-max-age> (0 too),
    on the 200 and on the 304 to their ETag; /local/ ones carry ETag and
    Content-Length and answer 304 too, without Cache-Control."""
    world = await start_world(tmp_path, [wheel], page_max_age=max_age)
    try:
        response, _ = await _get(world, f"packages/app/{wheel.name}")
        assert response.code == 200
        await world.stored("app", wheel.name)  # listed once stored, after the client
        for path in PAGES:
            for accept in ("text/html", "application/vnd.pypi.simple.v1+json"):
                response, body = await _get(world, path, {"Accept": accept})
                assert response.code == 200, path
                expected = f"max-age={max_age}" if path.startswith("simple") else None
                assert _header(response, "cache-control") == expected, path
                assert response.length == len(body)  # Content-Length, not chunked
                etag = _header(response, "etag")
                assert etag
                again, body = await _get(
                    world, path, {"Accept": accept, "If-None-Match": etag}
                )
                assert (again.code, body) == (304, b""), path
                assert _header(again, "cache-control") == expected, path
                assert _header(again, "etag") == etag
    finally:
        await world.stop()


def _access_events(path: Path) -> list[dict]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e.get("access")]


@pytest_twisted.ensureDeferred
async def test_pip_revalidates_pages_with_its_own_headers(tmp_path, wheel):
    """A second pip install with pip's HTTP cache gets 304 for the project page
    (pip sends Cache-Control: max-age=0 and its own If-None-Match) and does not
    ask for the wheel or its metadata again (immutable)."""
    index = FakeIndex(tmp_path / "upstream", "json")
    index.add(wheel)
    upstream = await bounded(start_fake_index(index))
    events = tmp_path / "events.json"
    twistd = spawn_twistd(
        tmp_path, upstream.url, clean_env(tmp_path), "--json-log", str(events)
    )
    try:
        port = await bounded(twistd.port, STARTUP)
        url = f"http://127.0.0.1:{port}/simple/"
        cache = tmp_path / "pip-cache"
        results = []
        for n in (1, 2):
            args = pip_install_args(url, ["app"], tmp_path / f"target{n}")
            # pip caches plain-http answers for trusted hosts only.
            at = args.index("--no-cache-dir")
            args[at : at + 1] = [
                f"--cache-dir={cache}",
                "--trusted-host=127.0.0.1",
            ]
            results.append(await run(args, clean_env(tmp_path), cwd=tmp_path))
            results[-1].check()
    finally:
        await twistd.stop()
        await upstream.stop()
    access = _access_events(events)
    page = [e for e in access if e["uri"] == "/simple/app/"]
    files = [e for e in access if e["uri"].startswith("/packages/")]
    assert [e["status"] for e in page] == [200, 304], access
    assert page[1]["bytes"] == 0 and page[1]["cache_hit"] is True
    # The wheel and its metadata: once, by the first install.
    assert sorted(e["uri"] for e in files) == [
        f"/packages/app/{wheel.name}",
        f"/packages/app/{wheel.name}.metadata",
    ], access
