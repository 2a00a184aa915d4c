# -*- test-case-name: tests.test_lookups -*-
"""Lookups that found nothing, not made again at once.

A cold request looks its file up several times on the reactor (the fast
lane, the route, the rules, the mirror: six to ten times), and a cold page
its project's files, its generation and its cached page file: each a
failing ``stat`` or ``open`` (a system call, and a chance for the reactor to
lose the GIL to a busy thread). :class:`MissingLookups` remembers such
answers for :data:`~.listings.RECHECK_NS`, as long as a listing is trusted
without looking again (what another process stores shows within it), and
never across

- a change made through this process (:meth:`MissingLookups.changed`): it
  shows at once, as it does in the listings;
- a lock taken by this process (:func:`~.locks.taken`): what is looked up
  under a lock is looked up on the disk, since the lock's last holder,
  another worker say, may have stored it (the mirror's downloads, core
  metadata and pages are fetched under one, and looked for again first).

Only answers that found nothing are kept: a file found is checked on the
disk every time, as it was (another process may have evicted it).
"""

import time
from typing import Any, Callable, TypeVar

from pypicache.storage.listings import RECHECK_NS
from pypicache.storage.locks import taken

#: Answers kept at most (then forgotten at once).
KEPT = 4096

T = TypeVar("T")


class MissingLookups:
    """What found nothing, by key (any tuple the caller picks per kind of
    lookup), with when (monotonic ns), the count of changes and the locks
    taken then."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, ...], tuple[int, int, int]] = {}
        self._changes = 0

    def __len__(self) -> int:
        return len(self._seen)

    def missing(self, key: tuple[str, ...]) -> bool:
        """Whether a lookup of ``key`` found nothing so lately that it need
        not be made again."""
        seen = self._seen.get(key)
        return (
            seen is not None
            and seen[1] == self._changes
            and seen[2] == taken()
            and time.monotonic_ns() - seen[0] < RECHECK_NS
        )

    def lookup(
        self, key: tuple[str, ...], find: Callable[[], "T | None"]
    ) -> "T | None":
        """``find()``, unless a lookup of ``key`` found nothing lately
        (``None`` then); what finds nothing is remembered."""
        if self.missing(key):
            return None
        found = find()
        if found is None:
            self.note(key)
        return found

    def note(self, key: tuple[str, ...]) -> None:
        """A lookup of ``key`` found nothing just now."""
        if len(self._seen) >= KEPT:
            self._seen.clear()
        self._seen[key] = (time.monotonic_ns(), self._changes, taken())

    def changed(self, result: Any = None) -> Any:
        """Something was stored through this process: nothing remembered is
        used again (returns ``result``: a Deferred's callback)."""
        self._changes += 1
        return result
