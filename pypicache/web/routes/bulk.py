# -*- test-case-name: tests.test_bulk -*-
"""``POST /requirements.txt``: bulk caching over HTTP, with a JSON or NDJSON report."""

import json
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest

from pypicache.bulk.cacher import BulkCacher
from pypicache.concurrency import RunBlocking
from pypicache.errors import BadRequest, TooManyRequests
from pypicache.storage.interface import IStore
from pypicache.web.access import AccessPolicy
from pypicache.web.forms import boundary_of, read_form
from pypicache.web.routing import header, route

#: Largest requirements file accepted by ``POST /requirements.txt``.
MAX_REQUIREMENTS_SIZE = 1024 * 1024


#: Retry-After for a client already running its share of bulk jobs.
BUSY_RETRY_SECONDS = 10


@attrs.define
class BulkRoutes:
    """Cache everything a requirements file needs.

    :ivar _bulk_auth: whether bulk caching needs a user (as uploads do).
    :ivar _jobs_per_client: bulk jobs one client address may run at once.
    """

    _store: IStore
    _bulk: BulkCacher
    _policy: AccessPolicy
    _run_blocking: RunBlocking
    _bulk_auth: bool = False
    _jobs_per_client: int = 2
    _running: dict[str, int] = attrs.field(factory=dict)

    @route("/requirements.txt", methods=["POST"])
    async def requirements(self, request: IRequest) -> Any:
        """Cache everything a requirements file needs; a JSON report, or NDJSON progress."""
        await self._policy.check(request, write=self._bulk_auth)
        client = self._policy.client_address(request)
        if self._running.get(client, 0) >= self._jobs_per_client:
            raise TooManyRequests(
                f"{client} already runs {self._jobs_per_client} bulk caching "
                "jobs; wait for one to finish",
                BUSY_RETRY_SECONDS,
            )
        self._running[client] = self._running.get(client, 0) + 1
        try:
            return await self._cache(request)
        finally:
            self._running[client] -= 1
            if not self._running[client]:
                del self._running[client]

    async def _cache(self, request: IRequest) -> Any:
        # Imported here: packaging's markers and tags are not needed until then.
        from pypicache.bulk.targets import parse_bulk_params

        params = parse_bulk_params(request.args)
        text = await self._requirements_text(request)
        if "application/x-ndjson" in (header(request, b"accept") or ""):
            request.setHeader(b"content-type", b"application/x-ndjson")

            def emit(entry: dict[str, Any]) -> None:
                if not request.finished and not getattr(
                    request, "_disconnected", False
                ):
                    request.write(json.dumps(entry).encode() + b"\n")

            report = await Deferred.fromCoroutine(self._bulk.run(text, params, emit))
            emit(
                {
                    "totals": report["totals"],
                    "requirements": report["requirements"],
                    "unparsed": report["unparsed"],
                }
            )
            return b""
        request.setHeader(b"content-type", b"application/json")
        report = await Deferred.fromCoroutine(self._bulk.run(text, params, None))
        return json.dumps(report, indent=1).encode()

    async def _requirements_text(self, request: IRequest) -> str:
        """The requirements file: multipart field ``requirements``, or the raw body."""
        if boundary_of(header(request, b"content-type")) is not None:
            form = await read_form(request, self._run_blocking, self._store)
            try:
                text = form.get("requirements")
                part = form.files.get("requirements")
                if part is not None:
                    with open(part.temp.path.path, "rb") as f:
                        raw = f.read(MAX_REQUIREMENTS_SIZE + 1)
                elif text is not None:
                    raw = text.encode("utf-8")
                else:
                    raise BadRequest("No 'requirements' field in the form")
            finally:
                form.discard()
        else:
            request.content.seek(0)
            raw = request.content.read(MAX_REQUIREMENTS_SIZE + 1)
        if len(raw) > MAX_REQUIREMENTS_SIZE:
            raise BadRequest("Requirements file too large")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest("The requirements file is not UTF-8 text") from e
