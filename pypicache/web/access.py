# -*- test-case-name: tests.test_auth -*-
"""Who may read and write: client networks, proxy headers, Basic credentials, loopback-only uploads."""

import base64
import binascii
import ipaddress
import re
from typing import Iterable, Sequence

import attrs
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from pypicache.errors import Forbidden, Unauthorized
from pypicache.web.attempts import FailedLogins
from pypicache.web.htpasswd import as_bytes, printable
from pypicache.web.tokens import TOKEN_USER, Identity, TokenChecker

log = Logger()

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Headers by which a proxy says whom it forwards for: a request carrying any
#: of them came through a proxy, whatever its peer address.
_PROXY_HEADERS = (
    b"x-forwarded-for",
    b"forwarded",
    b"x-real-ip",
    b"true-client-ip",
    b"x-client-ip",
    b"client-ip",
    b"x-cluster-client-ip",
    b"cf-connecting-ip",
    b"fastly-client-ip",
)

NO_USERS_HELP = (
    "configure users with --auth-file FILE, an htpasswd file made with "
    "'htpasswd -B' (for example: htpasswd -B -C 12 -c FILE alice)"
)


def _as_tuple(networks: Iterable[IPNetwork]) -> tuple[IPNetwork, ...]:
    # Not ``converter=tuple``: attrs reads a builtin's signature by tokenizing
    # its text, which costs the daemon's start-up 15 ms.
    return tuple(networks)


def parse_basic(header: bytes | None) -> tuple[bytes, bytes] | None:
    """Parse an ``Authorization: Basic`` header value.

    :returns: ``(user, password)``, or ``None`` for a missing header, another
        scheme, bad base64 or a decoded value without a colon.
    """
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return user, password


def parse_cidr(text: str) -> IPNetwork:
    """Parse an ``--allow-from`` value: a network in CIDR notation, or one address.

    :raises ValueError: with a message saying what was expected.
    """
    value = text.strip()
    if value.startswith("[") and "]" in value:
        address, _, rest = value[1:].partition("]")
        value = address + rest
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        if "host bits set" in str(e):
            network = ipaddress.ip_network(value, strict=False)
            raise ValueError(
                f"{text!r} has host bits set; did you mean {network}?"
            ) from None
        raise ValueError(
            f"{text!r} is not an IP address or network (examples: 192.168.1.7, 10.0.0.0/8, fd00::/8)"
        ) from None


def as_ip(text: str) -> IPAddress | None:
    """An address as ``ipaddress`` sees it (IPv4-mapped IPv6 as IPv4), or ``None``."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _strip_port(node: str) -> str:
    """``[v6]:port``, ``[v6]``, ``v4:port`` → the address; anything else as given."""
    node = node.strip()
    if node.startswith("["):
        end = node.find("]")
        return node[1:end] if end > 0 else node
    if node.count(":") == 1:
        return node.partition(":")[0]
    return node


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """Split a ``Forwarded`` header (RFC 7239) into its elements' parameters.

    :returns: one ``{name: value}`` per comma-separated element, names lowercased,
        quoted values unquoted.
    """
    elements = []
    for element in _split_outside_quotes(value, ","):
        pairs: dict[str, str] = {}
        for pair in _split_outside_quotes(element, ";"):
            name, equals, raw = pair.partition("=")
            if equals and name.strip():
                pairs.setdefault(name.strip().lower(), _unquote(raw))
        elements.append(pairs)
    return elements


def _header_list(request: IRequest, name: bytes) -> str:
    values = request.requestHeaders.getRawHeaders(name, [])
    return ",".join(v.decode("latin-1") if isinstance(v, bytes) else v for v in values)


def forwarded_for(request: IRequest) -> str | None:
    """The client address a reverse proxy reported, if it reported one.

    ``X-Forwarded-For`` wins over ``Forwarded``. The last (right-most) entry is
    taken: it is the one our proxy wrote, while entries left of it came from the
    client and can be forged. Ports and IPv6 brackets are removed.

    :returns: the address as text, or ``None`` without such headers.
    """
    entries = [
        e.strip()
        for e in _header_list(request, b"x-forwarded-for").split(",")
        if e.strip()
    ]
    if entries:
        return _strip_port(entries[-1])
    forwarded = _header_list(request, b"forwarded")
    if forwarded.strip():
        node = parse_forwarded(forwarded)[-1].get("for")
        if node:
            return _strip_port(node)
    return None


def _peer(request: IRequest) -> str:
    return str(getattr(request.getClientAddress(), "host", "") or "")


@attrs.define
class AccessPolicy:
    """Who may read and who may write (changed in place when the configuration is reloaded).

    :ivar checker: the users (an ``Htpasswd``), or ``None``: then reads are open
        and writes come only from this machine, not through a proxy.
    :ivar read_auth: whether reads need a user too (only with a checker).
    :ivar allow_from: the networks clients must come from; empty: anywhere.
    :ivar trust_proxy: whether to believe ``X-Forwarded-For``/``Forwarded`` for
        ``allow_from`` and ``failed_logins`` (never for the loopback rule).
    :ivar failed_logins: the failed logins per client address, or ``None`` for
        no limit; an address past its limit gets ``429`` before any password check.
    :ivar tokens: the access tokens (user ``__token__``), accepted where users
        are (with a ``checker``).
    """

    checker: ICredentialsChecker | None = None
    read_auth: bool = False
    allow_from: Sequence[IPNetwork] = attrs.field(default=(), converter=_as_tuple)
    trust_proxy: bool = False
    failed_logins: FailedLogins | None = None
    tokens: TokenChecker | None = None

    def client_address(self, request: IRequest) -> str:
        """The client's IP address: the peer's, or with ``trust_proxy`` the proxy's report.

        :returns: the address as text (``""`` for a peer without an IP address).
        """
        if self.trust_proxy:
            forwarded = forwarded_for(request)
            if forwarded is not None:
                return forwarded
        return _peer(request)

    def check_address(self, request: IRequest) -> None:
        """Refuse clients outside ``allow_from``.

        :raises Forbidden: if ``allow_from`` is set and the client is not in it.
        """
        if not self.allow_from:
            return
        address = self.client_address(request)
        ip = as_ip(address)
        if ip is None or not any(ip in network for network in self.allow_from):
            shown = address[:60] or "this client"
            raise Forbidden(f"{shown} is not allowed to use this server")

    @property
    def reads_need_credentials(self) -> bool:
        """Whether reads need a user (``--read-auth`` with users configured)."""
        return self.checker is not None and self.read_auth

    async def check(self, request: IRequest, write: bool) -> Identity | None:
        """Decide whether a request may go on.

        :param write: ``True`` for uploads and deletions, ``False`` for reads.
        :returns: who is asking (a user, and the token used if any), or
            ``None`` when no credentials were needed. A route that changes a
            project then asks :meth:`Identity.check_change`.
        :raises Forbidden: for a client outside ``allow_from``, or a write without
            configured users that is not from loopback or comes through a proxy.
        :raises Unauthorized: for missing or wrong credentials where they are needed.
        :raises TooManyRequests: for credentials from an address that has failed
            too often lately (no password is checked then).
        """
        self.check_address(request)
        if self.checker is None:
            if write:
                self._check_local_write(request)
            return None
        if not (write or self.read_auth):
            return None
        credentials = parse_basic(request.getHeader(b"authorization"))
        if credentials is None:
            action = "Uploading" if write else "Reading"
            raise Unauthorized(
                f"{action} needs a user name and password (HTTP Basic authentication)"
            )
        address = self.client_address(request)
        if self.failed_logins is not None:
            self.failed_logins.check(address)
        try:
            if credentials[0] == TOKEN_USER and self.tokens is not None:
                waiting = self.tokens.ready()
                if waiting is not None:
                    await waiting
                record = self.tokens.check(credentials[1])
                identity = Identity(record.user, record)
            else:
                avatar = await self.checker.requestAvatarId(
                    UsernamePassword(*credentials)
                )
                identity = Identity(printable(as_bytes(avatar)))
        except UnauthorizedLogin as e:
            if self.failed_logins is not None:
                self.failed_logins.failed(address)
            if credentials[0] == TOKEN_USER:
                raise Unauthorized(f"Bad token: {e.args[0] if e.args else e}") from None
            raise Unauthorized("Unknown user or wrong password") from None
        if write and request.method not in (b"GET", b"HEAD"):
            # A change (not a read that needs credentials: /metrics).
            log.info(
                "{method} {path} by {identity}",
                method=request.method.decode("ascii", "replace"),
                path=request.uri.decode("ascii", "replace")[:200],
                identity=str(identity),
            )
        return identity

    async def check_change(
        self, request: IRequest, project: str | None
    ) -> Identity | None:
        """:meth:`check` a write that changes ``project`` (``None``: no one
        project), and that the token used, if any, may make it.

        :raises Forbidden: a read-only token, or one scoped to other projects.
        """
        identity = await self.check(request, write=True)
        if identity is not None:
            identity.check_change(project)
        return identity

    def _check_local_write(self, request: IRequest) -> None:
        ip = as_ip(_peer(request))
        if ip is None or not ip.is_loopback:
            raise Forbidden(
                f"Uploads are only accepted from this machine until users are set up: {NO_USERS_HELP}"
            )
        if any(request.requestHeaders.hasHeader(h) for h in _PROXY_HEADERS):
            raise Forbidden(
                f"Uploads through a proxy (X-Forwarded-For or Forwarded present) need users: {NO_USERS_HELP}"
            )
