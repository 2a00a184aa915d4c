# -*- test-case-name: tests.test_upstreams -*-
"""Building the named upstreams: each its client, its pages, its store and its own site."""

import os
import time
from typing import Any, Callable, Sequence

from twisted.logger import Logger
from twisted.python.filepath import FilePath
from twisted.web.iweb import IAgent
from twisted.web.resource import IResource

from pypicache.proxy.mirror import Mirror
from pypicache.proxy.pages import ProjectPages
from pypicache.proxy.provenance import Provenances
from pypicache.proxy.rules import Rules
from pypicache.proxy.upstream import Upstream
from pypicache.proxy.upstreams import UpstreamSpec
from pypicache.proxy.views import Views
from pypicache.proxy.withdrawals import WITHDRAWN, Withdrawals, WithdrawnRule
from pypicache.storage.filesystem import FilesystemStore
from pypicache.storage.interface import IStore
from pypicache.storage.locks import Locks
from pypicache.storage.records import UPSTREAMS
from pypicache.storage.shared import SharedDocs
from pypicache.storage.usage import Usage
from pypicache.web.app import add_error_handlers
from pypicache.web.routes.filehost import FileHostRoutes
from pypicache.web.routes.installer import InstallerRoutes
from pypicache.web.routes.provenance import ProvenanceRoutes
from pypicache.web.routing import klein_app, register

log = Logger()

#: Where each named upstream's store is, in the cache folder.
UPSTREAMS_FOLDER = UPSTREAMS


class Named:
    """A named upstream as built: what ``SIGHUP`` changes, and its site."""

    spec: UpstreamSpec
    upstream: Upstream
    pages: ProjectPages
    store: IStore
    installer: InstallerRoutes
    site: IResource
    #: Its views: its own rules (cooldown), and the block list and local
    #: yanks of the default upstream (start-up, SIGHUP).
    views: Views | None
    #: ``--withdrawn`` for ``/upstreams/<name>/local/``.
    withdrawn: WithdrawnRule | None
    mirror: Mirror | None

    __slots__ = (
        "spec",
        "upstream",
        "pages",
        "store",
        "installer",
        "site",
        "views",
        "withdrawn",
        "mirror",
        "__weakref__",
    )

    def __init__(
        self,
        spec: UpstreamSpec,
        upstream: Upstream,
        pages: ProjectPages,
        store: IStore,
        installer: InstallerRoutes,
        site: IResource,
        views: Views | None = None,
        withdrawn: WithdrawnRule | None = None,
        mirror: Mirror | None = None,
    ) -> None:
        self.spec = spec
        self.upstream = upstream
        self.pages = pages
        self.store = store
        self.installer = installer
        self.site = site
        self.views = views
        self.withdrawn = withdrawn
        self.mirror = mirror

    @property
    def key(self) -> str:
        """The store's name in the usage record and eviction: ``upstreams/<name>``."""
        return f"{UPSTREAMS}/{self.spec.name}"

    def clean_up(self, run_blocking: Any) -> None:
        """Once the daemon answers: remove the temporary files a crash left in
        this upstream's store (as the start-up scan does in the cache's)."""
        d = self.store.remove_temporaries(time.time() - 1.0)
        d.addErrback(
            lambda f: log.failure("Clean-up of {name} failed", f, name=self.spec.name)
        )


def build_named(
    specs: Sequence[UpstreamSpec],
    cache: str,
    reactor: Any,
    agent: IAgent,
    locks: Locks,
    run_blocking: Any,
    run_sync: Any,
    page_clock: Any,
    upstream_settings: dict[str, Any],
    page_ttl: float,
    page_max_age: int,
    withdrawn: str = "hide",
    usage: Usage | None = None,
    make_store: Callable[[FilePath, str], IStore] | None = None,
) -> dict[str, Named]:
    """One :class:`Named` per spec; their stores in ``<cache>/upstreams/<name>/``.

    :param upstream_settings: the default upstream's settings (``timeout``,
        ``page_deadline``...), which a spec's own ``timeout`` overrides.
    :param usage: the cache's one usage record, where the files each named
        upstream serves are recorded as used (bounded disk).
    :param make_store: ``make_store(folder, name)``, the store of upstream
        ``name`` (on S3: under its own prefix of the bucket, ``folder`` its
        local working folder); ``None``: a filesystem store on ``folder``.
    """
    built = {}
    for spec in specs:
        settings = dict(upstream_settings)
        if spec.timeout is not None:
            settings["timeout"] = spec.timeout
        upstream = Upstream(
            spec.url, agent, reactor, run_blocking=run_blocking, **settings
        )
        root = FilePath(os.path.abspath(cache)).child(UPSTREAMS_FOLDER).child(spec.name)
        root.makedirs(ignoreExistingDirectory=True)
        if make_store is not None:
            store = make_store(root, spec.name)
        else:
            store = FilesystemStore(
                root, clock=reactor, run_blocking=run_blocking, run_sync=run_sync
            )
        pages = ProjectPages(
            upstream,
            store,
            page_clock,
            ttl=page_ttl if spec.page_ttl is None else spec.page_ttl,
            run_blocking=run_sync,
            locks=locks,
        )
        mirror = Mirror(upstream, store, pages, run_blocking, locks, run_sync)
        withdrawals = Withdrawals(SharedDocs(store, WITHDRAWN, reactor))
        rule = WithdrawnRule(withdrawals, withdrawn)
        views = Views(store, mirror, rules=Rules((rule,)), withdrawals=withdrawals)
        key = f"{UPSTREAMS}/{spec.name}"
        installer = InstallerRoutes(
            store,
            mirror,
            views,
            None if usage is None else usage.of_store(key),  # type: ignore[arg-type]
            run_blocking=run_blocking,
        )
        installer.page_max_age = page_max_age
        provenances = Provenances(upstream, store, mirror, run_blocking)
        mirror.on_stored = provenances.stored
        app = klein_app()
        add_error_handlers(app)
        register(app, installer)
        register(app, FileHostRoutes(installer, views, mirror))
        register(app, ProvenanceRoutes(views, provenances))
        built[spec.name] = Named(
            spec,
            upstream,
            pages,
            store,
            installer,
            app.resource(),
            views=views,
            withdrawn=rule,
            mirror=mirror,
        )
    return built
