# -*- test-case-name: tests.test_prefetch -*-
"""What the prefetcher's walks need that a daemon does not load at start-up
(packaging's requirements, markers and specifiers; this interpreter's tags),
loaded once, in a thread: after the daemon's first answer
(:func:`start_loading`, run by ``tap/service.py``'s ``AfterFirstAnswer``),
or by the first walk if it comes before that load is over (:func:`load_once`).

Loaded on the reactor by the first walk, they held it for 40 to 50 ms (the
imports compile packaging's regular expressions; ``sys_tags`` lists some 900
tags) just as the first cold install began: every request of that install
waited behind them. Loaded in a thread by the first walk alone, they still
took the GIL from that install's first requests; after the first answer,
they are loaded before a client that comes a moment later asks anything.
Not at start-up: a daemon that does not prefetch never loads them
(``tests/test_startup.py``).
"""

import functools
import sys

from packaging.tags import Tag, sys_tags
from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger

from pypicache.concurrency import RunBlocking

log = Logger()

#: One load at a time: walks that start while it runs wait for it.
_loading = DeferredLock()


@functools.cache  # at the first walk, not at start-up (sys_tags: 15 ms)
def tag_ranks() -> dict[Tag, int]:
    """This interpreter's tags, best first (as installers rank them)."""
    return {tag: rank for rank, tag in enumerate(sys_tags())}


def loaded() -> bool:
    """Whether :func:`load` has run (or what it loads is already loaded)."""
    return (
        tag_ranks.cache_info().currsize > 0 and "packaging.requirements" in sys.modules
    )


def load() -> None:
    """Load what a walk needs (CPU work: run it in a thread)."""
    tag_ranks()
    from packaging.requirements import Requirement

    marker = Requirement("a>=1; python_version >= '3'").marker
    assert marker is not None
    marker.evaluate({"extra": ""})


async def load_once(run_blocking: RunBlocking) -> None:
    """:func:`load` in a thread of ``run_blocking``, unless done (one at a time)."""
    await _loading.acquire()
    try:
        if not loaded():
            await run_blocking(load)
    finally:
        _loading.release()


def start_loading(run_blocking: RunBlocking) -> None:
    """Start :func:`load_once` (after the daemon's first answer: the load is
    then over before the first cold install needs it, unless that install is
    what the first answer was for)."""
    Deferred.fromCoroutine(load_once(run_blocking)).addErrback(
        lambda f: log.failure("Loading what prefetch walks need failed", f)
    )
