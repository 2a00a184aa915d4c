# -*- test-case-name: tests.test_proxy -*-
"""Pages for people: the home page (never on an installer's path)."""

from html import escape
from typing import Any, Awaitable, Callable
from urllib.parse import quote

import attrs
from twisted.web.iweb import IRequest

from pypicache import __version__
from pypicache.proxy.upstream import mask_url
from pypicache.storage.interface import IStore
from pypicache.web.routing import base_url, route

#: Projects listed on the home page at most.
HOME_PROJECTS = 500


@attrs.define
class PageRoutes:
    """``GET /``: what this server is and how to point pip and uv at it."""

    _store: IStore
    _index_url: str
    #: The figures of ``/+stats`` (``None``: the page shows none).
    _figures: Callable[[], Awaitable[dict[str, Any]]] | None = None

    @route("/", methods=["GET", "HEAD"])
    async def home(self, request: IRequest) -> bytes:
        projects = await self._store.projects()
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        base = base_url(request).rstrip("/")
        listed = "".join(
            f'<li><a href="local/{quote(p)}/">{escape(p)}</a></li>'
            for p in projects[:HOME_PROJECTS]
        )
        figures = await self._figures() if self._figures is not None else None
        more = (
            f"<p>…and {len(projects) - HOME_PROJECTS} more.</p>"
            if len(projects) > HOME_PROJECTS
            else ""
        )
        return f"""<!DOCTYPE html>
<html><head><title>pypicache</title></head><body>
<h1>pypicache {escape(__version__)}</h1>
<p>A caching proxy and private index for Python packages. Upstream: <code>{escape(mask_url(self._index_url))}</code>.</p>
<h2>Install through it</h2>
<ul>
<li><code>/simple/</code> proxies the upstream and keeps every file it serves:
<pre>pip install --index-url {escape(base)}/simple/ PACKAGE
export PIP_INDEX_URL={escape(base)}/simple/
uv pip install --index-url {escape(base)}/simple/ PACKAGE
export UV_DEFAULT_INDEX={escape(base)}/simple/</pre>
or in <code>pip.conf</code>:
<pre>[global]
index-url = {escape(base)}/simple/</pre>
or in <code>pyproject.toml</code> for uv:
<pre>[[tool.uv.index]]
url = "{escape(base)}/simple/"
default = true</pre></li>
<li><code>/local/</code> serves only what is on disk and never contacts the upstream:
<pre>pip install --index-url {escape(base)}/local/ PACKAGE</pre></li>
</ul>
{_figures_html(figures)}<h2>Cached projects ({len(projects)})</h2>
<ul>{listed}</ul>{more}
</body></html>
""".encode()


def _percent(ratio: float | None) -> str:
    return "–" if ratio is None else f"{ratio:.1%}"


def _figures_html(figures: dict[str, Any] | None) -> str:
    """The at-a-glance figures of ``/+stats`` as a section of the home page."""
    if figures is None:
        return ""
    rows = [
        ("Hit ratio since start", _percent(figures["hit_ratio"])),
        ("Hit ratio over the last hour", _percent(figures["hit_ratio_last_hour"])),
        ("Requests", figures["requests"]),
        ("Hits / misses", f"{figures['hits']} / {figures['misses']}"),
        ("Bytes served from the cache", figures["bytes_served"]["cache"]),
        ("Bytes served from upstream", figures["bytes_served"]["upstream"]),
        ("Downloads in flight", figures["downloads_in_flight"]),
        ("Mirror size (bytes)", figures["cache_size_bytes"]),
        ("Mirrored files", figures["cache_files"]),
        ("Evicted files", figures["evicted_files"]),
        ("Uploads", figures["uploads"]),
    ]
    cells = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return (
        '<h2>Figures</h2>\n<table id="figures">'
        + cells
        + '</table>\n<p>As JSON: <a href="+stats">+stats</a>; for Prometheus: '
        '<a href="metrics">metrics</a>.</p>\n'
    )
