# -*- test-case-name: tests.test_outbound -*-
"""How upstream connections leave the building: directly, or through an HTTP
proxy with ``CONNECT``; TLS to the upstream with a chosen trust root.

:class:`OutboundEndpoints` is the agent's endpoint factory
(``Agent.usingEndpointFactory``): per upstream URI, a direct endpoint or a
:class:`TunnelEndpoint`. Both ``https`` and ``http`` upstreams are tunnelled
(the proxy must allow ``CONNECT`` to their ports); TLS then runs inside the
tunnel, to the upstream host, with SNI and its certificate verified.
"""

import base64
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import proxy_bypass_environment

import attrs
from OpenSSL import crypto
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.logger import Logger
from twisted.web.client import BrowserLikePolicyForHTTPS, HostnameCachingHTTPSPolicy
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

log = Logger()

#: Largest answer head a proxy may send to ``CONNECT``.
MAX_PROXY_HEAD = 64 * 1024

_PEM = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


class ProxyError(ConnectError):
    """The proxy could not be reached, or would not open the tunnel."""

    def __str__(self) -> str:
        return str(self.args[0])


@attrs.frozen
class Proxy:
    """An HTTP proxy: where it is, and the ``Proxy-Authorization`` it needs."""

    host: str
    port: int
    authorization: bytes | None
    label: str  # for messages: the URL with its password masked

    @classmethod
    def from_url(cls, url: str) -> "Proxy":
        """Parse ``http://[user:password@]host[:port]`` (``host:port`` alone
        means ``http``); the port defaults to 80.

        :raises ValueError: another scheme, or no host.
        """
        if "://" not in url:
            url = "http://" + url
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"a proxy must be an http://host:port URL, not {url!r}")
        authorization = None
        label = f"http://{parts.hostname}:{parts.port or 80}"
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = b"Basic " + base64.b64encode(pair.encode())
            label = f"http://{parts.username}:***@{label[7:]}"
        return cls(parts.hostname, parts.port or 80, authorization, label)


def proxy_settings(option: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The proxies for upstream traffic: ``{"http": URL, "https": URL, "no": ...}``.

    ``option`` is ``--upstream-proxy``: ``None`` takes ``HTTPS_PROXY``,
    ``HTTP_PROXY`` and ``NO_PROXY`` from ``environ`` (lower-case names win,
    as with :func:`urllib.request.getproxies`); a URL is the proxy of both
    schemes, ``NO_PROXY`` still applying; ``none`` is no proxy at all.

    :raises ValueError: a proxy URL that is not ``http://``.
    """
    found: dict[str, str] = {}
    # Other names first, then the lower-case ones over them.
    for name in sorted(environ, key=lambda name: name == name.lower()):
        key = name.lower()
        if key in ("http_proxy", "https_proxy", "no_proxy") and environ[name]:
            found[key.removesuffix("_proxy")] = environ[name]
    if option is not None and option.lower() == "none":
        return {}
    if option is not None:
        found.update(http=option, https=option)
    for scheme in ("http", "https"):
        if scheme in found:
            Proxy.from_url(found[scheme])
    return found


def read_ca_bundle(path: str) -> Any:
    """The trust root of the PEM certificates in ``path``.

    :raises ValueError: no certificate, or one that does not parse.
    :raises OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        blocks = _PEM.findall(f.read())
    if not blocks:
        raise ValueError(f"no PEM certificate in {path!r}")
    try:
        return trustRootFromCertificates([Certificate.loadPEM(b) for b in blocks])
    except crypto.Error as e:
        raise ValueError(f"bad certificate in {path!r}: {e}") from e


class _Tunnel(Protocol):
    """Asks the proxy for a tunnel, then hands the connection (TLS started, if
    asked) to the protocol the agent wanted."""

    def __init__(self, request: bytes, tls: Any, factory: Factory, what: str) -> None:
        self._request = request
        self._tls = tls
        self._factory = factory
        self._what = what
        self._head = b""
        self._inner: Protocol | None = None
        self.ready: Deferred[Protocol] = Deferred(lambda d: self._abort())

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionMade(self) -> None:
        self.transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.dataReceived(data)
            return
        self._head += data
        match = re.search(rb"\r?\n\r?\n", self._head)
        if match is None:
            if len(self._head) > MAX_PROXY_HEAD:
                self._fail("sent an overlong answer to")
            return
        head, rest = self._head[: match.start()], self._head[match.end() :]
        status = head.split(b"\n", 1)[0].strip().split(b" ", 2)
        if len(status) < 2 or not status[0].startswith(b"HTTP/"):
            self._fail("sent no HTTP answer to")
            return
        if not status[1].startswith(b"2"):
            answer = b" ".join(status[1:]).decode("latin-1")[:100]
            self._fail(f"answered {answer} to")
            return
        if self._tls is not None:
            if rest:
                self._fail("sent bytes before TLS after")
                return
            self.transport.startTLS(self._tls)
        self._inner = self._factory.buildProtocol(self.transport.getPeer())
        self._inner.makeConnection(self.transport)
        if rest:
            self._inner.dataReceived(rest)
        self.ready.callback(self._inner)

    def _fail(self, how: str) -> None:
        self._abort()
        if not self.ready.called:
            self.ready.errback(ProxyError(string=f"the proxy {how} {self._what}"))

    def connectionLost(self, reason: Any = None) -> None:
        if self._inner is not None:
            self._inner.connectionLost(reason)
        elif not self.ready.called:
            self.ready.errback(
                ProxyError(
                    string=f"the proxy closed the connection during {self._what}"
                )
            )


@implementer(IStreamClientEndpoint)
@attrs.frozen
class TunnelEndpoint:
    """Connects to ``host:port`` through ``proxy`` with ``CONNECT``, then
    starts TLS with ``tls`` (a client connection creator), if given."""

    reactor: Any
    proxy: Proxy
    host: str
    port: int
    tls: Any = None

    def connect(self, factory: Factory) -> "Deferred[Protocol]":
        return Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory: Factory) -> Protocol:
        target = f"{self.host}:{self.port}"
        if ":" in self.host:
            target = f"[{self.host}]:{self.port}"
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
        request = "\r\n".join(lines).encode("ascii") + b"\r\n"
        if self.proxy.authorization is not None:
            request += b"Proxy-Authorization: " + self.proxy.authorization + b"\r\n"
        what = f"CONNECT {target} (proxy {self.proxy.label})"
        tunnel = _Tunnel(request + b"\r\n", self.tls, factory, what)
        endpoint = HostnameEndpoint(self.reactor, self.proxy.host, self.proxy.port)
        try:
            await endpoint.connect(Factory.forProtocol(lambda: tunnel))
        except ConnectError as e:
            raise ProxyError(
                string=f"cannot reach the proxy {self.proxy.label}: "
                f"{e.__class__.__name__}"
            ) from e
        return await tunnel.ready


@implementer(IAgentEndpointFactory)
class OutboundEndpoints:
    """The endpoint of each upstream URI: through the proxy of its scheme
    (unless ``NO_PROXY`` names the host) or direct; ``https`` ones verified
    against ``trust_root`` (``None``: the system's trust)."""

    def __init__(
        self, reactor: Any, proxies: Mapping[str, str], trust_root: Any = None
    ) -> None:
        self._reactor = reactor
        self._proxies = dict(proxies)
        self._parsed = {
            scheme: Proxy.from_url(url)
            for scheme, url in proxies.items()
            if scheme in ("http", "https")
        }
        self._tls = HostnameCachingHTTPSPolicy(BrowserLikePolicyForHTTPS(trust_root))

    def proxy_for(self, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy that ``scheme://host:port`` goes through, if any."""
        proxy = self._parsed.get(scheme)
        if proxy is None or proxy_bypass_environment(f"{host}:{port}", self._proxies):
            return None
        return proxy

    def describe(self) -> str:
        """The proxies, passwords masked, for the log."""
        if not self._parsed:
            return "direct"
        parts = [f"{s} via {p.label}" for s, p in sorted(self._parsed.items())]
        if self._proxies.get("no"):
            parts.append(f"not for {self._proxies['no']}")
        return ", ".join(parts)

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        scheme = uri.scheme.decode("ascii")
        host = uri.host.decode("ascii")
        tls = None
        if scheme == "https":
            tls = self._tls.creatorForNetloc(uri.host, uri.port)
        proxy = self.proxy_for(scheme, host, uri.port)
        if proxy is not None:
            return TunnelEndpoint(self._reactor, proxy, host, uri.port, tls)
        endpoint = HostnameEndpoint(self._reactor, uri.host, uri.port)
        return endpoint if tls is None else wrapClientTLS(tls, endpoint)
