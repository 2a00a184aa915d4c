# -*- test-case-name: tests.test_auth -*-
"""Who may read and write: htpasswd users, client networks, loopback-only uploads."""

import base64
import binascii
import ipaddress
import os
import re
from hashlib import sha256
from typing import Any, Callable, Iterable, Sequence

import attrs
import bcrypt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.web.iweb import IRequest
from zope.interface import implementer

from .errors import Forbidden, Unauthorized

log = Logger()

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: How long a verified (user, password) pair is trusted without running bcrypt again.
CACHE_SECONDS = 60.0
#: How often, at most, the htpasswd file is checked for changes.
RELOAD_SECONDS = 1.0
#: bcrypt only looks at this many bytes of a password (bcrypt 5 raises past it;
#: Apache's ``htpasswd -B`` and its verifier truncate, so we truncate too).
BCRYPT_MAX_PASSWORD = 72

_BCRYPT_HASH = re.compile(rb"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}")
_PROXY_HEADERS = (b"x-forwarded-for", b"forwarded", b"x-real-ip")

NO_USERS_HELP = (
    "configure users with --auth-file FILE, an htpasswd file made with "
    "'htpasswd -B' (for example: htpasswd -B -c FILE alice)"
)


def _printable(name: bytes) -> str:
    """A user name as text for the log (never a hash or a password)."""
    return name.decode("utf-8", "backslashreplace")


def read_htpasswd_lines(
    lines: Iterable[bytes], source: str = "htpasswd"
) -> dict[bytes, bytes]:
    """Parse htpasswd lines into user names and their bcrypt hashes.

    Blank lines and ``#`` comments are skipped. Entries with another hash scheme,
    malformed lines and repeated users are skipped with a warning that names the
    user (or the line number), never the hash.

    :param lines: the file's lines, as bytes.
    :param source: what to call the file in warnings.
    :returns: ``{user: hash}``; ``$2y$``, ``$2b$`` and ``$2a$`` hashes as written.
    """
    users: dict[bytes, bytes] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        user, colon, hashed = line.partition(b":")
        if not colon or not user:
            log.warn(
                "Skipping line {line} of {source}: not 'user:hash'",
                line=number,
                source=source,
            )
            continue
        if not _BCRYPT_HASH.fullmatch(hashed.strip()):
            log.warn(
                "Skipping user {user} in {source}: not a bcrypt hash (create entries with htpasswd -B)",
                user=_printable(user),
                source=source,
            )
            continue
        if user in users:
            log.warn(
                "Skipping repeated user {user} in {source}: the first entry counts",
                user=_printable(user),
                source=source,
            )
            continue
        users[user] = hashed.strip()
    return users


def checkpw(password: bytes, hashed: bytes) -> bool:
    """``bcrypt.checkpw`` as Apache does it: passwords past 72 bytes are truncated.

    :returns: whether ``password`` matches ``hashed``; ``False`` for passwords
        bcrypt refuses (such as ones holding NUL bytes).
    """
    try:
        return bool(bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed))
    except ValueError:
        return False


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _to_filepath(path: "str | FilePath[Any]") -> "FilePath[Any]":
    return path if isinstance(path, FilePath) else FilePath(os.path.abspath(path))


@implementer(ICredentialsChecker)
@attrs.define
class Htpasswd:
    """Check user names and passwords against an htpasswd file of bcrypt entries.

    The file is read at once (so a missing file fails at startup), then re-read
    whenever its modification time, size or inode change, looked at no more than
    once every ``RELOAD_SECONDS``. A verified (user, sha256(password)) pair is
    trusted for ``cache_seconds`` so that clients sending credentials on every
    request don't each cost a bcrypt run; re-reading the file forgets them all.

    :ivar credentialInterfaces: ``IUsernamePassword`` only.
    """

    credentialInterfaces = (IUsernamePassword,)

    _path: "FilePath[Any]" = attrs.field(converter=_to_filepath)
    _run_blocking: Callable[..., "Deferred[Any]"]
    _clock: IReactorTime
    _cache_seconds: float = CACHE_SECONDS

    _users: dict[bytes, bytes] = attrs.field(init=False, factory=dict)
    _stamp: tuple[int, int, int] | None = attrs.field(init=False, default=None)
    _checked_at: float = attrs.field(init=False, default=0.0)
    _generation: int = attrs.field(init=False, default=0)
    _verified: dict[tuple[bytes, bytes], float] = attrs.field(init=False, factory=dict)
    _pending: dict[tuple[int, bytes, bytes], list["Deferred[bool]"]] = attrs.field(
        init=False, factory=dict
    )

    def __attrs_post_init__(self) -> None:
        self.load()

    @property
    def path(self) -> "FilePath[Any]":
        """The htpasswd file."""
        return self._path

    def users(self) -> list[str]:
        """The user names currently loaded, sorted (for logs and tests)."""
        return sorted(_printable(u) for u in self._users)

    def load(self) -> None:
        """Read the file now and forget every cached login.

        :raises OSError: if the file cannot be read.
        """
        with open(self._path.path, "rb") as f:
            stat = os.fstat(f.fileno())
            users = read_htpasswd_lines(f, source=self._path.path)
        self._users = users
        self._stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        self._checked_at = self._clock.seconds()
        self._generation += 1
        self._verified.clear()
        if users:
            log.info(
                "Loaded {count} users from {path}",
                count=len(users),
                path=self._path.path,
            )
        else:
            log.warn(
                "No usable bcrypt users in {path}: every login will be refused",
                path=self._path.path,
            )

    def _maybe_reload(self) -> None:
        now = self._clock.seconds()
        if now - self._checked_at < RELOAD_SECONDS:
            return
        self._checked_at = now
        try:
            stat = os.stat(self._path.path)
            if (stat.st_mtime_ns, stat.st_size, stat.st_ino) != self._stamp:
                self.load()
        except OSError as e:
            if self._stamp is not None:
                log.warn(
                    "Cannot read {path} ({reason}): refusing every login until it is back",
                    path=self._path.path,
                    reason=e.strerror,
                )
            self._users = {}
            self._stamp = None
            self._generation += 1
            self._verified.clear()

    def requestAvatarId(self, credentials: IUsernamePassword) -> "Deferred[bytes]":
        """Check a user name and password.

        :param credentials: an ``IUsernamePassword`` provider.
        :returns: a Deferred firing with the user name (bytes, as twisted.cred
            avatar IDs are), or failing with ``UnauthorizedLogin``.
        """
        return Deferred.fromCoroutine(self._avatar_id(credentials))

    async def _avatar_id(self, credentials: IUsernamePassword) -> bytes:
        username = _as_bytes(credentials.username)
        password = _as_bytes(credentials.password)
        self._maybe_reload()
        digest = sha256(password).digest()
        expires = self._verified.get((username, digest))
        if expires is not None and self._clock.seconds() < expires:
            return username
        hashed = self._users.get(username)
        if hashed is None:
            # Spend the same time as for a known user, so that timing does not
            # tell which user names exist. The answer is ignored.
            decoy = next(iter(self._users.values()), None)
            if decoy is not None:
                await maybeDeferred(self._run_blocking, checkpw, password, decoy)
            log.debug("Refused a login: unknown user name (not logged)")
            raise UnauthorizedLogin("Unknown user or wrong password")
        if not await self._verify(username, digest, password, hashed):
            log.info(
                "Refused a login: wrong password for user {user}",
                user=_printable(username),
            )
            raise UnauthorizedLogin("Unknown user or wrong password")
        return username

    def _verify(
        self, username: bytes, digest: bytes, password: bytes, hashed: bytes
    ) -> "Deferred[bool]":
        """Run bcrypt once for concurrent checks of the same pair; each caller gets its own Deferred."""
        key = (self._generation, username, digest)
        waiter: Deferred[bool] = Deferred()
        waiters = self._pending.get(key)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        self._pending[key] = [waiter]
        generation = self._generation

        def done(result: bool | Failure) -> None:
            waiting = self._pending.pop(key, [])
            if result is True and generation == self._generation:
                now = self._clock.seconds()
                for stale in [k for k, t in self._verified.items() if t <= now]:
                    del self._verified[stale]
                self._verified[(username, digest)] = now + self._cache_seconds
            for each in waiting:
                if each.called:  # cancelled by its caller
                    continue
                if isinstance(result, Failure):
                    each.errback(result)
                else:
                    each.callback(bool(result))

        maybeDeferred(self._run_blocking, checkpw, password, hashed).addBoth(done)
        return waiter


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


@attrs.frozen
class AccessPolicy:
    """Who may read and who may write.

    :ivar checker: the users (an ``Htpasswd``), or ``None``: then reads are open
        and writes come only from this machine, not through a proxy.
    :ivar read_auth: whether reads need a user too (only with a checker).
    :ivar allow_from: the networks clients must come from; empty: anywhere.
    :ivar trust_proxy: whether to believe ``X-Forwarded-For``/``Forwarded`` for
        ``allow_from`` (never for the loopback rule).
    """

    checker: ICredentialsChecker | None = None
    read_auth: bool = False
    allow_from: Sequence[IPNetwork] = attrs.field(default=(), converter=tuple)
    trust_proxy: bool = False

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

    async def check(self, request: IRequest, write: bool) -> str | None:
        """Decide whether a request may go on.

        :param write: ``True`` for uploads and deletions, ``False`` for reads.
        :returns: the authenticated user name, or ``None`` when none was needed.
        :raises Forbidden: for a client outside ``allow_from``, or a write without
            configured users that is not from loopback or comes through a proxy.
        :raises Unauthorized: for missing or wrong credentials where they are needed.
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
        try:
            avatar = await self.checker.requestAvatarId(UsernamePassword(*credentials))
        except UnauthorizedLogin:
            raise Unauthorized("Unknown user or wrong password") from None
        return _printable(_as_bytes(avatar))

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
