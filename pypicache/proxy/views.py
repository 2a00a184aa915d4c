# -*- test-case-name: tests.test_proxy -*-
"""What a project looks like from ``/simple/`` (combined) and ``/local/`` (disk only)."""

from typing import Callable, Hashable

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from pypicache.concurrency import NotReady, result_now
from pypicache.errors import NotFound, UpstreamError
from pypicache.index.model import DistFile, ProjectPage
from pypicache.proxy.merging import advertised, local_info, merged
from pypicache.proxy.mirror import Mirror
from pypicache.proxy.rules import Rules
from pypicache.proxy.view import ColdPages as ColdPages
from pypicache.proxy.view import View as View
from pypicache.proxy.withdrawals import Withdrawals
from pypicache.storage.interface import IStore
from pypicache.storage.records import CachedPage, Opened, StoredFile

log = Logger()


@attrs.define
class Views:
    """Builds project pages and finds files, keeping private projects private.

    A project with private files is never looked up upstream, unless it is
    named in ``mirror_private``. A view's key changes with the store's
    :meth:`~pypicache.storage.interface.IStore.generation` of the project,
    which is read instead of the listing itself.
    """

    _store: IStore
    _mirror: Mirror
    mirror_private: frozenset[str] = frozenset()
    #: Told of each page fetched from upstream for a client (prefetch).
    on_cold: "ColdPages | None" = None
    #: Told of each archive's ``.metadata`` a client is answered (project,
    #: archive): wheels fetched ahead (:mod:`pypicache.proxy.wheelahead`).
    on_metadata: Callable[[str, str], None] | None = None
    #: What the team decided may be served (cooldown, blocks, yanks...);
    #: replaced whole on reload.
    rules: Rules = attrs.field(factory=Rules)
    #: Where the mirrored files the upstream withdrew are recorded (``None``: nowhere).
    withdrawals: Withdrawals | None = None

    async def is_private(self, project: str) -> bool:
        """Whether the upstream must never be asked about ``project``."""
        if project in self.mirror_private:
            return False
        return await self._store.is_private(project)

    async def _ready(self, area: str, project: str) -> None:
        """Wait until the :attr:`rules` answer for ``project`` as things are
        (the team's state, revalidated: :meth:`Rules.ready`)."""
        waiting = self.rules.ready(area, project)
        if waiting is not None:
            await waiting

    def _ready_now(self, area: str, project: str) -> None:
        """:raises NotReady: the :attr:`rules` must revalidate what they read first."""
        if self.rules.ready(area, project) is not None:
            raise NotReady()

    def is_private_now(self, project: str) -> bool:
        """:meth:`is_private` if the store answers at once.

        :raises NotReady: it does not.
        """
        if project in self.mirror_private:
            return False
        store = self._store
        if getattr(store, "answers_now", False):
            return store.private_now(project)  # type: ignore[attr-defined,no-any-return]
        return result_now(store.is_private(project))

    async def local(self, project: str, for_simple: bool = False) -> View:
        """The page of what is on disk; raises :class:`NotFound` if nothing is.

        :param for_simple: for ``/simple/`` while the upstream fails or lacks
            the project: without the files recorded as withdrawn, whatever
            ``--withdrawn`` says.
        """
        stored = await self._store.files(project)
        known = bool(stored) or await self._store.is_private(project)
        await self._ready("local", project)
        return self._local(project, stored, known, for_simple)

    def local_now(self, project: str) -> View:
        """:meth:`local` if the store answers at once.

        :raises NotReady: it does not.
        """
        stored = result_now(self._store.files(project))
        known = bool(stored) or result_now(self._store.is_private(project))
        self._ready_now("local", project)
        return self._local(project, stored, known, False)

    def _local(
        self,
        project: str,
        stored: list[StoredFile],
        known: bool,
        for_simple: bool,
    ) -> View:
        """:meth:`local` of ``stored``; ``known``: the project has files or
        is private."""
        if not known:
            raise NotFound(f"No files of {project!r} on this server")
        rules = self.rules
        key: tuple[Hashable, ...] = ("local", project, self._store.generation(project))
        if for_simple and self.withdrawals is not None:
            gone = self.withdrawals.files(project)
            stored = [s for s in stored if s.private or s.info.filename not in gone]
            key += ("simple", self.withdrawals.version(project))
        return View(
            key + rules.version("local", project),
            lambda: rules.page(
                "local",
                project,
                ProjectPage(name=project, files=tuple(local_info(s) for s in stored)),
            ),
            stored=stored,
        )

    def local_key(self, project: str) -> Hashable:
        """The key :meth:`local` gives its view (not ``for_simple``), without
        listing the project's files: for a caller that keeps what it made of
        that view (the web interface's pages) to check it is still current."""
        return ("local", project, self._store.generation(project)) + self.rules.version(
            "local", project
        )

    def simple_now(self, project: str) -> View | None:
        """The combined page if it needs no upstream request (private, or
        fresh) and the store answers at once, else ``None``."""
        try:
            private = self.is_private_now(project)
            self._ready_now("private" if private else "simple", project)
        except NotReady:
            return None
        if private:
            return self._private(project, None)
        cached = self._mirror.pages.fresh_now(project)
        return None if cached is None else self._merged(project, cached, None)

    def _files(self, project: str, files: list[StoredFile] | None) -> list[StoredFile]:
        """``files``, else what the store answers at once (read when a page is built)."""
        return files if files is not None else result_now(self._store.files(project))

    def _private(self, project: str, files: list[StoredFile] | None) -> View:
        """The page of a private project (``files``: its stored files, or
        ``None`` to ask the store at once when the page is built)."""
        rules = self.rules
        return View(
            ("private", project, self._store.generation(project))
            + rules.version("private", project),
            lambda: rules.page(
                "private",
                project,
                ProjectPage(
                    name=project,
                    files=tuple(
                        local_info(s) for s in self._files(project, files) if s.private
                    ),
                ),
            ),
        )

    def _merged(
        self, project: str, cached: CachedPage, files: list[StoredFile] | None
    ) -> View:
        rules = self.rules

        def build() -> ProjectPage:
            page, withdrawn, listed = merged(
                cached.page,
                self._files(project, files),
                cached.fetched_at,
                cached.origins,
            )
            if self.withdrawals is not None:
                self.withdrawals.note(project, withdrawn, listed)
            return rules.page("simple", project, page)

        return View(
            (
                "simple",
                project,
                cached.fetched_at,
                cached.etag,
                self._store.generation(project),
            )
            + rules.version("simple", project),
            build,
        )

    async def simple(self, project: str, announce: bool = True) -> View:
        """The combined page: private files, or the upstream's merged with the disk.

        :param announce: tell :attr:`on_cold` of a page fetched for it now;
            else the caller does, with :meth:`announce` (once its answer is
            ready: a walk's work must not compete with rendering it), and
            the page's write into the store waits until then too
            (:meth:`~pypicache.proxy.pages.ProjectPages.hold_write`).
        """
        view = self.simple_now(project)
        if view is not None:
            return view
        if await self.is_private(project):
            files = await self._store.files(project)
            await self._ready("private", project)
            return self._private(project, files)
        await self._ready("simple", project)
        if announce:
            return await self._simple(project, True)
        release = self._mirror.pages.hold_write(project)
        try:
            view = await self._simple(project, False)
        except BaseException:  # a failure, or the client gone (cancelled)
            release()
            raise
        view.written = release
        return view

    async def _simple(self, project: str, announce: bool) -> View:
        """:meth:`simple` of a page not private, asking the upstream."""
        try:
            cached = await self._mirror.pages.get(project)
        except (UpstreamError, NotFound) as e:
            if not await self._store.files(project):
                raise
            log.warn(
                "Serving {project} from disk only: {reason}",
                project=project,
                reason=e.message,
            )
            return await self.local(project, for_simple=True)
        fetched = None
        if self.on_cold is not None and self._mirror.pages.fresh_now(project) is cached:
            fetched = cached.page
            if announce:
                self.on_cold.page_fetched(project, fetched)
        view = self._merged(project, cached, await self._store.files(project))
        view.fetched = None if announce else fetched
        return view

    def announce(self, project: str, view: View) -> None:
        """Tell :attr:`on_cold` of the page ``view`` fetched from upstream, if
        :meth:`simple` did not (``announce=False``), and let its write start."""
        if view.written is not None:
            view.written()
            view.written = None
        if view.fetched is not None and self.on_cold is not None:
            self.on_cold.page_fetched(project, view.fetched)
            view.fetched = None

    def offered(self, f: DistFile) -> bool | dict[str, str]:
        """What ``/simple/`` pages say of a file's core metadata (see :func:`advertised`)."""
        return advertised(f, self._mirror.metadata_digest)

    async def find(self, project: str, filename: str) -> StoredFile | None:
        """A stored file; raises :class:`NotFound` for a private project that
        lacks it, or for a file the :attr:`rules` refuse (stored or not)."""
        stored = await self._store.find(project, filename)
        if stored is None and await self.is_private(project):
            raise NotFound(f"No file {filename!r} in private project {project!r}")
        if self.rules:
            await self.check(project, filename, stored)
        return stored

    def find_now(self, project: str, filename: str) -> StoredFile | None:
        """:meth:`find` if the store answers at once.

        :raises NotReady: it does not.
        """
        stored = self._found_now(project, filename)
        if stored is None and self.is_private_now(project):
            raise NotFound(f"No file {filename!r} in private project {project!r}")
        if self.rules:
            self._ready_now("file", project)
            self._check(project, filename, stored, self._mirror.pages.cached_now)
        return stored

    async def check(
        self, project: str, filename: str, stored: StoredFile | None = None
    ) -> None:
        """Raise :class:`NotFound` with the reason if the :attr:`rules` refuse
        the file (told by what is stored, else by the cached page)."""
        if stored is None:
            stored = await self._store.find(project, filename)
        cached = None
        if stored is None:
            # Read here: an object store's page (none cached yet, say) is
            # not there at once for ``cached_now``.
            cached = await self._mirror.pages.cached(project)
        await self._ready("file", project)
        self._check(project, filename, stored, lambda _: cached)

    def check_now(self, project: str, filename: str) -> None:
        """:meth:`check` if the store answers at once.

        :raises NotReady: it does not.
        """
        stored = self._found_now(project, filename)
        self._ready_now("file", project)
        self._check(project, filename, stored, self._mirror.pages.cached_now)

    def _found_now(self, project: str, filename: str) -> StoredFile | None:
        """The store's ``find``, answered at once (without a Deferred where
        the store's reads answer at once).

        :raises NotReady: it does not.
        """
        store = self._store
        if getattr(store, "answers_now", False):
            return store.find_now(project, filename)  # type: ignore[attr-defined,no-any-return]
        return result_now(store.find(project, filename))

    def _check(
        self,
        project: str,
        filename: str,
        stored: StoredFile | None,
        cached_now: Callable[[str], CachedPage | None],
    ) -> None:
        info = stored.info if stored is not None else None
        if info is None:
            cached = cached_now(project)
            info = cached.page.file(filename) if cached is not None else None
        reason = self.rules.refusal(project, filename, info)
        if reason is not None:
            raise NotFound(reason)

    async def check_upstream(self, project: str, filename: str) -> None:
        """Before a file not stored (or its ``.metadata``) is fetched: raise
        :class:`NotFound` if the :attr:`rules` refuse it as the page it is
        fetched by describes it (the cached page, fetched again if not
        fresh, as the download does), so that a file the cached page did not
        list is judged by what the upstream says of it."""
        if not self.rules or await self._store.find(project, filename) is not None:
            return
        cached = await self._mirror.pages.get(project)
        await self._ready("file", project)
        reason = self.rules.refusal(project, filename, cached.page.file(filename))
        if reason is not None:
            raise NotFound(reason)

    def judged_as_upstream_now(self, project: str) -> bool:
        """Whether ``find_now``, ``stored_now`` or ``check_now``, finding a file
        not stored, judged it as :meth:`check_upstream` would (asked in the
        same step): no rule refuses, or the page judged by is fresh."""
        return not self.rules or self._mirror.pages.fresh_now(project) is not None

    def stored_now(
        self, project: str, filename: str
    ) -> tuple[StoredFile, Opened] | None:
        """:meth:`find` and how to serve the file found, if the store answers
        at once (``None``: not stored).

        :raises NotReady: it does not.
        """
        stored = self.find_now(project, filename)
        if stored is None:
            return None
        store = self._store
        if getattr(store, "answers_now", False):
            return stored, store.open_now(stored)  # type: ignore[attr-defined]
        opening = store.open(stored)
        if not opening.called:
            # Left behind: the asynchronous path opens it again and meets
            # its failure (a file evicted from the bucket meanwhile).
            opening.addErrback(lambda _: None)
        return stored, result_now(opening)

    def open(self, stored: StoredFile) -> "Deferred[Opened]":
        """How to serve (or read) the bytes of a stored file."""
        return self._store.open(stored)

    async def fetch(self, project: str, filename: str) -> StoredFile:
        """A stored file, downloaded first if need be (for bulk caching)."""
        stored = await self.find(project, filename)
        if stored is not None:
            return stored
        await self.check_upstream(project, filename)
        download = await self._mirror.download(project, filename)
        return await download.stored_file()
