# -*- test-case-name: tests.test_upstreams -*-
"""Named upstreams besides the default one, and which project goes where.

A project whose normalized name matches a route is looked up on its routed
upstream only, never on the default one, unless it is named in ``merge``:
then both are asked and their pages merged, the routed upstream's first (a
file of the same name on the default upstream is left out). So a public
upload cannot shadow what the operator routed elsewhere.

The default upstream's pages live in the cache's ``pages/``; each named
upstream's in its own store, ``upstreams/<name>/``, which also holds the
files mirrored through ``/upstreams/<name>/simple/``. Files served through
``/simple/`` are kept in the cache's ``mirror/`` whichever upstream they came
from: a project's files there come from the one page ``/simple/`` shows for
it (routed, or merged routed-first), and are verified against it.
"""

import fnmatch
import re
from typing import Any, Callable
from urllib.parse import urlsplit

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.web.iweb import IResponse

from pypicache.errors import NotFound
from pypicache.index.model import ProjectPage
from pypicache.proxy.pages import ProjectPages
from pypicache.proxy.upstream import Upstream, mask_url
from pypicache.storage.records import CachedPage, origin_of

#: What an upstream may be called: it is a folder and a URL segment.
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


@attrs.frozen
class UpstreamSpec:
    """A named upstream as configured: ``None`` settings are the default upstream's."""

    name: str
    url: str = attrs.field(repr=lambda url: repr(mask_url(url)))
    timeout: float | None = None
    page_ttl: float | None = None
    #: Its own cooldown (``min-age``; 0: none), else the default's.
    min_age: float | None = None


def check_name(name: str) -> str:
    """Return ``name`` if it can name an upstream, else raise ``ValueError``."""
    if not NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} cannot name an upstream (lowercase letters, digits, - and _)"
        )
    return name


def check_url(url: str) -> str:
    """Return ``url`` if it is an http(s) index URL, else raise ``ValueError``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL, not {mask_url(url)!r}")
    return url


def parse_pair(text: str, what: str) -> tuple[str, str]:
    """Split ``"KEY=VALUE"``; ``ValueError`` naming ``what`` if it is not one."""
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise ValueError(f"must be {what}, not {text!r}")
    return key, value


@attrs.frozen
class Router:
    """Which upstreams a project is looked up on (``None`` is the default one).

    :ivar routes: ``(glob, upstream name)`` pairs, the first match wins;
        globs match the normalized name (:func:`fnmatch.fnmatchcase`).
    :ivar merge: routed projects also looked up on the default upstream.
    """

    routes: tuple[tuple[str, str], ...] = ()
    merge: frozenset[str] = frozenset()

    def routed(self, project: str) -> str | None:
        """The upstream ``project`` is routed to, or ``None`` (the default one)."""
        for glob, name in self.routes:
            if fnmatch.fnmatchcase(project, glob):
                return name
        return None

    def sources(self, project: str) -> tuple[str | None, ...]:
        """Every upstream ``project`` is looked up on, in the order its pages merge."""
        name = self.routed(project)
        if name is None:
            return (None,)
        return (name, None) if project in self.merge else (name,)


def merge_pages(first: ProjectPage, second: ProjectPage) -> ProjectPage:
    """``first``'s files, then those of ``second`` whose names ``first`` lacks."""
    names = {f.filename for f in first.files}
    extra = tuple(f for f in second.files if f.filename not in names)
    return attrs.evolve(first, files=first.files + extra, versions=None)


def _combined(parts: list[CachedPage]) -> CachedPage:
    """One cached page from several: as old as the oldest, its version theirs;
    one alone is itself (the same object: the views and prefetch compare them
    by identity, and the hot path makes no copy)."""
    if len(parts) == 1:
        return parts[0]
    page = parts[0].page
    for part in parts[1:]:
        page = merge_pages(page, part.page)
    return CachedPage(
        page,
        min(p.fetched_at for p in parts),
        "|".join(p.etag or f"@{p.fetched_at}" for p in parts),
        None,
        origins=frozenset(origin_of(f.url) for p in parts for f in p.page.files),
    )


class RoutedPages:
    """The pages ``/simple/`` shows: each project's from the upstreams it is routed to.

    Offers what :class:`ProjectPages` offers to the mirror and the views.
    """

    default: ProjectPages
    named: dict[str, ProjectPages]
    router: Router

    __slots__ = ("default", "named", "router", "__weakref__")

    def __init__(
        self, default: ProjectPages, named: dict[str, ProjectPages], router: Router
    ) -> None:
        self.default = default
        self.named = named
        self.router = router

    def _pages(self, project: str) -> list[ProjectPages]:
        return [
            self.default if n is None else self.named[n]
            for n in self.router.sources(project)
        ]

    async def cached(self, project: str) -> CachedPage | None:
        parts = [await p.cached(project) for p in self._pages(project)]
        if any(p is None for p in parts):
            return None
        return _combined(parts)  # type: ignore[arg-type]

    def cached_now(self, project: str) -> CachedPage | None:
        parts = [p.cached_now(project) for p in self._pages(project)]
        if any(p is None for p in parts):
            return None
        return _combined(parts)  # type: ignore[arg-type]

    def fresh_now(self, project: str) -> CachedPage | None:
        parts = [p.fresh_now(project) for p in self._pages(project)]
        if any(p is None for p in parts):
            return None
        return _combined(parts)  # type: ignore[arg-type]

    async def get(self, project: str) -> CachedPage:
        """The page of ``project``; merged, it exists if either upstream has it
        (both are asked at once), and fails if either fails: the default
        upstream's files are never shown alone in place of the routed ones.

        :raises NotFound: no upstream it is looked up on has it.
        :raises UpstreamError: one failed, with nothing cached.
        """
        sources = self._pages(project)
        if len(sources) == 1:
            return await sources[0].get(project)
        results = await DeferredList(
            [Deferred.fromCoroutine(pages.get(project)) for pages in sources],
            consumeErrors=True,
        )
        parts = []
        for ok, value in results:
            if ok:
                parts.append(value)
            elif not value.check(NotFound):
                value.raiseException()
        if not parts:
            raise NotFound(f"No project {project!r} on its upstreams")
        return _combined(parts)

    def hold_write(self, project: str) -> Callable[[], None]:
        """:meth:`ProjectPages.hold_write` on each upstream ``project`` is looked up on."""
        releases = [pages.hold_write(project) for pages in self._pages(project)]

        def release() -> None:
            for each in releases:
                each()

        return release

    async def forget(self, project: str) -> None:
        """Drop every cached page of ``project``: the next request fetches it."""
        await self.default.forget(project)
        for pages in self.named.values():
            await pages.forget(project)


class FileClient:
    """Opens file URLs with the upstream they belong to (its credentials and
    timeouts); anything else goes to the default upstream."""

    default: Upstream
    named: list[Upstream]

    __slots__ = ("default", "named", "__weakref__")

    def __init__(self, default: Upstream, named: list[Upstream]) -> None:
        self.default = default
        self.named = named

    def upstream_of(self, url: str) -> Upstream:
        """The named upstream whose index is on ``url``'s host and port, else the default."""
        netloc = urlsplit(url).netloc
        if netloc == urlsplit(self.default.index_url).netloc:
            return self.default
        for upstream in self.named:
            if netloc == urlsplit(upstream.index_url).netloc:
                return upstream
        return self.default

    async def open_file(self, url: str, *args: Any, **kwargs: Any) -> IResponse:
        return await self.upstream_of(url).open_file(url, *args, **kwargs)

    async def open_range(self, url: str, *args: Any, **kwargs: Any) -> IResponse:
        return await self.upstream_of(url).open_range(url, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name == "default":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.default, name)
