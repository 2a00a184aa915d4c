# -*- test-case-name: tests.test_proxy -*-
"""The daemon's HTTP interface: every route group on one Klein app, behind the guard.

The route groups live in :mod:`pypicache.web.routes`; this module builds them
from the daemon's objects, registers them and the error handlers that turn
exceptions into statuses, and wraps the result in :class:`Guarded`.
"""

import sys
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

import attrs
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from pypicache.bulk.cacher import BulkCacher
from pypicache.concurrency import RunBlocking
from pypicache.errors import PypicacheError
from pypicache.private.uploads import Uploads
from pypicache.proxy.mirror import Mirror
from pypicache.proxy.views import Views
from pypicache.storage.capacity import Capacity
from pypicache.storage.filesystem import FilesystemStore
from pypicache.storage.records import StoredFile
from pypicache.storage.yanks import YankRecords
from pypicache.web.access import AccessPolicy
from pypicache.web.coldlane import ColdRoutes
from pypicache.web.fastpath import FastReads
from pypicache.web.guard import Guarded, relative_location
from pypicache.web.ready import ReadyAnswers
from pypicache.web.routes.filehost import FileHostRoutes
from pypicache.web.routes.installer import InstallerRoutes
from pypicache.web.routing import klein_app, register

if TYPE_CHECKING:
    from klein import Klein

    from pypicache.private.scan import ScanReport
    from pypicache.web.routes.metrics import MetricsRoutes
    from pypicache.web.routes.ui import UiRoutes

log = Logger()


def _known_error(request: IRequest, failure: Any) -> bytes:
    return failure.value.apply(request)  # type: ignore[no-any-return]


def _routing_error(request: IRequest, failure: Any) -> bytes:
    from werkzeug.routing import RequestRedirect

    error = failure.value
    request.setResponseCode(error.code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    if error.code == 405 and error.valid_methods:
        request.setHeader(b"allow", ", ".join(error.valid_methods).encode())
    if isinstance(error, RequestRedirect):
        # werkzeug's redirects are absolute, with the port we listen on: ours
        # are relative (behind a reverse proxy they must be).
        target = urlsplit(error.new_url)
        location = relative_location(
            request.path, target.path.encode(), target.query.encode()
        )
        request.setHeader(b"location", location)
        return b"Moved to " + location + b"\n"
    return f"{error.code} {error.name}\n".encode()


def _unexpected(request: IRequest, failure: Any) -> bytes:
    log.failure(
        "Unexpected error answering {uri}",
        failure,
        uri=request.uri.decode("latin-1"),
    )
    request.setResponseCode(500)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b"Internal error; the daemon's log has the details.\n"


def error_handlers() -> (
    tuple[tuple[type[Exception], Callable[[IRequest, Any], bytes]], ...]
):
    """Our errors to their statuses, werkzeug's routing errors to theirs, the
    rest to 500: the first handler whose exception matches answers (imports
    werkzeug: called as a Klein app is made)."""
    from werkzeug.exceptions import HTTPException

    return (
        (PypicacheError, _known_error),
        (HTTPException, _routing_error),
        (Exception, _unexpected),
    )


def add_error_handlers(app: "Klein") -> None:
    """Register :func:`error_handlers` on a Klein app."""
    for kind, handler in error_handlers():
        app.handle_errors(kind)(handler)


def answer_error(request: IRequest, failure: Failure) -> bytes:
    """The body of the answer to an exception, as the Klein app's handlers give it."""
    if failure.check(PypicacheError):
        return _known_error(request, failure)
    # werkzeug is imported with the first Klein app: until then no error is its own.
    werkzeug = sys.modules.get("werkzeug.exceptions")
    if werkzeug is not None and failure.check(werkzeug.HTTPException):
        return _routing_error(request, failure)
    if failure.check(Exception):
        return _unexpected(request, failure)
    failure.raiseException()
    raise AssertionError("unreachable")


class KleinLater(Resource):
    """The site's Klein app, made at the first request that needs it.

    The fast path (``/health``, the hot reads) and the fast lane answer
    without Klein; a daemon whose clients only install never loads Klein and
    werkzeug, the web interface, the JSON API, the upload and bulk routes
    (their modules are imported as the app is made). ``tests/test_startup.py``
    imports every module this defers and makes the app of a built daemon.

    :param make: makes the Klein app's resource (once).
    """

    isLeaf = True

    def __init__(self, make: Callable[[], Any]) -> None:
        super().__init__()
        self._make: Callable[[], Any] | None = make
        self._resource: Any = None

    @property
    def resource(self) -> Any:
        """The Klein app's resource, made now if it was not yet."""
        if self._make is not None:
            self._resource, self._make = self._make(), None
        return self._resource

    def render(self, request: Any) -> Any:
        return self.resource.render(request)


@attrs.define
class PypicacheApp:
    """The objects behind the web site, and the site's root resource."""

    store: FilesystemStore
    mirror: Mirror
    views: Views
    uploads: Uploads
    policy: AccessPolicy
    run_blocking: RunBlocking
    index_url: str
    bulk: BulkCacher
    bulk_auth: bool = False
    bulk_jobs_per_client: int = 2
    #: Bounded disk: the usage record and eviction (``None``: none kept).
    capacity: Capacity | None = None
    #: ``/metrics`` and ``/+stats`` (``None``: not served).
    metrics: "MetricsRoutes | None" = None
    #: More route groups (per-project cache control, the named upstreams).
    extra_routes: list[object] = attrs.field(factory=list)
    #: The team's yanks of upstream files (``None``: yanks are private only).
    local_yanks: YankRecords | None = None
    #: The reactor's clock (the web interface's search index).
    clock: Any = None

    installer: InstallerRoutes = attrs.field(init=False)
    #: The same files under the public index's file-host layout (lock files).
    filehost: FileHostRoutes = attrs.field(init=False)
    _ui: "UiRoutes | None" = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        usage = self.capacity.usage if self.capacity is not None else None
        self.installer = InstallerRoutes(
            self.store, self.mirror, self.views, usage, run_blocking=self.run_blocking
        )
        self.filehost = FileHostRoutes(self.installer, self.views, self.mirror)
        if self.clock is None:
            from twisted.internet import reactor

            self.clock = reactor
        self.uploads.on_stored = self._describe_upload

    @property
    def ui(self) -> "UiRoutes":
        """The web interface (``/+ui/``), made (and its modules imported) when
        first needed: by the Klein app, or the first upload's description."""
        if self._ui is None:
            from pypicache.web.routes.ui import UiRoutes
            from pypicache.web.ui.catalog import Catalog
            from pypicache.web.ui.descriptions import Descriptions

            catalog = Catalog(self.store, self.run_blocking, self.clock)
            self._ui = UiRoutes(
                self.store, self.views, self.policy, self.run_blocking, catalog
            )
            # Descriptions rendered once, kept in the cache folder for every process.
            self._ui.descriptions = Descriptions.under(
                getattr(self.store, "root", None)
            )
        return self._ui

    def _describe_upload(self, stored: StoredFile) -> None:
        """Render an uploaded file's description in a thread, after its commit
        (the upload's answer does not wait): its release's first page renders none."""
        from pypicache.web.ui import release

        d = self.run_blocking(release.prepare, self.ui.descriptions, stored)
        d.addErrback(
            lambda f: log.failure(
                "Rendering the description of {filename}",
                f,
                filename=stored.info.filename,
            )
        )

    def route_groups(self) -> list[object]:
        """One object per group of routes, each with the collaborators it needs
        (their modules imported now: as the Klein app is made)."""
        from pypicache.web.routes.admin import AdminRoutes
        from pypicache.web.routes.bulk import BulkRoutes
        from pypicache.web.routes.jsonapi import JsonApiRoutes
        from pypicache.web.routes.pages import PageRoutes
        from pypicache.web.routes.uploads import UploadRoutes

        store, policy, run_blocking = self.store, self.policy, self.run_blocking
        return [
            self.installer,
            self.filehost,
            UploadRoutes(
                store,
                self.uploads,
                policy,
                run_blocking,
                views=self.views,
                local_yanks=self.local_yanks,
            ),
            BulkRoutes(
                store,
                self.bulk,
                policy,
                run_blocking,
                self.bulk_auth,
                self.bulk_jobs_per_client,
            ),
            JsonApiRoutes(store, run_blocking, self.views),
            AdminRoutes(store, policy, run_blocking),
            PageRoutes(
                store, self.index_url, self._open_figures(), policy, self.ui.catalog
            ),
            self.ui,
            *([self.metrics] if self.metrics is not None else []),
            *self.extra_routes,
        ]

    def _open_figures(self) -> Any:
        """What the home page shows of ``/+stats``: nothing if they need a user."""
        if self.metrics is None or self.metrics.metrics_auth:
            return None
        return self.metrics.figures

    def resource(self, fast_reads: bool = True) -> Guarded:
        """The site's root: every request passes the guard first.

        :param fast_reads: answer the hot reads and ``/health`` without
            Klein's routing (:class:`FastReads`); ``False`` leaves every
            request to Klein.

        The Klein app is made at the first request left to it (:class:`KleinLater`).
        """
        inner: Any = KleinLater(self.klein_resource)
        if fast_reads:
            inner = FastReads(inner, self.installer, answer_error, self.filehost)
        return Guarded(inner, self.policy)

    def klein_resource(self) -> Any:
        """A Klein app with every route group on it, as a resource."""
        app = klein_app()
        add_error_handlers(app)
        for group in self.route_groups():
            register(app, group)
        return app.resource()

    def ready_answers(self) -> ReadyAnswers:
        """The answers of the site's fast lane (see :mod:`pypicache.web.fastlane`)."""
        answers = ReadyAnswers(self.installer, self.policy, self.filehost)
        answers.cold = ColdRoutes(self.installer, self.policy, answer_error)
        return answers

    async def rescan(self) -> "ScanReport":
        """Index archives dropped into ``private/``."""
        from pypicache.private.scan import rescan

        return await rescan(self.store, self.run_blocking)

    async def start_up(self) -> "ScanReport":
        """Clean up after a crash and index dropped archives, once listening."""
        from pypicache.private.scan import start_up

        return await start_up(self.store, self.run_blocking)
