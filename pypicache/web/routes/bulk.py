# -*- test-case-name: tests.test_bulk -*-
"""``POST /requirements.txt`` and ``POST /+warm``: bulk caching over HTTP, with a JSON or NDJSON report."""

import json
from typing import Any, Awaitable, Callable

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


class BulkRoutes:
    """Cache everything a requirements file needs.

    :ivar _bulk_auth: whether bulk caching needs a user (as uploads do).
    :ivar _jobs_per_client: bulk jobs one client address may run at once.
    """

    _store: IStore
    _bulk: BulkCacher
    _policy: AccessPolicy
    _run_blocking: RunBlocking
    _bulk_auth: bool
    _jobs_per_client: int
    _running: dict[str, int]

    __slots__ = (
        "_store",
        "_bulk",
        "_policy",
        "_run_blocking",
        "_bulk_auth",
        "_jobs_per_client",
        "_running",
        "__weakref__",
    )

    def __init__(
        self,
        store: IStore,
        bulk: BulkCacher,
        policy: AccessPolicy,
        run_blocking: RunBlocking,
        bulk_auth: bool = False,
        jobs_per_client: int = 2,
        running: dict[str, int] | None = None,
    ) -> None:
        self._store = store
        self._bulk = bulk
        self._policy = policy
        self._run_blocking = run_blocking
        self._bulk_auth = bulk_auth
        self._jobs_per_client = jobs_per_client
        self._running = {} if running is None else running

    @route("/requirements.txt", methods=["POST"])
    async def requirements(self, request: IRequest) -> Any:
        """Cache everything a requirements file needs; a JSON report, or NDJSON progress."""
        return await self._limited(request, self._cache)

    @route("/+warm", methods=["POST"])
    async def warm(self, request: IRequest) -> Any:
        """Cache exactly the files of a lock file; a JSON report, or NDJSON progress."""
        return await self._limited(request, self._warm)

    async def _limited(
        self, request: IRequest, job: Callable[[IRequest], Awaitable[Any]]
    ) -> Any:
        """Run ``job`` within the client's share of bulk jobs, after access checks."""
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
            return await job(request)
        finally:
            self._running[client] -= 1
            if not self._running[client]:
                del self._running[client]

    async def _cache(self, request: IRequest) -> Any:
        # Imported here: packaging's markers and tags are not needed until then.
        from pypicache.bulk.targets import parse_bulk_params

        params = parse_bulk_params(request.args)
        text = await self._requirements_text(request)
        return await self._report(
            request, lambda emit: self._bulk.run(text, params, emit)
        )

    async def _warm(self, request: IRequest) -> Any:
        from pypicache.bulk.locks import FORMATS

        fmt = None
        for raw_key, values in request.args.items():
            key = raw_key.decode("utf-8", "replace").strip().lower()
            if key != "format":
                raise BadRequest(f"Unknown parameter {key[:100]!r}; known: format")
            if len(values) > 1:
                raise BadRequest("format given more than once")
            fmt = values[0].decode("utf-8", "replace").strip().lower()
            if fmt not in FORMATS:
                raise BadRequest(
                    f"Unknown format {fmt[:100]!r}; known: {', '.join(FORMATS)}"
                )
        text = await self._requirements_text(request, "lock", "lock file")
        return await self._report(
            request, lambda emit: self._bulk.warm(text, fmt, emit)
        )

    async def _report(
        self,
        request: IRequest,
        run: Callable[[Callable[[dict[str, Any]], None] | None], Any],
    ) -> Any:
        """The job's JSON report, or (``Accept: application/x-ndjson``) each
        file's entry as it completes, then the totals."""
        if "application/x-ndjson" in (header(request, b"accept") or ""):
            request.setHeader(b"content-type", b"application/x-ndjson")

            def emit(entry: dict[str, Any]) -> None:
                if not request.finished and not getattr(
                    request, "_disconnected", False
                ):
                    request.write(json.dumps(entry).encode() + b"\n")

            report = await Deferred.fromCoroutine(run(emit))
            emit(
                {
                    "totals": report["totals"],
                    "requirements": report["requirements"],
                    "unparsed": report["unparsed"],
                }
            )
            return b""
        request.setHeader(b"content-type", b"application/json")
        report = await Deferred.fromCoroutine(run(None))
        return json.dumps(report, indent=1).encode()

    async def _requirements_text(
        self,
        request: IRequest,
        field: str = "requirements",
        what: str = "requirements file",
    ) -> str:
        """The file: multipart field ``field``, or the raw body."""
        if boundary_of(header(request, b"content-type")) is not None:
            form = await read_form(request, self._run_blocking, self._store)
            try:
                text = form.get(field)
                part = form.files.get(field)
                if part is not None:
                    with open(part.temp.path.path, "rb") as f:
                        raw = f.read(MAX_REQUIREMENTS_SIZE + 1)
                elif text is not None:
                    raw = text.encode("utf-8")
                else:
                    raise BadRequest(f"No {field!r} field in the form")
            finally:
                form.discard()
        else:
            request.content.seek(0)
            raw = request.content.read(MAX_REQUIREMENTS_SIZE + 1)
        if len(raw) > MAX_REQUIREMENTS_SIZE:
            raise BadRequest(f"{what.capitalize()} too large")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest(f"The {what} is not UTF-8 text") from e
