# -*- test-case-name: tests.test_project_status -*-
"""``/+status/<project>``: the PEP 792 status of a private project, read and set."""

import json
from typing import Any
from urllib.parse import parse_qs

from twisted.web.iweb import IRequest

from pypicache.errors import BadRequest, NotFound
from pypicache.index.names import normalize
from pypicache.proxy.projectstatus import Statuses, check_status
from pypicache.storage.interface import IStore
from pypicache.web.access import AccessPolicy
from pypicache.web.routing import header, route

#: The largest body read: a status and its reason.
MAX_BODY = 16 * 1024


def _given(request: IRequest) -> dict[str, Any]:
    """The fields of a JSON object or an urlencoded form body.

    :raises BadRequest: a body that is neither.
    """
    request.content.seek(0)
    body = request.content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise BadRequest(f"The body is larger than {MAX_BODY} bytes")
    kind = (header(request, b"content-type") or "").split(";")[0].strip().lower()
    text = body.decode("utf-8", "replace")
    if kind == "application/x-www-form-urlencoded":
        return {k: v[0] for k, v in parse_qs(text).items()}
    try:
        given = json.loads(text)
    except ValueError:
        given = None
    if not isinstance(given, dict):
        raise BadRequest(
            'Send a JSON object ({"status": "archived", "reason": "..."}) '
            "or a form with the fields status and reason"
        )
    return given


class StatusRoutes:
    """Reads are open as the pages are; setting needs a user, as uploads do."""

    _statuses: Statuses
    _store: IStore
    _policy: AccessPolicy

    __slots__ = ("_statuses", "_store", "_policy", "__weakref__")

    def __init__(self, statuses: Statuses, store: IStore, policy: AccessPolicy) -> None:
        self._statuses = statuses
        self._store = store
        self._policy = policy

    async def _private(self, project: str) -> str:
        name = normalize(project)
        if not await self._store.is_private(name):
            raise NotFound(
                f"No private project {name!r}: statuses are set on private "
                "projects (an upstream project carries its upstream's)"
            )
        return name

    def _answer(self, request: IRequest, project: str) -> bytes:
        status, reason = self._statuses.get(project) or ("active", None)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(
            {"project": project, "status": status, "reason": reason}
        ).encode()

    @route("/+status/<project>", methods=["GET", "HEAD"])
    async def show(self, request: IRequest, project: str) -> bytes:
        """The status of a private project (``active`` if none was set); the
        guard has checked the read."""
        name = await self._private(project)
        waiting = self._statuses.records.ready(name)
        if waiting is not None:
            await waiting
        return self._answer(request, name)

    @route("/+status/<project>", methods=["POST", "PUT"])
    async def change(self, request: IRequest, project: str) -> bytes:
        """Set the status (``status``, and optionally ``reason``): 200 with it;
        authenticated as uploads are (a token must be allowed the project)."""
        await self._policy.check_change(request, normalize(project))
        name = await self._private(project)
        given = _given(request)
        status, reason = check_status(given.get("status"), given.get("reason"))
        await self._statuses.set(name, status, reason)
        return self._answer(request, name)
