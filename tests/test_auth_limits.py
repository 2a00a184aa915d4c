"""Password guessing: the limit on failed logins per address, uniform refusal times, weak costs, bcrypt's own threads.

The unit tests are synchronous: bcrypt runs inline through a counting
``run_blocking``, time is a ``task.Clock``, requests are ``DummyRequest``
objects with a chosen peer. Timing is never measured: the tests assert which
bcrypt checks ran, at which costs. One loopback test runs a real daemon.
"""

import base64

import bcrypt
import pytest
import pytest_twisted
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from pypicache import tap
from pypicache.concurrency import ThreadPoolService
from pypicache.errors import TooManyRequests, Unauthorized
from pypicache.web import htpasswd as htpasswd_module
from pypicache.web.access import AccessPolicy
from pypicache.web.attempts import FailedLogins, client_key
from pypicache.web.htpasswd import STANDARD_COST, Htpasswd, bcrypt_cost
from tests.daemon import start_world
from tests.test_auth import Blocking
from tests.webclient import multipart, send

_sync = SynchronousTestCase()
success = _sync.successResultOf
failure = _sync.failureResultOf

GOOD = "wonderland"


def entry(user: str, password: str, cost: int) -> bytes:
    """An htpasswd line for ``user`` with a bcrypt hash of ``cost``."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost))
    return user.encode() + b":" + hashed + b"\n"


class CheckpwSpy:
    """Stands in for ``bcrypt.checkpw``: records the cost of every hash it is asked about.

    It answers as bcrypt would for the real hashes of the test files (cost 4)
    and ``False`` for every other (the dummies), without spending their time.
    """

    def __init__(self) -> None:
        self.costs: list[int] = []
        self._real = bcrypt.checkpw

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        self.costs.append(bcrypt_cost(hashed))
        if bcrypt_cost(hashed) == 4:
            return self._real(password, hashed)
        return False


@pytest.fixture
def checkpw_spy(monkeypatch) -> CheckpwSpy:
    spy = CheckpwSpy()
    monkeypatch.setattr(htpasswd_module.bcrypt, "checkpw", spy)
    return spy


@pytest.fixture
def blocking() -> Blocking:
    return Blocking()


@pytest.fixture
def htpasswd_path(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_bytes(entry("alice", GOOD, 4) + entry("bob", "builder", 4))
    return path


@pytest.fixture
def checker(htpasswd_path, clock, blocking) -> Htpasswd:
    return Htpasswd(str(htpasswd_path), blocking, clock)


@pytest.fixture
def fast_checker(htpasswd_path, clock, blocking) -> Htpasswd:
    """A checker whose refusals cost a cost-4 check (the limit tests time nothing)."""
    return Htpasswd(str(htpasswd_path), blocking, clock, standard_cost=4)


@pytest.fixture
def policy(fast_checker, clock) -> AccessPolicy:
    return AccessPolicy(
        checker=fast_checker, failed_logins=FailedLogins(clock, 3, 60.0)
    )


def request(peer: str, user: str = "alice", password: str = "guess") -> DummyRequest:
    """A request from ``peer`` with Basic credentials."""
    req = DummyRequest([b""])
    req.client = (IPv6Address if ":" in peer else IPv4Address)("TCP", peer, 50000)
    value = base64.b64encode(f"{user}:{password}".encode())
    req.requestHeaders.addRawHeader(b"authorization", b"Basic " + value)
    return req


def write(policy: AccessPolicy, peer: str, password: str = "guess") -> defer.Deferred:
    """``policy.check`` of a write from ``peer`` as alice, as a Deferred of
    the user name."""
    return defer.ensureDeferred(
        policy.check(request(peer, password=password), write=True)
    ).addCallback(lambda identity: identity.user)


def login(checker: Htpasswd, user: bytes, password: bytes) -> defer.Deferred:
    return checker.requestAvatarId(UsernamePassword(user, password))


# -- The limit on failed logins ----------------------------------------------------


def test_limit_answers_429_without_bcrypt(policy, blocking):
    """After the limit of failures from one address, the next login is a 429 with
    Retry-After, and bcrypt does not run for it, even with the right password."""
    for _ in range(3):
        failure(write(policy, "10.0.0.1"), Unauthorized)
    assert blocking.calls == 3
    for password in ("guess", GOOD):
        refused = failure(write(policy, "10.0.0.1", password), TooManyRequests)
        assert refused.value.code == 429
        assert refused.value.headers() == {b"retry-after": b"60"}
    assert blocking.calls == 3


def test_retry_after_counts_down_and_window_expiry_lets_it_try(policy, clock, blocking):
    """Retry-After is the time until the oldest counted failure leaves the window;
    past it, the address may try again (and one more failure blocks it again)."""
    failure(write(policy, "10.0.0.1"), Unauthorized)
    clock.advance(20)
    failure(write(policy, "10.0.0.1"), Unauthorized)
    failure(write(policy, "10.0.0.1"), Unauthorized)
    clock.advance(15)
    refused = failure(write(policy, "10.0.0.1"), TooManyRequests)
    assert refused.value.retry_after == pytest.approx(25)
    assert refused.value.headers() == {b"retry-after": b"25"}
    clock.advance(25)
    assert success(write(policy, "10.0.0.1", GOOD)) == "alice"
    failure(write(policy, "10.0.0.1"), Unauthorized)
    # The oldest of the last three failures is now the one at +20 s.
    assert failure(write(policy, "10.0.0.1"), TooManyRequests).value.retry_after == (
        pytest.approx(20)
    )
    assert blocking.calls == 5


def test_other_addresses_unaffected(policy, blocking):
    """A blocked address does not block another; a success from one resets nothing."""
    for _ in range(3):
        failure(write(policy, "10.0.0.1"), Unauthorized)
    failure(write(policy, "10.0.0.1"), TooManyRequests)
    assert success(write(policy, "10.0.0.2", GOOD)) == "alice"
    failure(write(policy, "10.0.0.2"), Unauthorized)
    failure(write(policy, "10.0.0.1"), TooManyRequests)


def test_success_does_not_reset_own_count(policy):
    """Good logins between failures do not buy more guesses."""
    for _ in range(3):
        assert success(write(policy, "10.0.0.1", GOOD)) == "alice"
        failure(write(policy, "10.0.0.1"), Unauthorized)
    failure(write(policy, "10.0.0.1"), TooManyRequests)


def test_ipv6_counted_per_64(policy):
    """IPv6 addresses of one /64 share their count; IPv4-mapped addresses count as IPv4."""
    for host in ("2001:db8::1", "2001:db8::2", "2001:db8::ffff:3"):
        failure(write(policy, host), Unauthorized)
    failure(write(policy, "2001:db8::9"), TooManyRequests)
    failure(write(policy, "2001:db8:0:1::1"), Unauthorized)
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1"


def test_limit_uses_forwarded_address_with_trust_proxy(fast_checker, clock):
    """Behind a trusted proxy, failures are counted per forwarded client, not per proxy."""
    policy = AccessPolicy(
        checker=fast_checker,
        trust_proxy=True,
        failed_logins=FailedLogins(clock, 2, 60.0),
    )

    def via_proxy(client: str) -> defer.Deferred:
        req = request("127.0.0.1")
        req.requestHeaders.addRawHeader(b"x-forwarded-for", client.encode())
        return defer.ensureDeferred(policy.check(req, write=True))

    failure(via_proxy("10.0.0.1"), Unauthorized)
    failure(via_proxy("10.0.0.1"), Unauthorized)
    failure(via_proxy("10.0.0.1"), TooManyRequests)
    failure(via_proxy("10.0.0.2"), Unauthorized)


def test_tracked_addresses_bounded(clock):
    """At most ``max_tracked`` addresses are remembered (the least recently failed
    are forgotten first), and addresses whose failures left the window are dropped."""
    limits = FailedLogins(clock, 2, 60.0, max_tracked=3)
    limits.failed("10.0.0.1")
    limits.failed("10.0.0.1")
    for n in range(2, 6):
        limits.failed(f"10.0.0.{n}")
    assert limits.tracked() == 3
    limits.check("10.0.0.1")  # forgotten: may try again
    limits.failed("10.0.0.5")
    with pytest.raises(TooManyRequests):
        limits.check("10.0.0.5")
    clock.advance(61)
    limits.failed("10.0.0.9")
    assert limits.tracked() == 1
    limits.check("10.0.0.5")


def test_limit_logged_once(clock):
    """Reaching the limit is logged once, naming the address; further failures are not."""
    limits = FailedLogins(clock, 2, 60.0)
    with capturedLogs() as events:
        for _ in range(4):
            limits.failed("10.0.0.1")
    messages = [formatEvent(e) for e in events]
    assert len(messages) == 1 and "10.0.0.1" in messages[0], messages


def test_limit_arguments_checked(clock):
    """A limit below 1 or a window that is not positive is refused."""
    with pytest.raises(ValueError):
        FailedLogins(clock, 0, 60.0)
    with pytest.raises(ValueError):
        FailedLogins(clock, 10, 0.0)


# -- Uniform refusal times ------------------------------------------------------


def test_unknown_user_checks_one_dummy_of_standard_cost(checker, checkpw_spy, blocking):
    """An unknown user costs exactly one bcrypt check, against a dummy hash of the standard cost."""
    failure(login(checker, b"mallory", GOOD.encode()), UnauthorizedLogin)
    assert checkpw_spy.costs == [STANDARD_COST]
    assert blocking.calls == 1


def test_wrong_password_of_cheap_hash_padded(checker, checkpw_spy, blocking):
    """A wrong password for a cost-4 hash is followed by dummy checks of costs 4 to 11,
    whose rounds (2**4 + 2**4 + ... + 2**11) add up to one check of cost 12."""
    failure(login(checker, b"alice", b"guess"), UnauthorizedLogin)
    assert checkpw_spy.costs == [4, *range(4, STANDARD_COST)]
    assert sum(2**c for c in checkpw_spy.costs) == 2**STANDARD_COST
    assert blocking.calls == 1


def test_right_password_of_cheap_hash_stays_fast(checker, checkpw_spy):
    """The right password for a cheap hash costs one check of its own cost."""
    assert success(login(checker, b"alice", GOOD.encode())) == b"alice"
    assert checkpw_spy.costs == [4]


def test_uniform_cost_is_the_files_highest(tmp_path, clock, blocking, checkpw_spy):
    """With a hash costlier than the standard in the file, every refusal costs that much."""
    path = tmp_path / "htpasswd"
    costly = b"carol:" + bcrypt.gensalt(rounds=13) + b"." * 31 + b"\n"
    path.write_bytes(entry("alice", GOOD, 4) + costly)
    checker = Htpasswd(str(path), blocking, clock)
    failure(login(checker, b"mallory", b"x"), UnauthorizedLogin)
    assert checkpw_spy.costs == [13]
    checkpw_spy.costs.clear()
    failure(login(checker, b"carol", b"x"), UnauthorizedLogin)
    assert checkpw_spy.costs == [13]
    checkpw_spy.costs.clear()
    failure(login(checker, b"alice", b"x"), UnauthorizedLogin)
    assert sum(2**c for c in checkpw_spy.costs) == 2**13


def test_good_check_still_cached(checker, checkpw_spy, clock):
    """A verified pair is trusted for a while without bcrypt, as before."""
    assert success(login(checker, b"alice", GOOD.encode())) == b"alice"
    clock.advance(30)
    assert success(login(checker, b"alice", GOOD.encode())) == b"alice"
    assert checkpw_spy.costs == [4]


# -- The weak-cost warning ------------------------------------------------------


def test_weak_costs_named_at_load(tmp_path, clock, blocking):
    """Loading the file warns about each user whose cost is below 10, and never logs a hash."""
    path = tmp_path / "htpasswd"
    lines = [entry("alice", GOOD, 4), entry("bob", "b", 9), entry("carol", "c", 10)]
    path.write_bytes(b"".join(lines))
    with capturedLogs() as events:
        Htpasswd(str(path), blocking, clock)
    warnings = [formatEvent(e) for e in events if e["log_level"].name == "warn"]
    assert len(warnings) == 1, warnings
    assert "alice (cost 4)" in warnings[0] and "bob (cost 9)" in warnings[0]
    assert "carol" not in warnings[0]
    everything = " ".join(formatEvent(e) for e in events) + repr(events)
    for line in lines:
        assert line.split(b":", 1)[1].strip().decode() not in everything
        assert line.split(b"$")[-1].strip().decode() not in everything


def test_no_warning_for_standard_costs(tmp_path, clock, blocking):
    """A file of cost-10+ hashes loads without a warning."""
    path = tmp_path / "htpasswd"
    path.write_bytes(b"carol:" + bcrypt.gensalt(rounds=12) + b"." * 31 + b"\n")
    with capturedLogs() as events:
        Htpasswd(str(path), blocking, clock)
    assert not [e for e in events if e["log_level"].name == "warn"]


# -- tap.py: options and the password threads ------------------------------------


def parse(*args: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(
        ["--cache", "/tmp/x", "--index-url", "http://h.invalid/"] + list(args)
    )
    return options


def test_failure_options():
    """--auth-failures and --auth-failure-window default to 10 and 60 s, and are checked."""
    options = parse()
    assert (options["auth-failures"], options["auth-failure-window"]) == (10, 60.0)
    options = parse("--auth-failures", "3", "--auth-failure-window", "300")
    assert (options["auth-failures"], options["auth-failure-window"]) == (3, 300.0)
    for bad in (["--auth-failures", "0"], ["--auth-failure-window", "0"]):
        with pytest.raises(usage.UsageError):
            parse(*bad)


def test_make_service_runs_bcrypt_in_its_own_pool(tmp_path, htpasswd_path):
    """makeService starts a 2-thread "pypicache-bcrypt" pool beside the shared
    one and the one that stores files, hands it to the checker, and stops every
    pool with the service."""
    options = parse(
        "--cache",
        str(tmp_path / "c"),
        "--auth-file",
        str(htpasswd_path),
        "--auth-failures",
        "4",
    )
    top = tap.makeService(options, reactor=MemoryReactorClock())
    pools = {s.pool.name: s.pool for s in top if isinstance(s, ThreadPoolService)}
    assert set(pools) == {"pypicache", "pypicache-bcrypt", "pypicache-sync"}
    assert pools["pypicache-bcrypt"].max == 2
    top.startService()
    try:
        assert all(pool.started for pool in pools.values())
    finally:
        top.stopService()
    assert not any(pool.started for pool in pools.values())


def test_build_app_passes_the_password_runner(tmp_path, htpasswd_path, clock):
    """build_app gives the checker ``run_password_check`` (default: ``run_blocking``)
    and the policy a limit made of the failure options."""
    shared, passwords = Blocking(), Blocking()
    common = dict(
        cache=str(tmp_path / "c"),
        index_url="http://h.invalid/simple/",
        reactor=clock,
        pool=None,
        auth_file=str(htpasswd_path),
    )
    app = tap.build_app(
        run_blocking=shared,
        run_password_check=passwords,
        auth_failures=1,
        **common,
    )
    failure(write(app.policy, "10.0.0.1"), Unauthorized)
    failure(write(app.policy, "10.0.0.1"), TooManyRequests)
    assert (shared.calls, passwords.calls) == (0, 1)
    app = tap.build_app(run_blocking=shared, **common)
    failure(write(app.policy, "10.0.0.1"), Unauthorized)
    assert shared.calls == 1


# -- A real daemon ----------------------------------------------------------------


@pytest_twisted.async_yield_fixture()
async def guarded(tmp_path, htpasswd_path):
    """A daemon with --auth-file, on loopback."""
    world = await start_world(tmp_path, (), timeout=5, auth_file=str(htpasswd_path))
    yield world
    await world.stop()


@pytest_twisted.ensureDeferred
async def test_guessing_gets_429_while_reads_go_on(guarded):
    """Eleven uploads with a wrong password from 127.0.0.1: ten 401s, then a 429 with
    Retry-After (the right password too); /health and reads are still served."""
    daemon = guarded.daemon
    content_type, form = multipart(
        [(":action", "file_upload"), ("name", "thing"), ("version", "1.0")],
        [("content", b"thing-1.0-py3-none-any.whl", b"not really a wheel")],
    )
    headers = {"Content-Type": content_type}

    def upload(password: str):
        return defer.ensureDeferred(
            send(daemon, "POST", "/", form, headers, credentials=("alice", password))
        )

    answers = await defer.gatherResults([upload(f"guess-{n}") for n in range(10)])
    assert [a.code for a in answers] == [401] * 10
    for password in ("guess-10", GOOD):
        answer = await upload(password)
        assert answer.code == 429, answer
        assert 1 <= int(answer.header("retry-after")) <= 60
    health = await send(daemon, "GET", "/health")
    assert health.code == 200
    assert (await send(daemon, "GET", "/simple/")).code == 200
    assert not list((guarded.cache / "private").glob("*releases/*/*"))
