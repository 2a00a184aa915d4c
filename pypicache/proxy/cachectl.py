# -*- test-case-name: tests.test_upstreams -*-
"""Per-project cache control: drop a project's cached pages, remove its mirrored files."""

import attrs

from pypicache.proxy.upstreams import RoutedPages
from pypicache.storage.interface import IStore


@attrs.define
class CacheControl:
    """``POST /+refresh/<project>`` and ``DELETE /+cache/<project>``.

    :ivar stores: the cache's store, then each named upstream's.
    """

    _pages: RoutedPages
    _stores: list[IStore]

    def refresh(self, project: str) -> None:
        """Drop every cached page of ``project``: the next request fetches it."""
        self._pages.forget(project)

    def purge(self, project: str) -> list[str]:
        """Remove the mirrored files of ``project`` from every store, never a
        private one; return their names.

        All in one turn of the reactor: no request sees a listing that names a
        removed file. Clients already reading one finish (it is unlinked, not
        truncated).
        """
        removed = []
        for store in self._stores:
            for stored in store.files(project):
                if not stored.private:
                    store.remove(stored)
                    removed.append(stored.info.filename)
        return sorted(removed)
