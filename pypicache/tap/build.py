# -*- test-case-name: tests.test_tap -*-
"""Building the objects behind the web site from the options (the tests build theirs here too)."""

from typing import Any, Mapping, Sequence

from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool

from pypicache.bulk.cacher import (
    DEFAULT_MAX_LINES,
    DEFAULT_MAX_PROJECTS,
    DEFAULT_MAX_ROUNDS,
    BulkCacher,
)
from pypicache.private.uploads import Uploads
from pypicache.proxy.cachectl import CacheControl
from pypicache.proxy.cooldown import CooldownSettings
from pypicache.proxy.firstseen import FirstSeen
from pypicache.proxy.mirror import Mirror
from pypicache.proxy.outbound import OutboundEndpoints, proxy_settings, read_ca_bundle
from pypicache.proxy.pages import ProjectPages
from pypicache.proxy.prefetch import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_FILE,
    DEFAULT_REQUESTS,
    Prefetcher,
)
from pypicache.proxy.provenance import Provenances
from pypicache.proxy.rules import Rules
from pypicache.proxy.upstream import MAX_PAGE_SIZE, Upstream, make_agent
from pypicache.proxy.upstreams import (
    FileClient,
    RoutedPages,
    Router,
    UpstreamSpec,
)
from pypicache.proxy.views import Views
from pypicache.proxy.wheelahead import WheelsAhead
from pypicache.proxy.withdrawals import (
    withdrawn_listing,
)
from pypicache.storage.capacity import Capacity
from pypicache.storage.locks import Locks
from pypicache.storage.pins import Pins
from pypicache.storage.records import LOCKS, StoredFile
from pypicache.storage.sharedmarks import SharedMarks
from pypicache.storage.usage import USAGE_FILE, Usage
from pypicache.tap.cooldown import Cooldowns
from pypicache.tap.live import Live, _open_marks
from pypicache.tap.named import build_named
from pypicache.tap.stores import make_evictor, make_store, named_stores
from pypicache.tap.teamrules import chained, team_rules
from pypicache.web.access import AccessPolicy
from pypicache.web.app import PypicacheApp
from pypicache.web.attempts import DEFAULT_FAILURES, DEFAULT_WINDOW, FailedLogins
from pypicache.web.htpasswd import Htpasswd
from pypicache.web.metrics import CountedFlights, Metrics
from pypicache.web.routes.cache import CacheRoutes
from pypicache.web.routes.metrics import MetricsRoutes
from pypicache.web.routes.provenance import ProvenanceRoutes
from pypicache.web.routes.status import StatusRoutes
from pypicache.web.tokens import TokenChecker, tokens_path

log = Logger()


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
    prefetch_depth: int = 0,
    prefetch_requests: int = DEFAULT_REQUESTS,
    prefetch_max_file: int = DEFAULT_MAX_FILE,
    prefetch_concurrency: int = DEFAULT_CONCURRENCY,
    prefetch_wheels: int = 0,
    upstream_proxy: str | None = None,
    upstream_ca: str | None = None,
    proxy_environ: Mapping[str, str] | None = None,
    metrics: Metrics | None = None,
    metrics_auth: bool = False,
    upstreams: Sequence[UpstreamSpec] = (),
    routes: Sequence[tuple[str, str]] = (),
    merge: Sequence[str] = (),
    rules: Rules = Rules(),
    cooldown: CooldownSettings = CooldownSettings(),
    block: Sequence[str] = (),
    withdrawn: str = "hide",
    shared_marks: bool = False,
    s3_bucket: Any = None,
    s3_prefix: str = "",
    s3_redirect: bool = False,
    s3_local_size: int | None = None,
) -> Live:
    """Build the objects behind the web site, and say which can change.

    :param page_clock: the clock of the page TTL (default: ``reactor``).
    :param run_sync: where downloads and pages are synced to disk (default:
        ``run_blocking``).
    :param run_password_check: bcrypt's own ``run_blocking`` (default: ``run_blocking``).
    :param max_cache_size: bytes the mirror may hold (``None``: no cap).
    :param evict_unused_after: seconds after which an unused mirrored file goes.
    :param prefetch_depth: levels of dependencies prefetched below a cold
        page (0, the default here: none; the daemon's default is its option's).
    :param prefetch_wheels: largest wheel fetched once a client has read its
        ``.metadata`` (0, the default here: none; the daemon's: its option's).
    :param upstream_proxy: ``--upstream-proxy`` (a URL, ``"none"``, or ``None``:
        the proxies ``proxy_environ`` names).
    :param upstream_ca: PEM file trusted for upstream TLS (``None``: the system's).
    :param proxy_environ: where ``*_PROXY`` are read (``os.environ`` in the daemon).
    :param metrics: what is counted, for ``/metrics`` and ``/+stats`` (``None``:
        nothing is, and they are not served).
    :param metrics_auth: whether those need a user.
    :param upstreams: the named upstreams; :param routes: ``(glob, name)``
        pairs; :param merge: routed projects looked up on the default too.
    :param rules: what may be served (cooldown, block list...; see
        :mod:`pypicache.proxy.rules`).
    :param cooldown: the cooldown (``min-age``), added to ``rules``.
    :param block: the block list's entries (``--block``), checked.
    :param withdrawn: ``"hide"`` or ``"keep"`` the mirrored files the
        upstream withdrew in ``/local/`` (:mod:`pypicache.proxy.withdrawals`).
    :param shared_marks: other processes serve this cache folder
        (``--workers``): refreshes and purges are marked for them in
        ``DIR/marks`` (:mod:`pypicache.storage.marks`), mapped for the life
        of the process.
    :param s3_bucket: the :class:`~pypicache.storage.s3.bucket.Bucket` files
        and records are kept in (``--storage s3://...``; ``cache`` is then the
        local working folder), under ``s3_prefix``; ``s3_redirect``: serve
        archives by presigned URLs; ``s3_local_size``: most bytes of local
        copies. ``None``: the filesystem store on ``cache``.
    """
    run_sync = run_sync or run_blocking
    store = make_store(
        cache,
        reactor,
        run_blocking,
        run_sync,
        s3_bucket,
        s3_prefix,
        s3_redirect,
        s3_local_size,
    )
    locks = Locks(reactor)
    endpoints = OutboundEndpoints(
        reactor,
        proxy_settings(upstream_proxy, proxy_environ or {}),
        read_ca_bundle(upstream_ca) if upstream_ca else None,
    )
    log.info("Upstream connections: {how}", how=endpoints.describe())
    agent = make_agent(reactor, pool, endpoints)
    settings = dict(
        timeout=timeout,
        page_deadline=page_deadline,
        min_rate=min_rate,
        max_page_size=max_page_size,
    )
    upstream = Upstream(
        index_url, agent, reactor, run_blocking=run_blocking, **settings
    )
    usage = Usage(store.root, store.lock_path(LOCKS, None, USAGE_FILE), reactor)
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
        withdrawn,
        usage,
        named_stores(store, s3_prefix, reactor, run_sync) if s3_bucket else None,
    )
    pages = ProjectPages(
        upstream,
        store,
        page_clock or reactor,
        ttl=page_ttl,
        run_blocking=run_sync,
        locks=locks,
    )
    marks = _open_marks(store.root) if shared_marks else None
    # Refreshes and purges made through other daemons on the store (S3).
    pages.shared_marks = SharedMarks(store)
    if marks is not None:
        for each in (pages, *(b.pages for b in named.values())):
            each.marks = marks.watch()
        for each_store in (store, *(b.store for b in named.values())):
            each_store.follow_marks(marks.watch())
    routed = RoutedPages(
        pages,
        {n: b.pages for n, b in named.items()},
        Router(tuple(routes), frozenset(merge)),
    )
    files = FileClient(upstream, [b.upstream for b in named.values()])
    # The downloads in flight, counted as they come and go.
    flights = {} if metrics is None else CountedFlights(metrics.count_download)
    mirror = Mirror(
        files,  # type: ignore[arg-type]
        store,
        routed,  # type: ignore[arg-type]
        run_blocking,
        locks,
        run_sync,
        downloads=flights,
    )
    # One cap and one usage record for every store's mirrored files.
    stores = {"": store, **{b.key: b.store for b in named.values()}}

    def forget(key: str, project: str) -> None:
        if key in stores:  # else an upstream no longer configured
            stores[key].forget(project)

    capacity = Capacity(
        root=store.root,
        usage=usage,
        lock_path=store.lock_path,
        clock=reactor,
        run_blocking=run_blocking,
        forget=forget,
        max_size=max_cache_size,
        unused_after=evict_unused_after,
        evictor=make_evictor(store, run_blocking),
    )
    provenances = Provenances(files, store, mirror, run_blocking)

    def stored_from_upstream(stored: StoredFile) -> None:
        capacity.stored(stored)
        provenances.stored(stored)

    mirror.on_stored = stored_from_upstream
    for each in named.values():
        if each.mirror is not None:
            # A named upstream's files count against the one cap too.
            each.mirror.on_stored = chained(capacity.stored, each.mirror.on_stored)
    team = team_rules(store, reactor, run_blocking, rules, block, withdrawn)
    views = Views(
        store,
        mirror,
        frozenset(mirror_private),
        rules=team.rules,
        withdrawals=team.withdrawals,
    )
    for each in named.values():
        if each.views is not None:
            # /upstreams/<name>/ follows the block list and the yanks too.
            each.views.rules = team.for_named(each.views.rules, block)
    if prefetch_depth > 0:
        views.on_cold = Prefetcher(
            mirror,
            views,
            reactor,
            depth=prefetch_depth,
            requests=prefetch_requests,
            max_file=prefetch_max_file,
            concurrency=prefetch_concurrency,
            ttl=page_ttl,
            run_blocking=run_blocking,
        )
    if prefetch_wheels > 0:
        views.on_metadata = WheelsAhead(
            mirror, views, reactor, max_file=prefetch_wheels
        )
    uploads = Uploads(store, run_blocking, reactor, locks)
    uploads.closed = team.statuses.closed
    uploads.closed_ready = team.statuses.records.ready

    def users(path: str) -> Htpasswd:
        return Htpasswd(path, run_password_check or run_blocking, reactor)

    checker = users(auth_file) if auth_file else None
    failed = FailedLogins(reactor, auth_failures, auth_failure_window)
    policy = AccessPolicy(
        checker,
        read_auth,
        list(allow_from),
        trust_proxy,
        failed,
        tokens=TokenChecker(store, reactor, tokens_path(store.root.path)),
    )
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
        local_yanks=team.local_yanks,
        clock=reactor,
    )
    app.installer.page_max_age = page_max_age
    if metrics is not None:
        for counted in (upstream, *(b.upstream for b in named.values())):
            counted.on_answer = metrics.count_upstream
        capacity.on_evicted = metrics.count_eviction
        capacity.on_size = metrics.count_size
        uploads.on_upload = metrics.count_upload
        bulk.on_job = metrics.count_bulk_job
        app.metrics = MetricsRoutes(
            metrics, policy, run_blocking, reactor, reactor.seconds(), metrics_auth
        )
        app.metrics.withdrawn = lambda: withdrawn_listing(
            [(None, store), *((n, b.store) for n, b in named.items())]
        )
    app.extra_routes.append(ProvenanceRoutes(views, provenances))
    app.extra_routes.append(
        CacheRoutes(
            CacheControl(
                routed,
                {"": store, **{n: b.store for n, b in named.items()}},
                capacity.removed,
                marks,
                pages.shared_marks,
            ),
            policy,
            {n: b.site for n, b in named.items()},
        )
    )
    live = Live(app, upstream, pages, users, named, withdrawn=team.withdrawn)
    live.cooldown = Cooldowns(
        cooldown,
        reactor,
        store,
        FirstSeen(store, reactor),
        views,
        routed.router.routed,
        {n: b.views for n, b in named.items() if b.views is not None},
        metrics.count_cooldown if metrics is not None else None,
    )
    live.cooldown.install()
    app.extra_routes.append(live.cooldown.client_routes(app))
    app.extra_routes.append(StatusRoutes(team.statuses, store, policy))
    return live
