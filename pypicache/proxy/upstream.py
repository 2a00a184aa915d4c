# -*- test-case-name: tests.test_upstream -*-
"""The treq client for the upstream index: pages with conditional GETs, streamed files."""

import base64
from typing import Any, Callable
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import attrs
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, RedirectAgent, ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse

from pypicache.errors import NotFound, UpstreamError, UpstreamTimeout
from pypicache.index.model import ProjectPage
from pypicache.index.simple import UPSTREAM_ACCEPT, parse_page

log = Logger()

#: Largest project page we accept from upstream (the biggest real ones are a few MB).
MAX_PAGE_SIZE = 64 * 1024 * 1024


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """Return ``url`` without user info, and the ``(user, password)`` it carried."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc)), (
        unquote(parts.username),
        unquote(parts.password or ""),
    )


@attrs.frozen
class PageResponse:
    """What the upstream said about a project page.

    ``page`` is ``None`` when the upstream answered ``304 Not Modified``.
    """

    page: ProjectPage | None
    etag: str | None
    last_modified: str | None


def _header(response: IResponse, name: bytes) -> str | None:
    values = response.headers.getRawHeaders(name)
    return values[-1].decode("latin-1") if values else None


@attrs.define
class Upstream:
    """The upstream simple index.

    :ivar _pages: treq client for pages (treq asks for and decodes gzip).
    :ivar _files: agent for files, which does no content decoding: the bytes
        must arrive exactly as the index hashed them.
    """

    index_url: str
    _pages: HTTPClient
    _files: IAgent
    _clock: IReactorTime
    timeout: float = 30.0
    _credentials: tuple[str, str] | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        url, self._credentials = split_credentials(self.index_url)
        self.index_url = url.rstrip("/") + "/"

    def page_url(self, project: str) -> str:
        """The upstream URL of a project page."""
        return self.index_url + quote(project) + "/"

    def _headers(self, url: str, extra: dict[str, str]) -> dict[str, str]:
        headers = {"User-Agent": "pypicache", **extra}
        if (
            self._credentials
            and urlsplit(url).netloc == urlsplit(self.index_url).netloc
        ):
            token = base64.b64encode(":".join(self._credentials).encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        return headers

    async def _request(
        self, client: HTTPClient | IAgent, url: str, headers: dict[str, str]
    ) -> IResponse:
        """GET ``url`` and wait for its headers, mapping failures to our errors."""
        all_headers = self._headers(url, headers)
        if isinstance(client, HTTPClient):
            d = client.get(url, headers=all_headers, unbuffered=True)
        else:
            raw = Headers({k.encode(): [v.encode()] for k, v in all_headers.items()})
            d = client.request(b"GET", url.encode("utf-8"), raw)
        timed_out = []

        def expire() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self._clock.callLater(self.timeout, expire)
        try:
            return await d
        except Exception as e:
            if timed_out:
                raise UpstreamTimeout(
                    f"Upstream did not answer within {self.timeout:g}s: {mask_url(url)}"
                ) from e
            if isinstance(
                e,
                (ConnectError, DNSLookupError, ResponseFailed, OSError, CancelledError),
            ):
                raise UpstreamError(
                    f"Upstream unreachable: {mask_url(url)}: {e.__class__.__name__}"
                ) from e
            raise
        finally:
            if timer.active():
                timer.cancel()

    async def read_body(
        self,
        response: IResponse,
        limit: int,
        on_chunk: Callable[[bytes], Any] | None = None,
    ) -> bytes:
        """Read a response body, with an idle timeout reset on every chunk.

        With ``on_chunk`` the chunks go there and ``b""`` is returned; otherwise
        they are joined (up to ``limit`` bytes: pages, never package files).

        :raises UpstreamTimeout: no bytes for ``timeout`` seconds.
        :raises UpstreamError: the connection broke, or the body is too large.
        """
        chunks: list[bytes] = []
        if on_chunk is None:

            def on_chunk(chunk: bytes) -> None:
                chunks.append(chunk)
                if reader.size > limit:
                    raise UpstreamError(f"Upstream body larger than {limit} bytes")

        reader = _BodyReader(on_chunk, self._clock, self.timeout)
        response.deliverBody(reader)
        await reader.done
        return b"".join(chunks)

    async def fetch_page(
        self, project: str, etag: str | None = None, last_modified: str | None = None
    ) -> PageResponse:
        """Fetch a project page, conditionally if validators are given.

        :raises NotFound: the upstream has no such project.
        :raises UpstreamError: connection failure, 5xx, or an unreadable page.
        :raises UpstreamTimeout: no answer in time.
        """
        url = self.page_url(project)
        headers = {"Accept": UPSTREAM_ACCEPT}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        log.info("Fetching page {url}", url=mask_url(url))
        response = await self._request(self._pages, url, headers)
        if response.code == 304:
            response.deliverBody(_Discard())
            return PageResponse(None, etag, last_modified)
        if response.code == 404:
            response.deliverBody(_Discard())
            raise NotFound(f"No project {project!r} upstream")
        if response.code != 200:
            response.deliverBody(_Discard())
            raise UpstreamError(
                f"Upstream answered {response.code} for {mask_url(url)}"
            )
        body = await self.read_body(response, MAX_PAGE_SIZE)
        final_url = (
            response.request.absoluteURI.decode("utf-8") if response.request else url
        )
        try:
            page = parse_page(
                body,
                _header(response, b"content-type") or "text/html",
                final_url,
                project,
            )
        except (ValueError, KeyError, TypeError) as e:
            raise UpstreamError(
                f"Unreadable page from upstream for {project!r}: {e}"
            ) from e
        return PageResponse(
            page, _header(response, b"etag"), _header(response, b"last-modified")
        )

    async def open_file(self, url: str) -> IResponse:
        """Start fetching a file; the caller reads the body with :meth:`read_body`.

        :raises NotFound: the upstream answered 404.
        :raises UpstreamError: connection failure or another status.
        """
        log.info("Fetching file {url}", url=mask_url(url))
        response = await self._request(
            self._files, url, {"Accept-Encoding": "identity"}
        )
        if response.code == 200:
            return response
        response.deliverBody(_Discard())
        if response.code in (404, 410):
            raise NotFound(f"Upstream has no file at {mask_url(url)}")
        raise UpstreamError(f"Upstream answered {response.code} for {mask_url(url)}")


class _BodyReader(Protocol):
    """Hands each chunk of a body to a callback; aborts after ``timeout`` idle seconds."""

    def __init__(
        self, on_chunk: Callable[[bytes], Any], clock: IReactorTime, timeout: float
    ) -> None:
        self.on_chunk = on_chunk
        self.size = 0
        self.error: Exception | None = None
        self.done: Deferred[None] = Deferred()
        self.timeout = timeout
        self.timer = clock.callLater(timeout, self._expire)

    def _abort(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
            if self.transport is not None:
                self.transport.stopProducing()

    def _expire(self) -> None:
        self._abort(UpstreamTimeout(f"Upstream stalled for {self.timeout:g}s mid-body"))

    def dataReceived(self, data: bytes) -> None:
        if self.error is not None:
            return
        self.timer.reset(self.timeout)
        self.size += len(data)
        try:
            self.on_chunk(data)
        except Exception as e:
            self._abort(e)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.timer.active():
            self.timer.cancel()
        if self.error is not None:
            self.done.errback(self.error)
        elif reason.check(ResponseDone, PotentialDataLoss):
            # PotentialDataLoss: no Content-Length; hashes and sizes tell.
            self.done.callback(None)
        else:
            self.done.errback(
                UpstreamError(
                    f"Upstream connection broke mid-body ({self.size} bytes read)"
                )
            )


def _Discard() -> Protocol:
    """A body protocol that drops everything (to release unused responses)."""
    return Protocol()


def make_clients(reactor: Any, pool: Any) -> tuple[HTTPClient, IAgent]:
    """Return the page client and the file agent (redirects followed, no decoding)."""
    agent = Agent(reactor, pool=pool)
    return HTTPClient(agent), RedirectAgent(agent)
