# -*- test-case-name: tests.test_store_contract -*-
"""The team's state (:mod:`pypicache.storage.state`) in the bucket, shared by
every daemon on it: the document ``name`` is the object
``<prefix>/state/<name>``.

A change is read-modify-write with a conditional ``PUT``: ``If-None-Match:
*`` when there is no object yet, ``If-Match`` on the ETag read otherwise.
When another daemon wrote in between, S3 answers ``412`` (or ``409``), and
the change is made again on a fresh read after a short random pause, as the
project records' (:mod:`pypicache.storage.s3.records`) are. A document
emptied stays as ``{}`` (a ``DELETE`` cannot be made conditional): no
writer ever loses another's change. Reads are conditional ``GET`` requests
on the ETag a reader has (``304``: unchanged, no body).
"""

from typing import Any

import attrs
from twisted.internet.defer import Deferred, ensureDeferred

from pypicache.storage.s3.bucket import NOT_MODIFIED, Bucket
from pypicache.storage.s3.keys import Keys
from pypicache.storage.s3.settle import settle
from pypicache.storage.state import (
    UNCHANGED,
    StateChange,
    StateDoc,
    check_state_name,
    dump_state,
    parse_state,
)


@attrs.define
class BucketState:
    """:class:`~pypicache.storage.state.IState` on a bucket.

    :ivar state_max_age: seconds a reader uses its view before it
        revalidates it (the delay, plus one round trip, before a change made
        through another daemon shows: 2 s by default, as for the project records).
    :ivar conflicts: writes that lost a race (412/409) and were made again.
    """

    bucket: Bucket
    keys: Keys
    _clock: Any
    state_max_age: float = 2.0
    max_attempts: int = 20
    conflicts: int = 0

    def read_state(
        self, name: str, tag: str | None = None
    ) -> "Deferred[StateDoc | str]":
        return ensureDeferred(self._read(name, tag))

    async def _read(self, name: str, tag: str | None) -> "StateDoc | str":
        key = self.keys.state(check_state_name(name))
        result = await self.bucket.get(key, etag=tag)
        if result is NOT_MODIFIED:
            return UNCHANGED if tag is not None else StateDoc({}, None)
        if result is None:
            return StateDoc({}, None)
        data, etag = result
        return StateDoc(parse_state(name, data), etag)

    def state_names(self, folder: str) -> "Deferred[list[str]]":
        return ensureDeferred(self._names(folder))

    async def _names(self, folder: str) -> list[str]:
        start = self.keys.state(check_state_name(folder + "/x.json"))[: -len("x.json")]
        found = []
        for key in await self.bucket.list(start):
            name = key[len(start) :]
            if name.endswith(".json") and "/" not in name:
                found.append(name[: -len(".json")])
        return sorted(found)

    def change_state(self, name: str, change: StateChange) -> "Deferred[StateDoc]":
        return ensureDeferred(self._change(name, change))

    async def _change(self, name: str, change: StateChange) -> StateDoc:
        key = self.keys.state(check_state_name(name))

        async def reread() -> StateDoc:
            doc = await self._read(name, None)
            assert isinstance(doc, StateDoc)
            return doc

        def changed(current: StateDoc) -> dict[str, Any] | None:
            new = change(current.data)
            return None if new is None or new == current.data else new

        def conflict(attempt: int) -> None:
            self.conflicts += 1

        settled = await settle(
            self.bucket,
            self._clock,
            key,
            await reread(),
            lambda doc: doc.tag,
            changed,
            dump_state,
            reread,
            self.max_attempts,
            conflict,
        )
        if settled.new is None:
            return settled.current
        assert settled.etag is not None
        return StateDoc(settled.new, settled.etag)
