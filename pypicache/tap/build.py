# -*- test-case-name: tests.test_tap -*-
"""Building the objects behind the web site from the options (the tests build theirs here too)."""

import os
from typing import Any, Callable, Sequence

import attrs
from twisted.python.filepath import FilePath
from twisted.web.client import HTTPConnectionPool

from pypicache.bulk.cacher import (
    DEFAULT_MAX_LINES,
    DEFAULT_MAX_PROJECTS,
    DEFAULT_MAX_ROUNDS,
    BulkCacher,
)
from pypicache.private.uploads import Uploads
from pypicache.proxy.cachectl import CacheControl
from pypicache.proxy.mirror import Mirror
from pypicache.proxy.pages import ProjectPages
from pypicache.proxy.upstream import MAX_PAGE_SIZE, Upstream, make_agent
from pypicache.proxy.upstreams import (
    FileClient,
    RoutedPages,
    Router,
    UpstreamSpec,
)
from pypicache.proxy.views import Views
from pypicache.storage.capacity import Capacity
from pypicache.storage.filesystem import FilesystemStore
from pypicache.storage.locks import Locks
from pypicache.storage.pins import Pins
from pypicache.storage.records import LOCKS
from pypicache.storage.usage import USAGE_FILE, Usage
from pypicache.tap.named import Named, build_named
from pypicache.web.access import AccessPolicy
from pypicache.web.app import PypicacheApp
from pypicache.web.attempts import DEFAULT_FAILURES, DEFAULT_WINDOW, FailedLogins
from pypicache.web.htpasswd import Htpasswd
from pypicache.web.routes.cache import CacheRoutes


@attrs.define
class Live:
    """The objects whose settings can change while the daemon runs (``SIGHUP``)."""

    app: PypicacheApp
    upstream: Upstream
    pages: ProjectPages
    #: An ``Htpasswd`` for another users file.
    users: Callable[[str], Htpasswd]
    #: The named upstreams, by name.
    named: dict[str, Named] = attrs.field(factory=dict)


def build_app(*args: Any, **kwargs: Any) -> PypicacheApp:
    """Build the objects behind the web site (the tests build theirs here too);
    the arguments are :func:`build_live`'s."""
    return build_live(*args, **kwargs).app


def build_live(
    cache: str,
    index_url: str,
    reactor: Any,
    pool: HTTPConnectionPool,
    run_blocking: Any,
    run_sync: Any = None,
    page_ttl: float = 600.0,
    timeout: float = 30.0,
    page_deadline: float = 120.0,
    min_rate: float = 8 * 1024,
    max_page_size: int = MAX_PAGE_SIZE,
    page_clock: Any = None,
    auth_file: str | None = None,
    read_auth: bool = False,
    allow_from: Sequence[Any] = (),
    trust_proxy: bool = False,
    mirror_private: Sequence[str] = (),
    bulk_concurrency: int = 8,
    bulk_auth: bool | None = None,
    bulk_jobs_per_client: int = 2,
    bulk_max_lines: int = DEFAULT_MAX_LINES,
    bulk_max_projects: int = DEFAULT_MAX_PROJECTS,
    bulk_max_rounds: int = DEFAULT_MAX_ROUNDS,
    run_password_check: Any = None,
    auth_failures: int = DEFAULT_FAILURES,
    auth_failure_window: float = DEFAULT_WINDOW,
    page_max_age: int = 600,
    max_cache_size: int | None = None,
    evict_unused_after: float | None = None,
    upstreams: Sequence[UpstreamSpec] = (),
    routes: Sequence[tuple[str, str]] = (),
    merge: Sequence[str] = (),
) -> Live:
    """Build the objects behind the web site, and say which can change.

    :param page_clock: the clock of the page TTL (default: ``reactor``).
    :param run_sync: where downloads and pages are synced to disk (default:
        ``run_blocking``).
    :param run_password_check: bcrypt's own ``run_blocking`` (default: ``run_blocking``).
    :param max_cache_size: bytes the mirror may hold (``None``: no cap).
    :param evict_unused_after: seconds after which an unused mirrored file goes.
    :param upstreams: the named upstreams; :param routes: ``(glob, name)``
        pairs; :param merge: routed projects looked up on the default too.
    """
    store = FilesystemStore(
        FilePath(os.path.abspath(cache)), clock=reactor, run_blocking=run_blocking
    )
    locks = Locks(reactor)
    agent = make_agent(reactor, pool)
    settings = dict(
        timeout=timeout,
        page_deadline=page_deadline,
        min_rate=min_rate,
        max_page_size=max_page_size,
    )
    upstream = Upstream(
        index_url, agent, reactor, run_blocking=run_blocking, **settings
    )
    run_sync = run_sync or run_blocking
    named = build_named(
        upstreams,
        cache,
        reactor,
        agent,
        locks,
        run_blocking,
        run_sync,
        page_clock or reactor,
        settings,
        page_ttl,
        page_max_age,
    )
    pages = ProjectPages(
        upstream,
        store,
        page_clock or reactor,
        ttl=page_ttl,
        run_blocking=run_sync,
        locks=locks,
    )
    routed = RoutedPages(
        pages,
        {n: b.pages for n, b in named.items()},
        Router(tuple(routes), frozenset(merge)),
    )
    files = FileClient(upstream, [b.upstream for b in named.values()])
    mirror = Mirror(files, store, routed, run_blocking, locks, run_sync)  # type: ignore[arg-type]
    capacity = Capacity(
        root=store.root,
        usage=Usage(store.root, store.lock_path(LOCKS, None, USAGE_FILE), reactor),
        lock_path=store.lock_path,
        clock=reactor,
        run_blocking=run_blocking,
        forget=store.forget,
        max_size=max_cache_size,
        unused_after=evict_unused_after,
    )
    mirror.on_stored = capacity.stored
    views = Views(store, mirror, frozenset(mirror_private))
    uploads = Uploads(store, run_blocking, reactor, locks)

    def users(path: str) -> Htpasswd:
        return Htpasswd(path, run_password_check or run_blocking, reactor)

    checker = users(auth_file) if auth_file else None
    failed = FailedLogins(reactor, auth_failures, auth_failure_window)
    policy = AccessPolicy(checker, read_auth, list(allow_from), trust_proxy, failed)
    bulk = BulkCacher(
        views=views,
        mirror=mirror,
        store=store,
        run_blocking=run_blocking,
        reactor=reactor,
        concurrency=bulk_concurrency,
        max_lines=bulk_max_lines,
        max_projects=bulk_max_projects,
        max_rounds=bulk_max_rounds,
        pins=Pins(store.root, capacity.usage),
    )
    app = PypicacheApp(
        store,
        mirror,
        views,
        uploads,
        policy,
        run_blocking,
        index_url,
        bulk,
        bulk_auth=bool(auth_file) if bulk_auth is None else bulk_auth,
        bulk_jobs_per_client=bulk_jobs_per_client,
        capacity=capacity,
    )
    app.installer.page_max_age = page_max_age
    app.extra_routes.append(
        CacheRoutes(
            CacheControl(
                routed,
                {"": store, **{n: b.store for n, b in named.items()}},
                capacity.removed,
            ),
            policy,
            {n: b.site for n, b in named.items()},
        )
    )
    return Live(app, upstream, pages, users, named)
