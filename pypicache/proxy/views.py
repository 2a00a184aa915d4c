# -*- test-case-name: tests.test_proxy -*-
"""What a project looks like from ``/simple/`` (combined) and ``/local/`` (disk only)."""

from typing import Callable, Hashable, Protocol

import attrs
from twisted.logger import Logger

from pypicache.errors import NotFound, UpstreamError
from pypicache.index.model import DistFile, ProjectPage
from pypicache.index.provenance import PROVENANCE
from pypicache.proxy.mirror import Mirror
from pypicache.proxy.rules import Rules
from pypicache.proxy.withdrawals import Withdrawals
from pypicache.storage.interface import IStore
from pypicache.storage.records import CachedPage, StoredFile, origin_of

log = Logger()


def local_info(stored: StoredFile) -> DistFile:
    """A stored file as pages show it: core metadata only if servable from
    disk, a provenance only if one is kept beside it (:data:`PROVENANCE`)."""
    info = stored.info
    if info.provenance:
        kept = stored.provenance_path.exists()
        info = attrs.evolve(info, provenance=PROVENANCE if kept else None)
    servable = info.filename.endswith(".whl") or stored.metadata_path.exists()
    if not servable:
        return attrs.evolve(info, core_metadata=False)
    if info.core_metadata is False:
        return attrs.evolve(info, core_metadata=True)
    return info


def advertised(
    f: DistFile, digest_of: Callable[[str], str | None]
) -> bool | dict[str, str]:
    """What a page says of the core metadata of a file.

    Every wheel has some (read by ranges, or from the whole wheel, when the
    upstream offers no ``.metadata``): its sha256 where the upstream, the
    stored wheel or a kept ``.metadata`` gives it, else ``true`` (PEP 658/714:
    hash unknown).

    :param digest_of: the sha256 of a kept ``.metadata`` of a file not stored.
    """
    if isinstance(f.core_metadata, dict):
        return f.core_metadata
    if f.core_metadata or f.filename.endswith(".whl"):
        digest = digest_of(f.filename)
        return {"sha256": digest} if digest is not None else True
    return False


def merge(
    page: ProjectPage, stored: list[StoredFile], confirmed_at: float | None = None
) -> ProjectPage:
    """The upstream page with what the disk knows added (see :func:`merged`)."""
    return merged(page, stored, confirmed_at)[0]


def merged(
    page: ProjectPage,
    stored: list[StoredFile],
    confirmed_at: float | None = None,
    origins: frozenset[str | None] | None = None,
) -> tuple[ProjectPage, dict[str, str], list[str]]:
    """The upstream page with what the disk knows added: sizes, metadata,
    extra files; and which mirrored files the upstream withdrew.

    A private file replaces an upstream file of the same name (``--mirror-private``).
    A stored wheel's own metadata hash wins over the upstream's. A mirrored
    file the page does not list is withdrawn, and left out, if the page was
    fetched (``confirmed_at``) after the file was stored and lists files
    from the host the file came from; else (a stale page, a file of another
    upstream) it is added as before. A quarantined page (PEP 792) offers no
    file but private ones.

    :param origins: where the files of the pages merged into ``page`` are
        (``None``: where ``page``'s are).

    :returns: the page, the withdrawn files (filename to reason) and the
        stored mirrored files the page lists.
    """
    quarantined = page.status == "quarantined"
    on_disk = {s.info.filename: s for s in stored}
    files = []
    listed = []
    for f in page.files:
        s = on_disk.pop(f.filename, None)
        if s is None:
            if not quarantined:
                files.append(f)
        elif s.private:
            files.append(local_info(s))
        elif quarantined:
            on_disk[f.filename] = s
        else:
            listed.append(f.filename)
            local = local_info(s).core_metadata
            files.append(
                attrs.evolve(
                    f,
                    size=s.info.size if s.info.size is not None else f.size,
                    core_metadata=(
                        local if isinstance(local, dict) else f.core_metadata or local
                    ),
                )
            )
    withdrawn = {}
    if quarantined:
        why = "the project is quarantined upstream"
        why += f": {page.status_reason}" if page.status_reason else ""
        withdrawn = {n: why for n, s in on_disk.items() if not s.private}
    elif on_disk and confirmed_at is not None:
        hosts = origins or {origin_of(f.url) for f in page.files}
        withdrawn = {
            n: "no longer on the upstream's page"
            for n, s in on_disk.items()
            if not s.private
            and s.stored_at is not None
            and s.stored_at <= confirmed_at
            and (s.origin is None or s.origin in hosts)
        }
    extra = [local_info(s) for n, s in on_disk.items() if n not in withdrawn]
    files.extend(extra)
    page = attrs.evolve(
        page,
        files=tuple(files),
        versions=page.versions if not extra and not quarantined else None,
    )
    return page, withdrawn, listed


@attrs.define
class View:
    """A project page as it is now: a key naming this version of it, and the page.

    The page is built on first use: a caller that already holds what it makes
    of this version (a rendered body) never builds it.
    """

    key: Hashable
    _build: Callable[[], ProjectPage]
    _page: ProjectPage | None = None

    @property
    def page(self) -> ProjectPage:
        if self._page is None:
            self._page = self._build()
        return self._page


class ColdPages(Protocol):
    def page_fetched(self, project: str, page: ProjectPage) -> None:
        """``page`` has just been fetched from upstream for a client."""


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
    #: What the team decided may be served (cooldown, blocks, yanks...);
    #: replaced whole on reload.
    rules: Rules = attrs.field(factory=Rules)
    #: Where the mirrored files the upstream withdrew are recorded (``None``: nowhere).
    withdrawals: Withdrawals | None = None

    def is_private(self, project: str) -> bool:
        """Whether the upstream must never be asked about ``project``."""
        return self._store.is_private(project) and project not in self.mirror_private

    def local(self, project: str, for_simple: bool = False) -> View:
        """The page of what is on disk; raises :class:`NotFound` if nothing is.

        :param for_simple: for ``/simple/`` while the upstream fails or lacks
            the project: without the files recorded as withdrawn, whatever
            ``--withdrawn`` says.
        """
        stored = self._store.files(project)
        if not stored and not self._store.is_private(project):
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
        )

    def local_key(self, project: str) -> Hashable:
        """The key :meth:`local` gives its view (not ``for_simple``), without
        listing the project's files: for a caller that keeps what it made of
        that view (the web interface's pages) to check it is still current."""
        return ("local", project, self._store.generation(project)) + self.rules.version(
            "local", project
        )

    def simple_now(self, project: str) -> View | None:
        """The combined page if it needs no upstream request (private, or fresh), else ``None``."""
        if self.is_private(project):
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
                            local_info(s)
                            for s in self._store.files(project)
                            if s.private
                        ),
                    ),
                ),
            )
        cached = self._mirror.pages.fresh(project)
        return None if cached is None else self._merged(project, cached)

    def _merged(self, project: str, cached: CachedPage) -> View:
        rules = self.rules

        def build() -> ProjectPage:
            page, withdrawn, listed = merged(
                cached.page,
                self._store.files(project),
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

    async def simple(self, project: str) -> View:
        """The combined page: private files, or the upstream's merged with the disk."""
        view = self.simple_now(project)
        if view is not None:
            return view
        try:
            cached = await self._mirror.pages.get(project)
        except (UpstreamError, NotFound) as e:
            if not self._store.files(project):
                raise
            log.warn(
                "Serving {project} from disk only: {reason}",
                project=project,
                reason=e.message,
            )
            return self.local(project, for_simple=True)
        if self.on_cold is not None and self._mirror.pages.fresh(project) is cached:
            self.on_cold.page_fetched(project, cached.page)
        return self._merged(project, cached)

    def offered(self, f: DistFile) -> bool | dict[str, str]:
        """What ``/simple/`` pages say of a file's core metadata (see :func:`advertised`)."""
        return advertised(f, self._mirror.metadata_digest)

    def find(self, project: str, filename: str) -> StoredFile | None:
        """A stored file; raises :class:`NotFound` for a private project that
        lacks it, or for a file the :attr:`rules` refuse (stored or not)."""
        stored = self._store.find(project, filename)
        if stored is None and self.is_private(project):
            raise NotFound(f"No file {filename!r} in private project {project!r}")
        if self.rules:
            self.check(project, filename, stored)
        return stored

    def check(
        self, project: str, filename: str, stored: StoredFile | None = None
    ) -> None:
        """Raise :class:`NotFound` with the reason if the :attr:`rules` refuse
        the file (told by what is stored, else by the cached page)."""
        if stored is None:
            stored = self._store.find(project, filename)
        info = stored.info if stored is not None else None
        if info is None:
            cached = self._mirror.pages.cached(project)
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
        if not self.rules or self._store.find(project, filename) is not None:
            return
        cached = await self._mirror.pages.get(project)
        reason = self.rules.refusal(project, filename, cached.page.file(filename))
        if reason is not None:
            raise NotFound(reason)

    async def fetch(self, project: str, filename: str) -> StoredFile:
        """A stored file, downloaded first if need be (for bulk caching)."""
        stored = self.find(project, filename)
        if stored is not None:
            return stored
        await self.check_upstream(project, filename)
        download = await self._mirror.download(project, filename)
        return await download.stored_file()
