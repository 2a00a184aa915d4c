# -*- test-case-name: tests.test_proxy -*-
"""The installer API: project lists and pages under ``/simple/`` and ``/local/``, and files."""

from typing import Any, Callable, Hashable
from urllib.parse import quote
from weakref import WeakValueDictionary

import attrs
from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest

from pypicache.concurrency import NotReady, RunBlocking, SingleFlight, result_now
from pypicache.errors import MethodNotAllowed, NotFound
from pypicache.index.model import DistFile, MetadataOf
from pypicache.index.names import METADATA_SUFFIX, check_filename, normalize
from pypicache.index.simple import (
    JSON_TYPE,
    render_html_index,
    render_json_index,
)
from pypicache.proxy.mirror import Mirror
from pypicache.proxy.views import View, Views
from pypicache.storage.interface import IStore
from pypicache.storage.records import Opened, StoredFile
from pypicache.storage.usage import Usage
from pypicache.web.files import DownloadStream, serve_stored, set_file_headers
from pypicache.web.hits import mark_cache_hit
from pypicache.web.rendered import RenderCache
from pypicache.web.routes.pagebodies import PageBodies, renderer
from pypicache.web.routes.readyanswers import ReadyAnswers
from pypicache.web.routing import (
    Body,
    project_of,
    redirect,
    route,
    send_body,
)

#: What a ``..._now`` method returns when the answer needs waiting for: the
#: request then goes to the route itself.
NOT_READY = object()
#: What :meth:`InstallerRoutes._package_now` returns for an archive (or core
#: metadata) it found not stored: the route fetches it without looking again.
_NOT_STORED = object()


def _negotiated(request: IRequest) -> tuple[bytes | None, bytes | None, bytes | None]:
    """What a page's form depends on: ``Accept``, ``?format=``, ``Accept-Encoding``."""
    formats = request.args.get(b"format")
    return (
        request.getHeader(b"accept"),
        formats[0] if formats else None,
        request.getHeader(b"accept-encoding"),
    )


@attrs.define
class InstallerRoutes(ReadyAnswers, PageBodies):
    """What pip, uv and other installers read: the simple API and the files."""

    _store: IStore
    _mirror: Mirror
    _views: Views
    #: Where each archive served is recorded (bounded disk), if anywhere.
    _usage: Usage | None = None
    _rendered: RenderCache = attrs.field(factory=RenderCache)
    #: Where large pages are rendered and compressed (a thread; ``None``: on
    #: the reactor, as small ones always are).
    run_blocking: RunBlocking | None = attrs.field(default=None, kw_only=True)
    #: Pages of at least this many files are rendered by :attr:`run_blocking`.
    big_page: int = attrs.field(default=200, kw_only=True)
    _renders: SingleFlight[tuple[Body, Body | None]] = attrs.field(
        factory=SingleFlight, init=False
    )
    _behind: "set[Deferred[object]]" = attrs.field(factory=set, init=False)
    _quick: "WeakValueDictionary[Hashable, Body]" = attrs.field(
        factory=WeakValueDictionary, init=False
    )
    #: Seconds clients may keep ``/simple/`` pages (``Cache-Control: max-age``).
    page_max_age: int = 600

    def _send_page(
        self,
        request: IRequest,
        slot: tuple[str, ...],
        version: Hashable,
        render_html: Callable[[], bytes],
        render_json: Callable[[], bytes],
    ) -> Any:
        """Send a page rendered once per version, format and encoding.

        :param slot: which page (``("simple", name)``, ``("local", "+index")``...);
            ``/simple/`` ones carry ``Cache-Control``; :param version: its
            version (the key :class:`Views` gives): a new one renders again.
        """
        form = self._form(slot, version, *_negotiated(request))
        body = self._body(
            form, lambda media: render_json() if media == JSON_TYPE else render_html()
        )
        return send_body(request, body)

    @route("/simple/", methods=["GET", "HEAD"], strict_slashes=False)
    @route("/local/", methods=["GET", "HEAD"], strict_slashes=False)
    async def project_list(self, request: IRequest) -> Any:
        if not request.path.endswith(b"/"):
            return redirect(request, request.path.rsplit(b"/", 1)[-1].decode() + "/")
        names = await self._store.projects()
        hidden = self._views.rules.hidden()
        if hidden:
            names = [n for n in names if n not in hidden]
        area = "local" if request.path.rstrip(b"/").endswith(b"/local") else "simple"
        return self._send_page(
            request,
            (area, "+index"),
            tuple(names),
            lambda: render_html_index(names),
            lambda: render_json_index(names),
        )

    def _canonical(self, request: IRequest, project: str) -> tuple[str, bytes | None]:
        """Return the normalized name, and a redirect to send if the URL is not canonical."""
        name = normalize(project)
        if name != project:
            location = (
                f"../{quote(name)}/"
                if request.path.endswith(b"/")
                else f"{quote(name)}/"
            )
            return name, redirect(request, location)
        if not request.path.endswith(b"/"):
            return name, redirect(request, f"{quote(name)}/")
        return name, None

    def _send_project(
        self,
        request: IRequest,
        route: str,
        name: str,
        view: View,
        offer: MetadataOf = DistFile.recorded_metadata,
    ) -> Any:
        """Send a project's page if it needs no rendering in a thread, else
        return :data:`NOT_READY`."""
        body = self._project_body(route, name, view, offer, *_negotiated(request))
        return NOT_READY if body is None else send_body(request, body)

    async def _send_project_later(
        self,
        request: IRequest,
        route: str,
        name: str,
        view: View,
        offer: MetadataOf = DistFile.recorded_metadata,
    ) -> Any:
        """:meth:`_send_project`, rendering a large page in a thread."""
        body = self._project_body(route, name, view, offer, *_negotiated(request))
        if body is None:
            form = self._form((route, name), view.key, *_negotiated(request))
            body = await self._body_later(form, renderer(view.page, offer))
        return send_body(request, body)

    def local_page_now(self, request: IRequest, project: str) -> Any:
        """:meth:`local_page`'s answer if the store gives it at once, else
        :data:`NOT_READY`."""
        name, moved = self._canonical(request, project)
        if moved is not None:
            return moved
        try:
            view = self._views.local_now(name)
        except NotReady:
            return NOT_READY
        mark_cache_hit(request, True)  # /local/ is what is stored
        return self._send_project(request, "local", name, view)

    @route("/local/<project>/", methods=["GET", "HEAD"], strict_slashes=False)
    async def local_page(self, request: IRequest, project: str) -> Any:
        now = self.local_page_now(request, project)
        if now is not NOT_READY:
            return now
        name = normalize(project)
        view = await self._views.local(name)
        mark_cache_hit(request, True)
        return await self._send_project_later(request, "local", name, view)

    def simple_page_now(self, request: IRequest, project: str) -> Any:
        """:meth:`simple_page`'s answer if it needs no upstream request, else :data:`NOT_READY`."""
        name, moved = self._canonical(request, project)
        if moved is not None:
            return moved
        view = self._views.simple_now(name)
        if view is None:
            return NOT_READY
        mark_cache_hit(request, True)
        return self._send_project(request, "simple", name, view, self._views.offered)

    @route("/simple/<project>/", methods=["GET", "HEAD"], strict_slashes=False)
    async def simple_page(self, request: IRequest, project: str) -> Any:
        name, moved = self._canonical(request, project)
        if moved is not None:
            return moved
        view = self._views.simple_now(name)
        mark_cache_hit(request, view is not None)
        if view is None:
            view = await self._views.simple(name, announce=False)
        try:
            return await self._send_project_later(
                request, "simple", name, view, self._views.offered
            )
        finally:
            # The walk below a page fetched now starts once its answer is
            # ready (rendered in a thread, a large one): not beside it.
            self._views.announce(name, view)

    @route("/simple/", methods=["POST", "PUT"], strict_slashes=False)
    @route("/simple/<path:rest>", methods=["POST", "PUT"])
    @route("/local/", methods=["POST", "PUT"], strict_slashes=False)
    @route("/local/<path:rest>", methods=["POST", "PUT"])
    def upload_to_index(self, request: IRequest, rest: str = "") -> bytes:
        """The index pages are read-only: say where uploads go instead."""
        request.setHeader(b"allow", b"GET, HEAD")
        raise MethodNotAllowed(
            "Upload to this server's root URL instead (twine upload --repository-url "
            "http://HOST:PORT/, uv publish --publish-url http://HOST:PORT/), "
            "or PUT /packages/<project>/<filename>"
        )

    def serve(self, request: IRequest, stored: StoredFile, opened: Opened) -> Any:
        """Answer with a stored archive, recording its use: every path that
        serves one goes through here, or through :meth:`stored_ready`."""
        self.record_use(stored)
        return serve_stored(request, stored, opened)

    async def serve_later(self, request: IRequest, stored: StoredFile) -> Any:
        """:meth:`serve`, once the store has opened the file (an object
        store's first read of it is sent as it arrives from the bucket)."""
        return self.serve(request, stored, await self._store.open(stored, stream=True))

    def record_use(self, stored: StoredFile) -> None:
        """Record that a mirrored archive is served (bounded disk)."""
        if self._usage is not None and not stored.private:
            self._usage.record(stored.project, stored.info.filename)

    def package_now(self, request: IRequest, project: str, filename: str) -> Any:
        """:meth:`package`'s answer for a stored archive or stored core metadata,
        else :data:`NOT_READY`."""
        now = self._package_now(request, project, filename)
        return NOT_READY if now is _NOT_STORED else now

    def _package_now(self, request: IRequest, project: str, filename: str) -> Any:
        """:meth:`package_now`, or :data:`_NOT_STORED` where it found, at once,
        that the archive is not stored (and the rules do not refuse it)."""
        check_filename(filename)
        try:
            if filename.endswith(METADATA_SUFFIX):
                return self._metadata_now(
                    request, project, filename[: -len(METADATA_SUFFIX)]
                )
            found = self._views.stored_now(project_of(project, filename), filename)
        except NotReady:
            return NOT_READY
        if found is None:
            return _NOT_STORED
        mark_cache_hit(request, True)
        return self.serve(request, *found)

    @route("/packages/<project>/<filename>", methods=["GET", "HEAD"])
    async def package(self, request: IRequest, project: str, filename: str) -> Any:
        now = self._package_now(request, project, filename)
        metadata = filename.endswith(METADATA_SUFFIX)
        archive = filename[: -len(METADATA_SUFFIX)] if metadata else filename
        if now is _NOT_STORED:
            # What the slow path looks up first (``Views.find``; for core
            # metadata ``Views.check``, ``open_metadata``, ``is_private``)
            # would read the same state, in this same step of the reactor,
            # to the same answer (the store's and the rules' ``_now`` reads
            # raise rather than differ): not looked up again; nor judged
            # again by the rules, if by the page they would use.
            name = project_of(project, archive)
            judged = self._views.judged_as_upstream_now(name)
            if metadata:
                return await self._metadata_fetched(request, name, archive, judged)
            return await self._fetched(request, name, filename, judged)
        if now is not NOT_READY:
            return now
        if metadata:
            name = project_of(project, archive)
            if self._views.rules:
                await self._views.check(name, archive)
            opened = await self._store.open_metadata(name, archive)
            if opened is None and await self._views.is_private(name):
                raise NotFound(f"No core metadata for {archive!r}")
            return await self._metadata_fetched(request, name, archive)
        return await self._archive(request, project_of(project, filename), filename)

    async def _metadata_fetched(
        self, request: IRequest, project: str, archive: str, judged: bool = False
    ) -> bytes:
        """Answer with the core metadata of ``archive`` the store did not
        give at once: kept, extracted, or fetched (see :meth:`Mirror.metadata`).

        :param judged: as for :meth:`_fetched`.
        """
        if not judged:
            await self._views.check_upstream(project, archive)
        # Judged: still the step in which the store gave none.
        metadata = await self._mirror.metadata(project, archive, absent=judged)
        if self._views.on_metadata is not None:
            self._views.on_metadata(project, archive)
        mark_cache_hit(request, False)
        return _metadata_answer(request, metadata)

    @route("/packages/source/<letter>/<project>/<filename>", methods=["GET", "HEAD"])
    async def legacy_package(
        self, request: IRequest, letter: str, project: str, filename: str
    ) -> Any:
        """The original pypicache's path for source archives."""
        return await self.package(request, project, filename)

    async def _archive(self, request: IRequest, project: str, filename: str) -> Any:
        stored = await self._views.find(project, filename)
        if stored is not None:
            mark_cache_hit(request, True)
            try:
                return await self.serve_later(request, stored)
            except NotFound:
                if stored.private:
                    raise
                # Evicted (by another daemon on the bucket) since this view
                # was read: fetched again, as if it had never been stored.
        return await self._fetched(request, project, filename)

    async def _fetched(
        self, request: IRequest, project: str, filename: str, judged: bool = False
    ) -> Any:
        """Answer with an archive :meth:`Views.find` did not find stored:
        from upstream (downloaded once, streamed while it arrives).

        :param judged: the rules judged it already as
            :meth:`Views.check_upstream` would (see
            :meth:`Views.judged_as_upstream_now`).
        """
        if not judged:
            await self._views.check_upstream(project, filename)
        if request.method == b"HEAD" and self._mirror.in_flight(filename) is None:
            info = await self._mirror.describe(project, filename)
            if set_file_headers(request, info.hashes):
                return b""
            # A GET of it will answer ranges (once it is cached): uv asks here
            # and, without this, streams whole wheels for the rest of its run.
            request.setHeader(b"accept-ranges", b"bytes")
            if info.size is not None:
                request.setHeader(b"content-length", str(info.size).encode())
            return b""
        download = await self._mirror.download(project, filename)
        mark_cache_hit(request, False)
        if download.stored is not None:
            return await self.serve_later(request, download.stored)
        if download.error is not None:
            raise download.error
        if self._usage is not None:
            self._usage.record(project, filename)
        return DownloadStream(download, self._store.open)

    def _metadata_now(self, request: IRequest, project: str, filename: str) -> Any:
        """The core metadata of ``filename`` if it is on disk, else
        :data:`_NOT_STORED` (:data:`NOT_READY` if the store does not answer
        at once or redirects; :class:`NotFound` for a private project)."""
        name = project_of(project, filename)
        if self._views.rules:
            self._views.check_now(name, filename)
        opened = result_now(self._store.open_metadata(name, filename))
        if opened is None and self._views.is_private_now(name):
            raise NotFound(f"No core metadata for {filename!r}")
        if opened is None:
            return _NOT_STORED
        if opened.url is not None:
            return NOT_READY
        mark_cache_hit(request, True)
        if self._views.on_metadata is not None:
            self._views.on_metadata(name, filename)
        return _metadata_answer(request, opened.path.getContent())


def _metadata_answer(request: IRequest, content: bytes) -> bytes:
    request.setHeader(b"content-type", b"application/octet-stream")
    request.setHeader(b"cache-control", b"public, max-age=31536000, immutable")
    return content
