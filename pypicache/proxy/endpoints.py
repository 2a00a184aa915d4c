"""The upstream agent's endpoints: one per origin, made once, reading large
chunks (:class:`Endpoints`)."""

from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.tcp import Connection
from twisted.web.client import URI, BrowserLikePolicyForHTTPS
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

#: Bytes read from an upstream connection at a time (Twisted's default is
#: 64 KiB): a large file arrives in a sixteenth of the reads, each of which
#: costs a trip through the HTTP client, the hash, the write and every waiter.
READ_SIZE = 1024 * 1024


@implementer(IStreamClientEndpoint)
class _LargeReads:
    """An endpoint whose TCP connections read :data:`READ_SIZE` bytes at a
    time, their factories quiet.

    The connection pool makes a factory per upstream connection, which
    Twisted logs as it starts and stops ("Starting factory ..."): two lines
    of the text log (formatted on the reactor, 0.1 to 0.5 ms each) for
    every connection a cold install's burst opens, saying nothing the
    "Fetching" lines do not."""

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def connect(self, factory: Any) -> Any:
        factory.noisy = False
        return self._endpoint.connect(factory).addCallback(_read_large)


def _read_large(protocol: Any) -> Any:
    """Give the TCP connection under ``protocol`` (under TLS, if any) large reads."""
    transport = getattr(protocol, "transport", None)
    for _ in range(3):
        if isinstance(transport, Connection):
            transport.bufferSize = READ_SIZE
            break
        transport = getattr(transport, "transport", None)
    return protocol


@implementer(IAgentEndpointFactory)
class Endpoints:
    """The agent's endpoints, one per scheme, host and port, made once.

    Twisted's agent makes a new endpoint per request (an IDNA check of the
    host name each time, a measurable part of a small page fetched upstream);
    an endpoint can connect any number of times, so one is kept per origin.
    Plain HTTP and HTTPS as the standard agent, or what ``inner`` makes (the
    outgoing proxy's tunnels, :mod:`pypicache.proxy.outbound`), with large reads.
    """

    def __init__(
        self, reactor: Any, inner: IAgentEndpointFactory | None = None
    ) -> None:
        self._reactor = reactor
        self._inner = inner
        self._tls = BrowserLikePolicyForHTTPS()
        self._made: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._made.get(key)
        if endpoint is None:
            endpoint = self._made[key] = self._make(uri)
        return endpoint

    def _make(self, uri: URI) -> IStreamClientEndpoint:
        if uri.scheme not in (b"http", b"https"):
            raise SchemeNotSupported(f"Unsupported scheme: {uri.scheme!r}")
        try:
            host = uri.host.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(
                f"The host of the URI ({uri.host!r}) is not ASCII"
            ) from None
        if self._inner is not None:
            return _LargeReads(self._inner.endpointForURI(uri))
        endpoint: IStreamClientEndpoint
        if isIPAddress(host):
            # An address needs no resolving: HostnameEndpoint would still
            # ask getaddrinfo in a thread for every connection.
            endpoint = TCP4ClientEndpoint(self._reactor, host, uri.port)
        elif isIPv6Address(host):
            endpoint = TCP6ClientEndpoint(self._reactor, host, uri.port)
        else:
            endpoint = HostnameEndpoint(self._reactor, host, uri.port)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(
                self._tls.creatorForNetloc(uri.host, uri.port), endpoint
            )
        return _LargeReads(endpoint)
