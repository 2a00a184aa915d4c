"""For tests of the way out: a certificate authority and a TLS fake index made
here, and a small CONNECT proxy with optional Basic auth and a request log."""

import base64
import datetime
import ipaddress
import re
from pathlib import Path
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.endpoints import (
    HostnameEndpoint,
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import PrivateCertificate

from tests.fakeindex import FakeIndex, RunningIndex, _QuietSite

_PEM = serialization.Encoding.PEM


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@attrs.frozen
class Authority:
    """A certificate authority made for one test, and a server certificate it
    signed for ``localhost`` and ``127.0.0.1``."""

    ca_pem: bytes
    server_pem: bytes  # key and certificate

    def write_ca(self, path: Path) -> Path:
        path.write_bytes(self.ca_pem)
        return path


def make_authority(name: str = "pypicache test CA") -> Authority:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Authority(ca.public_bytes(_PEM), key_pem + server.public_bytes(_PEM))


async def start_tls_index(index: FakeIndex, authority: Authority) -> RunningIndex:
    """Serve ``index`` over TLS on 127.0.0.1, as ``https://localhost:PORT/``
    (pages in ``html`` mode link files relatively, so they stay on TLS)."""
    if index.clock is None:
        index.clock = reactor
    site = _QuietSite(index)
    options = PrivateCertificate.loadPEM(authority.server_pem).options()
    listening = await SSL4ServerEndpoint(
        reactor, 0, options, interface="127.0.0.1"
    ).listen(site)
    port = listening.getHost().port
    root = f"https://localhost:{port}/"
    return RunningIndex(index, root + "simple/", root, port, listening, site)


class _Splice(Protocol):
    def __init__(self, other: Protocol) -> None:
        self.other = other

    def connectionMade(self) -> None:
        self.other.connected_to(self)

    def dataReceived(self, data: bytes) -> None:
        self.other.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.other.transport.loseConnection()


class _ProxyConnection(Protocol):
    def __init__(self, proxy: "ConnectProxy") -> None:
        self.proxy = proxy
        self.head = b""
        self.peer: Protocol | None = None

    def connectionMade(self) -> None:
        self.proxy.open.add(self)

    def dataReceived(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.transport.write(data)
            return
        self.head += data
        if b"\r\n\r\n" not in self.head:
            return
        head, rest = self.head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = dict(line.split(": ", 1) for line in lines[1:])
        self.proxy.log.append((method, target, headers.get("Proxy-Authorization")))
        if self.proxy.refuse is not None:
            return self._answer(f"{self.proxy.refuse} Refused by the test")
        if method != "CONNECT":
            return self._answer("405 Only CONNECT")
        if self.proxy.credentials is not None:
            wanted = (
                "Basic " + base64.b64encode(self.proxy.credentials.encode()).decode()
            )
            if headers.get("Proxy-Authorization") != wanted:
                return self._answer("407 Proxy Authentication Required")
        self.transport.pauseProducing()
        self._rest = rest
        host, port = re.fullmatch(r"\[?(.*?)\]?:(\d+)", target).groups()
        d = HostnameEndpoint(reactor, host, int(port)).connect(
            Factory.forProtocol(lambda: _Splice(self))
        )
        d.addErrback(lambda _: self._answer("502 Cannot connect"))

    def connected_to(self, peer: Protocol) -> None:
        self.peer = peer
        self.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if self._rest:
            peer.transport.write(self._rest)
        self.transport.resumeProducing()

    def _answer(self, status: str) -> None:
        self.transport.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.proxy.open.discard(self)
        if self.peer is not None:
            self.peer.transport.loseConnection()


@attrs.define
class ConnectProxy:
    """A CONNECT-only proxy on 127.0.0.1.

    :ivar log: ``(method, target, Proxy-Authorization)`` of each request.
    :ivar credentials: ``"user:password"`` it wants (``None``: anyone).
    :ivar refuse: a status it answers to everything (``None``: it serves).
    """

    credentials: str | None = None
    refuse: int | None = None
    log: list[tuple[str, str, str | None]] = attrs.field(factory=list)
    port: Any = None
    open: set[Any] = attrs.field(factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}"

    def connects(self) -> list[str]:
        """The targets of every CONNECT it was asked for."""
        return [target for method, target, _ in self.log if method == "CONNECT"]

    async def start(self) -> "ConnectProxy":
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        self.port = await endpoint.listen(
            Factory.forProtocol(lambda: _ProxyConnection(self))
        )
        return self

    async def stop(self) -> None:
        """Stop listening and cut every tunnel."""
        if self.port is not None and self.port.connected:
            await self.port.stopListening()
        for connection in list(self.open):
            connection.transport.abortConnection()
