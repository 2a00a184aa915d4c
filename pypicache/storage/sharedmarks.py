# -*- test-case-name: tests.test_s3_state -*-
"""Refreshes and purges told to every daemon on a store, through its state.

``POST /+refresh/<project>`` and ``DELETE /+cache/<project>`` drop the
project's cached page in the store; but each daemon (each process) also
keeps pages in memory. The processes on one cache folder learn of it from
``DIR/marks`` (:mod:`.marks`, shared memory); daemons on one bucket cannot
share memory, so the answering daemon also marks the project in the state
document ``refreshed.json`` (:mod:`.state`): ``{"marks": {project:
{"token": random, "at": seconds}}}``, the latest :data:`KEEP` kept. Each
daemon's view of it is revalidated as its store says (2 s on S3); a project
whose mark changed since the daemon last looked is dropped from its memory,
so the next request reads the store (and fetches the page again).
"""

import secrets
import time
from typing import Any

from twisted.internet.defer import Deferred

from pypicache.storage.shared import SharedDoc
from pypicache.storage.state import IState

#: The state document of the marks.
MARKS_DOC = "refreshed.json"

#: Marks kept (the oldest go): a daemon that missed more marks than that
#: between two looks at them keeps an old page until its time-to-live ends.
KEEP = 1000


def _marked(data: dict[str, Any], project: str, now: float) -> dict[str, Any]:
    marks = data.get("marks")
    kept = dict(marks) if isinstance(marks, dict) else {}
    kept.pop(project, None)
    kept[project] = {"token": secrets.token_hex(8), "at": now}
    if len(kept) > KEEP:
        newest = sorted(kept.items(), key=lambda i: -float(i[1].get("at", 0)))
        kept = dict(newest[:KEEP])
    return {"marks": kept}


class SharedMarks:
    """The marks as this process sees them."""

    def __init__(self, state: IState) -> None:
        self._doc = SharedDoc(state, MARKS_DOC)
        self._turn: int | None = None
        self._seen: dict[str, Any] = {}

    def ready(self) -> "Deferred[None] | None":
        """``None`` if :meth:`marked` answers as things are (within the
        store's ``state_max_age``), else what to wait for first."""
        return self._doc.ready()

    def marked(self) -> frozenset[str]:
        """The projects marked since the last call (by any daemon; none at
        the first call)."""
        data = self._doc.data
        if self._doc.turn == self._turn:
            return frozenset()
        first = self._turn is None
        self._turn = self._doc.turn
        marks = data.get("marks")
        marks = marks if isinstance(marks, dict) else {}
        changed = frozenset(p for p, m in marks.items() if self._seen.get(p) != m)
        self._seen = dict(marks)
        return frozenset() if first else changed

    async def mark(self, project: str) -> None:
        """Tell every daemon on the store that ``project`` was refreshed or purged."""
        now = time.time()
        await self._doc.change(lambda data: _marked(data, project, now))
