# -*- test-case-name: tests.test_proxy -*-
"""The bottom layer's concurrency helpers: single-flight work shared by many waiters, and blocking work in threads."""

from typing import Any, Callable, Coroutine, Generic, Hashable, Protocol, TypeVar

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

log = Logger()

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


class RunBlocking(Protocol):
    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]: ...


class NotReady(Exception):
    """An answer that is not there yet (see :func:`result_now`)."""


def result_now(d: "Deferred[T]") -> T:
    """The result of ``d`` if it has fired (a failure is raised): for the hot
    paths that answer at once when a store answers from memory, and else
    leave the request to their asynchronous path.

    :raises NotReady: ``d`` has not fired yet (it is left running).
    """
    if not d.called or d.paused:  # paused: chained to one that has not fired
        raise NotReady()
    # Read, not added a callback to: this runs several times per request on
    # the hot paths, where a callback costs more than the rest.
    result = d.result
    if isinstance(result, Failure):
        d.addErrback(lambda _: None)  # handled here: never logged as unhandled
        result.raiseException()
    return result  # type: ignore[no-any-return]


class ThreadPoolService(service.Service):
    """A thread pool as a ``run_blocking`` (call it), started and stopped
    with its parent service (under twistd: with the reactor).

    :param ready: threads started with it; the rest are started when work
        arrives.
    :param deliver: given, on the reactor thread, the call that fires a
        result's Deferred, to run it now or later (the web layer's split
        turns put it with the costly work); by default it runs at once.
    """

    def __init__(
        self,
        reactor: Any,
        size: int,
        name: str,
        ready: int = 0,
        deliver: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self._reactor = reactor
        self.pool = ThreadPool(minthreads=ready, maxthreads=size, name=name)
        self._deliver = deliver

    def __call__(
        self, f: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> "Deferred[Any]":
        """Run ``f(*args, **kwargs)`` in one of the threads."""
        deliver = self._deliver
        if deliver is None:
            return deferToThreadPool(self._reactor, self.pool, f, *args, **kwargs)
        d: Deferred[Any] = Deferred()

        def fire(success: bool, result: Any) -> None:
            (d.callback if success else d.errback)(result)

        def done(success: bool, result: Any) -> None:
            self._reactor.callFromThread(deliver, lambda: fire(success, result))

        self.pool.callInThreadWithCallback(done, f, *args, **kwargs)
        return d

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        """Stop the threads (waiting for the calls under way)."""
        super().stopService()
        self.pool.stop()
