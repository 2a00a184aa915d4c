"""The proxy against a fake upstream on loopback, driven with treq (real sockets)."""

import gzip
import json

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, DeferredList

from tests.daemon import start_daemon, start_world
from tests.packages import build_sdist, build_wheel

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
UV_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
JSON = "application/vnd.pypi.simple.v1+json"


def sleep(seconds: float) -> Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """A small set of real distributions: a wheel with a dependency, an sdist, a big wheel."""
    d = tmp_path_factory.mktemp("dists")
    return {
        "app": build_wheel(d, "app", "1.0", requires=["lib>=1"]),
        "lib": build_wheel(d, "lib", "1.2", requires_python=">=3.8"),
        "lib_old": build_wheel(d, "lib", "1.0"),
        "srconly": build_sdist(d, "srconly", "0.5"),
        "big": build_wheel(
            d, "big", "1.0", module_body="DATA = " + repr("x" * 3_000_000)
        ),
    }


async def make_world(tmp_path, dists, mode, **options):
    files = [
        (
            path,
            {
                "requires_python": ">=3.8" if key == "lib" else None,
                "yanked": "broken" if key == "lib_old" else None,
            },
        )
        for key, path in dists.items()
    ]
    return await start_world(tmp_path, files, mode, **options)


@pytest_twisted.async_yield_fixture(params=["html", "json"])
async def world(request, tmp_path, dists):
    w = await make_world(tmp_path, dists, request.param, timeout=5)
    yield w
    await w.stop()


@pytest_twisted.ensureDeferred
async def test_page_lists_upstream_files_with_attributes(world, dists):
    """The proxied JSON page keeps hashes, requires-python, yanked reasons and core metadata, with local URLs."""
    response = await world.daemon.get("simple/lib/", headers={"Accept": JSON})
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == [JSON]
    page = json.loads(await response.content())
    files = {f["filename"]: f for f in page["files"]}
    new = files[dists["lib"].name]
    assert new["url"] == f"../../packages/lib/{dists['lib'].name}"
    assert new["hashes"]["sha256"] == world.index.sha256(dists["lib"].name)
    assert new["requires-python"] == ">=3.8"
    assert new["core-metadata"] and "dist-info-metadata" not in new
    assert files[dists["lib_old"].name]["yanked"] == "broken"
    if world.index.mode == "json":
        assert new["size"] == dists["lib"].stat().st_size
        assert new["upload-time"] == "2024-01-02T03:04:05.123456Z"
        assert page["meta"]["api-version"] == "1.4"
    else:
        assert "upload-time" not in new  # never invented
        assert page["meta"]["api-version"] == "1.0"


@pytest_twisted.ensureDeferred
async def test_html_page_escapes_and_marks(world, dists):
    """The HTML page has sha256 fragments, escaped requires-python, yanked and both metadata attributes."""
    response = await world.daemon.get("simple/lib/")
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/html")
    assert response.headers.getRawHeaders("vary") == ["Accept, Accept-Encoding"]
    text = (await response.content()).decode()
    assert '<meta name="pypi:repository-version"' in text
    assert (
        f'href="../../packages/lib/{dists["lib"].name}#sha256={world.index.sha256(dists["lib"].name)}"'
        in text
    )
    assert 'data-requires-python="&gt;=3.8"' in text
    assert 'data-yanked="broken"' in text
    assert (
        'data-core-metadata="sha256=' in text
        and 'data-dist-info-metadata="sha256=' in text
    )


@pytest.mark.parametrize(
    "accept, expected",
    [
        (PIP_ACCEPT, JSON),
        (UV_ACCEPT, JSON),
        (None, "text/html; charset=utf-8"),
        ("*/*", "text/html; charset=utf-8"),
        (
            "application/vnd.pypi.simple.v1+html",
            "application/vnd.pypi.simple.v1+html; charset=utf-8",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_content_negotiation(world, accept, expected):
    """pip's and uv's exact Accept headers get JSON; no header or */* gets HTML."""
    headers = {"Accept": accept} if accept else {}
    response = await world.daemon.get("simple/app/", headers=headers)
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == [expected]
    await response.content()


@pytest_twisted.ensureDeferred
async def test_not_acceptable_and_format_parameter(world):
    """An Accept naming nothing we offer is 406; ?format= overrides Accept."""
    response = await world.daemon.get("simple/app/", headers={"Accept": "image/png"})
    assert response.code == 406
    await response.content()
    response = await world.daemon.get(
        f"simple/app/?format={JSON}", headers={"Accept": "text/html"}
    )
    assert response.headers.getRawHeaders("content-type") == [JSON]
    assert json.loads(await response.content())["name"] == "app"


@pytest_twisted.ensureDeferred
async def test_gzip_pages(world):
    """Pages are gzipped when the client accepts it."""
    response = await world.daemon.raw_get(
        "simple/app/", {"Accept-Encoding": "gzip", "Accept": JSON}
    )
    assert response.headers.getRawHeaders("content-encoding") == ["gzip"]
    assert json.loads(gzip.decompress(await treq.content(response)))["name"] == "app"


@pytest.mark.parametrize(
    "path, location",
    [
        ("simple/App/", "../app/"),
        ("simple/app", "app/"),
        ("simple/APP", "app/"),
        ("local/App/", "../app/"),
        ("simple", "simple/"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_redirects_are_relative(world, path, location):
    """Non-normalized names and missing slashes answer 301 with a relative Location."""
    response = await world.daemon.get(path, allow_redirects=False)
    assert response.code == 301
    assert response.headers.getRawHeaders("location") == [location]
    await response.content()


@pytest_twisted.ensureDeferred
async def test_file_fetched_once_then_served_from_disk(world, dists):
    """A file is fetched from upstream once, stored with a sidecar, then served from disk."""
    name = dists["lib"].name
    for _ in range(2):
        response = await world.daemon.get(f"packages/lib/{name}")
        assert response.code == 200
        assert await response.content() == dists["lib"].read_bytes()
    assert world.index.count(f"/files/{name}") == 1
    await world.stored("lib", name)
    assert name in world.mirror_files("lib") and f"{name}.json" in world.mirror_files(
        "lib"
    )
    # The local view now lists it, with its size.
    response = await world.daemon.get("local/lib/", headers={"Accept": JSON})
    page = json.loads(await response.content())
    assert [f["filename"] for f in page["files"]] == [name]
    assert page["files"][0]["size"] == dists["lib"].stat().st_size


@pytest_twisted.ensureDeferred
async def test_cached_file_headers_range_and_etag(world, dists):
    """A cached file answers Range, HEAD and If-None-Match, with no Content-Encoding on .tar.gz."""
    name = dists["srconly"].name
    body = dists["srconly"].read_bytes()
    await (await world.daemon.get(f"packages/srconly/{name}")).content()
    response = await world.daemon.raw_get(
        f"packages/srconly/{name}", {"Accept-Encoding": "gzip"}
    )
    assert response.headers.getRawHeaders("content-encoding") is None
    assert response.headers.getRawHeaders("content-type") == [
        "application/octet-stream"
    ]
    assert "immutable" in response.headers.getRawHeaders("cache-control")[0]
    etag = response.headers.getRawHeaders("etag")[0]
    assert etag == f'"{world.index.sha256(name)}"'
    assert await treq.content(response) == body
    response = await world.daemon.get(
        f"packages/srconly/{name}", headers={"Range": "bytes=10-19"}
    )
    assert response.code == 206
    assert await response.content() == body[10:20]
    response = await world.daemon.head(f"packages/srconly/{name}")
    assert response.code == 200
    assert response.headers.getRawHeaders("content-length") == [str(len(body))]
    response = await world.daemon.get(
        f"packages/srconly/{name}", headers={"If-None-Match": etag}
    )
    assert response.code == 304
    await response.content()


@pytest_twisted.ensureDeferred
async def test_head_of_uncached_file_needs_no_download(world, dists):
    """HEAD of a file the page describes answers from the page, without fetching the file."""
    name = dists["lib"].name
    response = await world.daemon.head(f"packages/lib/{name}")
    assert response.code == 200
    if world.index.mode == "json":
        assert response.headers.getRawHeaders("content-length") == [
            str(dists["lib"].stat().st_size)
        ]
    assert world.index.count(f"/files/{name}") == 0
    assert world.mirror_files("lib") == []


@pytest_twisted.ensureDeferred
async def test_range_on_uncached_file(world, dists):
    """A Range request for a file not yet cached is answered once it is."""
    name = dists["big"].name
    response = await world.daemon.get(
        f"packages/big/{name}", headers={"Range": "bytes=100-199"}
    )
    assert response.code == 206
    assert await response.content() == dists["big"].read_bytes()[100:200]
    assert name in world.mirror_files("big")


@pytest_twisted.ensureDeferred
async def test_legacy_source_path(world, dists):
    """The original pypicache path /packages/source/<letter>/<name>/<file> still works."""
    name = dists["srconly"].name
    response = await world.daemon.get(f"packages/source/s/srconly/{name}")
    assert response.code == 200
    assert await response.content() == dists["srconly"].read_bytes()


@pytest_twisted.ensureDeferred
async def test_core_metadata_file(world, dists):
    """<file>.metadata is proxied before the wheel is cached, and served from disk afterwards."""
    name = dists["lib"].name
    response = await world.daemon.get(f"packages/lib/{name}.metadata")
    assert response.code == 200
    assert b"Name: lib" in await response.content()
    assert world.index.count(f"/files/{name}.metadata") == 1
    world.index.forbid()
    response = await world.daemon.get(f"packages/lib/{name}.metadata")
    assert b"Name: lib" in await response.content()
    assert world.index.violations == []


@pytest_twisted.ensureDeferred
async def test_concurrent_requests_share_one_download(world, dists):
    """N concurrent GETs of an uncached file make one upstream request; all get identical, complete bytes."""
    name = dists["big"].name
    hold = world.index.hold(name)
    n = 6
    responses = [world.daemon.get(f"packages/big/{name}") for _ in range(n)]
    await hold.wait_for(1)
    # Wait until every client's request has reached the daemon and joined the download.
    for _ in range(200):
        download = world.daemon.app.mirror.in_flight(name)
        if download is not None and len(download._waiting) >= n - 1:
            break
        await sleep(0.01)
    assert len(download._waiting) >= n - 1
    hold.release()
    results = await DeferredList(responses, fireOnOneErrback=True, consumeErrors=True)
    bodies = [await r.content() for _, r in results]
    assert all(b == dists["big"].read_bytes() for b in bodies)
    assert world.index.count(f"/files/{name}") == 1


@pytest_twisted.ensureDeferred
async def test_client_disconnect_does_not_cancel_download(world, dists):
    """A client that goes away mid-download does not stop it for the others."""
    name = dists["big"].name
    hold = world.index.hold(name)
    first = world.daemon.get(f"packages/big/{name}")
    await hold.wait_for(1)
    second = world.daemon.get(f"packages/big/{name}")
    await sleep(0.1)
    first.cancel()
    hold.release()
    response = await second
    assert await response.content() == dists["big"].read_bytes()
    await world.stored("big", name)


async def _outcome(daemon, path):
    """GET ``path``; return (status, body) or (status, None) if the body was cut off."""
    try:
        response = await daemon.get(path)
    except Exception:
        return None, None
    try:
        return response.code, await response.content()
    except Exception:
        return response.code, None


@pytest.mark.parametrize("fault", ["corrupt", "truncate", "die_midway"])
@pytest_twisted.ensureDeferred
async def test_bad_upstream_bytes_leave_nothing(world, dists, fault):
    """Hash mismatch, truncated body or a dying upstream: nothing stored, no client gets a complete body."""
    name = dists["big"].name
    getattr(world.index, fault)(name)
    outcomes = await DeferredList(
        [
            Deferred.fromCoroutine(_outcome(world.daemon, f"packages/big/{name}"))
            for _ in range(3)
        ]
    )
    for _, (code, body) in outcomes:
        assert body != dists["big"].read_bytes()
        assert code != 200 or body is None
    assert world.mirror_files("big") == []
    # Once the upstream is healthy, the file is fetched and stored.
    world.index.heal(name)
    code, body = await _outcome(world.daemon, f"packages/big/{name}")
    assert code == 200 and body == dists["big"].read_bytes()


@pytest_twisted.ensureDeferred
async def test_unknown_project_is_negatively_cached(world):
    """An upstream 404 answers 404 and is remembered for a while."""
    for _ in range(2):
        response = await world.daemon.get("simple/nothing-here/")
        assert response.code == 404
        await response.content()
    assert world.index.count("/simple/nothing-here/") == 1


@pytest_twisted.ensureDeferred
async def test_local_never_contacts_upstream(world, dists):
    """/local/ serves what is on disk and never opens a connection upstream; unknown projects are 404."""
    await (await world.daemon.get(f"packages/app/{dists['app'].name}")).content()
    await world.stored("app", dists["app"].name)
    world.index.forbid()
    response = await world.daemon.get("local/app/")
    assert response.code == 200
    assert dists["app"].name in (await response.content()).decode()
    response = await world.daemon.get("local/lib/")
    assert response.code == 404
    await response.content()
    response = await world.daemon.get("local/")
    assert "app" in (await response.content()).decode()
    assert world.index.violations == []


@pytest_twisted.ensureDeferred
async def test_upstream_down_answers_502_and_serves_what_is_cached(world, dists):
    """With the upstream gone: uncached pages 502, cached files and pages still served."""
    await (await world.daemon.get("simple/app/")).content()
    await (await world.daemon.get(f"packages/app/{dists['app'].name}")).content()
    await world.upstream.stop()
    response = await world.daemon.get("simple/lib/")
    assert response.code == 502
    assert b"Upstream" in await response.content()
    response = await world.daemon.get(f"packages/app/{dists['app'].name}")
    assert await response.content() == dists["app"].read_bytes()
    response = await world.daemon.get("simple/app/")
    assert response.code == 200
    await response.content()


@pytest_twisted.ensureDeferred
async def test_bad_paths_are_rejected(world):
    """Path tricks and malformed names get a 4xx, never a 500."""
    for path in [
        "packages/app/..%2F..%2Fetc%2Fpasswd",
        "packages/app/%2E%2E",
        "simple/-bad-/",
        "packages/app/app-1.0.whl%00.whl",
        "packages/app/notadist.txt",
        "packages/lib/app-1.0-py3-none-any.whl",
    ]:
        response = await world.daemon.get(path)
        assert 400 <= response.code < 500, path
        await response.content()


@pytest_twisted.ensureDeferred
async def test_health_and_home(world):
    """/health answers JSON without contacting upstream; / explains how to use the server."""
    world.index.forbid()
    response = await world.daemon.get("health")
    assert response.code == 200
    assert json.loads(await response.content())["status"] == "ok"
    response = await world.daemon.get("")
    text = (await response.content()).decode()
    assert "PIP_INDEX_URL" in text and "/local/" in text
    assert world.index.violations == []


# -- page cache timing, with an injected clock ---------------------------------


@pytest_twisted.async_yield_fixture(params=["html", "json"])
async def clocked(request, tmp_path, dists):
    clock = task.Clock()
    clock.advance(1_000_000)
    w = await make_world(
        tmp_path, dists, request.param, page_clock=clock, page_ttl=600, timeout=5
    )
    w.clock = clock
    yield w
    await w.stop()


@pytest_twisted.ensureDeferred
async def test_ttl_revalidation_and_stale_if_error(clocked):
    """Fresh pages are served from cache (even with max-age=0), revalidated with a conditional GET, stale on errors."""
    w = clocked
    get = lambda: w.daemon.get("simple/app/", headers={"Cache-Control": "max-age=0"})
    assert (await get()).code == 200
    assert (await get()).code == 200
    assert w.index.count("/simple/app/") == 1
    w.clock.advance(601)
    assert (await get()).code == 200
    assert w.index.count("/simple/app/") == 2
    last = w.index.requests[-1]
    assert "If-None-Match".lower() in {k.lower() for k in last.headers}
    w.index.page_status("app", 503)
    w.clock.advance(601)
    response = await get()
    assert response.code == 200
    assert b"app-1.0" in await response.content()
    assert w.index.count("/simple/app/") == 3


@pytest_twisted.ensureDeferred
async def test_restart_keeps_page_cache(clocked, tmp_path):
    """A new daemon on the same cache serves the page stored by the old one, upstream down."""
    w = clocked
    await (await w.daemon.get("simple/app/")).content()
    for _ in range(100):  # the page is written to disk in a thread, after the answer
        if (w.daemon.cache / "pages" / "app.json").exists():
            break
        await sleep(0.02)
    await w.daemon.stop()
    await w.upstream.stop()
    w.daemon = await start_daemon(
        "http://127.0.0.1:1/simple/", w.daemon.cache, page_clock=w.clock, timeout=5
    )
    w.clock.advance(10_000)
    response = await w.daemon.get("simple/app/")
    assert response.code == 200
    assert b"app-1.0" in await response.content()


@pytest_twisted.ensureDeferred
async def test_upstream_timeout_is_504(tmp_path, dists):
    """An upstream that does not answer in time gives 504 with a reason."""
    w = await make_world(tmp_path, dists, "json", timeout=0.3)
    try:
        w.index.slow_page("app", 5)
        response = await w.daemon.get("simple/app/")
        assert response.code == 504
        assert b"did not answer" in await response.content()
    finally:
        await w.stop()


@pytest_twisted.ensureDeferred
async def test_storing_goes_to_the_sync_threads(tmp_path, dists):
    """A downloaded file is synced and renamed, and a fetched page written,
    through ``run_sync`` (threads that wait on the disk), apart from
    ``run_blocking``, whose threads parse pages and read archives. A wheel's
    own metadata is kept beside it in that same commit, before the wheel is
    listed: no second trip to a thread, no second sidecar written."""
    from twisted.internet.threads import deferToThread

    synced: list[str] = []

    def run_sync(f, *args):
        synced.append(f.__name__)
        return deferToThread(f, *args)

    world = await start_world(tmp_path, [dists["lib"]], "json", run_sync=run_sync)
    try:
        name = dists["lib"].name
        response = await world.daemon.get(f"packages/lib/{name}")
        assert response.code == 200
        assert await response.content() == dists["lib"].read_bytes()
        # The page is written, then its cross-process lock let go, in one call.
        await world.stored("lib", name)
        assert "_persist" in synced and "write_page_file" in synced
        assert "_beside" not in synced and "_write_ahead" not in synced
        assert name + ".metadata" in world.mirror_files("lib")
    finally:
        await world.stop()
