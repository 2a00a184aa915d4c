# -*- test-case-name: tests.test_wheelahead -*-
"""The options of fetching ahead of clients: the walk below a cold page
(``--prefetch-depth``...) and the wheels whose ``.metadata`` a client has read
(``--prefetch-wheels``)."""

from typing import Any

from twisted.python import usage

from pypicache.proxy.prefetch import DEFAULT_DEPTH, DEFAULT_MAX_FILE, DEFAULT_REQUESTS
from pypicache.proxy.wheelahead import DEFAULT_MAX_WHEEL
from pypicache.tap.values import rate


class PrefetchOptions:
    """A mixin of ``usage.Options``: the ``prefetch-*`` options."""

    optParameters: list[list[Any]] = [
        [
            "prefetch-depth",
            None,
            DEFAULT_DEPTH,
            "Levels of dependencies fetched ahead of a client below a cold page (0: no prefetch).",
            int,
        ],
        [
            "prefetch-requests",
            None,
            DEFAULT_REQUESTS,
            "Upstream requests one cold page may prefetch.",
            int,
        ],
        [
            "prefetch-max-file",
            None,
            DEFAULT_MAX_FILE,
            "Largest wheel prefetched with its .metadata, in bytes, K, M or G (0: none).",
            rate,
        ],
        [
            "prefetch-wheels",
            None,
            DEFAULT_MAX_WHEEL,
            "Largest wheel fetched into the cache once a client has read its "
            ".metadata, in bytes, K, M or G (0: none).",
            rate,
        ],
    ]

    def check_prefetch(self) -> None:
        """Raise :class:`usage.UsageError` for a prefetch option out of range."""
        if self["prefetch-requests"] < 1:
            raise usage.UsageError("--prefetch-requests must be at least 1")
        if self["prefetch-depth"] < 0:
            raise usage.UsageError("--prefetch-depth must not be negative")
