# -*- test-case-name: tests.test_tap -*-
"""The services twistd runs: thread pools, the connection pool, listeners,
and what waits for the first answer (the start-up scan, the mirror's count)."""

import gc
import os
from typing import Any, Callable

from twisted.application import internet, service, strports
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.client import HTTPConnectionPool
from twisted.web.server import Site

from pypicache.concurrency import ThreadPoolService
from pypicache.proxy.walkloads import start_loading
from pypicache.storage.capacity import Capacity
from pypicache.tap.build import build_live
from pypicache.tap.jsonlog import JsonLog
from pypicache.tap.options import Options
from pypicache.tap.reload import Reloader, reload
from pypicache.tap.textlog import TextLogService
from pypicache.web.accesslog import make_site
from pypicache.web.app import PypicacheApp
from pypicache.web.limits import limited_request_factory
from pypicache.web.metrics import SAMPLE_INTERVAL, Metrics
from pypicache.web.turns import Turns, TurnsService
from pypicache.web.watchdog import ReactorWatchdog

log = Logger()

#: Threads that store downloads and pages (fsync, rename).
SYNC_THREADS = 16

#: Connections kept open to the upstream: as many as a resolver asks for at once.
UPSTREAM_CONNECTIONS = 32


def _thread_pool(
    parent: Any,
    reactor: Any,
    name: str,
    size: int,
    ready: int = 0,
    deliver: Any = None,
) -> Any:
    """A thread pool started and stopped with ``parent``, as a ``run_blocking``.

    :param ready: threads started with it; the rest are started when work
        arrives, each by the reactor thread, which waits until it runs.
    :param deliver: see :class:`~pypicache.concurrency.ThreadPoolService`.
    """
    threads = ThreadPoolService(reactor, size, name, ready, deliver)
    threads.setServiceParent(parent)
    return threads


class _ConnectionPoolService(service.Service):
    def __init__(self, pool: HTTPConnectionPool) -> None:
        self.pool = pool

    def stopService(self) -> Any:
        super().stopService()
        return self.pool.closeCachedConnections()


def makeService(options: Options, reactor: Any = None) -> service.MultiService:
    """Build the daemon: store, upstream client, proxy, web site and listeners.

    With ``--workers`` above 1, the listeners and the processes that serve them.
    """
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    if options["workers"] > 1:
        from pypicache.tap.workers import supervisor

        return supervisor(options, reactor)
    top, site = serving(options, reactor)
    for endpoint in options["listen"]:
        strports.service(endpoint, site, reactor=reactor).setServiceParent(top)
    return top


def serving(options: Options, reactor: Any) -> tuple[service.MultiService, Site]:
    """The services of a process that serves requests, and the site it serves
    (the caller makes it listen)."""
    top = service.MultiService()
    # twistd's text log written at less cost (the first service: stopped last).
    TextLogService(reactor).setServiceParent(top)
    json_log = None
    if options["json-log"] is not None:
        json_log = JsonLog(options["json-log"], reactor)
        json_log.setServiceParent(top)
    # Each reactor turn answers the clients' cheap reads before its costly
    # work: the requests left to twisted.web, the upstream's answers, and what
    # the threads hand back.
    turns = Turns(reactor)
    TurnsService(turns).setServiceParent(top)
    run_blocking = _thread_pool(
        top, reactor, "pypicache", 4, ready=4, deliver=turns.finish
    )
    # Storing waits on fsync, not on the CPU: threads of its own, enough for an
    # installer's burst of cold files to sync together (the filesystem commits
    # concurrent syncs as one), never queued ahead of page parsing, and
    # started beforehand: a burst must not wait for threads to start.
    run_sync = _thread_pool(
        top,
        reactor,
        "pypicache-sync",
        SYNC_THREADS,
        ready=SYNC_THREADS,
        deliver=turns.finish,
    )
    # bcrypt gets threads of its own: password guessing must not starve uploads.
    run_password_check = _thread_pool(top, reactor, "pypicache-bcrypt", 2)

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = UPSTREAM_CONNECTIONS
    _ConnectionPoolService(pool).setServiceParent(top)
    # With --workers, the twistd process set it (tap/workers.py): each worker
    # writes its figures there, and /metrics sums them.
    metrics = Metrics(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    internet.TimerService(
        SAMPLE_INTERVAL, lambda: run_blocking(metrics.sample, reactor.seconds())
    ).setServiceParent(top)
    ReactorWatchdog(reactor, metrics, turns=turns).setServiceParent(top)
    live = build_live(
        cache=options["cache"],
        index_url=options["index-url"],
        reactor=reactor,
        pool=pool,
        run_blocking=run_blocking,
        run_sync=run_sync,
        page_ttl=options["page-ttl"],
        timeout=options["timeout"],
        page_deadline=options["page-deadline"],
        min_rate=options["min-rate"],
        max_page_size=options["max-page-size"],
        auth_file=options["auth-file"],
        run_password_check=run_password_check,
        auth_failures=options["auth-failures"],
        auth_failure_window=options["auth-failure-window"],
        read_auth=bool(options["read-auth"]),
        allow_from=options["allow-from"],
        trust_proxy=bool(options["trust-proxy"]),
        mirror_private=options["mirror-private"],
        bulk_concurrency=options["bulk-concurrency"],
        bulk_auth=options["bulk-auth"],
        bulk_jobs_per_client=options["bulk-jobs-per-client"],
        bulk_max_lines=options["bulk-max-lines"],
        bulk_max_projects=options["bulk-max-projects"],
        bulk_max_rounds=options["bulk-max-rounds"],
        page_max_age=options["page-max-age"],
        max_cache_size=options["max-cache-size"],
        evict_unused_after=options["evict-unused-after"],
        prefetch_depth=options["prefetch-depth"],
        prefetch_requests=options["prefetch-requests"],
        prefetch_max_file=options["prefetch-max-file"],
        prefetch_wheels=options["prefetch-wheels"],
        upstream_proxy=options["upstream-proxy"],
        upstream_ca=options["upstream-ca"],
        proxy_environ=os.environ,
        metrics=metrics,
        metrics_auth=options["metrics-auth"],
        upstreams=options["upstream"],
        routes=options["route"],
        merge=options["merge"],
        cooldown=options.cooldown_settings(),
        block=options["block"],
        withdrawn=options["withdrawn"],
        shared_marks=options["workers"] > 1,
        **_object_store(options, top, reactor),
    )
    app = live.app
    site = make_site(
        app.resource(),
        limited_request_factory(options["max-upload-size"]),
        reactor,
        access_log=options["access-log"],
        client_address=app.policy.client_address,
        access_events=json_log.access if json_log is not None else None,
        ready=app.ready_answers(),
        metrics=metrics,
        hsts=options["hsts"],
    )
    site.turns = turns
    app.installer.turns = turns  # pages looked up once per turn (page_ready)
    # What can wait waits for the first answer: the collector's freeze and
    # every walk of the cache folder.
    after = AfterFirstAnswer(site, reactor)
    after.setServiceParent(top)
    after.add(freeze_start_up_objects)
    for named in live.named.values():
        after.add(named.clean_up, run_blocking)
    after.add(_start_up_scan, app)
    if app.views.on_cold is not None:  # what prefetch walks need, in a thread
        after.add(start_loading, run_blocking)
    if app.policy.tokens is not None:
        # Tokens made with pypicache-admin on this host, shared through the store.
        internet.TimerService(1.0, app.policy.tokens.publish).setServiceParent(top)
    Reloader(reactor, lambda: reload(options, live, site)).setServiceParent(top)
    if app.capacity is not None:
        _DiskUpkeep(app.capacity, after).setServiceParent(top)
    return top, site


def _object_store(
    options: Options, top: service.MultiService, reactor: Any
) -> dict[str, Any]:
    """``build_live``'s arguments for ``--storage s3://...`` (none for the
    filesystem): the bucket, through threads of its own (a service), and
    the hourly sweep of abandoned uploads (a service)."""
    settings = options.s3
    if settings is None:
        return {}
    # Imported only here, with --storage s3:// (botocore: start-up time and memory).
    from pypicache.storage.s3.bucket import Bucket
    from pypicache.storage.s3.keys import Keys
    from pypicache.storage.s3.orphans import SWEEP_EVERY, sweep
    from pypicache.storage.s3.settings import S3ConfigError
    from pypicache.storage.s3.threads import BucketThreads

    try:
        # Made before the reactor runs (botocore reads its models and
        # resolves credentials): nothing waits on it yet.
        client = settings.client()
    except S3ConfigError as e:
        raise usage.UsageError(str(e)) from e
    threads = BucketThreads(reactor, size=settings.threads)
    threads.setServiceParent(top)
    bucket = Bucket(
        client,
        settings.location.bucket,
        threads,
        part_size=settings.part_size,
        presign_expiry=settings.presign_expiry,
    )
    # Multipart uploads left open by a daemon killed mid-upload, aborted.
    keys = Keys(settings.location.prefix)
    sweeper = internet.TimerService(SWEEP_EVERY, sweep, bucket, keys, reactor)
    sweeper.clock = reactor
    sweeper.setServiceParent(top)
    return {
        "s3_bucket": bucket,
        "s3_prefix": settings.location.prefix,
        "s3_redirect": bool(options["s3-redirect"]),
        "s3_local_size": settings.local_size,
    }


def freeze_start_up_objects() -> None:
    """Move what start-up made (modules, classes, routes: tens of thousands of
    objects that live as long as the process) out of the garbage collector's
    view, so that its full collections, which pause the reactor, walk only what
    requests made (``gc.freeze``: with 65,832 start-up objects a full
    collection took 50 ms, and 0 ms after).

    The collector's thresholds stay Python's (700, 10, 10): raised to 20,000
    for the youngest generation, the soak spent as long collecting, in a few
    long pauses (127 ms each) instead of many short ones (docs/benchmark.rst,
    "Session 7").

    Only the young generations are collected first: a full collection here
    walked the 77,000 objects start-up made to find 11 unreachable (200 ms
    of the reactor under load, as the first cold install began), the young
    ones found as many in a third of a millisecond."""
    gc.collect(1)
    gc.freeze()


#: Seconds the work that can wait waits for a first request before it starts
#: anyway (:class:`AfterFirstAnswer`).
FIRST_ANSWER_WAIT = 1.0


class AfterFirstAnswer(service.Service):
    """Start-up work that can wait (the walks of the cache folder: the scan of
    ``private/``, the clean-up after a crash, the count of the mirror; the
    collector's freeze) runs once the daemon has answered its first request,
    or after :data:`FIRST_ANSWER_WAIT` seconds without one: nothing walks the
    cache while the first client waits, and a walk in a thread would hold the
    GIL the reactor needs to answer.

    The first answer is seen through ``site.log`` (which every answered
    request goes through, whichever lane answered it; see
    :func:`pypicache.web.accesslog.account`), wrapped on the instance until
    then.
    """

    def __init__(self, site: Site, reactor: Any) -> None:
        self.site = site
        self.reactor = reactor
        self._work: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._waiting: Any = None
        self.done = False

    def add(self, f: Callable[..., Any], *args: Any) -> None:
        """Run ``f(*args)`` after the first answer (at once if it has come)."""
        if self.done:
            f(*args)
        else:
            self._work.append((f, args))

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(self._wait)

    def _wait(self) -> None:
        if self.done or not self.running:
            return
        site = self.site

        def answered(request: Any) -> None:
            site.__dict__.pop("log", None)  # the class's again
            type(site).log(site, request)
            self._run()

        site.log = answered  # type: ignore[method-assign]
        self._waiting = self.reactor.callLater(FIRST_ANSWER_WAIT, self._run)

    def _run(self) -> None:
        if self.done:
            return
        self.done = True
        self._stop_waiting()
        work, self._work = self._work, []
        for f, args in work:
            try:
                f(*args)
            except Exception:
                log.failure("Start-up work failed: {f!r}", f=f)

    def _stop_waiting(self) -> None:
        self.site.__dict__.pop("log", None)
        if self._waiting is not None and self._waiting.active():
            self._waiting.cancel()
        self._waiting = None

    def stopService(self) -> Any:
        self._stop_waiting()
        return super().stopService()


def _start_up_scan(app: PypicacheApp) -> None:
    """Clean up after a crash and index archives dropped into ``private/`` (in a thread)."""
    d = Deferred.fromCoroutine(app.start_up())
    d.addErrback(lambda f: log.failure("Start-up scan failed", f))


class _DiskUpkeep(service.Service):
    """After the first answer, the usage record's flushes and the eviction
    passes (the first counts the mirror, in a thread); at stop, a last flush."""

    def __init__(self, capacity: Capacity, after: AfterFirstAnswer) -> None:
        self.capacity = capacity
        after.add(self._start)

    def _start(self) -> None:
        if self.running:
            self.capacity.start()

    def stopService(self) -> Any:
        super().stopService()
        return self.capacity.stop()
