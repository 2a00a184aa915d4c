# -*- test-case-name: tests.test_web -*-
"""The Klein routes: HTTP in, calls on the store and the mirror, statuses out."""

import gzip
import json
from collections import OrderedDict
from html import escape
from typing import Any, Callable, Hashable
from urllib.parse import quote

import attrs
from klein import Klein
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException

from . import __version__
from .cache import Mirror
from .errors import BadRequest, NotFound, PypicacheError, UpstreamError
from .files import DownloadStream, serve_stored, set_file_headers
from .model import DistFile, ProjectPage
from .names import METADATA_SUFFIX, check_filename, normalize, parse_filename
from .simple import (
    JSON_TYPE,
    negotiate,
    render_html_index,
    render_html_page,
    render_json_index,
    render_json_page,
)
from .store import IStore, StoredFile
from .upstream import mask_url

log = Logger()


def _arg(request: IRequest, name: bytes) -> str | None:
    values = request.args.get(name)
    return values[0].decode("utf-8", "replace") if values else None


def _header(request: IRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


def redirect(request: IRequest, location: str) -> bytes:
    """Answer ``301`` with a relative ``Location`` (works behind any proxy prefix)."""
    request.setResponseCode(301)
    request.setHeader(b"location", location.encode("utf-8"))
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return f"Moved to {location}\n".encode()


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


def file_url(project: str, f: DistFile) -> str:
    """The URL of a file relative to a project page (``/simple/<p>/``, ``/local/<p>/``)."""
    return f"../../packages/{quote(project)}/{quote(f.filename)}"


def local_info(stored: StoredFile) -> DistFile:
    """A stored file as ``/local/`` shows it: core metadata only if servable from disk."""
    info = stored.info
    servable = stored.metadata_path.exists() or info.filename.endswith(".whl")
    if not servable:
        info = attrs.evolve(info, core_metadata=False)
    elif info.core_metadata is False:
        info = attrs.evolve(info, core_metadata=True)
    return info


def merge(page: ProjectPage, stored: list[StoredFile]) -> ProjectPage:
    """The upstream page with what the disk knows added: sizes, metadata, extra files."""
    on_disk = {s.info.filename: s for s in stored}
    files = []
    for f in page.files:
        s = on_disk.pop(f.filename, None)
        if s is not None:
            files.append(
                attrs.evolve(
                    f,
                    size=s.info.size if s.info.size is not None else f.size,
                    core_metadata=f.core_metadata or local_info(s).core_metadata,
                )
            )
        else:
            files.append(f)
    files.extend(local_info(s) for s in on_disk.values())
    return attrs.evolve(page, files=tuple(files), versions=page.versions if not on_disk else None)


@attrs.define
class PypicacheApp:
    """The daemon's HTTP interface."""

    _store: IStore
    _mirror: Mirror
    index_url: str
    _rendered: RenderCache = attrs.field(factory=RenderCache)

    app = Klein()

    def resource(self) -> Any:
        return self.app.resource()

    # -- errors --------------------------------------------------------------

    @app.handle_errors(PypicacheError)
    def _known_error(self, request: IRequest, failure: Any) -> bytes:
        error = failure.value
        request.setResponseCode(error.code)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        if error.code == 401:
            request.setHeader(b"www-authenticate", b'Basic realm="pypicache"')
        return error.message.encode("utf-8") + b"\n"

    @app.handle_errors(HTTPException)
    def _routing_error(self, request: IRequest, failure: Any) -> bytes:
        error = failure.value
        request.setResponseCode(error.code)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        if error.code == 405 and error.valid_methods:
            request.setHeader(b"allow", ", ".join(error.valid_methods).encode())
        return f"{error.code} {error.name}\n".encode()

    @app.handle_errors(Exception)
    def _unexpected(self, request: IRequest, failure: Any) -> bytes:
        log.failure("Unexpected error answering {uri}", failure, uri=request.uri.decode("latin-1"))
        request.setResponseCode(500)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Internal error; the daemon's log has the details.\n"

    # -- service pages -------------------------------------------------------

    @app.route("/health", methods=["GET", "HEAD"])
    def health(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps({"status": "ok", "version": __version__}).encode()

    @app.route("/", methods=["GET", "HEAD"])
    def home(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        host = (_header(request, b"host") or "localhost:8080").split(",")[0]
        base = f"http://{host}"
        projects = self._store.projects()
        listed = "".join(
            f'<li><a href="local/{quote(p)}/">{escape(p)}</a></li>' for p in projects[:500]
        )
        more = f"<p>…and {len(projects) - 500} more.</p>" if len(projects) > 500 else ""
        return f"""<!DOCTYPE html>
<html><head><title>pypicache</title></head><body>
<h1>pypicache {escape(__version__)}</h1>
<p>A caching proxy and private index for Python packages. Upstream: <code>{escape(mask_url(self.index_url))}</code>.</p>
<h2>Install through it</h2>
<ul>
<li><code>/simple/</code> proxies the upstream and keeps every file it serves:
<pre>pip install --index-url {escape(base)}/simple/ PACKAGE
export PIP_INDEX_URL={escape(base)}/simple/
uv pip install --index-url {escape(base)}/simple/ PACKAGE
export UV_DEFAULT_INDEX={escape(base)}/simple/</pre>
or in <code>pip.conf</code>:
<pre>[global]
index-url = {escape(base)}/simple/</pre>
or in <code>pyproject.toml</code> for uv:
<pre>[[tool.uv.index]]
url = "{escape(base)}/simple/"
default = true</pre></li>
<li><code>/local/</code> serves only what is on disk and never contacts the upstream:
<pre>pip install --index-url {escape(base)}/local/ PACKAGE</pre></li>
</ul>
<h2>Cached projects ({len(projects)})</h2>
<ul>{listed}</ul>{more}
</body></html>
""".encode()

    # -- simple API ----------------------------------------------------------

    def _send_page(self, request: IRequest, key: Hashable, render_html: Callable[[], bytes], render_json: Callable[[], bytes]) -> bytes:
        media = negotiate(_header(request, b"accept"), _arg(request, b"format"))
        request.setHeader(b"vary", b"Accept, Accept-Encoding")
        request.setHeader(b"content-type", media.encode() + (b"" if media == JSON_TYPE else b"; charset=utf-8"))
        render = render_json if media == JSON_TYPE else render_html
        body = self._rendered.get((key, media), render)
        if b"gzip" in (request.getHeader(b"accept-encoding") or b"").lower():
            request.setHeader(b"content-encoding", b"gzip")
            body = self._rendered.get((key, media, "gzip"), lambda: gzip.compress(body, 6))
        return body

    @app.route("/simple/", methods=["GET", "HEAD"], strict_slashes=False)
    @app.route("/local/", methods=["GET", "HEAD"], strict_slashes=False)
    def project_list(self, request: IRequest) -> bytes:
        if not request.path.endswith(b"/"):
            return redirect(request, request.path.rsplit(b"/", 1)[-1].decode() + "/")
        names = self._store.projects()
        key = ("index", tuple(names))
        return self._send_page(request, key, lambda: render_html_index(names), lambda: render_json_index(names))

    def _canonical(self, request: IRequest, project: str) -> tuple[str, bytes | None]:
        """Return the normalized name, and a redirect to send if the URL is not canonical."""
        name = normalize(project)
        if name != project:
            location = f"../{quote(name)}/" if request.path.endswith(b"/") else f"{quote(name)}/"
            return name, redirect(request, location)
        if not request.path.endswith(b"/"):
            return name, redirect(request, f"{quote(name)}/")
        return name, None

    @app.route("/local/<project>/", methods=["GET", "HEAD"], strict_slashes=False)
    def local_page(self, request: IRequest, project: str) -> bytes:
        name, moved = self._canonical(request, project)
        if moved is not None:
            return moved
        stored = self._store.files(name)
        if not stored:
            raise NotFound(f"No files of {name!r} on this server")
        page = ProjectPage(name=name, files=tuple(local_info(s) for s in stored))
        key = ("local", name, self._store.generation(name))
        return self._send_page(
            request, key,
            lambda: render_html_page(page, lambda f: file_url(name, f)),
            lambda: render_json_page(page, lambda f: file_url(name, f)),
        )

    @app.route("/simple/<project>/", methods=["GET", "HEAD"], strict_slashes=False)
    async def simple_page(self, request: IRequest, project: str) -> bytes:
        name, moved = self._canonical(request, project)
        if moved is not None:
            return moved
        stored = self._store.files(name)
        try:
            cached = await self._mirror.pages.get(name)
        except (UpstreamError, NotFound) as e:
            if not stored:
                raise
            log.warn("Serving {project} from disk only: {reason}", project=name, reason=e.message)
            return self.local_page(request, name)
        page = merge(cached.page, stored)
        key = ("simple", name, cached.fetched_at, cached.etag, self._store.generation(name))
        return self._send_page(
            request, key,
            lambda: render_html_page(page, lambda f: file_url(name, f)),
            lambda: render_json_page(page, lambda f: file_url(name, f)),
        )

    # -- files ---------------------------------------------------------------

    @app.route("/packages/<project>/<filename>", methods=["GET", "HEAD"])
    async def package(self, request: IRequest, project: str, filename: str) -> Any:
        check_filename(filename)
        if filename.endswith(METADATA_SUFFIX):
            return await self._metadata(request, project, filename[: -len(METADATA_SUFFIX)])
        name, _ = parse_filename(filename)
        if normalize(project) != name:
            raise NotFound(f"{filename!r} is not a file of project {project!r}")
        return await self._archive(request, name, filename)

    @app.route("/packages/source/<letter>/<project>/<filename>", methods=["GET", "HEAD"])
    async def legacy_package(self, request: IRequest, letter: str, project: str, filename: str) -> Any:
        """The original pypicache's path for source archives."""
        return await self.package(request, project, filename)

    async def _archive(self, request: IRequest, project: str, filename: str) -> Any:
        stored = self._store.find(project, filename)
        if stored is not None:
            return serve_stored(request, stored)
        if request.method == b"HEAD" and self._mirror.in_flight(filename) is None:
            info = await self._mirror.describe(project, filename)
            if set_file_headers(request, info.hashes):
                return b""
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
        name, _ = parse_filename(filename)
        if normalize(project) != name:
            raise NotFound(f"{filename!r} is not a file of project {project!r}")
        content = await self._mirror.metadata(name, filename)
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"cache-control", b"public, max-age=31536000, immutable")
        return content


