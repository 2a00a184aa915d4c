# -*- test-case-name: tests.test_proxy -*-
"""The Klein routes: HTTP in, calls on the store and the mirror, statuses out."""

import gzip
import json
import re
import time
from collections import OrderedDict
from html import escape
from typing import Any, Callable, Hashable
from urllib.parse import parse_qs, quote

import attrs
from klein import Klein
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from werkzeug.exceptions import HTTPException

from pypicache import __version__
from pypicache.bulk.targets import parse_bulk_params
from pypicache.concurrency import RunBlocking
from pypicache.errors import BadRequest, MethodNotAllowed, NotFound, PypicacheError
from pypicache.index.model import DistFile, ProjectPage
from pypicache.index.names import (
    METADATA_SUFFIX,
    check_filename,
    normalize,
    parse_filename,
)
from pypicache.index.simple import (
    JSON_TYPE,
    negotiate,
    render_html_index,
    render_html_page,
    render_json_index,
    render_json_page,
)
from pypicache.private.received import copy_body
from pypicache.private.scan import ScanReport, scan_and_index
from pypicache.private.uploads import DIGEST_FIELDS, Uploads
from pypicache.proxy.mirror import Mirror
from pypicache.proxy.upstream import mask_url
from pypicache.proxy.views import Views
from pypicache.storage.atomic import TempFile
from pypicache.storage.interface import IStore
from pypicache.storage.records import INCOMING, StoredFile
from pypicache.web import jsonapi
from pypicache.web.files import DownloadStream, serve_stored, set_file_headers
from pypicache.web.forms import Form, boundary_of, parse_form

log = Logger()

#: Largest requirements file accepted by ``POST /requirements.txt``.
MAX_REQUIREMENTS_SIZE = 1024 * 1024


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


def project_of(project: str, filename: str) -> str:
    """The normalized project of ``filename``, which must be ``project``'s.

    :raises BadRequest: for unsafe names; :raises NotFound: for another project's file.
    """
    name, _ = parse_filename(filename)
    if normalize(project) != name:
        raise NotFound(f"{filename!r} is not a file of project {project!r}")
    return name


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


@attrs.define
class PypicacheApp:
    """The daemon's HTTP interface."""

    _store: IStore
    _mirror: Mirror
    _views: Views
    _uploads: Uploads
    _policy: Any
    _run_blocking: RunBlocking
    index_url: str
    _bulk: Any = None
    _rendered: RenderCache = attrs.field(factory=RenderCache)

    app = Klein()

    def resource(self) -> Any:
        """The site's root: every request passes the access policy first."""
        return Guarded(self.app.resource(), self._policy)

    # -- errors --------------------------------------------------------------

    @app.handle_errors(PypicacheError)
    def _known_error(self, request: IRequest, failure: Any) -> bytes:
        return failure.value.apply(request)

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
        log.failure(
            "Unexpected error answering {uri}",
            failure,
            uri=request.uri.decode("latin-1"),
        )
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
        base = self._base_url(request).rstrip("/")
        projects = self._store.projects()
        listed = "".join(
            f'<li><a href="local/{quote(p)}/">{escape(p)}</a></li>'
            for p in projects[:500]
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

    def _send_page(
        self,
        request: IRequest,
        key: Hashable,
        render_html: Callable[[], bytes],
        render_json: Callable[[], bytes],
    ) -> bytes:
        media = negotiate(_header(request, b"accept"), _arg(request, b"format"))
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

    @app.route("/simple/", methods=["GET", "HEAD"], strict_slashes=False)
    @app.route("/local/", methods=["GET", "HEAD"], strict_slashes=False)
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
            lambda: render_html_page(page, lambda f: file_url(name, f)),
            lambda: render_json_page(page, lambda f: file_url(name, f)),
        )

    @app.route("/local/<project>/", methods=["GET", "HEAD"], strict_slashes=False)
    def local_page(self, request: IRequest, project: str) -> bytes:
        name, moved = self._canonical(request, project)
        if moved is not None:
            return moved
        return self._send_project(request, *self._views.local(name))

    @app.route("/simple/<project>/", methods=["GET", "HEAD"], strict_slashes=False)
    async def simple_page(self, request: IRequest, project: str) -> bytes:
        name, moved = self._canonical(request, project)
        if moved is not None:
            return moved
        return self._send_project(request, *await self._views.simple(name))

    # -- files ---------------------------------------------------------------

    @app.route("/packages/<project>/<filename>", methods=["GET", "HEAD"])
    async def package(self, request: IRequest, project: str, filename: str) -> Any:
        check_filename(filename)
        if filename.endswith(METADATA_SUFFIX):
            return await self._metadata(
                request, project, filename[: -len(METADATA_SUFFIX)]
            )
        return await self._archive(request, project_of(project, filename), filename)

    @app.route(
        "/packages/source/<letter>/<project>/<filename>", methods=["GET", "HEAD"]
    )
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

    # -- uploads -------------------------------------------------------------

    async def _form(self, request: IRequest) -> Form:
        content_type = _header(request, b"content-type")
        if boundary_of(content_type) is None:
            raise BadRequest("Expected a multipart/form-data body")
        return await self._run_blocking(
            parse_form, request.content, content_type, self._incoming
        )

    def _incoming(self) -> TempFile:
        return self._store.open_temp(None, INCOMING)

    @app.route("/", methods=["POST"])
    @app.route("/legacy/", methods=["POST"], strict_slashes=False)
    async def legacy_upload(self, request: IRequest) -> bytes:
        """The upload API of ``twine upload`` and ``uv publish``: 200 on success."""
        await self._policy.check(request, write=True)
        form = await self._form(request)
        try:
            action = form.get(":action")
            if action != "file_upload":
                raise BadRequest(
                    f"Unsupported :action {action!r}; only file_upload is supported"
                )
            content = form.files.pop("content", None)
            if content is None or not content.filename:
                raise BadRequest("No 'content' file part with a filename in the upload")
            fields = {k: form.get(k) for k in ("name", "version", *DIGEST_FIELDS)}
            created, stored = await self._uploads.receive(
                content, content.filename, fields
            )
        finally:
            form.discard()
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        verb = "Stored" if created else "Already stored (identical)"
        return f"{verb}: {stored.info.filename}\n".encode()

    @app.route("/uploadpackage/", methods=["POST"], strict_slashes=False)
    async def upload_package(self, request: IRequest) -> bytes:
        """The original pypicache's upload: a multipart field ``sdist`` (or a wheel)."""
        await self._policy.check(request, write=True)
        form = await self._form(request)
        try:
            name = "sdist" if "sdist" in form.files else next(iter(form.files), None)
            part = form.files.pop(name) if name is not None else None
            if part is None or not part.filename:
                raise BadRequest(
                    "No file part (field 'sdist') with a filename in the upload"
                )
            created, stored = await self._uploads.receive(part, part.filename, {})
        finally:
            form.discard()
        return self._stored_answer(request, created, stored)

    @app.route("/packages/<project>/<filename>", methods=["PUT"])
    async def put_package(
        self, request: IRequest, project: str, filename: str
    ) -> bytes:
        """Upload the body as this file: 201, or 200 when identical bytes are there."""
        await self._policy.check(request, write=True)
        try:
            project_of(project, filename)
        except NotFound as e:
            raise BadRequest(e.message) from e
        part = await self._run_blocking(copy_body, request.content, self._incoming())
        created, stored = await self._uploads.receive(part, filename, {})
        return self._stored_answer(request, created, stored)

    @app.route("/packages/source/<letter>/<project>/<filename>", methods=["PUT"])
    async def put_legacy_package(
        self, request: IRequest, letter: str, project: str, filename: str
    ) -> bytes:
        return await self.put_package(request, project, filename)

    def _stored_answer(
        self, request: IRequest, created: bool, stored: StoredFile
    ) -> bytes:
        request.setResponseCode(201 if created else 200)
        request.setHeader(b"content-type", b"application/json")
        info = stored.info
        _, version = parse_filename(info.filename)
        return json.dumps(
            {
                "stored": created,
                "project": stored.project,
                "version": str(version),
                "filename": info.filename,
                "sha256": info.hashes.get("sha256"),
                "size": info.size,
                "url": f"/packages/{stored.project}/{info.filename}",
            }
        ).encode()

    @app.route("/simple/", methods=["POST", "PUT"], strict_slashes=False)
    @app.route("/simple/<path:rest>", methods=["POST", "PUT"])
    @app.route("/local/", methods=["POST", "PUT"], strict_slashes=False)
    @app.route("/local/<path:rest>", methods=["POST", "PUT"])
    def upload_to_index(self, request: IRequest, rest: str = "") -> bytes:
        request.setHeader(b"allow", b"GET, HEAD")
        raise MethodNotAllowed(
            "Upload to this server's root URL instead (twine upload --repository-url "
            "http://HOST:PORT/, uv publish --publish-url http://HOST:PORT/), "
            "or PUT /packages/<project>/<filename>"
        )

    # -- bulk caching ----------------------------------------------------------

    @app.route("/requirements.txt", methods=["POST"])
    async def requirements(self, request: IRequest) -> Any:
        """Cache everything a requirements file needs; a JSON report, or NDJSON progress."""
        await self._policy.check(request, write=False)
        if self._bulk is None:
            raise NotFound("Bulk caching is not available")
        params = parse_bulk_params(request.args)
        text = await self._requirements_text(request)
        if "application/x-ndjson" in (_header(request, b"accept") or ""):
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
        content_type = _header(request, b"content-type")
        if boundary_of(content_type) is not None:
            form = await self._form(request)
            try:
                text = form.get("requirements")
                part = form.files.get("requirements")
                if part is not None:
                    part.temp.file.flush()
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

    # -- archives dropped in by hand --------------------------------------------

    async def rescan(self) -> ScanReport:
        """Index archives dropped into ``private/`` (in a thread), then list them."""
        since = self._store.private_changes
        report, index = await self._run_blocking(
            scan_and_index, self._store, time.time()
        )
        self._store.install_private_index(index, since)
        return report

    @app.route("/+rescan", methods=["POST"])
    async def rescan_route(self, request: IRequest) -> bytes:
        await self._policy.check(request, write=True)
        report = await self.rescan()
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(report.to_json(), indent=1).encode()

    # -- JSON read API -----------------------------------------------------------

    def _base_url(self, request: IRequest) -> str:
        host = (_header(request, b"host") or "localhost").split(",")[0].strip()
        return f"{'https' if request.isSecure() else 'http'}://{host}/"

    @app.route("/pypi/<project>/json", methods=["GET", "HEAD"])
    @app.route("/pypi/<project>/<version>/json", methods=["GET", "HEAD"])
    async def project_json(
        self, request: IRequest, project: str, version: str | None = None
    ) -> bytes:
        """What this server has of a project, in the public index's JSON API shape."""
        name = normalize(project)
        if name != project:
            suffix = f"{quote(version)}/json" if version else "json"
            depth = "../../" if version else "../"
            return redirect(request, f"{depth}{quote(name)}/{suffix}")
        releases = jsonapi.versions_of(self._store.files(name))
        if not releases:
            raise NotFound(f"No files of {name!r} on this server")
        try:
            chosen = jsonapi.pick_version(releases, version)
        except KeyError:
            raise NotFound(f"No files of {name} {version} on this server") from None
        best = sorted(
            releases[chosen], key=lambda s: not s.info.filename.endswith(".whl")
        )[0]
        metadata = await self._run_blocking(jsonapi.read_core_metadata, best)
        document = jsonapi.project_json(
            name, releases, chosen, metadata, self._base_url(request), version is None
        )
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(document).encode()

    @app.route("/index.json", methods=["GET", "HEAD"])
    def index_json(self, request: IRequest) -> bytes:
        """Every archive on disk, with sha256, size and when it was added."""
        entries = [
            jsonapi.index_entry(s)
            for p in self._store.projects()
            for s in self._store.files(p)
        ]
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(entries).encode()

    # -- deleting and yanking --------------------------------------------------

    @app.route("/packages/<project>/<filename>", methods=["DELETE"])
    async def delete_package(
        self, request: IRequest, project: str, filename: str
    ) -> bytes:
        await self._policy.check(request, write=True)
        self._uploads.delete_file(project_of(project, filename), filename)
        request.setResponseCode(204)
        return b""

    @app.route("/simple/<project>/<version>/", methods=["DELETE"], strict_slashes=False)
    async def delete_release(
        self, request: IRequest, project: str, version: str
    ) -> bytes:
        await self._policy.check(request, write=True)
        self._uploads.delete_release(normalize(project), version)
        request.setResponseCode(204)
        return b""

    @app.route("/packages/<project>/<filename>/yank", methods=["POST", "DELETE"])
    async def yank(self, request: IRequest, project: str, filename: str) -> bytes:
        await self._policy.check(request, write=True)
        name = project_of(project, filename)
        reason: str | bool = False
        if request.method == b"POST":
            reason = True
            if boundary_of(_header(request, b"content-type")) is not None:
                form = await self._form(request)
                form.discard()
                reason = (form.get("reason") or "").strip() or True
            elif (_header(request, b"content-type") or "").startswith(
                "application/x-www-form-urlencoded"
            ):
                request.content.seek(0)
                fields = parse_qs(
                    request.content.read(64 * 1024).decode("utf-8", "replace")
                )
                reason = (fields.get("reason") or [""])[0].strip() or True
        self._uploads.yank(name, filename, reason)
        request.setResponseCode(204)
        return b""


#: Percent-encoded separators, backslashes, NUL, and encoded dot segments in a path.
_ENCODED_TRICK = re.compile(rb"%(2f|5c|00)|(^|/)(\.|%2e){1,2}(/|$)", re.IGNORECASE)


class Guarded(Resource):
    """Checks the access policy for reads before handing the request on.

    Writes are checked by their routes (``policy.check(request, write=True)``).
    """

    isLeaf = True

    def __init__(self, inner: Any, policy: Any) -> None:
        super().__init__()
        self._inner = inner
        self._policy = policy

    def render(self, request: Any) -> Any:
        write = request.method not in (b"GET", b"HEAD")
        if _ENCODED_TRICK.search(request.path):
            request.write(
                BadRequest("Invalid path: encoded separators, dots or NUL").apply(
                    request
                )
            )
            request.finish()
            return NOT_DONE_YET
        if request.path == b"/health" and not write:
            # Open without credentials, but only to the networks allowed at all.
            checked = maybeDeferred(self._policy.check_address, request)
        else:
            checked = Deferred.fromCoroutine(self._policy.check(request, write=False))

        def allowed(_: object) -> None:
            result = self._inner.render(request)
            if result is not NOT_DONE_YET:
                request.write(result)
                request.finish()

        def refused(failure: Any) -> None:
            error = failure.value
            if not isinstance(error, PypicacheError):
                log.failure("Access check failed", failure)
                error = PypicacheError(
                    "Internal error; the daemon's log has the details."
                )
            request.write(error.apply(request))
            request.finish()

        checked.addCallbacks(allowed, refused)
        return NOT_DONE_YET
