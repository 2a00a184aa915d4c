# -*- test-case-name: tests.test_metrics -*-
"""``GET /metrics`` (Prometheus's text format) and ``GET /+stats`` (JSON)."""

import json
from typing import Any, Awaitable, Callable

from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.web.iweb import IRequest

from pypicache.concurrency import RunBlocking
from pypicache.web.access import AccessPolicy
from pypicache.web.metrics import Metrics
from pypicache.web.routing import route


class MetricsRoutes:
    """The daemon's figures, for Prometheus and for people.

    Reads, open to whoever may read (``--allow-from``, ``--read-auth``); with
    ``metrics_auth`` (``--metrics-auth yes``), only to users of ``--auth-file``.
    The figures are collected in a thread: with ``--workers`` that reads
    every worker's files.

    :ivar started: when the daemon started (reactor seconds), for the uptime
        and the hit ratio since start.
    """

    _metrics: Metrics
    _policy: AccessPolicy
    _run_blocking: RunBlocking
    _clock: Any
    started: float
    metrics_auth: bool
    #: The mirrored files the upstream withdrew (a coroutine function).
    withdrawn: Callable[[], Awaitable[list[dict[str, Any]]]] | None

    __slots__ = (
        "_metrics",
        "_policy",
        "_run_blocking",
        "_clock",
        "started",
        "metrics_auth",
        "withdrawn",
        "__weakref__",
    )

    def __init__(
        self,
        metrics: Metrics,
        policy: AccessPolicy,
        run_blocking: RunBlocking,
        clock: Any,
        started: float,
        metrics_auth: bool = False,
        withdrawn: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None,
    ) -> None:
        self._metrics = metrics
        self._policy = policy
        self._run_blocking = run_blocking
        self._clock = clock
        self.started = started
        self.metrics_auth = metrics_auth
        self.withdrawn = withdrawn

    @route("/metrics", methods=["GET", "HEAD"])
    async def metrics(self, request: IRequest) -> bytes:
        await self._policy.check(request, write=self.metrics_auth)
        body: bytes = await self._run_blocking(self._metrics.exposition)
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        request.setHeader(b"cache-control", b"no-store")
        return body

    @route("/+stats", methods=["GET", "HEAD"])
    async def stats(self, request: IRequest) -> bytes:
        await self._policy.check(request, write=self.metrics_auth)
        figures = await self.figures()
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(figures, indent=1).encode() + b"\n"

    async def figures(self) -> dict[str, Any]:
        """The figures of ``/+stats`` (see :meth:`Metrics.stats`)."""
        result: dict[str, Any] = await self._run_blocking(
            self._metrics.stats, self._clock.seconds(), self.started
        )
        if self.withdrawn is not None:
            result["withdrawn"] = await self.withdrawn()
        return result
