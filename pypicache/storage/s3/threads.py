# -*- test-case-name: tests.test_s3_bucket -*-
"""The bucket's own threads: its blocking calls never run on the reactor
thread, nor queue behind (or ahead of) the file hashing of the default pool."""

from typing import Any, Callable

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool


class BucketThreads(service.Service):
    """A small thread pool as a ``run_blocking`` (call it), started and
    stopped with its parent service (under twistd: with the reactor).

    Tests call :meth:`startService` and :meth:`stopService` themselves.
    """

    def __init__(self, reactor: Any, size: int = 8, name: str = "pypicache-s3") -> None:
        self._reactor = reactor
        self.pool = ThreadPool(minthreads=0, maxthreads=size, name=name)

    def __call__(
        self, f: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Deferred[Any]:
        """Run ``f(*args, **kwargs)`` in one of the threads."""
        return deferToThreadPool(self._reactor, self.pool, f, *args, **kwargs)

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        """Stop the threads (waiting for the calls under way)."""
        super().stopService()
        self.pool.stop()
