# -*- test-case-name: tests.test_ui -*-
"""Pages for people: the home page (never on an installer's path)."""

from typing import Any, Awaitable, Callable

from twisted.web.iweb import IRequest

from pypicache.proxy.upstream import mask_url
from pypicache.storage.interface import IStore
from pypicache.web.access import AccessPolicy
from pypicache.web.routes.ui import client_base, send_page
from pypicache.web.routing import route
from pypicache.web.ui import render as ui
from pypicache.web.ui.catalog import Catalog


class PageRoutes:
    """``GET /``: what this server is, how to point pip, uv, Poetry, PDM and
    twine at it (with its URL as the client sees it), the cache's figures."""

    _store: IStore
    _index_url: str
    #: The figures of ``/+stats`` (``None``: the page shows none).
    _figures: Callable[[], Awaitable[dict[str, Any]]] | None
    _policy: AccessPolicy | None
    _catalog: Catalog | None

    __slots__ = (
        "_store",
        "_index_url",
        "_figures",
        "_policy",
        "_catalog",
        "__weakref__",
    )

    def __init__(
        self,
        store: IStore,
        index_url: str,
        figures: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        policy: AccessPolicy | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self._store = store
        self._index_url = index_url
        self._figures = figures
        self._policy = policy
        self._catalog = catalog

    @route("/", methods=["GET", "HEAD"])
    async def home(self, request: IRequest) -> Any:
        projects = await self._store.projects()
        private = None
        if self._catalog is not None:
            self._catalog.refresh(projects)
            private = self._catalog.private_count
        figures = await self._figures() if self._figures is not None else None
        policy = self._policy
        data = ui.render(
            "home.html",
            root=ui.root_of(request.path),
            base=client_base(request, policy is not None and policy.trust_proxy),
            upstream=mask_url(self._index_url),
            projects=len(projects),
            private=private,
            figures=_figure_rows(figures) if figures is not None else None,
            auth=policy is not None and policy.checker is not None,
        )
        return send_page(request, *ui.both_forms(data))


def _percent(ratio: float | None) -> str:
    return "–" if ratio is None else f"{ratio:.1%}"


def _upstream(figures: dict[str, Any]) -> list[tuple[str, str]]:
    """The upstream's health: when it last answered, when and how it last failed."""
    error = figures.get("upstream_last_error")
    kind = figures.get("upstream_last_error_kind")
    return [
        ("Upstream last answered", ui.when(figures.get("upstream_last_success"))),
        (
            "Upstream last failed",
            "never" if error is None else f"{ui.when(error)} ({kind})",
        ),
    ]


def _figure_rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    """The at-a-glance figures of ``/+stats``, as rows of the home page."""
    sent = figures["bytes_served"]
    return [
        ("Hit ratio since start", _percent(figures["hit_ratio"])),
        ("Hit ratio over the last hour", _percent(figures["hit_ratio_last_hour"])),
        ("Requests", str(figures["requests"])),
        ("Hits / misses", f"{figures['hits']} / {figures['misses']}"),
        ("Mirrored files", str(figures["cache_files"])),
        ("Mirror size", ui.human_size(figures["cache_size_bytes"])),
        ("Served from the cache", ui.human_size(sent["cache"])),
        ("Served from upstream", ui.human_size(sent["upstream"])),
        ("Downloads in flight", str(figures["downloads_in_flight"])),
        ("Evicted files", str(figures["evicted_files"])),
        ("Uploads", str(figures["uploads"])),
        *_upstream(figures),
    ]
