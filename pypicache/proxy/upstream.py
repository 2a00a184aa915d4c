# -*- test-case-name: tests.test_upstream -*-
"""The client of the upstream index: pages with conditional GETs, streamed files."""

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable
from urllib.parse import quote, unquote, urlsplit, urlunsplit
from weakref import WeakKeyDictionary

import attrs
from OpenSSL.SSL import Error as SSLError
from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.client import (
    Agent,
    RedirectAgent,
    ResponseFailed,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IResponse

from pypicache.concurrency import RunBlocking
from pypicache.errors import NotFound, UpstreamError, UpstreamTimeout
from pypicache.index.model import ProjectPage
from pypicache.index.simple import UPSTREAM_ACCEPT
from pypicache.proxy.bodies import BodyReader, discard, read_page, read_small_page
from pypicache.proxy.endpoints import Endpoints
from pypicache.proxy.outbound import ProxyError

log = Logger()

#: Largest project page we accept from upstream, decompressed (the biggest
#: real ones are a few MB).
MAX_PAGE_SIZE = 32 * 1024 * 1024


#: Statuses whose body the caller reads: their outcome is counted once the
#: body is read or fails (:meth:`Upstream.read_body`), or dropped
#: (:meth:`Upstream.drop_body`), not when the headers arrive.
READ_STATUSES = frozenset((200, 206))

#: Each response of :data:`READ_STATUSES` not counted yet, with its status and
#: the callback to tell. Any upstream's: a named upstream's file response
#: may be read by the default one's ``read_body`` (``FileClient``).
_uncounted: (
    "WeakKeyDictionary[IResponse, tuple[int, Callable[[int | None, bool], None]]]"
) = WeakKeyDictionary()


@contextmanager
def counted_outcome(response: IResponse) -> Iterator[None]:
    """Count ``response``'s outcome, if not counted yet, by how the block
    ends: its status, or a timeout or an error (the outer block wins: a page
    counts once parsed)."""
    pending = _uncounted.pop(response, None)
    try:
        yield
    except BaseException as e:
        if pending is not None:
            pending[1](None, isinstance(e, UpstreamTimeout))
        raise
    if pending is not None:
        pending[1](pending[0], False)


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

    :ivar _agent: agent for pages and files, which does no content decoding:
        file bytes must arrive exactly as the index hashed them.
    :ivar timeout: seconds to wait for headers, or for the next bytes of a body.
    :ivar page_deadline: seconds a page may take in all.
    :ivar min_rate: bytes per second a body must average over each ``timeout``.
    :ivar max_page_size: largest page accepted, decompressed.
    :ivar _run_blocking: where pages are decoded and parsed (a thread), but
        for small ones (:data:`~pypicache.proxy.bodies.SMALL_PAGE`).
    :ivar on_answer: told of each request's final outcome, once: a status
        (``200`` or ``206`` once the body is read whole; others when the
        headers arrive), or ``None`` for a failure (with whether it timed
        out), before the headers or while the body was read.
    """

    index_url: str
    _agent: IAgent
    _clock: IReactorTime
    timeout: float = 30.0
    page_deadline: float = 120.0
    min_rate: float = 8 * 1024
    max_page_size: int = MAX_PAGE_SIZE
    _run_blocking: RunBlocking | None = None
    _credentials: tuple[str, str] | None = attrs.field(init=False, default=None)
    #: Told of each answer's final outcome (see above), for the metrics.
    on_answer: Callable[[int | None, bool], None] | None = attrs.field(
        default=None, kw_only=True
    )

    def __attrs_post_init__(self) -> None:
        url, self._credentials = split_credentials(self.index_url)
        self.index_url = url.rstrip("/") + "/"

    def use_credentials(self, index_url: str) -> bool:
        """Take the credentials of ``index_url`` (none, if it has none), if it
        is this index's URL.

        :returns: whether it was (else nothing changed).
        """
        url, credentials = split_credentials(index_url)
        if url.rstrip("/") + "/" != self.index_url:
            return False
        self._credentials = credentials
        return True

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
        self, url: str, headers: dict[str, str], timeout: float | None = None
    ) -> IResponse:
        """GET ``url`` and wait for its headers (``timeout``, by default
        :attr:`timeout`), mapping every failure to our errors.

        File URLs come from upstream pages and the agent follows the upstream's
        redirects, so a malformed URL, a scheme the agent does not speak, or a
        redirect without a ``Location`` or in a loop are upstream errors too.
        """
        all_headers = self._headers(url, headers)
        raw = Headers({k.encode(): [v.encode()] for k, v in all_headers.items()})
        try:
            d = self._agent.request(b"GET", url.encode("utf-8"), raw)
        except Exception as e:
            raise UpstreamError(
                f"Cannot ask upstream for {mask_url(url)}: {e.__class__.__name__}"
            ) from e
        timed_out = []

        def expire() -> None:
            timed_out.append(True)
            d.cancel()

        wait = self.timeout if timeout is None else timeout
        timer = self._clock.callLater(wait, expire)
        try:
            response: IResponse = await d
        except Exception as e:
            if self.on_answer is not None:
                self.on_answer(None, bool(timed_out))
            if timed_out:
                raise UpstreamTimeout(
                    f"Upstream did not answer within {wait:g}s: {mask_url(url)}"
                ) from e
            if isinstance(
                e,
                (ConnectError, DNSLookupError, ResponseFailed, OSError, CancelledError),
            ):
                raise UpstreamError(
                    f"Upstream unreachable: {mask_url(url)}: {_why(e)}"
                ) from e
            raise UpstreamError(
                f"Upstream request failed: {mask_url(url)}: {e.__class__.__name__}: "
                f"{str(e)[:200]}"
            ) from e
        finally:
            if timer.active():
                timer.cancel()
        if self.on_answer is not None:
            if response.code in READ_STATUSES:
                _uncounted[response] = (response.code, self.on_answer)
            else:
                self.on_answer(response.code, False)
        return response

    def drop_body(self, response: IResponse, protocol: Any) -> None:
        """Deliver a body the caller does not want to ``protocol`` (``discard()``,
        ``abort()``), counting an uncounted answer by its status."""
        pending = _uncounted.pop(response, None)
        if pending is not None:
            pending[1](pending[0], False)
        response.deliverBody(protocol)

    async def read_body(
        self,
        response: IResponse,
        limit: int,
        on_chunk: Callable[[bytes], Any] | None = None,
        deadline: float | None = None,
        attach: Callable[[BodyReader], Any] | None = None,
    ) -> bytes:
        """Read a response body within the time limits of :class:`BodyReader`.

        With ``on_chunk`` the chunks go there and ``b""`` is returned; otherwise
        they are joined (up to ``limit`` bytes: pages, never package files).

        :param deadline: seconds the whole body may take; by default
            ``timeout`` plus the time ``min_rate`` allows for the announced
            length.
        :param attach: called with the reader before it reads (to pause it).
        :raises UpstreamTimeout: no bytes for ``timeout`` seconds, too slow, or
            past the deadline.
        :raises UpstreamError: the connection broke, or the body is too large.
        """
        chunks: list[bytes] = []
        if on_chunk is None:

            def on_chunk(chunk: bytes) -> None:
                chunks.append(chunk)
                if reader.size > limit:
                    raise UpstreamError(f"Upstream body larger than {limit} bytes")

        length = response.length if isinstance(response.length, int) else None
        if deadline is None and length is not None and self.min_rate > 0:
            deadline = self.timeout + length / self.min_rate
        reader = BodyReader(
            on_chunk, self._clock, self.timeout, deadline, self.min_rate
        )
        if attach is not None:
            attach(reader)
        with counted_outcome(response):
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
        headers = {"Accept": UPSTREAM_ACCEPT, "Accept-Encoding": "gzip"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        log.info("Fetching page {url}", url=mask_url(url))
        started = self._clock.seconds()
        # The page's deadline covers the wait for its headers too.
        response = await self._request(
            url, headers, min(self.timeout, self.page_deadline)
        )
        if response.code == 304:
            response.deliverBody(discard())
            return PageResponse(None, etag, last_modified)
        if response.code == 404:
            response.deliverBody(discard())
            raise NotFound(f"No project {project!r} upstream")
        if response.code != 200:
            response.deliverBody(discard())
            raise UpstreamError(
                f"Upstream answered {response.code} for {mask_url(url)}"
            )
        with counted_outcome(response):  # a page that cannot be read is an error
            left = max(0.0, self.page_deadline - (self._clock.seconds() - started))
            body = await self.read_body(response, self.max_page_size, deadline=left)
            final_url = (
                response.request.absoluteURI.decode("utf-8")
                if response.request
                else url
            )
            arguments = (
                body,
                _header(response, b"content-encoding"),
                _header(response, b"content-type") or "text/html",
                final_url,
                project,
                self.max_page_size,
            )
            if self._run_blocking is None:
                page = read_page(*arguments)
            else:
                page = read_small_page(*arguments)
                if page is None:
                    page = await self._run_blocking(read_page, *arguments)
        return PageResponse(
            page, _header(response, b"etag"), _header(response, b"last-modified")
        )

    async def open_file(self, url: str) -> IResponse:
        """Start fetching a file; the caller reads the body with :meth:`read_body`.

        :raises NotFound: the upstream answered 404.
        :raises UpstreamError: connection failure or another status.
        """
        log.info("Fetching file {url}", url=mask_url(url))
        return await self._open(url, {}, (200,))

    async def open_range(self, url: str, spec: str) -> IResponse:
        """Start fetching the bytes ``spec`` (``"10-19"``, ``"-100"``) of a file.

        The answer is a ``206``, or a ``200`` (the whole file: the upstream
        ignores ``Range``) or a ``416``; the caller reads or drops its body.

        :raises NotFound: the upstream answered 404.
        :raises UpstreamError: connection failure or another status.
        """
        log.debug("Fetching bytes {spec} of {url}", spec=spec, url=mask_url(url))
        return await self._open(url, {"Range": f"bytes={spec}"}, (200, 206, 416))

    async def _open(
        self, url: str, headers: dict[str, str], wanted: tuple[int, ...]
    ) -> IResponse:
        response = await self._request(url, {"Accept-Encoding": "identity", **headers})
        if response.code in wanted:
            return response
        response.deliverBody(discard())
        if response.code in (404, 410):
            raise NotFound(f"Upstream has no file at {mask_url(url)}")
        raise UpstreamError(f"Upstream answered {response.code} for {mask_url(url)}")


def _why(e: Exception) -> str:
    """What went wrong: the proxy's own words, or the first reason a response
    failed (a TLS failure shows there), or the error's kind."""
    if isinstance(e, ProxyError):
        return str(e)
    if isinstance(e, ResponseFailed) and e.reasons:
        reason = e.reasons[0].value
        if isinstance(reason, SSLError):
            return f"TLS failed: {str(reason)[:200]}"
    return e.__class__.__name__


def make_agent(
    reactor: Any, pool: Any, endpoints: IAgentEndpointFactory | None = None
) -> IAgent:
    """The agent for pages and files: redirects followed, no content decoding,
    endpoints made once per origin (:class:`Endpoints`), by ``endpoints`` if
    given (the outgoing proxy's).

    File bytes must arrive exactly as the index hashed them; pages are
    gunzipped by :func:`~pypicache.proxy.bodies.read_page`, with a size limit.

    :param endpoints: how to reach each upstream URI (proxies, trust root:
        :class:`~pypicache.proxy.outbound.OutboundEndpoints`); by default,
        directly with the system's trust.
    """
    return RedirectAgent(
        Agent.usingEndpointFactory(reactor, Endpoints(reactor, endpoints), pool)
    )
