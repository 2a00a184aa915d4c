# -*- test-case-name: tests.test_filehost -*-
"""Files under the public index's file-host layout, for lock files.

``GET``/``HEAD /packages/<2 hex>/<2 hex>/<60 hex>/<filename>``: the project is
taken from the filename, the file found as ``/packages/<project>/<filename>``
finds it (:meth:`Views.find <pypicache.proxy.views.Views.find>`: private
projects, the rules), and served only if the upstream's URL for it ends with
the same path. A stored file is checked against the cached project page
(however old: no upstream request), a file not stored against the page as
:meth:`Mirror.describe <pypicache.proxy.mirror.Mirror.describe>` gives it.
Everything else (single-flight download, sha256 check, Range, ETag) is
:class:`InstallerRoutes`'s.
"""

from typing import Any, Hashable

from twisted.web.iweb import IRequest

from pypicache.concurrency import NotReady
from pypicache.index.filehost import check_url, hosted_path, project_from
from pypicache.proxy.mirror import Mirror
from pypicache.proxy.views import Views
from pypicache.storage.records import Opened, StoredFile
from pypicache.web.hits import mark_cache_hit
from pypicache.web.routes.installer import NOT_READY, InstallerRoutes
from pypicache.web.routing import route

#: How many filenames' URLs :class:`FileHostRoutes` keeps.
_KEPT_URLS = 4096


class FileHostRoutes:
    """``/packages/<2>/<2>/<60>/<filename>``, answered as the project's file path is."""

    _installer: InstallerRoutes
    _views: Views
    _mirror: Mirror
    #: Per filename, the version of the cached page last read for it and the
    #: URL it gives: read again only when the page changes.
    _urls: dict[str, tuple[Hashable, str | None]]

    __slots__ = ("_installer", "_views", "_mirror", "_urls", "__weakref__")

    def __init__(
        self,
        installer: InstallerRoutes,
        views: Views,
        mirror: Mirror,
        urls: dict[str, tuple[Hashable, str | None]] | None = None,
    ) -> None:
        self._installer = installer
        self._views = views
        self._mirror = mirror
        self._urls = {} if urls is None else urls

    def _servable(self, stored: StoredFile, path: str) -> bool:
        """Whether a stored file may be served at ``path`` at once: ``True``
        if the cached page's URL for it ends with ``path``, ``False`` if no
        cached page lists it (the page must be asked); :class:`NotFound` if
        the URL names another path, or the file is private."""
        filename = stored.info.filename
        if stored.private:
            check_url(None, path, filename)
        cached = self._mirror.pages.cached_now(stored.project or project_from(filename))
        if cached is None:
            return False
        version = (cached.fetched_at, cached.etag)  # as the views key a page
        kept = self._urls.get(filename)
        if kept is not None and kept[0] == version:
            url = kept[1]
        else:
            info = cached.page.file(filename)
            url = info.url if info is not None else None
            if len(self._urls) >= _KEPT_URLS:
                del self._urls[next(iter(self._urls))]
            self._urls[filename] = (version, url)
        if url is None:
            return False
        check_url(url, path, filename)
        return True

    def stored_ready(
        self, first: str, second: str, rest: str, filename: str
    ) -> tuple[StoredFile, Opened] | None:
        """The stored archive :meth:`file_now` would serve from a local
        file, and that file, or ``None``.

        :raises PypicacheError: where :meth:`file_now` would answer an error.
        """
        found = self._found_now(first, second, rest, filename)
        if found is None or found[1].url is not None:
            return None
        self._installer.record_use(found[0])
        return found

    def _found_now(
        self, first: str, second: str, rest: str, filename: str
    ) -> tuple[StoredFile, Opened] | None:
        """The stored archive servable at once at this path, and how to serve
        it; ``None`` if there is none, or the store does not answer at once."""
        path = hosted_path(first, second, rest, filename)
        try:
            found = self._views.stored_now(project_from(filename), filename)
            if found is None or not self._servable(found[0], path):
                return None
        except NotReady:
            return None
        return found

    def file_now(
        self, request: IRequest, first: str, second: str, rest: str, filename: str
    ) -> Any:
        """:meth:`file`'s answer for a stored archive, else :data:`NOT_READY`."""
        found = self._found_now(first, second, rest, filename)
        if found is None:
            return NOT_READY
        mark_cache_hit(request, True)
        return self._installer.serve(request, *found)

    @route(
        "/packages/<string(length=2):first>/<string(length=2):second>"
        "/<string(length=60):rest>/<filename>",
        methods=["GET", "HEAD"],
    )
    async def file(
        self, request: IRequest, first: str, second: str, rest: str, filename: str
    ) -> Any:
        now = self.file_now(request, first, second, rest, filename)
        if now is not NOT_READY:
            return now
        path = hosted_path(first, second, rest, filename)
        project = project_from(filename)
        info = await self._mirror.describe(project, filename)
        check_url(info.url, path, filename)
        return await self._installer.package(request, project, filename)
