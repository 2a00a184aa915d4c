# -*- test-case-name: tests.test_proxy -*-
"""The installer API: project lists and pages under ``/simple/`` and ``/local/``, and files."""

import gzip
from collections import OrderedDict
from typing import Any, Callable, Hashable
from urllib.parse import quote

import attrs
from twisted.web.iweb import IRequest

from pypicache.errors import MethodNotAllowed, NotFound
from pypicache.index.model import ProjectPage
from pypicache.index.names import METADATA_SUFFIX, check_filename, normalize
from pypicache.index.simple import (
    JSON_TYPE,
    negotiate,
    render_html_index,
    render_html_page,
    render_json_index,
    render_json_page,
)
from pypicache.proxy.mirror import Mirror
from pypicache.proxy.views import Views
from pypicache.storage.interface import IStore
from pypicache.web.files import DownloadStream, serve_stored, set_file_headers
from pypicache.web.routing import (
    file_url,
    header,
    project_of,
    query_arg,
    redirect,
    route,
)


class RenderCache:
    """A bounded LRU of rendered pages (plain and gzipped bodies)."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()

    def get(self, key: Hashable, render: Callable[[], bytes]) -> bytes:
        body = self._entries.get(key)
        if body is None:
            body = self._entries[key] = render()
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return body


@attrs.define
class InstallerRoutes:
    """What pip, uv and other installers read: the simple API and the files."""

    _store: IStore
    _mirror: Mirror
    _views: Views
    _rendered: RenderCache = attrs.field(factory=RenderCache)

    def _send_page(
        self,
        request: IRequest,
        key: Hashable,
        render_html: Callable[[], bytes],
        render_json: Callable[[], bytes],
    ) -> bytes:
        media = negotiate(header(request, b"accept"), query_arg(request, b"format"))
        request.setHeader(b"vary", b"Accept, Accept-Encoding")
        request.setHeader(
            b"content-type",
            media.encode() + (b"" if media == JSON_TYPE else b"; charset=utf-8"),
        )
        render = render_json if media == JSON_TYPE else render_html
        body = self._rendered.get((key, media), render)
        if b"gzip" in (request.getHeader(b"accept-encoding") or b"").lower():
            request.setHeader(b"content-encoding", b"gzip")
            body = self._rendered.get(
                (key, media, "gzip"), lambda: gzip.compress(body, 6)
            )
        return body

    @route("/simple/", methods=["GET", "HEAD"], strict_slashes=False)
    @route("/local/", methods=["GET", "HEAD"], strict_slashes=False)
    def project_list(self, request: IRequest) -> bytes:
        if not request.path.endswith(b"/"):
            return redirect(request, request.path.rsplit(b"/", 1)[-1].decode() + "/")
        names = self._store.projects()
        key = ("index", tuple(names))
        return self._send_page(
            request,
            key,
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
        self, request: IRequest, key: Hashable, page: ProjectPage
    ) -> bytes:
        name = page.name
        return self._send_page(
            request,
            key,
            lambda: render_html_page(page, lambda f: file_url(name, f.filename)),
            lambda: render_json_page(page, lambda f: file_url(name, f.filename)),
        )

    @route("/local/<project>/", methods=["GET", "HEAD"], strict_slashes=False)
    def local_page(self, request: IRequest, project: str) -> bytes:
        name, moved = self._canonical(request, project)
        if moved is not None:
            return moved
        return self._send_project(request, *self._views.local(name))

    @route("/simple/<project>/", methods=["GET", "HEAD"], strict_slashes=False)
    async def simple_page(self, request: IRequest, project: str) -> bytes:
        name, moved = self._canonical(request, project)
        if moved is not None:
            return moved
        return self._send_project(request, *await self._views.simple(name))

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

    @route("/packages/<project>/<filename>", methods=["GET", "HEAD"])
    async def package(self, request: IRequest, project: str, filename: str) -> Any:
        check_filename(filename)
        if filename.endswith(METADATA_SUFFIX):
            return await self._metadata(
                request, project, filename[: -len(METADATA_SUFFIX)]
            )
        return await self._archive(request, project_of(project, filename), filename)

    @route("/packages/source/<letter>/<project>/<filename>", methods=["GET", "HEAD"])
    async def legacy_package(
        self, request: IRequest, letter: str, project: str, filename: str
    ) -> Any:
        """The original pypicache's path for source archives."""
        return await self.package(request, project, filename)

    async def _archive(self, request: IRequest, project: str, filename: str) -> Any:
        stored = self._views.find(project, filename)
        if stored is not None:
            return serve_stored(request, stored)
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
        if download.stored is not None:
            return serve_stored(request, download.stored)
        if download.error is not None:
            raise download.error
        return DownloadStream(download)

    async def _metadata(self, request: IRequest, project: str, filename: str) -> bytes:
        name = project_of(project, filename)
        if self._views.is_private(name):
            path = self._store.metadata_file(name, filename)
            if path is None:
                raise NotFound(f"No core metadata for {filename!r}")
            content = path.getContent()
        else:
            content = await self._mirror.metadata(name, filename)
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"cache-control", b"public, max-age=31536000, immutable")
        return content
