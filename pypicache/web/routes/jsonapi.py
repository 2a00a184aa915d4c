# -*- test-case-name: tests.test_jsonapi -*-
"""The JSON read API: ``/pypi/<project>/json``, ``/pypi/<project>/<version>/json``
(either with a trailing slash too), ``/index.json``."""

import json
from urllib.parse import quote

import attrs
from twisted.web.iweb import IRequest

from pypicache.concurrency import RunBlocking
from pypicache.errors import NotFound
from pypicache.index.names import normalize
from pypicache.proxy.views import Views
from pypicache.storage.interface import IStore
from pypicache.storage.records import StoredFile
from pypicache.web import jsonapi
from pypicache.web.routing import base_url, redirect, route


class JsonApiRoutes:
    """What this server has, in the public index's JSON API shape."""

    _store: IStore
    _run_blocking: RunBlocking
    #: Whose rules (cooldown, block list, withdrawals, yanks...) the files
    #: shown follow, as ``/local/`` pages do; ``None``: every stored file.
    _views: Views | None

    __slots__ = ("_store", "_run_blocking", "_views", "__weakref__")

    def __init__(
        self, store: IStore, run_blocking: RunBlocking, views: Views | None = None
    ) -> None:
        self._store = store
        self._run_blocking = run_blocking
        self._views = views

    async def _shown(self, name: str) -> list[StoredFile]:
        """The project's stored files as ``/local/`` offers them: what the
        rules hide left out, yanks as the rules say."""
        stored = await self._store.files(name)
        if self._views is None or not stored:
            return stored
        view = await self._views.local(name)
        offered = {f.filename: f for f in view.page.files}
        return [
            attrs.evolve(
                s, info=attrs.evolve(s.info, yanked=offered[s.info.filename].yanked)
            )
            for s in stored
            if s.info.filename in offered
        ]

    @route("/pypi/<project>/json", methods=["GET", "HEAD"])
    @route("/pypi/<project>/json/", methods=["GET", "HEAD"])
    @route("/pypi/<project>/<version>/json", methods=["GET", "HEAD"])
    @route("/pypi/<project>/<version>/json/", methods=["GET", "HEAD"])
    async def project_json(
        self, request: IRequest, project: str, version: str | None = None
    ) -> bytes:
        """A project (its latest version, or ``version``) with every release's files.

        With or without a trailing slash, as the public index serves both.
        """
        name = normalize(project)
        if name != project:
            slash = request.path.endswith(b"/")
            suffix = f"{quote(version)}/json" if version else "json"
            depth = ("../../" if version else "../") + ("../" if slash else "")
            return redirect(
                request, f"{depth}{quote(name)}/{suffix}{'/' if slash else ''}"
            )
        releases = jsonapi.versions_of(await self._shown(name))
        if not releases:
            raise NotFound(f"No files of {name!r} on this server")
        try:
            chosen = jsonapi.pick_version(releases, version)
        except KeyError:
            raise NotFound(f"No files of {name} {version} on this server") from None
        best = sorted(
            releases[chosen], key=lambda s: not s.info.filename.endswith(".whl")
        )[0]
        opened = await self._store.open(best)
        metadata = await self._run_blocking(
            jsonapi.read_metadata_at, opened.path.path, best.info.filename
        )
        document = jsonapi.project_json(
            name, releases, chosen, metadata, base_url(request), version is None
        )
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(document).encode()

    @route("/index.json", methods=["GET", "HEAD"])
    async def index_json(self, request: IRequest) -> bytes:
        """Every archive on disk, with sha256, size and when it was added
        (the projects' files are read in a thread, and not kept)."""
        projects = await self._store.projects()
        files = await self._store.read_files(projects)
        body = await self._run_blocking(jsonapi.index_body, files)
        request.setHeader(b"content-type", b"application/json")
        return body
