# -*- test-case-name: tests.test_ui -*-
"""The web interface for people, under ``/+ui/`` (never an installer's path):
the project list with its search, project and release pages, the confirmation
pages of the private projects' actions, and the static files.

Pages read what the JSON API reads (:class:`~pypicache.proxy.views.Views`'
disk-only view, with the rules applied, and :mod:`pypicache.web.jsonapi`);
project pages are rendered in a thread once per version of the project
(:class:`~pypicache.web.rendered.RenderCache`, keyed like ``/local/`` pages)
and answered with an ``ETag``; its files are grouped by version once per
version too (:class:`~pypicache.web.ui.listing.Listing`), and descriptions
are rendered once and kept on disk for every process
(:class:`~pypicache.web.ui.descriptions.Descriptions`). Nothing here changes anything: the forms post
to the API's own routes (:mod:`pypicache.web.routes.uploads`).
"""

from collections import OrderedDict
from typing import Any, Hashable
from urllib.parse import quote, urlencode

import attrs
from packaging.version import Version
from twisted.web.iweb import IRequest

from pypicache.concurrency import RunBlocking
from pypicache.errors import BadRequest, NotFound
from pypicache.index.names import normalize
from pypicache.proxy.views import Views
from pypicache.web.access import AccessPolicy
from pypicache.web.rendered import RenderCache
from pypicache.web.routing import (
    accepts_gzip,
    base_url,
    header,
    query_arg,
    redirect,
    route,
    send_body,
)
from pypicache.web.ui import render as ui
from pypicache.web.ui.catalog import Catalog, matches
from pypicache.web.ui.descriptions import Descriptions
from pypicache.web.ui.filetable import file_rows
from pypicache.web.ui.listing import Listing
from pypicache.web.ui.release import page_forms

#: Projects per page of the list.
PAGE_SIZE = 100

#: Seconds a search waits for the search index being built.
SEARCH_WAIT = 2.0

#: Searches kept (their results, for the next pages).
KEPT_SEARCHES = 32

#: Projects whose files by version are kept (for their other versions' pages).
KEPT_LISTINGS = 32

#: What the confirmation pages offer, for a file and for a whole release.
ACTIONS = ("yank", "unyank", "delete")
RELEASE_ACTIONS = ("delete",)


def client_base(request: IRequest, trust_proxy: bool) -> str:
    """This server's URL as the client sees it, without the final slash.

    Behind a proxy trusted with ``--trust-proxy``, its ``X-Forwarded-Proto``,
    ``X-Forwarded-Host`` and ``X-Forwarded-Prefix`` say it; otherwise the
    request's own scheme and ``Host`` (the pages' script corrects the shown
    URLs from the browser's address bar in any case).
    """
    base = base_url(request).rstrip("/")
    if not trust_proxy:
        return base
    scheme, _, host = base.partition("://")
    forwarded_scheme = (header(request, b"x-forwarded-proto") or "").split(",")[0]
    forwarded_host = (header(request, b"x-forwarded-host") or "").split(",")[0]
    prefix = (header(request, b"x-forwarded-prefix") or "").split(",")[0].strip()
    if forwarded_scheme.strip() in ("http", "https"):
        scheme = forwarded_scheme.strip()
    if forwarded_host.strip():
        host = forwarded_host.strip()
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    return f"{scheme}://{host}{quote(prefix, safe='/')}"


def send_page(request: IRequest, plain: Any, zipped: Any) -> Any:
    """Answer with a page, gzipped for clients that accept it."""
    gzip = accepts_gzip(request.getHeader(b"accept-encoding"))
    return send_body(request, zipped if gzip else plain)


@attrs.frozen
class ListRow:
    """A project in the list: what its line shows."""

    name: str
    private: bool
    version: str | None
    summary: str


@attrs.define
class UiRoutes:
    """``/+ui/...``: pages for people, each with the interface's security headers."""

    _store: Any
    _views: Views
    _policy: AccessPolicy
    _run_blocking: RunBlocking
    catalog: Catalog
    _rendered: RenderCache = attrs.field(
        factory=lambda: RenderCache(max_bytes=16 * 1024**2, max_entries=256)
    )
    _searches: dict[tuple[int, int, str], tuple[list[str], list[str]]] = attrs.field(
        factory=dict
    )
    #: Rendered descriptions, kept (in memory only unless told where).
    descriptions: Descriptions = attrs.field(factory=lambda: Descriptions(None))
    #: Per project, its files by version as of one key of its view.
    _listings: "OrderedDict[str, tuple[Hashable, Listing]]" = attrs.field(
        factory=OrderedDict
    )
    #: The project list without hidden projects, and what it was made from.
    _shown: tuple[list[str], frozenset[str], list[str]] | None = None
    #: Pages of the project list (and of searches), kept apart from project pages.
    _lists: RenderCache = attrs.field(
        factory=lambda: RenderCache(max_bytes=4 * 1024**2, max_entries=64)
    )

    @route("/+ui/", methods=["GET", "HEAD"])
    async def ui_root(self, request: IRequest) -> bytes:
        return redirect(request, "projects/")

    @route("/+ui/static/<name>", methods=["GET", "HEAD"])
    async def static(self, request: IRequest, name: str) -> Any:
        body = ui.static_file(name)
        if body is None:
            raise NotFound(f"No static file {name!r}")
        return send_body(request, body)

    @route("/+ui/projects/", methods=["GET", "HEAD"])
    async def projects(self, request: IRequest) -> Any:
        """Every project, or those matching ``?q=``; ``?page=N`` of :data:`PAGE_SIZE`."""
        query = (query_arg(request, b"q") or "").strip()[:200]
        try:
            page = int(query_arg(request, b"page") or "1")
        except ValueError:
            raise BadRequest("?page= takes a number") from None
        names = self._unhidden(await self._store.projects())
        complete = await self.catalog.ready(names, SEARCH_WAIT if query else 0)
        entries = self.catalog.entries
        found = await self._search(names, query) if query else names
        pages = max(1, -(-len(found) // PAGE_SIZE))
        if not 1 <= page <= pages:
            raise NotFound(f"No page {page} (there are {pages})")
        shown = found[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        listed = []
        for name in shown:
            entry = entries.get(name)
            private = await self._store.is_private(name)
            listed.append(
                ListRow(
                    name,
                    private,
                    getattr(entry, "version", None),
                    getattr(entry, "summary", ""),
                )
            )
        rows = tuple(listed)
        root = ui.root_of(request.path)
        # Kept while what it shows is the same: its rows (names, private
        # marks, newest versions and summaries) and counts.
        slot = ("list", root, query, page)
        key = (rows, len(names), len(found), complete)
        plain = self._lists.peek(slot, key)
        zipped = self._lists.peek(slot + ("gzip",), key)
        if plain is None or zipped is None:

            def link(n: int) -> str:
                return "?" + urlencode({**({"q": query} if query else {}), "page": n})

            data = ui.render(
                "projects.html",
                root=root,
                query=query,
                rows=rows,
                total=len(names),
                found=len(found),
                page=page,
                pages=pages,
                previous=link(page - 1) if page > 1 else None,
                next=link(page + 1) if page < pages else None,
                complete=complete,
            )
            made = ui.both_forms(data)
            plain = self._lists.get(slot, key, lambda: made[0])
            zipped = self._lists.get(slot + ("gzip",), key, lambda: made[1])
        return send_page(request, plain, zipped)

    def _unhidden(self, names: list[str]) -> list[str]:
        """``names`` without the projects a rule hides whole (the block
        list), as ``/simple/`` lists them; the same list object while neither
        changes, so that searches stay kept."""
        hidden = self._views.rules.hidden()
        if not hidden:
            return names
        kept = self._shown
        if kept is not None and kept[0] is names and kept[1] == hidden:
            return kept[2]
        shown = [n for n in names if n not in hidden]
        self._shown = (names, hidden, shown)
        return shown

    async def _search(self, names: list[str], query: str) -> list[str]:
        """The names matching ``query``, searched in a thread (100,000 projects
        take a few hundred ms), the last :data:`KEPT_SEARCHES` kept for the
        next pages while neither the names nor the index change."""
        key = (id(names), self.catalog.generation, query)
        kept = self._searches.get(key)
        if kept is not None and kept[0] is names:
            return kept[1]
        found: list[str] = await self._run_blocking(
            matches, self.catalog.entries, names, query
        )
        self._searches[key] = (names, found)
        while len(self._searches) > KEPT_SEARCHES:
            del self._searches[next(iter(self._searches))]
        return found

    async def _releases(self, project: str, view: Any = None) -> Listing:
        """The project's files by version, as its ``/local/`` view shows them
        (the rules applied); raises :class:`NotFound` if it has none here.

        Grouped once per version of the view (:class:`Listing`, kept for
        :data:`KEPT_LISTINGS` projects): the pages of its other versions and
        groups list, parse and sort nothing again.
        """
        if view is None:
            view = await self._views.local(project)
        kept = self._listings.get(project)
        if kept is not None and kept[0] == view.key:
            self._listings.move_to_end(project)
            return kept[1]
        stored = view.stored
        if stored is None:
            stored = await self._store.files(project)
        # Grouped in a thread (3,000 files take milliseconds); the page, with
        # the rules applied, is built here.
        listing = await self._run_blocking(Listing.of_shown, stored, view.page.files)
        self._listings[project] = (view.key, listing)
        self._listings.move_to_end(project)
        while len(self._listings) > KEPT_LISTINGS:
            self._listings.popitem(last=False)
        return listing

    async def _release(self, project: str, version: str) -> tuple[Listing, Version]:
        """The project's files by version, and the version asked for.

        :raises NotFound: if it has no files of that version here.
        """
        listing = await self._releases(project)
        try:
            return listing, listing.pick(version)
        except KeyError:
            raise NotFound(f"No files of {project} {version} on this server") from None

    @route("/+ui/projects/<project>/", methods=["GET", "HEAD"])
    @route("/+ui/projects/<project>/<version>/", methods=["GET", "HEAD"])
    async def project(
        self, request: IRequest, project: str, version: str | None = None
    ) -> Any:
        """A project at its newest version, or at ``version``; ``?files=``
        a group of its files (a Python tag, or ``source``)."""
        name = normalize(project)
        if name != project:
            up = "../../" if version is not None else "../"
            rest = f"{quote(version)}/" if version is not None else ""
            return redirect(request, f"{up}{quote(name)}/{rest}")
        root = ui.root_of(request.path)
        base = client_base(request, self._policy.trust_proxy)
        private = await self._store.is_private(name)
        auth = self._policy.checker is not None
        # Kept per version of the view (checked without listing the files):
        # a kept page costs no listing, parsing or sorting.
        group = query_arg(request, b"files")
        group = group[:100] if group is not None else None
        slot = ("ui", name, version, base, auth, group)
        key = (self._views.local_key(name), private)
        plain = self._rendered.peek(slot, key)
        zipped = self._rendered.peek(slot + ("gzip",), key)
        if plain is None or zipped is None:
            try:
                view = await self._views.local(name)
            except NotFound:
                if version is not None:
                    raise
                request.setResponseCode(404)
                data = ui.render("missing.html", root=root, base=base, project=name)
                return send_page(request, *ui.both_forms(data))
            key = (view.key, private)
            listing = await self._releases(name, view)
            if not listing.releases:
                data = ui.render("empty.html", root=root, project=name, private=private)
                return send_page(request, *ui.both_forms(data))
            try:
                chosen = listing.pick(version)
            except KeyError:
                raise NotFound(f"No files of {name} {version} on this server") from None
            if group is not None and group not in listing.grouped(chosen)[1]:
                raise NotFound(f"No files of {name} {chosen} in group {group!r}")
            made = await self._run_blocking(
                page_forms,
                root,
                base,
                auth,
                name,
                private,
                listing,
                chosen,
                version is not None,
                group,
                descriptions=self.descriptions,
            )
            plain = self._rendered.get(slot, key, lambda: made[0])
            zipped = self._rendered.get(slot + ("gzip",), key, lambda: made[1])
        return send_page(request, plain, zipped)

    @route(
        "/+ui/projects/<project>/<version>/<filename>/<action>",
        methods=["GET", "HEAD"],
    )
    async def confirm(
        self, request: IRequest, project: str, version: str, filename: str, action: str
    ) -> Any:
        """The confirmation step of an action on a private file: a form that
        posts to the API's route (nothing changes on this ``GET``)."""
        name = normalize(project)
        if action not in ACTIONS:
            raise NotFound(f"No action {action!r} (there are {', '.join(ACTIONS)})")
        listing, chosen = await self._release(name, version)
        stored = next(
            (
                s
                for s in listing.releases[chosen]
                if s.info.filename == filename and s.private
            ),
            None,
        )
        if stored is None:
            raise NotFound(f"No private file {filename!r} in project {name!r}")
        return self._confirmation(
            request, "confirm.html", name, chosen, action, file=file_rows([stored])[0]
        )

    @route("/+ui/projects/<project>/<version>/<action>", methods=["GET", "HEAD"])
    async def confirm_release(
        self, request: IRequest, project: str, version: str, action: str
    ) -> Any:
        """The confirmation step of an action on a whole release of private
        files: a form that posts to the API's route (nothing changes here)."""
        name = normalize(project)
        if action not in RELEASE_ACTIONS:
            raise NotFound(
                f"No action {action!r} on a release (there is {', '.join(RELEASE_ACTIONS)})"
            )
        listing, chosen = await self._release(name, version)
        files = [s for s in listing.releases[chosen] if s.private]
        if not files:
            raise NotFound(f"No private files of {name} {chosen} to {action}")
        return self._confirmation(
            request,
            "confirm_release.html",
            name,
            chosen,
            action,
            files=file_rows(files),
        )

    def _confirmation(
        self,
        request: IRequest,
        template: str,
        project: str,
        chosen: Version,
        action: str,
        **more: Any,
    ) -> Any:
        """A confirmation page: its form posts to the API's route."""
        data = ui.render(
            template,
            root=ui.root_of(request.path),
            project=project,
            release=str(chosen),
            action=action,
            auth=self._policy.checker is not None,
            **more,
        )
        return send_page(request, *ui.both_forms(data))
