# -*- test-case-name: tests.test_tap -*-
"""``twistd pypicache``: command-line options and the service they build."""

import os
from functools import partial
from typing import Any, Sequence
from urllib.parse import urlsplit

from twisted.application import service, strports
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.python.threadpool import ThreadPool
from twisted.web.client import HTTPConnectionPool
from twisted.web.server import Site

from pypicache.bulk.cacher import BulkCacher
from pypicache.errors import BadRequest
from pypicache.index.names import normalize
from pypicache.private.uploads import Uploads
from pypicache.proxy.mirror import Mirror
from pypicache.proxy.pages import ProjectPages
from pypicache.proxy.upstream import MAX_PAGE_SIZE, Upstream, make_agent
from pypicache.proxy.views import Views
from pypicache.storage.filesystem import FilesystemStore
from pypicache.web.access import AccessPolicy, parse_cidr
from pypicache.web.app import PypicacheApp
from pypicache.web.attempts import DEFAULT_FAILURES, DEFAULT_WINDOW, FailedLogins
from pypicache.web.htpasswd import Htpasswd
from pypicache.web.limits import DEFAULT_MAX_BODY, limited_request_factory

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"

log = Logger()


def pip_index_url() -> str:
    """The index URL pip itself uses, read now.

    ``PIP_INDEX_URL``, then pip's ``install.index-url``, then ``global.index-url``,
    then pip's built-in default. Never ``extra-index-url`` or ``find-links``.

    :raises usage.UsageError: if pip cannot be consulted.
    """
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"].split()[0]
    try:
        from pip._internal.configuration import Configuration
        from pip._internal.models.index import PyPI
    except ImportError as e:
        raise usage.UsageError(
            "pip is not importable here to read its index URL: give --index-url"
        ) from e
    try:
        configuration = Configuration(isolated=False)
        configuration.load()
        for key in ("install.index-url", "global.index-url"):
            try:
                value = configuration.get_value(key)
            except Exception:
                continue
            if value:
                return str(value).split()[0]
    except Exception as e:
        raise usage.UsageError(
            f"Cannot read pip's configuration ({e}): give --index-url"
        ) from e
    return str(PyPI.simple_url)


def _size(value: str) -> int:
    """A size in bytes, with an optional K, M or G (binary) suffix."""
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    factor = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
    number = int(float(text[:-1] if factor > 1 else text) * factor)
    if number <= 0:
        raise ValueError("must be positive")
    return number


def _rate(value: str) -> int:
    """A rate in bytes per second: 0, or a size."""
    return 0 if value.strip() in ("0", "0B") else _size(value)


def _positive(value: str) -> float:
    number = float(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


class Options(usage.Options):
    """``twistd pypicache`` options."""

    synopsis = (
        "--cache DIR [--index-url URL] [--listen ENDPOINT]... [--page-ttl SECONDS]"
    )
    longdesc = "A caching proxy and private index for Python packages."

    optFlags = [
        [
            "read-auth",
            None,
            "Reads need credentials from --auth-file too (/health stays open).",
        ],
        [
            "trust-proxy",
            None,
            "Believe X-Forwarded-For / Forwarded for the client's address (behind a reverse proxy).",
        ],
    ]

    optParameters = [
        [
            "cache",
            "c",
            None,
            "Folder of the cache and the private packages (created if missing). Required.",
        ],
        [
            "index-url",
            "i",
            None,
            "Upstream simple index (default: the index pip uses).",
        ],
        ["page-ttl", None, 600.0, "Seconds a cached project page is fresh.", _positive],
        [
            "timeout",
            None,
            30.0,
            "Seconds to wait for the upstream to answer or to send more bytes.",
            _positive,
        ],
        [
            "page-deadline",
            None,
            120.0,
            "Seconds an upstream project page may take in all (then the stale page, or 504).",
            _positive,
        ],
        [
            "min-rate",
            None,
            8 * 1024,
            "Bytes per second an upstream body must average over each --timeout "
            "(suffixes K, M allowed; 0 turns the check off).",
            _rate,
        ],
        [
            "max-page-size",
            None,
            MAX_PAGE_SIZE,
            "Largest upstream project page, decompressed (suffixes K, M, G allowed).",
            _size,
        ],
        [
            "max-upload-size",
            None,
            DEFAULT_MAX_BODY,
            "Largest request body in bytes (suffixes K, M, G allowed).",
            _size,
        ],
        [
            "bulk-concurrency",
            None,
            8,
            "Downloads at once per POST /requirements.txt.",
            int,
        ],
        [
            "auth-file",
            None,
            None,
            "htpasswd file (bcrypt entries, htpasswd -B) of the users who may upload, delete and yank.",
        ],
        [
            "auth-failures",
            None,
            DEFAULT_FAILURES,
            "Failed logins per client address within --auth-failure-window before 429.",
            int,
        ],
        [
            "auth-failure-window",
            None,
            DEFAULT_WINDOW,
            "Seconds over which --auth-failures are counted.",
            _positive,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["allow-from"] = []
        self["mirror-private"] = []

    def opt_allow_from(self, network: str) -> None:
        """Serve only clients from this network (CIDR or address; repeatable)."""
        try:
            self["allow-from"].append(parse_cidr(network))
        except ValueError as e:
            raise usage.UsageError(str(e)) from e

    def opt_mirror_private(self, project: str) -> None:
        """Let this private project merge in the upstream's files too (repeatable)."""
        try:
            self["mirror-private"].append(normalize(project))
        except BadRequest as e:
            raise usage.UsageError(e.message) from e

    def opt_listen(self, endpoint: str) -> None:
        """A strports endpoint to listen on (repeatable; default tcp:8080:interface=127.0.0.1)."""
        self["listen"].append(endpoint)

    def postOptions(self) -> None:
        if not self["cache"]:
            raise usage.UsageError("--cache DIR is required")
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if self["index-url"] is None:
            self["index-url"] = pip_index_url()
        parts = urlsplit(self["index-url"])
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise usage.UsageError(
                f"--index-url must be an http(s) URL, not {self['index-url']!r}"
            )
        if self["timeout"] <= 0:
            raise usage.UsageError("--timeout must be positive")
        if self["auth-file"] is not None and not os.path.isfile(self["auth-file"]):
            raise usage.UsageError(f"--auth-file {self['auth-file']!r} is not a file")
        if self["bulk-concurrency"] < 1:
            raise usage.UsageError("--bulk-concurrency must be at least 1")
        if self["read-auth"] and self["auth-file"] is None:
            raise usage.UsageError("--read-auth needs --auth-file")
        if self["auth-failures"] < 1:
            raise usage.UsageError("--auth-failures must be at least 1")
        if self["auth-failure-window"] <= 0:
            raise usage.UsageError("--auth-failure-window must be positive")


class _ThreadPoolService(service.Service):
    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()


def _thread_pool(parent: Any, reactor: Any, name: str, size: int) -> Any:
    """A thread pool started and stopped with ``parent``, as a ``run_blocking``."""
    threads = ThreadPool(minthreads=0, maxthreads=size, name=name)
    _ThreadPoolService(threads).setServiceParent(parent)
    return partial(deferToThreadPool, reactor, threads)


class _ConnectionPoolService(service.Service):
    def __init__(self, pool: HTTPConnectionPool) -> None:
        self.pool = pool

    def stopService(self) -> Any:
        super().stopService()
        return self.pool.closeCachedConnections()


def build_app(
    cache: str,
    index_url: str,
    reactor: Any,
    pool: HTTPConnectionPool,
    run_blocking: Any,
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
    run_password_check: Any = None,
    auth_failures: int = DEFAULT_FAILURES,
    auth_failure_window: float = DEFAULT_WINDOW,
) -> PypicacheApp:
    """Build the objects behind the web site (the tests build theirs here too).

    :param page_clock: the clock of the page TTL (default: ``reactor``).
    :param run_password_check: bcrypt's own ``run_blocking`` (default: ``run_blocking``).
    """
    store = FilesystemStore(FilePath(os.path.abspath(cache)), clock=reactor)
    upstream = Upstream(
        index_url,
        make_agent(reactor, pool),
        reactor,
        timeout=timeout,
        page_deadline=page_deadline,
        min_rate=min_rate,
        max_page_size=max_page_size,
        run_blocking=run_blocking,
    )
    pages = ProjectPages(
        upstream, store, page_clock or reactor, ttl=page_ttl, run_blocking=run_blocking
    )
    mirror = Mirror(upstream, store, pages, run_blocking)
    views = Views(store, mirror, frozenset(mirror_private))
    uploads = Uploads(store, run_blocking, reactor)
    checker = None
    if auth_file:
        checker = Htpasswd(auth_file, run_password_check or run_blocking, reactor)
    failed = FailedLogins(reactor, auth_failures, auth_failure_window)
    policy = AccessPolicy(checker, read_auth, list(allow_from), trust_proxy, failed)
    bulk = BulkCacher(
        views=views,
        mirror=mirror,
        store=store,
        run_blocking=run_blocking,
        reactor=reactor,
        concurrency=bulk_concurrency,
    )
    return PypicacheApp(
        store, mirror, views, uploads, policy, run_blocking, index_url, bulk
    )


def makeService(options: Options, reactor: Any = None) -> service.MultiService:
    """Build the daemon: store, upstream client, proxy, web site and listeners."""
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    top = service.MultiService()
    run_blocking = _thread_pool(top, reactor, "pypicache", 4)
    # bcrypt gets threads of its own: password guessing must not starve uploads.
    run_password_check = _thread_pool(top, reactor, "pypicache-bcrypt", 2)

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 10
    _ConnectionPoolService(pool).setServiceParent(top)
    app = build_app(
        cache=options["cache"],
        index_url=options["index-url"],
        reactor=reactor,
        pool=pool,
        run_blocking=run_blocking,
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
    )
    site = Site(
        app.resource(),
        requestFactory=limited_request_factory(options["max-upload-size"]),
    )
    site.displayTracebacks = False
    for endpoint in options["listen"]:
        strports.service(endpoint, site, reactor=reactor).setServiceParent(top)
    _StartupScan(app, reactor).setServiceParent(top)
    return top


class _StartupScan(service.Service):
    """Once listening, index archives dropped into ``private/`` (in a thread)."""

    def __init__(self, app: PypicacheApp, reactor: Any) -> None:
        self.app = app
        self.reactor = reactor

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(self._scan)

    def _scan(self) -> None:
        d = Deferred.fromCoroutine(self.app.rescan())
        d.addErrback(lambda f: log.failure("Start-up scan failed", f))
