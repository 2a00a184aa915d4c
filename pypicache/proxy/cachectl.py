# -*- test-case-name: tests.test_upstreams -*-
"""Per-project cache control: drop a project's cached pages, remove its mirrored files."""

from typing import Callable

from twisted.logger import Logger

from pypicache.proxy.upstreams import RoutedPages
from pypicache.storage.interface import IStore
from pypicache.storage.marks import Marks
from pypicache.storage.records import StoredFile
from pypicache.storage.sharedmarks import SharedMarks

log = Logger()


class CacheControl:
    """``POST /+refresh/<project>`` and ``DELETE /+cache/<project>``.

    :ivar stores: the cache's own store (under ``""``), and each named
        upstream's under its name.
    """

    _pages: RoutedPages
    _stores: dict[str, IStore]
    #: Told of each file removed, from any store (its size).
    on_removed: Callable[[StoredFile], None] | None
    #: Where the other processes on the cache folder (``--workers``) learn
    #: of a refresh or a purge (``None``: there are none).
    marks: Marks | None
    #: Where the other daemons on the store learn of it (``None``: nowhere).
    shared_marks: SharedMarks | None

    __slots__ = (
        "_pages",
        "_stores",
        "on_removed",
        "marks",
        "shared_marks",
        "__weakref__",
    )

    def __init__(
        self,
        pages: RoutedPages,
        stores: dict[str, IStore],
        on_removed: Callable[[StoredFile], None] | None = None,
        marks: Marks | None = None,
        shared_marks: SharedMarks | None = None,
    ) -> None:
        self._pages = pages
        self._stores = stores
        self.on_removed = on_removed
        self.marks = marks
        self.shared_marks = shared_marks

    async def refresh(self, project: str) -> None:
        """Drop every cached page of ``project``, in every process: the next
        request, whichever worker answers it, fetches it."""
        await self._pages.forget(project)
        if self.marks is not None:
            self.marks.mark(project)
        if self.shared_marks is not None:
            await self.shared_marks.mark(project)

    async def purge(self, project: str) -> dict[str, list[str]]:
        """Remove the mirrored files of ``project`` from every store, never a
        private one; return their names by store (as :attr:`stores` names them).

        Each file is unlisted once it is removed. Clients already reading
        one finish (it is unlinked, not truncated).
        """
        removed: dict[str, list[str]] = {}
        for name, store in self._stores.items():
            for stored in await store.files(project):
                if not stored.private:
                    await store.remove(stored)
                    removed.setdefault(name, []).append(stored.info.filename)
                    if self.on_removed is not None:
                        self.on_removed(stored)
        if self.marks is not None:
            self.marks.mark(project)
        if self.shared_marks is not None:
            await self.shared_marks.mark(project)
        if removed:
            log.info(
                "Purged {count} mirrored files of {project}",
                count=sum(map(len, removed.values())),
                project=project,
            )
        return {name: sorted(files) for name, files in removed.items()}
