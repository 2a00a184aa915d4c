# -*- test-case-name: tests.test_cooldown -*-
"""When pypicache first saw each file of a project (the cooldown's own clock).

One small JSON document per project in the store's state
(:mod:`pypicache.storage.state`), ``first-seen/<project>.json``
(``{filename: seconds since the epoch}``): ``<cache>/first-seen/`` on disk,
``<prefix>/state/first-seen/`` in a bucket, so that every process on a cache
folder and every daemon on a bucket hold a file back from the same moment.
Read on first use and kept in memory for the most recently used projects. A
project's document is written again only when a file never seen before shows
up (never per request); each write merges what is there (the earliest time
wins), so writers racing (workers, daemons) keep each other's times.
"""

from typing import Any, Iterable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pypicache.storage.shared import SharedDocs

log = Logger()

#: The folder of the documents, in the store's state.
FOLDER = "first-seen"


def _times(data: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in data.items()
        if isinstance(k, str) and isinstance(v, (int, float))
    }


class FirstSeen:
    """First-seen times of files, by project; shared through the store.

    :param state: the store (an :class:`~pypicache.storage.state.IState`).
    """

    def __init__(
        self, state: Any, clock: IReactorTime, memory_size: int = 2000
    ) -> None:
        self._clock = clock
        self._docs = SharedDocs(state, FOLDER, clock, memory_size=memory_size)

    def ready(self, project: str) -> "Deferred[None] | None":
        """What to wait for before the times of ``project`` are as the store has them."""
        return self._docs.ready(project)

    def get(self, project: str, filename: str) -> float | None:
        """When ``filename`` was first seen, or ``None`` if never."""
        return _times(self._docs.get(project)).get(filename)

    def see(self, project: str, filenames: Iterable[str]) -> dict[str, float]:
        """Record ``filenames`` as seen now unless seen before; return the
        first-seen time of every file of the project known."""
        times = _times(self._docs.get(project))
        now = None
        new: dict[str, float] = {}
        for name in filenames:
            if name not in times and name not in new:
                now = self._clock.seconds() if now is None else now
                new[name] = now
        if not new:
            return times

        def merged(data: dict[str, Any]) -> dict[str, Any] | None:
            known = _times(data)
            if all(name in known for name in new):
                return None
            for name, when in new.items():
                known[name] = min(when, known.get(name, when))
            return known

        self._docs.update(project, merged).addErrback(
            lambda f: log.error(
                "Cannot record first-seen times of {project}: {reason}",
                project=project,
                reason=f.getErrorMessage(),
            )
        )
        return {**times, **new}
