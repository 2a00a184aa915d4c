# -*- test-case-name: tests.test_shared_state -*-
"""This process's views of the team's state documents (:mod:`.state`).

Rules read the team's state while they filter a page, synchronously; so each
reader keeps a view of the documents it uses, and revalidates a view older
than the store's ``state_max_age`` (on the monotonic clock) with :meth:`IState.read_state` and the
tag it has. On disk that answers at once (one ``stat``), so a view is always
current; on S3 it is a conditional ``GET``, and :meth:`SharedDoc.ready`
gives the Deferred to wait for: the views (:mod:`pypicache.proxy.views`)
wait for it before they build a page or judge a file, so what another
daemon changed is applied within ``state_max_age`` plus one round trip,
never later. A change made through this process shows here at once.
"""

import itertools
import time
from collections import OrderedDict
from typing import Any, Hashable

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from pypicache.storage.state import IState, StateChange, StateDoc

log = Logger()

#: How many documents of a folder a :class:`SharedDocs` keeps by default: the
#: most recently used (one per project read lately; about 300 bytes each).
#: A document read again after it left is read from the store again: on disk
#: that is what a view older than ``state_max_age`` (5 ms) costs anyway.
DOCS_KEPT = 1024

#: The turns of every view in this process, so that a view made again for a
#: document it had forgotten never shows a turn an older view showed.
_turns = itertools.count(1)


class SharedDoc:
    """One document as this process sees it.

    :ivar turn: changes whenever the content does (a cheap version for keys);
        never the same for two views or two contents in this process.
    """

    __slots__ = (
        "_state",
        "name",
        "_data",
        "_tag",
        "_checked",
        "_reading",
        "_changing",
        "_epoch",
        "_complaint",
        "turn",
    )

    def __init__(self, state: IState, name: str) -> None:
        self._state = state
        self.name = name
        self._data: dict[str, Any] = {}
        self._tag: str | None = None
        self._checked: float | None = None
        self._reading: Deferred[None] | None = None
        #: Changes under way here, and a count of those begun or ended: a
        #: read that overlapped one may predate it, and is not used.
        self._changing = 0
        self._epoch = 0
        self._complaint: str | None = None
        self.turn = next(_turns)

    @property
    def data(self) -> dict[str, Any]:
        """The content as last seen (revalidated first if that is at once)."""
        self.ready()
        return self._data

    def fresh(self) -> bool:
        checked = self._checked
        return checked is not None and (
            time.monotonic() - checked < self._state.state_max_age
        )

    def ready(self) -> "Deferred[None] | None":
        """``None`` if the view may be used as it is; else the revalidation
        (started now, or under way) to wait for."""
        if self.fresh() or self._changing:
            return None  # (while a change of ours is under way: it, as shown)
        if self._reading is not None:
            return self._reading
        read_now = getattr(self._state, "read_state_now", None)
        if read_now is not None:
            # A store that answers at once (the filesystem): no Deferred.
            epoch = self._epoch
            try:
                result, started = read_now(self.name, self._tag)
            except Exception:
                self._failed(Failure())
            else:
                self._read(result, started, epoch)
            return None
        started = time.monotonic()
        d = self._state.read_state(self.name, self._tag)
        d.addCallbacks(self._read, self._failed, (started, self._epoch))
        if d.called:
            return None  # answered at once (the filesystem)
        self._reading = d
        d.addBoth(self._done)
        return d

    def _read(self, result: "StateDoc | str", started: float, epoch: int) -> None:
        if self._changing or epoch != self._epoch:
            return  # a change of ours overlapped it: read again next time
        if self._checked is None or self._checked <= started:
            self._checked = started
            if isinstance(result, StateDoc):
                self._use(result)

    def _failed(self, failure: Any) -> None:
        # The last good view stays (a damaged document changes nothing that
        # was decided); asked again after ``state_max_age``, logged once.
        if failure.getErrorMessage() != self._complaint:
            self._complaint = failure.getErrorMessage()
            log.warn(
                "Cannot read {name}: {reason}", name=self.name, reason=self._complaint
            )
        self._checked = time.monotonic()

    def _done(self, result: object) -> None:
        self._reading = None

    def _use(self, doc: StateDoc) -> None:
        self._complaint = None
        if doc.tag != self._tag or doc.data != self._data:
            if doc.data != self._data:
                self.turn = next(_turns)
            self._data, self._tag = doc.data, doc.tag

    async def change(self, change: StateChange) -> dict[str, Any]:
        """Apply ``change`` through the store (atomically against every
        other writer), then here; the content now."""
        self._changing += 1
        self._epoch += 1
        try:
            d = self._state.change_state(self.name, change)
            if not d.called:
                # Shown here at once; what the store wrote replaces it.
                try:
                    mine = change(self._data)
                except Exception:
                    mine = None
                if mine is not None and mine != self._data:
                    self._data, self.turn = mine, next(_turns)
            doc = await d
        finally:
            self._changing -= 1
            self._epoch += 1
        self._use(doc)
        if not self._changing:
            self._checked = time.monotonic()
        return self._data


class SharedDocs:
    """The documents ``<folder>/<key>.json`` (one per project, say), each a
    :class:`SharedDoc`, the most recently used ``memory_size`` kept."""

    def __init__(
        self, state: IState, folder: str, clock: Any, memory_size: int = DOCS_KEPT
    ) -> None:
        self.state = state
        self.folder = folder
        self.clock = clock
        self.memory_size = memory_size
        self._docs: OrderedDict[str, SharedDoc] = OrderedDict()

    def doc(self, key: str) -> SharedDoc:
        found = self._docs.get(key)
        if found is None:
            found = self._docs[key] = SharedDoc(self.state, f"{self.folder}/{key}.json")
            while len(self._docs) > self.memory_size:
                self._docs.popitem(last=False)
        else:
            self._docs.move_to_end(key)
        return found

    def get(self, key: str) -> dict[str, Any]:
        """The document of ``key`` (``{}``: none). Do not change it: :meth:`update`."""
        return self.doc(key).data

    def version(self, key: str) -> Hashable:
        """Changes whenever the document of ``key`` does."""
        doc = self.doc(key)
        doc.ready()
        return doc.turn

    def ready(self, key: str) -> "Deferred[None] | None":
        """:meth:`SharedDoc.ready` of the document of ``key``."""
        return self.doc(key).ready()

    def update(self, key: str, change: StateChange) -> "Deferred[dict[str, Any]]":
        """Apply ``change`` to the document of ``key``; fires with it as written."""
        return Deferred.fromCoroutine(self.doc(key).change(change))

    def put(self, key: str, record: dict[str, Any]) -> "Deferred[dict[str, Any]]":
        """Make ``record`` the document of ``key`` (``{}``: remove it)."""
        if record == self.get(key):
            return succeed(record)
        return self.update(key, lambda current: record)

    def forget(self, key: str) -> None:
        self._docs.pop(key, None)
