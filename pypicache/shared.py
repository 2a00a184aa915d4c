# -*- test-case-name: tests.test_proxy -*-
"""Work done once for many waiters, each of which may give up on its own."""

from typing import Any, Callable, Coroutine, Generic, Hashable, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Runs at most one coroutine per key; callers arriving meanwhile share its result.

    Each caller gets its own Deferred: cancelling it (a client that went away)
    removes that caller only and never cancels the shared work.
    """

    def __init__(self) -> None:
        self._waiters: dict[Hashable, list[Deferred[T]]] = {}

    def run(
        self, key: Hashable, work: Callable[[], Coroutine[Any, Any, T]]
    ) -> "Deferred[T]":
        """Return a Deferred for the result of ``work()``, started unless already running."""
        start = key not in self._waiters
        waiters = self._waiters.setdefault(key, [])

        def cancel(d: Deferred[T]) -> None:
            if d in waiters:
                waiters.remove(d)

        mine: Deferred[T] = Deferred(cancel)
        waiters.append(mine)
        if start:
            Deferred.fromCoroutine(work()).addBoth(self._finished, key)
        return mine

    def _finished(self, result: T | Failure, key: Hashable) -> None:
        for waiter in self._waiters.pop(key, []):
            (
                waiter.callback(result)
                if not isinstance(result, Failure)
                else waiter.errback(result)
            )
        return None
