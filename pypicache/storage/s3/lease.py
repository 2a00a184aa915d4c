# -*- test-case-name: tests.test_s3_ops -*-
"""A lease in the bucket: one daemon (or ``pypicache-admin``) at a time does
a chore, such as an eviction pass, whatever the number of daemons on the bucket.

The lease is one small object (``<prefix>/leases/<name>.json``, see
:mod:`.keys`) naming its holder and when it expires. It is taken with a
conditional write only: created with ``If-None-Match: *``, or, once expired,
replaced with ``If-Match`` on the ETag it was read with, so that of two
takers exactly one wins; renewed and released (written expired) with
``If-Match`` on the holder's own ETag, so that a holder that lost it (it was
too slow, and another took it over) learns so instead of overwriting it.
Expiry compares the holder's clock with the taker's: clocks must agree to
well within :data:`LEASE_SECONDS` (NTP does).
"""

import json
import os
import secrets
import socket
from typing import Any

from twisted.logger import Logger

from pypicache.storage.s3.bucket import NOT_MODIFIED, Bucket
from pypicache.storage.s3.errors import PreconditionFailed

log = Logger()

#: Seconds a lease is held without being renewed.
LEASE_SECONDS = 600.0


def holder_name() -> str:
    """Who takes a lease: this host and process, and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Lease:
    """One lease, as one holder sees it.

    :param key: the lease object's key.
    :param clock: gives the time (``seconds()``).
    :param holder: written into the lease (for people reading the bucket).
    """

    def __init__(
        self,
        bucket: Bucket,
        key: str,
        clock: Any,
        holder: str | None = None,
        seconds: float = LEASE_SECONDS,
    ) -> None:
        self.bucket = bucket
        self.key = key
        self._clock = clock
        self.holder = holder or holder_name()
        self.seconds = seconds
        #: The ETag of the lease as this holder wrote it (``None``: not held).
        self._etag: str | None = None
        self._expires = 0.0

    @property
    def held(self) -> bool:
        """Whether this holder has it, as far as it knows (not expired)."""
        return self._etag is not None and self._clock.seconds() < self._expires

    def _body(self, expires: float) -> bytes:
        return json.dumps({"holder": self.holder, "expires": expires}).encode()

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (or the holder let it expire);
        whether it was taken."""
        expires = self._clock.seconds() + self.seconds
        try:
            self._etag = await self.bucket.put(
                self.key, self._body(expires), if_none_match=True
            )
            self._expires = expires
            return True
        except PreconditionFailed:
            pass
        found = await self.bucket.get(self.key)
        if found is None or found is NOT_MODIFIED:
            return False  # released by deletion a moment ago: next time
        data, etag = found
        try:
            until = float(json.loads(data)["expires"])
        except (ValueError, KeyError, TypeError):
            until = 0.0  # damaged: as good as expired
        if until > self._clock.seconds():
            return False
        try:
            self._etag = await self.bucket.put(
                self.key, self._body(expires), if_match=etag
            )
        except PreconditionFailed:
            return False  # another taker won
        self._expires = expires
        return True

    async def renew(self) -> bool:
        """Extend the lease held; ``False`` if it was lost meanwhile."""
        if self._etag is None:
            return False
        expires = self._clock.seconds() + self.seconds
        try:
            self._etag = await self.bucket.put(
                self.key, self._body(expires), if_match=self._etag
            )
        except PreconditionFailed:
            self._etag = None
            log.warn("The lease {key} was taken over by another holder", key=self.key)
            return False
        self._expires = expires
        return True

    async def keep(self) -> bool:
        """Renew the lease once half its time is gone; whether it is still held."""
        if self._etag is None:
            return False
        if self._expires - self._clock.seconds() > self.seconds / 2:
            return True
        return await self.renew()

    async def release(self) -> None:
        """Give the lease up (written expired: the next taker need not wait)."""
        if self._etag is None:
            return
        etag, self._etag = self._etag, None
        try:
            await self.bucket.put(self.key, self._body(0.0), if_match=etag)
        except PreconditionFailed:
            pass  # taken over already
