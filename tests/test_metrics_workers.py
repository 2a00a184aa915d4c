"""``/metrics`` with ``--workers 2``: the figures of both workers, from either."""

import pytest_twisted
from twisted.web.client import HTTPConnectionPool

from tests.test_metrics import parse, total
from tests.test_workers import dists, workers  # noqa: F401 (fixtures)


@pytest_twisted.ensureDeferred
async def test_two_workers_count_together(workers):
    """With --workers 2, /metrics from either worker counts the requests
    both answered (prometheus-client's multiprocess mode)."""
    pools = await workers.pinned()

    async def health_count(pool: HTTPConnectionPool) -> float:
        code, body = await workers.request(pool, "GET", "/metrics")
        assert code == 200
        return total(parse(body.decode()), "pypicache_requests_total", kind="health")

    before = await health_count(pools[1])
    for index, times in ((1, 3), (2, 5)):
        for _ in range(times):
            assert (await workers.request(pools[index], "GET", "/health"))[0] == 200
    assert await health_count(pools[1]) == before + 8
    assert await health_count(pools[2]) == before + 8
