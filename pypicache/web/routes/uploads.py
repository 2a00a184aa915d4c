# -*- test-case-name: tests.test_uploads -*-
"""Private packages over HTTP: the upload APIs, deleting and yanking."""

import json
from urllib.parse import parse_qs

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from pypicache.concurrency import RunBlocking
from pypicache.errors import BadRequest, NotFound, PypicacheError
from pypicache.index.names import normalize, parse_filename
from pypicache.private.received import copy_body
from pypicache.private.uploads import DIGEST_FIELDS, Uploads
from pypicache.proxy.views import Views
from pypicache.proxy.yanks import checked_reason, release_key, release_of
from pypicache.storage.atomic import TempFile
from pypicache.storage.interface import IStore
from pypicache.storage.records import INCOMING, StoredFile
from pypicache.storage.yanks import YankRecords
from pypicache.web.access import AccessPolicy
from pypicache.web.browserforms import answer, refuse_cross_site, url_form
from pypicache.web.forms import Form, boundary_of, read_form
from pypicache.web.routing import header, project_of, route
from pypicache.web.tokens import Identity

log = Logger()


class UploadRoutes:
    """twine, uv publish, ``PUT``, ``/uploadpackage/``, ``DELETE`` and yank.

    Every route here checks the access policy for writes first.
    """

    _store: IStore
    _uploads: Uploads
    _policy: AccessPolicy
    _run_blocking: RunBlocking
    #: Which projects are private (``None``: every yank is a private one).
    views: Views | None
    #: The team's yanks of upstream files (``None``: not kept).
    local_yanks: YankRecords | None

    __slots__ = (
        "_store",
        "_uploads",
        "_policy",
        "_run_blocking",
        "views",
        "local_yanks",
        "__weakref__",
    )

    def __init__(
        self,
        store: IStore,
        uploads: Uploads,
        policy: AccessPolicy,
        run_blocking: RunBlocking,
        views: Views | None = None,
        local_yanks: YankRecords | None = None,
    ) -> None:
        self._store = store
        self._uploads = uploads
        self._policy = policy
        self._run_blocking = run_blocking
        self.views = views
        self.local_yanks = local_yanks

    def _incoming(self) -> TempFile:
        return self._store.open_temp(None, INCOMING)

    async def _form(self, request: IRequest) -> Form:
        return await read_form(request, self._run_blocking, self._store)

    @route("/", methods=["POST"])
    @route("/legacy/", methods=["POST"], strict_slashes=False)
    async def legacy_upload(self, request: IRequest) -> bytes:
        """The upload API of ``twine upload`` and ``uv publish``: 200 on success."""
        refuse_cross_site(request)
        identity = await self._policy.check(request, write=True)
        form = await self._form(request)
        try:
            action = form.get(":action")
            if action != "file_upload":
                raise BadRequest(
                    f"Unsupported :action {action!r}; only file_upload is supported"
                )
            # Left in the form, so that form.discard() below always deletes it.
            content = form.files.get("content")
            if content is None or not content.filename:
                raise BadRequest("No 'content' file part with a filename in the upload")
            fields = {
                k: form.get(k)
                for k in (
                    "name",
                    "version",
                    "metadata_version",
                    "attestations",
                    *DIGEST_FIELDS,
                )
            }
            _may_upload(identity, content.filename)
            created, stored = await self._uploads.receive(
                content, content.filename, fields, uploader=_uploader(identity)
            )
        finally:
            form.discard()
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        verb = "Stored" if created else "Already stored (identical)"
        return f"{verb}: {stored.info.filename}\n".encode()

    @route("/uploadpackage/", methods=["POST"], strict_slashes=False)
    async def upload_package(self, request: IRequest) -> bytes:
        """The original pypicache's upload: a multipart field ``sdist`` (or a wheel)."""
        refuse_cross_site(request)
        identity = await self._policy.check(request, write=True)
        form = await self._form(request)
        try:
            name = "sdist" if "sdist" in form.files else next(iter(form.files), None)
            part = form.files.get(name) if name is not None else None
            if part is None or not part.filename:
                raise BadRequest(
                    "No file part (field 'sdist') with a filename in the upload"
                )
            _may_upload(identity, part.filename)
            created, stored = await self._uploads.receive(
                part,
                part.filename,
                {"attestations": form.get("attestations")},
                uploader=_uploader(identity),
            )
        finally:
            form.discard()
        return _stored_answer(request, created, stored)

    @route("/packages/<project>/<filename>", methods=["PUT"])
    async def put_package(
        self, request: IRequest, project: str, filename: str
    ) -> bytes:
        """Upload the body as this file: 201, or 200 when identical bytes are there."""
        identity = await self._policy.check(request, write=True)
        try:
            name = project_of(project, filename)
        except NotFound as e:
            raise BadRequest(e.message) from e
        _may_change(identity, name)
        part = await self._run_blocking(copy_body, request.content, self._incoming())
        created, stored = await self._uploads.receive(
            part, filename, {}, uploader=_uploader(identity)
        )
        return _stored_answer(request, created, stored)

    @route("/packages/source/<letter>/<project>/<filename>", methods=["PUT"])
    async def put_legacy_package(
        self, request: IRequest, letter: str, project: str, filename: str
    ) -> bytes:
        return await self.put_package(request, project, filename)

    @route("/packages/<project>/<filename>", methods=["DELETE", "POST"])
    async def delete_package(
        self, request: IRequest, project: str, filename: str
    ) -> bytes:
        """Delete a private file; ``POST`` is for HTML forms, with a field
        ``_method=DELETE`` (and ``next``, the page to go back to)."""
        refuse_cross_site(request)
        fields = url_form(request) if request.method == b"POST" else {}
        if request.method == b"POST" and fields.get("_method") != "DELETE":
            raise BadRequest("POST here takes a form with _method=DELETE")
        identity = await self._policy.check(request, write=True)
        name = project_of(project, filename)
        _may_change(identity, name)
        await self._uploads.delete_file(name, filename)
        return answer(request, fields)

    @route(
        "/simple/<project>/<version>/",
        methods=["DELETE", "POST"],
        strict_slashes=False,
    )
    async def delete_release(
        self, request: IRequest, project: str, version: str
    ) -> bytes:
        """Delete every private file of a release; ``POST`` is for HTML forms,
        with a field ``_method=DELETE`` (and ``next``, the page to go back to)."""
        refuse_cross_site(request)
        fields = url_form(request) if request.method == b"POST" else {}
        if request.method == b"POST" and fields.get("_method") != "DELETE":
            raise BadRequest("POST here takes a form with _method=DELETE")
        identity = await self._policy.check(request, write=True)
        _may_change(identity, normalize(project))
        await self._uploads.delete_release(normalize(project), version)
        return answer(request, fields)

    @route("/packages/<project>/<target>/yank", methods=["POST", "DELETE"])
    async def yank(self, request: IRequest, project: str, target: str) -> bytes:
        """Yank (``POST``, with an optional ``reason`` field) or unyank
        (``DELETE``) a file, or a release when ``target`` is a version: a
        private file's own flag, else a local yank of the upstream's
        (:mod:`pypicache.proxy.yanks`), shown until unyanked. The web
        interface's forms post ``_method=DELETE`` to unyank, and ``next``.
        """
        refuse_cross_site(request)
        identity = await self._policy.check(request, write=True)
        try:
            name, kind = parse_filename(target)[0], "files"
        except BadRequest:
            name, kind = normalize(project), "releases"
            target = release_of(target)
            if self.local_yanks is not None:
                target = release_key(self.local_yanks, name, target)
        if name != normalize(project):
            raise BadRequest(f"{target!r} is not a file of project {project!r}")
        _may_change(identity, name)
        fields: dict[str, str] = {}
        unyank = request.method == b"DELETE"
        reason: str | None = None
        if not unyank:
            reason, fields = await self._yank_form(request)
            if fields.get("_method") == "DELETE":
                unyank, reason = True, None
        if await self._is_private(name, target if kind == "files" else None):
            flag: str | bool = False if unyank else reason or True
            if kind == "files":
                await self._uploads.yank(name, target, flag)
            else:
                await self._uploads.yank_release(name, target, flag)
        elif self.local_yanks is None:
            raise NotFound(f"No private file {target!r} in {project!r}")
        else:
            await self.local_yanks.change(name, kind, target, reason)
            log.info(
                "{user} {action} {project} {target} locally{reason}",
                user="a local client" if identity is None else str(identity),
                action="yanked" if reason is not None else "unyanked",
                project=name,
                target=target,
                reason=f" ({reason})" if reason else "",
            )
        return answer(request, fields)

    async def _is_private(self, project: str, filename: str | None) -> bool:
        """Whether a yank of this file (or release) is the private index's own."""
        if self.views is None or await self.views.is_private(project):
            return True
        if filename is None:
            return False
        stored = await self._store.find(project, filename)
        return stored is not None and stored.private

    async def _yank_form(self, request: IRequest) -> tuple[str, dict[str, str]]:
        """The ``reason`` of a yank (``""`` if none), and the form's fields:
        no body, or a multipart or urlencoded form of ``reason`` (and, from
        the web interface, ``next`` and ``_method=DELETE``).

        :raises BadRequest: another body, or other fields.
        """
        content_type = header(request, b"content-type") or ""
        fields: dict[str, list[str]]
        if boundary_of(content_type) is not None:
            form = await self._form(request)
            form.discard()
            fields = {**form.fields, **{name: [""] for name in form.files}}
        elif content_type.startswith("application/x-www-form-urlencoded"):
            request.content.seek(0)
            body = request.content.read(64 * 1024)
            try:
                fields = parse_qs(body.decode("utf-8"), keep_blank_values=True)
            except UnicodeDecodeError as e:
                raise BadRequest("The form is not UTF-8") from e
        else:
            request.content.seek(0)
            if request.content.read(1):
                raise BadRequest(
                    "A yank's body is a form with one field, reason "
                    "(curl -F reason=... or -d reason=...), or nothing"
                )
            fields = {}
        others = sorted(name for name in fields if name not in _YANK_FIELDS)
        if others:
            raise BadRequest(f"A yank takes one form field, reason, not {others}")
        single = {name: values[0] for name, values in fields.items()}
        if single.get("_method", "DELETE") != "DELETE":
            raise BadRequest("_method may only be DELETE")
        return checked_reason(single.get("reason", "")), single


#: The fields a yank's form may have: ``reason``; ``next`` and ``_method``
#: from the web interface's forms.
_YANK_FIELDS = ("reason", "next", "_method")


def _may_change(identity: Identity | None, project: str) -> None:
    if identity is not None:
        identity.check_change(project)


def _may_upload(identity: Identity | None, filename: str) -> None:
    """Refuse an upload the token used may not make (by the project its
    filename names; a bad filename is refused by the upload itself)."""
    if identity is None:
        return
    try:
        project, _ = parse_filename(filename)
    except PypicacheError:
        return
    _may_change(identity, project)


def _uploader(identity: Identity | None) -> str | None:
    """Who uploads, as the file's record keeps it."""
    return None if identity is None else str(identity)


def _stored_answer(request: IRequest, created: bool, stored: StoredFile) -> bytes:
    """``201`` (or ``200`` for identical bytes) with what was stored, as JSON."""
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
