"""``GET /metrics``, ``GET /+stats`` and the home page's figures, on a real daemon.

``/metrics`` is read with prometheus-client's own text parser and checked
against what the test did: pip installs through ``/simple/`` (misses, then
hits), upstream answers (ok, 404, an error), an upload, an eviction.
"""

from pathlib import Path
from typing import Any

import bcrypt
import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.web.client import HTTPConnectionPool

from tests.test_crash import eventually
from tests.test_eviction import DAY, KiB, Run, dists, run  # noqa: F401 (fixtures)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text answer by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all((k, str(w)) in ls for k, w in labels.items())
    )


async def fetch(
    run: Run, path: str, method: str = "GET", **kwargs: Any
) -> tuple[int, bytes, Any]:
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        response = await treq.request(method, run.url + path, pool=pool, **kwargs)
        return response.code, await response.content(), response.headers
    finally:
        await pool.closeCachedConnections()


async def scrape(run: Run) -> dict[Any, float]:
    code, body, headers = await fetch(run, "metrics")
    assert code == 200, body
    assert headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
    return parse(body.decode())


def wheel_sizes(run: Run, *names: str) -> int:
    return sum(run.dists[n].stat().st_size for n in names)


@pytest_twisted.ensureDeferred
async def test_metrics_count_what_was_done(run):
    """Installs, upstream answers, an upload and an eviction show in /metrics:
    the first install's pages and files are misses fetched upstream (ok), the
    second's are hits served from the cache; a 404 and an error upstream are
    counted by outcome; the upload and the eviction are counted; the cache
    size and file count follow the mirror; every request has its latency.
    (Without prefetch, which would fetch the dependency's page before pip
    asks, making it a hit.)"""
    await run.start("--prefetch-depth=0")
    await run.install("olda")
    await run.stop_daemon()
    run.age("olda", 4 * DAY)
    cap = run.mirror_size() + 50 * KiB  # olda fits, app and lib do not
    await run.start("--prefetch-depth=0", "--max-cache-size", f"{cap // KiB}K")
    start = await scrape(run)
    assert total(start, "pypicache_cache_requests_total") == 0

    await run.install("app", target="t1")
    first = await scrape(run)
    misses = total(first, "pypicache_cache_requests_total", result="miss")
    assert (
        total(first, "pypicache_cache_requests_total", kind="page", result="miss") >= 2
    )
    assert (
        total(first, "pypicache_cache_requests_total", kind="file", result="miss") >= 2
    )
    assert total(first, "pypicache_upstream_requests_total", outcome="ok") >= 4
    assert total(first, "pypicache_served_bytes_total", source="upstream") >= (
        wheel_sizes(run, "app", "lib")
    )

    await run.install("app", target="t2")
    second = await scrape(run)
    assert total(second, "pypicache_cache_requests_total", result="miss") == misses
    assert (
        total(second, "pypicache_cache_requests_total", kind="page", result="hit") >= 2
    )
    assert (
        total(second, "pypicache_cache_requests_total", kind="file", result="hit") >= 2
    )
    assert total(second, "pypicache_served_bytes_total", source="cache") >= (
        wheel_sizes(run, "app", "lib")
    )
    assert total(second, "pypicache_upstream_requests_total") == total(
        first, "pypicache_upstream_requests_total"
    )

    run.index.page_status("oldb", 500)
    assert (await fetch(run, "simple/nothere/"))[0] == 404
    assert (await fetch(run, "simple/oldb/"))[0] >= 500
    code, _, _ = await fetch(
        run,
        f"packages/priv/{run.dists['priv'].name}",
        "PUT",
        data=run.dists["priv"].read_bytes(),
    )
    assert code == 201
    await eventually(lambda: "olda" not in run.mirrored(), "the eviction of olda")
    after = await scrape(run)
    assert total(after, "pypicache_upstream_requests_total", outcome="404") == 1
    assert total(after, "pypicache_upstream_requests_total", outcome="error") == 1
    assert total(after, "pypicache_uploads_total") == 1
    assert total(after, "pypicache_evicted_files_total") == 1
    assert total(after, "pypicache_evicted_bytes_total") >= wheel_sizes(run, "olda")
    assert total(after, "pypicache_downloads_in_flight") == 0
    assert total(after, "pypicache_cache_files") == len(
        list(run.cache.glob("mirror/*/*.whl"))
    )
    assert total(after, "pypicache_cache_size_bytes") == run.mirror_size()
    assert total(after, "pypicache_requests_total", kind="page", status="404") == 1
    assert total(after, "pypicache_requests_total", kind="write", status="201") == 1
    for kind in ("page", "file", "write"):
        assert total(
            after, "pypicache_request_duration_seconds_count", kind=kind
        ) == total(after, "pypicache_requests_total", kind=kind)


@pytest_twisted.ensureDeferred
async def test_stats_and_home_page(run):
    """/+stats gives the figures as JSON: after one install (all misses) and
    a second (all hits), the hit ratio since start and over the last hour are
    hits / (hits + misses); the home page shows them. (Without prefetch, which
    would make the dependency's first page and metadata hits.)"""
    await run.start("--prefetch-depth=0")
    await run.install("app", target="t1")
    await run.install("app", target="t2")
    code, body, headers = await fetch(run, "+stats")
    assert code == 200
    assert headers.getRawHeaders(b"content-type") == [b"application/json"]
    stats = __import__("json").loads(body)
    hits, misses = stats["hits"], stats["misses"]
    assert hits >= 4 and misses >= 4
    assert hits == stats["pages"]["hit"] + stats["files"]["hit"]
    assert stats["hit_ratio"] == round(hits / (hits + misses), 4)
    assert stats["hit_ratio_last_hour"] == stats["hit_ratio"]
    assert stats["bytes_served"]["cache"] >= wheel_sizes(run, "app", "lib")
    assert stats["upstream"]["ok"] >= 4
    assert stats["cache_files"] == 2
    assert stats["requests"] >= hits + misses
    code, page, _ = await fetch(run, "")
    assert code == 200
    assert b"Hit ratio since start" in page
    assert f"{stats['hit_ratio']:.1%}".encode() in page


def htpasswd(path: Path) -> Path:
    path.write_bytes(
        b"ops:" + bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)) + b"\n"
    )
    return path


@pytest_twisted.ensureDeferred
async def test_metrics_refused_outside_allow_from_and_without_a_user(run, tmp_path):
    """/metrics and /+stats obey --allow-from (403 from elsewhere); with
    --metrics-auth yes they need a user (401 without, 200 with) and the home
    page shows no figures."""
    await run.start("--allow-from", "10.0.0.0/8")
    for path in ("metrics", "+stats"):
        assert (await fetch(run, path))[0] == 403
    await run.stop_daemon()
    users = htpasswd(tmp_path / "users")
    await run.start("--auth-file", str(users), "--metrics-auth", "yes")
    for path in ("metrics", "+stats"):
        assert (await fetch(run, path))[0] == 401
        code, _, _ = await fetch(run, path, auth=("ops", "secret"))
        assert code == 200
    code, page, _ = await fetch(run, "")
    assert code == 200 and b"Hit ratio" not in page


def test_hit_ratio_over_the_last_hour():
    """The last hour's ratio counts only what happened since the oldest
    sample at most an hour old; older samples are dropped; before any
    sample, it is the ratio since start; without requests, None."""
    from pypicache.web.metrics import Metrics

    metrics = Metrics()
    assert metrics.stats(10.0, 0.0)["hit_ratio_last_hour"] is None

    def requests(hits: int, misses: int) -> None:
        for hit, n in ((True, hits), (False, misses)):
            for _ in range(n):
                metrics.count_request("file", 200, 0.01, 100, hit)

    requests(hits=0, misses=4)
    assert metrics.stats(20.0, 0.0)["hit_ratio_last_hour"] == 0.0
    metrics.sample(60.0)
    requests(hits=3, misses=1)
    for minute in range(2, 62):
        metrics.sample(minute * 60.0)
    stats = metrics.stats(3660.0, 0.0)
    assert stats["hit_ratio"] == 0.375
    assert stats["hit_ratio_last_hour"] == 0.75  # the 4 misses came before the window
    assert len(metrics.samples) == 61
    metrics.sample(7300.0)
    assert metrics.stats(7300.0, 0.0)["hit_ratio_last_hour"] is None


def test_metrics_auth_needs_users(tmp_path):
    """--metrics-auth yes without --auth-file is refused at start."""
    import pytest
    from twisted.python.usage import UsageError

    from pypicache.tap.options import Options

    with pytest.raises(UsageError, match="--metrics-auth yes needs --auth-file"):
        Options().parseOptions(["--cache", str(tmp_path), "--metrics-auth", "yes"])
