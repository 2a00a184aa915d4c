"""Tests for :mod:`pypicache.web.htpasswd` and :mod:`pypicache.web.access`: htpasswd users, the login cache, and who may read and write.

Everything is synchronous: bcrypt runs through a counting ``run_blocking`` that
calls it inline, time is a ``task.Clock``, requests are ``DummyRequest`` objects
with a chosen peer address and headers, and Deferreds are resolved with
``SynchronousTestCase``'s ``successResultOf``/``failureResultOf``.
"""

import base64
import ipaddress
import os

import bcrypt
import pytest
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from pypicache.errors import Forbidden, Unauthorized
from pypicache.web.access import (
    AccessPolicy,
    forwarded_for,
    parse_basic,
    parse_cidr,
    parse_forwarded,
)
from pypicache.web.htpasswd import CACHE_SECONDS, Htpasswd, checkpw, read_htpasswd_lines

_sync = SynchronousTestCase()
success = _sync.successResultOf
failure = _sync.failureResultOf


def hashed(password: bytes, prefix: bytes = b"$2b$") -> bytes:
    """A cheap bcrypt hash of ``password`` with the given ``$2?$`` prefix."""
    return prefix + bcrypt.hashpw(password, bcrypt.gensalt(rounds=4))[4:]


ALICE = hashed(b"wonderland")
BOB = hashed(b"builder", b"$2y$")
CAROL = hashed(b"christmas", b"$2a$")


def write_htpasswd(path, text: bytes) -> None:
    """Write ``text`` to ``path`` and give it a new modification time."""
    path.write_bytes(text)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


class Blocking:
    """A synchronous ``run_blocking`` that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, f, *args):
        self.calls += 1
        return defer.maybeDeferred(f, *args)


class Deferring:
    """A ``run_blocking`` that keeps the work until the test runs it."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Deferred, object, tuple]] = []

    def __call__(self, f, *args):
        d: Deferred = Deferred()
        self.waiting.append((d, f, args))
        return d

    def run_all(self) -> None:
        waiting, self.waiting = self.waiting, []
        for d, f, args in waiting:
            d.callback(f(*args))


@pytest.fixture
def blocking() -> Blocking:
    return Blocking()


@pytest.fixture
def htpasswd_path(tmp_path):
    path = tmp_path / "htpasswd"
    write_htpasswd(
        path,
        b"# users of pypicache\n\nalice:"
        + ALICE
        + b"\nbob:"
        + BOB
        + b"\ncarol:"
        + CAROL
        + b"\n",
    )
    return path


@pytest.fixture
def checker(htpasswd_path, clock, blocking) -> Htpasswd:
    return Htpasswd(str(htpasswd_path), blocking, clock)


def login(checker, user: bytes, password: bytes) -> Deferred:
    """Ask ``checker`` about a user name and password."""
    return checker.requestAvatarId(UsernamePassword(user, password))


def basic(user: str, password: str) -> bytes:
    """An ``Authorization`` header value for HTTP Basic."""
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def request(
    peer: str = "127.0.0.1", headers: dict[bytes, bytes] | None = None
) -> DummyRequest:
    """A request from ``peer`` carrying ``headers``."""
    req = DummyRequest([b""])
    if ":" in peer:
        req.client = IPv6Address("TCP", peer, 50000)
    else:
        req.client = IPv4Address("TCP", peer, 50000)
    for name, value in (headers or {}).items():
        req.requestHeaders.addRawHeader(name, value)
    return req


def check(policy: AccessPolicy, req, write: bool) -> Deferred:
    """``policy.check`` as a Deferred."""
    return defer.ensureDeferred(policy.check(req, write=write))


# -- Htpasswd ------------------------------------------------------------------


def test_is_a_credentials_checker(checker):
    """``Htpasswd`` provides ``ICredentialsChecker`` for ``IUsernamePassword``."""
    assert verifyObject(ICredentialsChecker, checker)
    assert checker.credentialInterfaces == (IUsernamePassword,)


def test_good_password(checker):
    """The right password gives the user name as the avatar ID."""
    assert success(login(checker, b"alice", b"wonderland")) == b"alice"


@pytest.mark.parametrize(
    "user, password", [(b"bob", b"builder"), (b"carol", b"christmas")]
)
def test_apache_prefixes(checker, user, password):
    """``$2y$`` (what ``htpasswd -B`` writes) and ``$2a$`` entries are checked like ``$2b$``."""
    assert success(login(checker, user, password)) == user


def test_text_credentials(checker):
    """Credentials given as text rather than bytes work too."""
    assert success(login(checker, "alice", "wonderland")) == b"alice"


def test_wrong_password(checker):
    """A wrong password fails with ``UnauthorizedLogin``."""
    failure(login(checker, b"alice", b"wonderlant"), UnauthorizedLogin)


def test_password_of_another_user(checker):
    """Bob's password does not open Alice's account."""
    failure(login(checker, b"alice", b"builder"), UnauthorizedLogin)


def test_unknown_user(checker, blocking):
    """An unknown user fails, after the same bcrypt work a known user costs."""
    failure(login(checker, b"mallory", b"wonderland"), UnauthorizedLogin)
    assert blocking.calls == 1


def test_unknown_user_empty_file(tmp_path, clock, blocking):
    """With no users at all every login fails, without running bcrypt."""
    path = tmp_path / "htpasswd"
    write_htpasswd(path, b"")
    checker = Htpasswd(str(path), blocking, clock)
    failure(login(checker, b"alice", b"wonderland"), UnauthorizedLogin)
    assert blocking.calls == 0


def test_long_password_truncated():
    """Passwords past 72 bytes are checked on their first 72, as Apache does (bcrypt 5 would raise)."""
    password = b"x" * 72
    digest = bcrypt.hashpw(password, bcrypt.gensalt(rounds=4))
    assert checkpw(password + b"more", digest)
    assert not checkpw(b"y" + password, digest)


def test_nul_password_refused():
    """A password bcrypt refuses to hash is simply wrong, not an error."""
    assert not checkpw(b"wonder\0land", ALICE)


def test_skips_comments_and_other_schemes():
    """Comments, blank lines, non-bcrypt hashes and malformed lines are skipped; the rest load."""
    lines = [
        b"# comment\n",
        b"   \n",
        b"alice:" + ALICE + b"\n",
        b"md5user:$apr1$salt1234$abcdefghijklmnopqrstuv\n",
        b"shauser:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n",
        b"cryptuser:abJnggxhB/yWI\n",
        b"brokenbcrypt:$2y$05$tooshort\n",
        b"no colon here\n",
        b"alice:" + BOB + b"\n",
        b"bob:" + BOB + b"\r\n",
    ]
    with capturedLogs() as events:
        users = read_htpasswd_lines(lines, source="test-file")
    assert users == {b"alice": ALICE, b"bob": BOB}
    texts = [formatEvent(e) for e in events]
    for user in ["md5user", "shauser", "cryptuser", "brokenbcrypt"]:
        assert any(user in t and "bcrypt" in t for t in texts), user
    assert any("line 8" in t for t in texts)
    assert any("repeated user alice" in t for t in texts)
    everything = repr(events) + "".join(texts)
    for secret in [
        "$apr1$",
        "{SHA}",
        "abJnggxhB",
        "tooshort",
        ALICE.decode(),
        BOB.decode(),
        "no colon",
    ]:
        assert secret not in everything


def test_non_bcrypt_user_cannot_log_in(tmp_path, clock, blocking):
    """A user whose entry is not bcrypt is unknown, whatever the password."""
    path = tmp_path / "htpasswd"
    write_htpasswd(path, b"alice:" + ALICE + b"\nplain:secret\n")
    checker = Htpasswd(str(path), blocking, clock)
    assert checker.users() == ["alice"]
    failure(login(checker, b"plain", b"secret"), UnauthorizedLogin)


def test_missing_file_fails_at_start(tmp_path, clock, blocking):
    """A missing file is an error when the checker is made (so the daemon does not start)."""
    with pytest.raises(OSError):
        Htpasswd(str(tmp_path / "nope"), blocking, clock)


def test_nothing_logged_about_secrets(checker, htpasswd_path):
    """Neither passwords nor hashes ever reach the log, on success, failure or reload."""
    with capturedLogs() as events:
        success(login(checker, b"alice", b"wonderland"))
        failure(login(checker, b"alice", b"wonderlant"), UnauthorizedLogin)
        failure(login(checker, b"wonderland", b"alice"), UnauthorizedLogin)
        checker.load()
    assert events
    everything = repr(events) + "".join(formatEvent(e) for e in events)
    for secret in ["wonderland", "wonderlant", ALICE.decode(), BOB.decode(), "$2"]:
        assert secret not in everything


# -- the login cache ------------------------------------------------------------


def test_cache_skips_bcrypt(checker, blocking, clock):
    """A second good login within the cache time runs no bcrypt."""
    success(login(checker, b"alice", b"wonderland"))
    assert blocking.calls == 1
    clock.advance(CACHE_SECONDS - 1)
    assert success(login(checker, b"alice", b"wonderland")) == b"alice"
    assert blocking.calls == 1


def test_cache_expires(checker, blocking, clock):
    """After the cache time the password is checked with bcrypt again."""
    success(login(checker, b"alice", b"wonderland"))
    clock.advance(CACHE_SECONDS + 1)
    success(login(checker, b"alice", b"wonderland"))
    assert blocking.calls == 2


def test_wrong_password_not_cached(checker, blocking):
    """Wrong passwords run bcrypt every time and never become good."""
    failure(login(checker, b"alice", b"wonderlant"), UnauthorizedLogin)
    failure(login(checker, b"alice", b"wonderlant"), UnauthorizedLogin)
    assert blocking.calls == 2


def test_cache_is_per_password(checker, blocking):
    """A cached good login does not let a different password in."""
    success(login(checker, b"alice", b"wonderland"))
    failure(login(checker, b"alice", b"wonderlant"), UnauthorizedLogin)
    assert blocking.calls == 2


def test_concurrent_logins_share_one_bcrypt(htpasswd_path, clock):
    """Concurrent checks of one pair run bcrypt once; a cancelled one does not disturb the other."""
    deferring = Deferring()
    checker = Htpasswd(str(htpasswd_path), deferring, clock)
    first = login(checker, b"alice", b"wonderland")
    second = login(checker, b"alice", b"wonderland")
    third = login(checker, b"alice", b"wonderland")
    assert len(deferring.waiting) == 1
    _sync.assertNoResult(first)
    second.cancel()
    failure(second, CancelledError)
    deferring.run_all()
    assert success(first) == b"alice"
    assert success(third) == b"alice"


def test_concurrent_wrong_password_fails_all(htpasswd_path, clock):
    """Every caller waiting on one bcrypt run of a wrong password is refused."""
    deferring = Deferring()
    checker = Htpasswd(str(htpasswd_path), deferring, clock)
    first = login(checker, b"alice", b"nope")
    second = login(checker, b"alice", b"nope")
    deferring.run_all()
    failure(first, UnauthorizedLogin)
    failure(second, UnauthorizedLogin)


def test_bcrypt_error_propagates(htpasswd_path, clock):
    """A failure of the blocking runner reaches the caller instead of passing as a login."""

    def broken(f, *args):
        return defer.fail(RuntimeError("pool stopped"))

    checker = Htpasswd(str(htpasswd_path), broken, clock)
    failure(login(checker, b"alice", b"wonderland"), RuntimeError)


# -- reloading -----------------------------------------------------------------


def test_reload_after_change(checker, htpasswd_path, clock, blocking):
    """A changed file is read again: new users work, changed passwords change, the cache is dropped."""
    success(login(checker, b"alice", b"wonderland"))
    write_htpasswd(
        htpasswd_path,
        b"alice:" + hashed(b"looking-glass") + b"\ndave:" + hashed(b"daisy") + b"\n",
    )
    clock.advance(1)
    failure(login(checker, b"alice", b"wonderland"), UnauthorizedLogin)
    assert success(login(checker, b"alice", b"looking-glass")) == b"alice"
    assert success(login(checker, b"dave", b"daisy")) == b"dave"
    failure(login(checker, b"bob", b"builder"), UnauthorizedLogin)
    assert checker.users() == ["alice", "dave"]


def test_removed_user_loses_cached_login(checker, htpasswd_path, clock, blocking):
    """Removing a user ends their access at once, even with a cached login."""
    success(login(checker, b"bob", b"builder"))
    write_htpasswd(htpasswd_path, b"alice:" + ALICE + b"\n")
    clock.advance(1)
    failure(login(checker, b"bob", b"builder"), UnauthorizedLogin)


def test_reload_at_most_once_a_second(checker, htpasswd_path, clock):
    """The file is looked at no more than once a second."""
    success(login(checker, b"alice", b"wonderland"))
    write_htpasswd(htpasswd_path, b"alice:" + hashed(b"looking-glass") + b"\n")
    clock.advance(0.5)
    assert success(login(checker, b"alice", b"wonderland")) == b"alice"
    clock.advance(0.5)
    failure(login(checker, b"alice", b"wonderland"), UnauthorizedLogin)


def test_unchanged_file_keeps_cache(checker, clock, blocking):
    """Looking at an unchanged file does not drop cached logins."""
    success(login(checker, b"alice", b"wonderland"))
    clock.advance(5)
    success(login(checker, b"alice", b"wonderland"))
    assert blocking.calls == 1


def test_reload_during_check_not_cached(htpasswd_path, clock):
    """A bcrypt run that started before the file changed is not cached for the new file."""
    deferring = Deferring()
    checker = Htpasswd(str(htpasswd_path), deferring, clock)
    first = login(checker, b"alice", b"wonderland")
    write_htpasswd(htpasswd_path, b"alice:" + hashed(b"looking-glass") + b"\n")
    clock.advance(1)
    checker._maybe_reload()
    deferring.run_all()
    assert success(first) == b"alice"
    second = login(checker, b"alice", b"wonderland")
    deferring.run_all()
    failure(second, UnauthorizedLogin)


def test_deleted_file_refuses_everyone(checker, htpasswd_path, clock):
    """If the file disappears, every login is refused (and it comes back with the file)."""
    success(login(checker, b"alice", b"wonderland"))
    os.remove(htpasswd_path)
    clock.advance(1)
    with capturedLogs() as events:
        failure(login(checker, b"alice", b"wonderland"), UnauthorizedLogin)
    assert any("Cannot read" in formatEvent(e) for e in events)
    write_htpasswd(htpasswd_path, b"alice:" + ALICE + b"\n")
    clock.advance(1)
    assert success(login(checker, b"alice", b"wonderland")) == b"alice"


# -- parsing helpers -----------------------------------------------------------


@pytest.mark.parametrize(
    "header, expected",
    [
        (basic("alice", "wonderland"), (b"alice", b"wonderland")),
        (
            b"basic " + base64.b64encode(b"alice:pass:with:colons"),
            (b"alice", b"pass:with:colons"),
        ),
        (b"BASIC   " + base64.b64encode(b"alice:") + b"  ", (b"alice", b"")),
        (None, None),
        (b"", None),
        (b"Basic", None),
        (b"Basic ", None),
        (b"Bearer abcdef", None),
        (b"Basic !!!not-base64!!!", None),
        (b"Basic YWxpY2U", None),  # bad padding
        (b"Basic " + base64.b64encode(b"no-colon"), None),
        (b"Digest username=alice", None),
    ],
)
def test_parse_basic(header, expected):
    """Basic credentials are decoded; anything malformed counts as no credentials."""
    assert parse_basic(header) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("192.168.1.7", "192.168.1.7/32"),
        (" 192.168.1.0/24 ", "192.168.1.0/24"),
        ("::1", "::1/128"),
        ("[::1]", "::1/128"),
        ("fd00::/8", "fd00::/8"),
    ],
)
def test_parse_cidr(text, expected):
    """Networks and single addresses, IPv4 and IPv6, are accepted."""
    assert parse_cidr(text) == ipaddress.ip_network(expected)


def test_parse_cidr_host_bits():
    """A network with host bits set is refused with the network that was probably meant."""
    with pytest.raises(ValueError, match=r"did you mean 10\.0\.0\.0/8"):
        parse_cidr("10.0.0.5/8")


@pytest.mark.parametrize(
    "text", ["", "localhost", "10.0.0.0/33", "300.1.1.1", "10.0.0.0/8,::1"]
)
def test_parse_cidr_invalid(text):
    """Anything else is a ``ValueError`` that shows an example."""
    with pytest.raises(ValueError, match="not an IP address or network"):
        parse_cidr(text)


def test_parse_forwarded():
    """``Forwarded`` elements split on commas and semicolons outside quotes, names lowercased."""
    header = 'for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711", for="a,b;c=\\"d"'
    assert parse_forwarded(header) == [
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"},
        {"for": "[2001:db8:cafe::17]:4711"},
        {"for": 'a,b;c="d'},
    ]


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({}, None),
        ({b"X-Forwarded-For": b"203.0.113.9"}, "203.0.113.9"),
        ({b"X-Forwarded-For": b"1.2.3.4, 203.0.113.9"}, "203.0.113.9"),
        ({b"X-Forwarded-For": b"203.0.113.9:5678"}, "203.0.113.9"),
        ({b"X-Forwarded-For": b"[2001:db8::9]:5678"}, "2001:db8::9"),
        ({b"X-Forwarded-For": b"2001:db8::9"}, "2001:db8::9"),
        ({b"X-Forwarded-For": b" , "}, None),
        ({b"Forwarded": b"for=203.0.113.9"}, "203.0.113.9"),
        ({b"Forwarded": b'for="203.0.113.9:8080";proto=https'}, "203.0.113.9"),
        ({b"Forwarded": b'for="[2001:db8:cafe::17]:4711"'}, "2001:db8:cafe::17"),
        ({b"Forwarded": b'for="[2001:db8:cafe::17]"'}, "2001:db8:cafe::17"),
        ({b"Forwarded": b"for=1.2.3.4, for=203.0.113.9"}, "203.0.113.9"),
        ({b"Forwarded": b"for=unknown"}, "unknown"),
        ({b"Forwarded": b"proto=https"}, None),
        (
            {b"Forwarded": b"for=1.1.1.1", b"X-Forwarded-For": b"203.0.113.9"},
            "203.0.113.9",
        ),
    ],
)
def test_forwarded_for(headers, expected):
    """The proxy's report is the right-most ``X-Forwarded-For`` entry, else the last ``Forwarded`` ``for=``."""
    assert forwarded_for(request("10.0.0.1", headers)) == expected


# -- AccessPolicy.client_address -------------------------------------------------


def test_client_address_is_peer():
    """Without ``trust_proxy`` the peer's address counts, whatever the headers say."""
    policy = AccessPolicy()
    req = request(
        "10.0.0.5",
        {b"X-Forwarded-For": b"203.0.113.9", b"Forwarded": b"for=198.51.100.1"},
    )
    assert policy.client_address(req) == "10.0.0.5"


def test_client_address_trusts_proxy():
    """With ``trust_proxy`` the forwarded address counts."""
    policy = AccessPolicy(trust_proxy=True)
    assert (
        policy.client_address(request("10.0.0.1", {b"X-Forwarded-For": b"203.0.113.9"}))
        == "203.0.113.9"
    )
    assert (
        policy.client_address(
            request("10.0.0.1", {b"Forwarded": b'for="[2001:db8::1]:80"'})
        )
        == "2001:db8::1"
    )


def test_client_address_trusted_proxy_without_headers():
    """With ``trust_proxy`` but no forwarding headers, the peer's address counts."""
    assert (
        AccessPolicy(trust_proxy=True).client_address(request("10.0.0.5")) == "10.0.0.5"
    )


def test_client_address_unix_socket():
    """A peer without an IP address (a UNIX socket) has the empty address."""
    req = request()
    req.client = UNIXAddress(b"/run/pypicache.sock")
    assert AccessPolicy().client_address(req) == ""


# -- AccessPolicy.check: allow_from ---------------------------------------------


NETS = [parse_cidr("10.0.0.0/8"), parse_cidr("2001:db8::/32")]


@pytest.mark.parametrize(
    "peer", ["10.0.0.5", "10.255.1.2", "2001:db8::5", "::ffff:10.0.0.5"]
)
def test_allow_from_inside(peer):
    """Clients inside an allowed IPv4 or IPv6 network (IPv4-mapped too) may read."""
    policy = AccessPolicy(allow_from=NETS)
    assert success(check(policy, request(peer), write=False)) is None


@pytest.mark.parametrize("peer", ["192.168.1.1", "127.0.0.1", "::1", "2001:db9::1"])
def test_allow_from_outside(peer):
    """Clients outside every allowed network get 403, even from loopback."""
    policy = AccessPolicy(allow_from=NETS)
    error = failure(check(policy, request(peer), write=False), Forbidden).value
    assert error.code == 403
    assert "not allowed" in error.message
    assert peer in error.message


def test_allow_from_before_authentication(checker):
    """A client outside ``allow_from`` is refused even with good credentials."""
    policy = AccessPolicy(checker=checker, allow_from=NETS)
    req = request("192.168.1.1", {b"Authorization": basic("alice", "wonderland")})
    failure(check(policy, req, write=True), Forbidden)


def test_allow_from_uses_forwarded_with_trust_proxy():
    """With ``trust_proxy`` the forwarded address is what ``allow_from`` checks."""
    policy = AccessPolicy(allow_from=NETS, trust_proxy=True)
    inside = request("192.168.1.1", {b"X-Forwarded-For": b"10.0.0.5"})
    outside = request("10.0.0.1", {b"Forwarded": b'for="[2001:db9::1]:443"'})
    assert success(check(policy, inside, write=False)) is None
    failure(check(policy, outside, write=False), Forbidden)


def test_allow_from_ignores_forwarded_without_trust_proxy():
    """Without ``trust_proxy`` a forged ``X-Forwarded-For`` does not get a client in."""
    policy = AccessPolicy(allow_from=NETS)
    req = request("192.168.1.1", {b"X-Forwarded-For": b"10.0.0.5"})
    failure(check(policy, req, write=False), Forbidden)


def test_allow_from_forged_left_entry():
    """With ``trust_proxy`` an address the client put left of the proxy's entry is ignored."""
    policy = AccessPolicy(allow_from=NETS, trust_proxy=True)
    req = request("10.0.0.1", {b"X-Forwarded-For": b"10.0.0.5, 192.168.1.1"})
    failure(check(policy, req, write=False), Forbidden)


def test_allow_from_unknown_forwarded():
    """A proxy that reports an obfuscated or unknown client is refused, not taken for itself."""
    policy = AccessPolicy(allow_from=NETS, trust_proxy=True)
    req = request("10.0.0.1", {b"Forwarded": b"for=unknown"})
    failure(check(policy, req, write=False), Forbidden)


# -- AccessPolicy.check: no users -------------------------------------------------


@pytest.mark.parametrize("peer", ["127.0.0.1", "10.0.0.5", "2001:db8::5"])
def test_no_users_reads_open(peer):
    """Without users anyone may read, and credentials sent are ignored."""
    req = request(peer, {b"Authorization": basic("alice", "whatever")})
    assert success(check(AccessPolicy(), req, write=False)) is None


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"])
def test_no_users_loopback_writes(peer):
    """Without users, writes from loopback are accepted, whatever credentials come with them."""
    req = request(peer, {b"Authorization": basic("__token__", "pypi-anything")})
    assert success(check(AccessPolicy(), req, write=True)) is None


@pytest.mark.parametrize("peer", ["10.0.0.5", "192.168.1.1", "2001:db8::5"])
def test_no_users_remote_writes_refused(peer):
    """Without users, writes from another machine get 403 saying how to configure users."""
    error = failure(check(AccessPolicy(), request(peer), write=True), Forbidden).value
    assert error.code == 403
    assert "--auth-file" in error.message
    assert "htpasswd -B" in error.message


@pytest.mark.parametrize(
    "headers",
    [
        {b"X-Forwarded-For": b"127.0.0.1"},
        {b"Forwarded": b"for=127.0.0.1"},
        {b"X-Real-IP": b"127.0.0.1"},
        {b"True-Client-IP": b"127.0.0.1"},
        {b"X-Client-IP": b"127.0.0.1"},
    ],
)
@pytest.mark.parametrize("trust_proxy", [False, True])
def test_no_users_proxied_writes_refused(headers, trust_proxy):
    """Without users, writes that came through a proxy are refused even on loopback."""
    policy = AccessPolicy(trust_proxy=trust_proxy)
    error = failure(
        check(policy, request("127.0.0.1", headers), write=True), Forbidden
    ).value
    assert "--auth-file" in error.message


def test_no_users_forwarded_loopback_not_believed():
    """A remote client claiming loopback through a trusted proxy header still may not write."""
    policy = AccessPolicy(trust_proxy=True)
    req = request("10.0.0.5", {b"X-Forwarded-For": b"127.0.0.1"})
    failure(check(policy, req, write=True), Forbidden)


def test_no_users_unix_socket_writes_refused():
    """A peer without an IP address is not loopback."""
    req = request()
    req.client = UNIXAddress(b"/run/pypicache.sock")
    failure(check(AccessPolicy(), req, write=True), Forbidden)


# -- AccessPolicy.check: users ----------------------------------------------------


def test_write_needs_credentials(checker):
    """With users, a write without credentials is 401, even from loopback."""
    error = failure(
        check(AccessPolicy(checker=checker), request("127.0.0.1"), write=True),
        Unauthorized,
    ).value
    assert error.code == 401
    assert "user name and password" in error.message


def test_write_with_good_credentials(checker):
    """With users, a write with good credentials gives the user name."""
    req = request("10.0.0.5", {b"Authorization": basic("bob", "builder")})
    assert success(check(AccessPolicy(checker=checker), req, write=True)).user == "bob"


def test_write_with_wrong_credentials(checker):
    """With users, a wrong password or an unknown user is 401."""
    policy = AccessPolicy(checker=checker)
    for header in [basic("bob", "wrong"), basic("nobody", "builder")]:
        error = failure(
            check(policy, request("10.0.0.5", {b"Authorization": header}), write=True),
            Unauthorized,
        ).value
        assert error.message == "Unknown user or wrong password"


@pytest.mark.parametrize(
    "header", [b"Basic !!!", b"Basic " + base64.b64encode(b"bob"), b"Bearer token"]
)
def test_write_with_malformed_credentials(checker, header):
    """A malformed ``Authorization`` header counts as no credentials: 401."""
    req = request("10.0.0.5", {b"Authorization": header})
    failure(check(AccessPolicy(checker=checker), req, write=True), Unauthorized)


def test_reads_open_without_read_auth(checker):
    """With users but no ``read_auth``, reads need nothing and wrong credentials are ignored."""
    policy = AccessPolicy(checker=checker)
    assert success(check(policy, request("10.0.0.5"), write=False)) is None
    req = request("10.0.0.5", {b"Authorization": basic("bob", "wrong")})
    assert success(check(policy, req, write=False)) is None


def test_read_auth(checker):
    """With ``read_auth``, reads need good credentials too."""
    policy = AccessPolicy(checker=checker, read_auth=True)
    error = failure(check(policy, request("10.0.0.5"), write=False), Unauthorized).value
    assert "Reading" in error.message
    bad = request("10.0.0.5", {b"Authorization": basic("alice", "wrong")})
    failure(check(policy, bad, write=False), Unauthorized)
    good = request("10.0.0.5", {b"Authorization": basic("alice", "wonderland")})
    assert success(check(policy, good, write=False)).user == "alice"


def test_check_uses_login_cache(checker, blocking):
    """Repeated requests with the same credentials run bcrypt once."""
    policy = AccessPolicy(checker=checker, read_auth=True)
    for _ in range(5):
        req = request("10.0.0.5", {b"Authorization": basic("alice", "wonderland")})
        assert success(check(policy, req, write=False)).user == "alice"
    assert blocking.calls == 1


def test_utf8_user_name(tmp_path, clock, blocking):
    """Non-ASCII user names work and come back as text."""
    path = tmp_path / "htpasswd"
    write_htpasswd(path, "zoë:".encode() + ALICE + b"\n")
    policy = AccessPolicy(checker=Htpasswd(str(path), blocking, clock))
    req = request("10.0.0.5", {b"Authorization": basic("zoë", "wonderland")})
    assert success(check(policy, req, write=True)).user == "zoë"


def test_allow_from_accepts_list():
    """``allow_from`` may be given as a list; the policy keeps an immutable copy."""
    nets = [parse_cidr("10.0.0.0/8")]
    policy = AccessPolicy(allow_from=nets)
    nets.append(parse_cidr("192.168.0.0/16"))
    assert policy.allow_from == (ipaddress.ip_network("10.0.0.0/8"),)
