# -*- test-case-name: tests.test_upstreams -*-
"""Per-project refresh and purge, and each named upstream on its own under ``/upstreams/<name>/``."""

import json
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from pypicache.errors import NotFound
from pypicache.index.names import normalize
from pypicache.proxy.cachectl import CacheControl
from pypicache.web.access import AccessPolicy
from pypicache.web.routing import route


def _json(request: IRequest, value: Any) -> bytes:
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(value).encode()


class CacheRoutes:
    """``POST /+refresh/<project>``, ``DELETE /+cache/<project>`` (authenticated
    as uploads are), and ``/upstreams/<name>/...``.

    :ivar sites: each named upstream's own installer site.
    """

    _control: CacheControl
    _policy: AccessPolicy
    _sites: dict[str, IResource]

    __slots__ = ("_control", "_policy", "_sites", "__weakref__")

    def __init__(
        self,
        control: CacheControl,
        policy: AccessPolicy,
        sites: dict[str, IResource] | None = None,
    ) -> None:
        self._control = control
        self._policy = policy
        self._sites = {} if sites is None else sites

    @route("/+refresh/<project>", methods=["POST"])
    async def refresh(self, request: IRequest, project: str) -> bytes:
        """Drop the cached pages of a project: the next request fetches them."""
        identity = await self._policy.check(request, write=True)
        name = normalize(project)
        if identity is not None:
            identity.check_change(name)
        await self._control.refresh(name)
        return _json(request, {"project": name, "refreshed": True})

    @route("/+cache/<project>", methods=["DELETE"])
    async def purge(self, request: IRequest, project: str) -> bytes:
        """Remove a project's mirrored files (never private ones); JSON names
        them: ``removed`` from the cache's own store, ``upstreams`` by upstream."""
        identity = await self._policy.check(request, write=True)
        name = normalize(project)
        if identity is not None:
            identity.check_change(name)
        removed = await self._control.purge(name)
        own = removed.pop("", [])
        return _json(request, {"project": name, "removed": own, "upstreams": removed})

    @route("/upstreams/<name>/", branch=True)
    def upstream(self, request: IRequest, name: str) -> IResource:
        """The installer API of one named upstream: ``simple/``, its pages and files."""
        site = self._sites.get(name)
        if site is None:
            raise NotFound(f"No upstream named {name!r} here")
        return site
