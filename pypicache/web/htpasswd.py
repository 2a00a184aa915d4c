# -*- test-case-name: tests.test_auth -*-
"""The users: an htpasswd file of bcrypt entries, checked as a twisted.cred checker."""

import os
import re
from hashlib import sha256
from typing import Any, Callable, Iterable, Sequence

import attrs
import bcrypt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import implementer

log = Logger()

#: How long a verified (user, password) pair is trusted without running bcrypt again.
CACHE_SECONDS = 60.0
#: How often, at most, the htpasswd file is checked for changes.
RELOAD_SECONDS = 1.0
#: bcrypt only looks at this many bytes of a password (bcrypt 5 raises past it;
#: Apache's ``htpasswd -B`` and its verifier truncate, so we truncate too).
BCRYPT_MAX_PASSWORD = 72
#: Every failed check costs as much as one against a hash of this cost (or of
#: the file's highest cost, if higher): bcrypt.gensalt's default.
STANDARD_COST = 12
#: Hashes cheaper than this are named in a warning when the file is loaded.
WEAK_COST = 10
#: The cost bounds bcrypt accepts.
_MIN_COST, _MAX_COST = 4, 31

_BCRYPT_HASH = re.compile(rb"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}")


def printable(name: bytes) -> str:
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
                user=printable(user),
                source=source,
            )
            continue
        if user in users:
            log.warn(
                "Skipping repeated user {user} in {source}: the first entry counts",
                user=printable(user),
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


def bcrypt_cost(hashed: bytes) -> int:
    """The cost (log2 of the rounds) of a ``$2?$NN$...`` hash, clamped to bcrypt's range."""
    return min(max(int(hashed[4:6]), _MIN_COST), _MAX_COST)


def dummy_hash(cost: int) -> bytes:
    """A well-formed bcrypt hash of ``cost`` that no password matches.

    Made without running bcrypt (a fresh salt and a digest of dots): checking a
    password against it costs what a real hash of that cost does.
    """
    return bcrypt.gensalt(rounds=cost) + b"." * 31


def check_padded(password: bytes, hashed: bytes, padding: Sequence[bytes]) -> bool:
    """:func:`checkpw`, then, if it failed, a check against each hash of ``padding``.

    The padding's answers are ignored: they only make a failure against a cheap
    hash take as long as one against a costly hash.
    """
    if checkpw(password, hashed):
        return True
    for dummy in padding:
        checkpw(password, dummy)
    return False


def as_bytes(value: str | bytes) -> bytes:
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

    Every refusal costs the same bcrypt work, that of one check against a hash
    of ``standard_cost`` or of the file's highest cost if that is higher (the
    uniform cost), so that timing tells neither which users exist nor which
    have cheap hashes: an unknown user is checked against a dummy hash of the
    uniform cost, and a wrong password for a cheaper hash of cost ``c`` is
    followed by dummy checks of costs ``c`` to uniform - 1, whose times add up
    to the uniform cost's. Right passwords for cheap hashes stay fast. Users
    whose cost is below ``WEAK_COST`` are named in a warning at each load.

    :ivar credentialInterfaces: ``IUsernamePassword`` only.
    """

    credentialInterfaces = (IUsernamePassword,)

    _path: "FilePath[Any]" = attrs.field(converter=_to_filepath)
    _run_blocking: Callable[..., "Deferred[Any]"]
    _clock: IReactorTime
    _cache_seconds: float = CACHE_SECONDS
    _standard_cost: int = STANDARD_COST

    _users: dict[bytes, bytes] = attrs.field(init=False, factory=dict)
    _stamp: tuple[int, int, int] | None = attrs.field(init=False, default=None)
    _checked_at: float = attrs.field(init=False, default=0.0)
    _generation: int = attrs.field(init=False, default=0)
    _verified: dict[tuple[bytes, bytes], float] = attrs.field(init=False, factory=dict)
    #: Dummy hashes by cost, from the lowest cost in the file to the uniform cost.
    _dummies: dict[int, bytes] = attrs.field(init=False, factory=dict)
    _uniform_cost: int = attrs.field(init=False, default=STANDARD_COST)
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
        return sorted(printable(u) for u in self._users)

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
        self._prepare_dummies()
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

    def _prepare_dummies(self) -> None:
        """Choose the uniform cost, make its dummy hashes, and warn about weak costs."""
        costs = {user: bcrypt_cost(hashed) for user, hashed in self._users.items()}
        self._uniform_cost = max([self._standard_cost, *costs.values()])
        lowest = min([self._uniform_cost, *costs.values()])
        self._dummies = {
            cost: dummy_hash(cost) for cost in range(lowest, self._uniform_cost + 1)
        }
        weak = sorted((printable(u), c) for u, c in costs.items() if c < WEAK_COST)
        if weak:
            log.warn(
                "Weak bcrypt cost (below {weak_cost}) in {path} for: {users}. "
                "Failed logins for them are slowed to cost {cost}, but their "
                "hashes are cheap to crack: set their passwords again with "
                "htpasswd -B -C {cost}",
                weak_cost=WEAK_COST,
                path=self._path.path,
                users=", ".join(f"{user} (cost {cost})" for user, cost in weak),
                cost=self._uniform_cost,
            )

    def _padding(self, hashed: bytes) -> tuple[bytes, ...]:
        """Dummy hashes whose checks bring a failure against ``hashed`` to the uniform cost."""
        cost = bcrypt_cost(hashed)
        return tuple(self._dummies[c] for c in range(cost, self._uniform_cost))

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
        username = as_bytes(credentials.username)
        password = as_bytes(credentials.password)
        self._maybe_reload()
        digest = sha256(password).digest()
        expires = self._verified.get((username, digest))
        if expires is not None and self._clock.seconds() < expires:
            return username
        hashed = self._users.get(username)
        if hashed is None:
            # Spend the same time as a refusal for a known user, so that timing
            # does not tell which user names exist. The answer is ignored.
            if self._users:
                decoy = self._dummies[self._uniform_cost]
                await maybeDeferred(self._run_blocking, checkpw, password, decoy)
            log.debug("Refused a login: unknown user name (not logged)")
            raise UnauthorizedLogin("Unknown user or wrong password")
        if not await self._verify(username, digest, password, hashed):
            log.info(
                "Refused a login: wrong password for user {user}",
                user=printable(username),
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

        maybeDeferred(
            self._run_blocking,
            check_padded,
            password,
            hashed,
            self._padding(hashed),
        ).addBoth(done)
        return waiter
