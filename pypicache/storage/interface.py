# -*- test-case-name: tests.test_store_contract -*-
"""The storage interface: what the proxy, uploads and the web layer ask of a store.

Every storage operation returns a Deferred, so that a store reached over the
network (an object store) can stand where the filesystem store does. A store
answers what it holds in memory at once (an already-fired Deferred): the hot
paths (a cached page, a cached file) take such an answer with
:func:`~pypicache.concurrency.result_now` and fall back to their asynchronous
path only when it has not fired. The contract tests
(``tests/test_store_contract.py``) run against every store.

Pages are built synchronously, after the checks that may wait: a page of a
project is built from :meth:`IStore.files` taken at once (keyed by
:meth:`IStore.generation`), and the rules (cooldown, project status) ask
:meth:`IStore.is_private` and :meth:`IStore.find` at once while they filter
it. So a store must answer those at once for a project whose
:meth:`IStore.is_private` it has just answered at once (its in-memory view
of the project); the filesystem store always does.

What stays synchronous is not storage: :meth:`IStore.open_temp` (a local spool
file, for every store), :meth:`IStore.lock_path` (local locks),
:meth:`IStore.generation` and :attr:`IStore.private_changes` (what this
process last saw).
"""

from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from pypicache.index.model import DistFile
from pypicache.storage.atomic import TempFile
from pypicache.storage.records import CachedPage, Opened, StoredFile


class AlreadyStored(Exception):
    """:meth:`IStore.commit` with ``replace=False`` found a stored file of
    that name: nothing was written. ``existing`` is its record, for telling
    identical bytes (``200``) from other bytes (``409``)."""

    def __init__(self, existing: StoredFile) -> None:
        super().__init__(f"{existing.info.filename} is already stored")
        self.existing = existing


class IStore(Interface):
    """Where archives, their records, core metadata and cached pages live."""

    # -- reading -----------------------------------------------------------

    def projects() -> "Deferred[list[str]]":
        """Normalized names of every project with a stored file, sorted."""

    def files(project: str) -> "Deferred[list[StoredFile]]":
        """The stored archives of a project (private first), sorted by filename;
        a private file shadows a mirrored one of the same name."""

    def read_files(projects: list[str]) -> "Deferred[list[StoredFile]]":
        """What :meth:`files` gives for each of ``projects`` in turn, read
        afresh and not kept (for ``/index.json``)."""

    def find(project: str, filename: str) -> "Deferred[StoredFile | None]":
        """The stored archive ``filename`` of ``project`` (the private one
        first), or ``None``. Never a file that is not whole and verified."""

    def reread(area: str, project: str, filename: str) -> "Deferred[StoredFile | None]":
        """The archive in ``area`` as the store has it now (another process
        may have stored it a moment ago), listed if it is there."""

    def is_private(project: str) -> "Deferred[bool]":
        """Whether the project has (or ever had: a tombstone) private files."""

    def tombstone(project: str, filename: str) -> "Deferred[dict[str, Any] | None]":
        """What is remembered of a deleted private file (``sha256``,
        ``deleted_at``), or ``None``."""

    # -- serving -------------------------------------------------------------

    def open(stored: StoredFile, stream: bool = False) -> "Deferred[Opened]":
        """How to serve the bytes of a stored archive: once ``path`` holds
        them all; with ``stream``, possibly while they arrive there
        (:attr:`Opened.download`, for a server that sends them as they come)."""

    def open_metadata(project: str, filename: str) -> "Deferred[Opened | None]":
        """How to serve the core metadata of ``filename``: kept beside its
        stored archive, or (mirror only) fetched ahead of it; ``None`` if
        there is none."""

    def open_provenance(stored: StoredFile) -> "Deferred[Opened | None]":
        """How to serve the PEP 740 provenance kept beside an archive, or ``None``."""

    # -- writing -------------------------------------------------------------

    def open_temp(project: str | None, area: str) -> TempFile:
        """A new local temporary file to spool an archive to (synchronous);
        ``project`` and ``area`` may be given later, to :meth:`commit`."""

    def commit(
        temp: TempFile,
        info: DistFile,
        metadata: bytes | None = None,
        project: str | None = None,
        area: str | None = None,
        *,
        replace: bool = True,
        provenance: bytes | None = None,
    ) -> "Deferred[StoredFile]":
        """Make the verified ``temp`` the archive ``info.filename`` of its
        project and area (or ``project`` and ``area``), with its record, its
        core ``metadata`` and ``provenance`` if given, and list it. Core
        metadata kept ahead of a mirrored file (:meth:`write_metadata`)
        becomes its own when none is given. Atomic: on failure nothing of it
        is visible, and ``temp`` may be committed again or discarded.

        :param replace: ``False`` (uploads): fail with :class:`AlreadyStored`
            rather than replace a stored file of that name.
        :raises InsufficientStorage: no room for it.
        """

    def update(stored: StoredFile, info: DistFile) -> "Deferred[StoredFile]":
        """Rewrite what is known of a stored archive (yanked, provenance...)."""

    def remove(stored: StoredFile) -> "Deferred[None]":
        """Delete an archive and what is kept beside it; a private one leaves
        a tombstone with its sha256."""

    def add_metadata(
        project: str, filename: str, metadata: bytes, digest: str
    ) -> "Deferred[StoredFile]":
        """Keep the core metadata of an archive already stored, its sha256
        (``digest``) in its record.

        :raises KeyError: no such stored archive.
        """

    def add_provenance(stored: StoredFile, content: bytes) -> "Deferred[StoredFile]":
        """Keep a PEP 740 provenance object beside a stored archive (its
        record is written again, so that listings change)."""

    def write_metadata(
        project: str, filename: str, metadata: bytes
    ) -> "Deferred[None]":
        """Keep core metadata fetched from upstream, ahead of its archive."""

    def drop_metadata(project: str, filename: str) -> "Deferred[None]":
        """Forget the core metadata of a mirrored file, kept ahead of its
        archive or beside it (none: nothing happens)."""

    # -- pages -----------------------------------------------------------------

    def read_page(project: str) -> "Deferred[CachedPage | None]":
        """The cached upstream page of ``project``, or ``None``."""

    def write_page(project: str, cached: CachedPage) -> "Deferred[None]":
        """Store the upstream page of ``project``."""

    def drop_page(project: str) -> "Deferred[None]":
        """Delete the cached page of ``project``, if it is there."""

    def page_stamp(project: str) -> "Deferred[float | None]":
        """When the cached page of ``project`` was last written (``None``: it is not)."""

    # -- maintenance -------------------------------------------------------------

    def read_strays() -> "Deferred[dict[str, dict[str, StoredFile]]]":
        """Indexed private archives outside their project's folders."""

    def install_strays(strays: dict[str, dict[str, StoredFile]]) -> "Deferred[None]":
        """Use what :meth:`read_strays` found."""

    def remove_temporaries(before: float | None = None) -> "Deferred[None]":
        """Delete what a crash left behind (records without archives older
        than ``before``)."""

    # -- this process's view (synchronous) ---------------------------------------

    def lock_path(area: str, project: str | None, name: str) -> str:
        """The name of the local lock that serializes work on ``name`` across
        processes (see ``storage/locks.py``)."""

    def generation(project: str) -> int:
        """A number that changes whenever the project's stored files change
        (here or, as this process last saw, in another process), never
        reused; ``0`` while it has none."""

    private_changes = Attribute(
        "Counts changes to private files made through this store."
    )
