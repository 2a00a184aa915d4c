# -*- test-case-name: tests.test_uploads -*-
"""Private packages over HTTP: the upload APIs, deleting and yanking."""

import json

import attrs
from twisted.web.iweb import IRequest

from pypicache.concurrency import RunBlocking
from pypicache.errors import BadRequest, NotFound, PypicacheError
from pypicache.index.names import normalize, parse_filename
from pypicache.private.received import copy_body
from pypicache.private.uploads import DIGEST_FIELDS, Uploads
from pypicache.storage.atomic import TempFile
from pypicache.storage.interface import IStore
from pypicache.storage.records import INCOMING, StoredFile
from pypicache.web.access import AccessPolicy
from pypicache.web.browserforms import answer, refuse_cross_site, url_form
from pypicache.web.forms import Form, boundary_of, read_form
from pypicache.web.routing import header, project_of, route
from pypicache.web.tokens import Identity


@attrs.define
class UploadRoutes:
    """twine, uv publish, ``PUT``, ``/uploadpackage/``, ``DELETE`` and yank.

    Every route here checks the access policy for writes first.
    """

    _store: IStore
    _uploads: Uploads
    _policy: AccessPolicy
    _run_blocking: RunBlocking

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
        self._uploads.delete_file(name, filename)
        return answer(request, fields)

    @route("/simple/<project>/<version>/", methods=["DELETE"], strict_slashes=False)
    async def delete_release(
        self, request: IRequest, project: str, version: str
    ) -> bytes:
        refuse_cross_site(request)
        identity = await self._policy.check(request, write=True)
        _may_change(identity, normalize(project))
        self._uploads.delete_release(normalize(project), version)
        request.setResponseCode(204)
        return b""

    @route("/packages/<project>/<filename>/yank", methods=["POST", "DELETE"])
    async def yank(self, request: IRequest, project: str, filename: str) -> bytes:
        """Yank (``POST``, with an optional ``reason``) or unyank (``DELETE``,
        or a form's ``POST`` with ``_method=DELETE``)."""
        refuse_cross_site(request)
        identity = await self._policy.check(request, write=True)
        name = project_of(project, filename)
        _may_change(identity, name)
        reason: str | bool = False
        fields: dict[str, str] = {}
        if request.method == b"POST":
            reason = True
            if boundary_of(header(request, b"content-type")) is not None:
                form = await self._form(request)
                form.discard()
                reason = (form.get("reason") or "").strip() or True
            else:
                fields = url_form(request)
                reason = (fields.get("reason") or "").strip() or True
                if fields.get("_method") == "DELETE":
                    reason = False
        self._uploads.yank(name, filename, reason)
        return answer(request, fields)


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
