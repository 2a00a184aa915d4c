# -*- test-case-name: tests.test_s3_bucket -*-
"""The bucket's own threads: its blocking calls never run on the reactor
thread, nor queue behind (or ahead of) the file hashing of the default pool."""

from typing import Any

from pypicache.concurrency import ThreadPoolService


class BucketThreads(ThreadPoolService):
    """A small thread pool as a ``run_blocking`` (call it), started and
    stopped with its parent service (under twistd: with the reactor).

    Tests call :meth:`startService` and :meth:`stopService` themselves.
    """

    def __init__(self, reactor: Any, size: int = 8, name: str = "pypicache-s3") -> None:
        super().__init__(reactor, size, name)
