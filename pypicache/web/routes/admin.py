# -*- test-case-name: tests.test_scan -*-
"""Operating the daemon: liveness for monitors, and the rescan of ``private/``."""

import json

from twisted.web.iweb import IRequest

from pypicache import __version__
from pypicache.concurrency import RunBlocking
from pypicache.storage.filesystem import FilesystemStore
from pypicache.web.access import AccessPolicy
from pypicache.web.routing import route


def health(request: IRequest) -> bytes:
    """Liveness: no upstream call; open without credentials (see the guard).
    Answered by the fast path (:mod:`pypicache.web.fastpath`) without Klein."""
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps({"status": "ok", "version": __version__}).encode()


class AdminRoutes:
    """``/health`` and ``POST /+rescan``."""

    _store: FilesystemStore
    _policy: AccessPolicy
    _run_blocking: RunBlocking

    __slots__ = ("_store", "_policy", "_run_blocking", "__weakref__")

    def __init__(
        self, store: FilesystemStore, policy: AccessPolicy, run_blocking: RunBlocking
    ) -> None:
        self._store = store
        self._policy = policy
        self._run_blocking = run_blocking

    @route("/health", methods=["GET", "HEAD"])
    def health(self, request: IRequest) -> bytes:
        """:func:`health`, when Klein routes it (the fast path is off)."""
        return health(request)

    @route("/+rescan", methods=["POST"])
    async def rescan(self, request: IRequest) -> bytes:
        """Index archives dropped into ``private/`` by hand; a JSON report."""
        from pypicache.private.scan import rescan

        await self._policy.check_change(request, None)
        report = await rescan(self._store, self._run_blocking)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(report.to_json(), indent=1).encode()
