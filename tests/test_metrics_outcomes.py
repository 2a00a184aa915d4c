"""``/metrics`` counts each upstream request's final outcome, once: a page or a
file whose headers arrive but whose body stalls or breaks is a timeout or an
error, not an ``ok``.

A real daemon in front of a :class:`~tests.fakeindex.FakeIndex` that injects
the faults (as :mod:`tests.test_upstream_faults` does), with its metrics
scraped over HTTP and read with prometheus-client's own text parser.
"""

from typing import Any

import pytest_twisted

from pypicache.web.metrics import Metrics
from tests.fakeindex import JSON_TYPE
from tests.test_metrics import parse, total
from tests.test_upstream_faults import (  # noqa: F401 (fixtures)
    TIMEOUT,
    ask,
    assert_settled,
    dists,
    worlds,
)

OUTCOMES = ("ok", "304", "404", "error", "timeout")


async def outcomes(world: Any) -> dict[str, float]:
    """The daemon's ``pypicache_upstream_requests_total`` by outcome."""
    answer = await ask(world.daemon, "metrics")
    assert answer.code == 200, answer
    samples = parse(answer.body.decode())
    return {
        o: total(samples, "pypicache_upstream_requests_total", outcome=o)
        for o in OUTCOMES
    }


def counted(**expected: float) -> dict[str, float]:
    return {o: float(expected.get(o, 0)) for o in OUTCOMES}


@pytest_twisted.ensureDeferred
async def test_body_faults_after_headers_are_counted_as_such(
    worlds, dists  # noqa: F811
):
    """Pages and files: a body that stalls after its headers counts as one
    timeout, one reset midway as one error, a whole body as one ok; never an
    ok for the headers as well (no double counting); a page read whole that
    cannot be parsed is an error."""
    world = await worlds(timeout=TIMEOUT, metrics=Metrics())
    world.index.stall_page("lib", 10)
    assert (await ask(world.daemon, "simple/lib/")).code == 504
    assert await outcomes(world) == counted(timeout=1)

    world.index.heal_page("lib")
    world.index.reset_page("lib")
    assert (await ask(world.daemon, "simple/lib/")).code == 502
    assert await outcomes(world) == counted(timeout=1, error=1)

    world.index.heal_page("lib")
    assert (await ask(world.daemon, "simple/big/")).code == 200
    assert await outcomes(world) == counted(timeout=1, error=1, ok=1)

    name = dists["big"].name
    path = f"packages/big/{name}"
    world.index.stall(name, None)
    answer = await ask(world.daemon, path)
    assert answer.cut_off or answer.code == 504
    await assert_settled(world, name)
    assert await outcomes(world) == counted(timeout=2, error=1, ok=1)

    world.index.heal(name)
    world.index.reset_midway(name)
    answer = await ask(world.daemon, path)
    assert answer.cut_off or answer.code == 502
    await assert_settled(world, name)
    assert await outcomes(world) == counted(timeout=2, error=2, ok=1)

    world.index.heal(name)
    answer = await ask(world.daemon, path)
    assert answer.code == 200 and answer.body == dists["big"].read_bytes()
    await assert_settled(world, name)
    assert await outcomes(world) == counted(timeout=2, error=2, ok=2)

    assert (await ask(world.daemon, "simple/nothing-here/")).code == 404
    assert await outcomes(world) == counted(timeout=2, error=2, ok=2, **{"404": 1})

    # A page that arrives whole but cannot be read is an error, not an ok.
    world.index.page_body("lib", b"[" * 200_000, 200, {"Content-Type": JSON_TYPE})
    assert (await ask(world.daemon, "simple/lib/")).code == 502
    assert await outcomes(world) == counted(timeout=2, error=3, ok=2, **{"404": 1})
