# -*- test-case-name: tests.test_s3_records -*-
"""Read-modify-write of one small object against every other writer on the
bucket: the project records' and the team's state documents' way.

The new content is written with ``If-Match`` on the ETag it was made from
(``If-None-Match: *`` when there was no object); when another writer won
in between, S3 answers ``412`` (or ``409``), and the change is made again on
a fresh read after a short random pause, up to ``max_attempts`` times.
"""

import random
from typing import Any, Awaitable, Callable, Generic, TypeVar

import attrs
from twisted.internet.task import deferLater
from twisted.logger import Logger

from pypicache.storage.s3.bucket import Bucket
from pypicache.storage.s3.errors import BucketError, PreconditionFailed

log = Logger()

Current = TypeVar("Current")
New = TypeVar("New")


@attrs.frozen
class Settled(Generic[Current, New]):
    """How a change ended: ``current``, what it was made on last, and the
    ``new`` content written with its ``etag`` (``new`` ``None``: nothing to
    write) by the request sent at ``sent`` (the clock's time)."""

    current: Current
    new: New | None = None
    etag: str | None = None
    sent: float = 0.0


async def settle(
    bucket: Bucket,
    clock: Any,
    key: str,
    current: Current,
    etag_of: Callable[[Current], str | None],
    change: Callable[[Current], New | None],
    encode: Callable[[New], bytes],
    reread: Callable[[], Awaitable[Current]],
    max_attempts: int,
    on_conflict: Callable[[int], None],
) -> Settled[Current, New]:
    """Apply ``change`` (``None``: no change) to ``current`` and write it
    under ``key``, again on ``reread()`` while another writer wins the race
    (``on_conflict(attempt)`` told of each).

    :raises BucketError: the bucket failed, or ``max_attempts`` writes lost.
    """
    for attempt in range(max_attempts):
        new = change(current)
        if new is None:
            return Settled(current)
        etag = etag_of(current)
        sent = clock.seconds()
        try:
            if etag is None:
                written = await bucket.put(key, encode(new), if_none_match=True)
            else:
                written = await bucket.put(key, encode(new), if_match=etag)
        except PreconditionFailed:
            on_conflict(attempt)
            log.debug(
                "{key} changed under this write (try {n}): again",
                key=key,
                n=attempt + 1,
            )
            pause = min(0.5, 0.01 * 2**attempt) * (0.5 + random.random())
            await deferLater(clock, pause)
            current = await reread()
            continue
        return Settled(current, new, written, sent)
    raise BucketError(
        f"Could not change {key}: {max_attempts} concurrent writes won over this one"
    )
