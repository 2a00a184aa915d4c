# -*- test-case-name: tests.test_proxy -*-
"""Pages for people: the home page (never on an installer's path)."""

from html import escape
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

    @route("/", methods=["GET", "HEAD"])
    async def home(self, request: IRequest) -> bytes:
        projects = await self._store.projects()
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        base = base_url(request).rstrip("/")
        listed = "".join(
            f'<li><a href="local/{quote(p)}/">{escape(p)}</a></li>'
            for p in projects[:HOME_PROJECTS]
        )
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
<h2>Cached projects ({len(projects)})</h2>
<ul>{listed}</ul>{more}
</body></html>
""".encode()
