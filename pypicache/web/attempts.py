# -*- test-case-name: tests.test_auth_limits -*-
"""Failed logins counted per client address: past a limit, logins are refused for a while (``429``)."""

import ipaddress
import math
from collections import deque

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pypicache.errors import TooManyRequests

log = Logger()

#: Failed logins allowed from one client address within ``DEFAULT_WINDOW``.
DEFAULT_FAILURES = 10
#: Seconds over which failed logins are counted.
DEFAULT_WINDOW = 60.0
#: Most client addresses remembered at once; the least recently failed go first.
MAX_TRACKED = 10_000
#: Longest address kept as a key (a proxy's report is only a header value).
_MAX_KEY = 100


def client_key(address: str) -> str:
    """What failed logins are counted under: the address, or its ``/64`` for IPv6.

    One IPv6 host usually holds a whole ``/64``, so counting its addresses one by
    one would let it guess without end. IPv4-mapped addresses count as IPv4.
    """
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address[:_MAX_KEY]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class FailedLogins:
    """A sliding window of failed logins per client address.

    After ``limit`` failures within ``window`` seconds from one address (an IPv6
    ``/64``), :meth:`check` refuses that address until the oldest of those
    failures is ``window`` seconds old, so that no password check runs for it at
    all. Successes reset nothing: a valid account must not buy more guesses at
    the others. At most ``max_tracked`` addresses are remembered, each with at
    most ``limit`` times; addresses whose last failure left the window are
    forgotten.
    """

    _clock: IReactorTime
    _limit: int
    _window: float
    _max_tracked: int
    #: Per key, its latest failure times; ordered by latest failure, oldest first.
    _failures: dict[str, "deque[float]"]

    __slots__ = (
        "_clock",
        "_limit",
        "_window",
        "_max_tracked",
        "_failures",
        "__weakref__",
    )

    def __init__(
        self,
        clock: IReactorTime,
        limit: int = DEFAULT_FAILURES,
        window: float = DEFAULT_WINDOW,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self._clock = clock
        self._limit = limit
        self._window = window
        self._max_tracked = max_tracked
        self._failures = {}
        self.__attrs_post_init__()

    def __attrs_post_init__(self) -> None:
        if self._limit < 1 or self._window <= 0 or self._max_tracked < 1:
            raise ValueError("limit, window and max_tracked must be positive")

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try to log in again (``0`` if it may now)."""
        recent = self._failures.get(client_key(address))
        if recent is None or len(recent) < self._limit:
            return 0.0
        return max(0.0, recent[0] + self._window - self._clock.seconds())

    def check(self, address: str) -> None:
        """Refuse an address that has failed too often lately.

        :raises TooManyRequests: with the seconds to wait as ``retry_after``.
        """
        wait = self.retry_after(address)
        if wait > 0:
            raise TooManyRequests(
                f"Too many failed logins from this address: try again in {math.ceil(wait)} s",
                wait,
            )

    def failed(self, address: str) -> None:
        """Count a failed login from ``address``."""
        now = self._clock.seconds()
        self._forget_before(now - self._window)
        key = client_key(address)
        recent = self._failures.pop(key, None) or deque(maxlen=self._limit)
        reaching = len(recent) == self._limit - 1
        recent.append(now)
        self._failures[key] = recent
        while len(self._failures) > self._max_tracked:
            del self._failures[next(iter(self._failures))]
        if reaching and now - recent[0] < self._window:
            # Logged once as the address reaches the limit, not at each refusal.
            log.warn(
                "{count} failed logins from {address} within {window} s: "
                "refusing its logins for {wait:.0f} s",
                count=self._limit,
                address=key,
                window=self._window,
                wait=recent[0] + self._window - now,
            )

    def tracked(self) -> int:
        """How many addresses are remembered (for tests)."""
        return len(self._failures)

    def _forget_before(self, cutoff: float) -> None:
        """Forget the addresses whose latest failure is at or before ``cutoff``."""
        while self._failures:
            key = next(iter(self._failures))
            if self._failures[key][-1] > cutoff:
                return
            del self._failures[key]
