# -*- test-case-name: tests.test_proxy -*-
"""One upstream file being downloaded, read by its clients while it grows:
a :class:`~pypicache.storage.growing.Download` (a storage class: the object
store fetches its local copies the same way, see
:mod:`pypicache.storage.s3.fetching`)."""

from pypicache.storage.growing import Download

__all__ = ["Download"]
