# -*- test-case-name: tests.test_store -*-
"""The storage interface: what the proxy, uploads and the web layer ask of a store."""

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.filepath import FilePath
from zope.interface import Attribute, Interface

from pypicache.index.model import DistFile
from pypicache.storage.atomic import TempFile
from pypicache.storage.records import CachedPage, StoredFile


class IStore(Interface):
    """Where archives, their sidecars and cached pages live."""

    def projects() -> "Deferred[list[str]]":
        """Normalized names of every project with a stored file, sorted (the
        folders are listed in a thread)."""

    def files(project: str) -> list[StoredFile]:
        """The stored archives of a project (private first), sorted by filename."""

    def read_files(project: str) -> list[StoredFile]:
        """What :meth:`files` gives, read afresh and not kept (blocking, thread-safe)."""

    def find(project: str, filename: str) -> StoredFile | None:
        """The stored archive ``filename`` of ``project``, or ``None``."""

    def reread(area: str, project: str, filename: str) -> StoredFile | None:
        """The archive as the disk has it now (another process may have stored it)."""

    def lock_path(area: str, project: str | None, name: str) -> str:
        """The lock file that serializes work on ``name`` across processes."""

    def generation(project: str) -> int:
        """A number that changes whenever the project's stored files change
        (here or in another process), never reused."""

    def is_private(project: str) -> bool:
        """Whether the project has (or ever had) private files."""

    def open_temp(project: str | None, area: str) -> "TempFile":
        """A new temporary file in the folder the archive will be committed to."""

    def commit(
        temp: "TempFile",
        info: DistFile,
        metadata: bytes | None,
        project: str | None,
        area: str | None,
    ) -> StoredFile:
        """Make ``temp`` the archive ``info.filename``, with its sidecar."""

    def persist(
        temp: "TempFile",
        info: DistFile,
        metadata: bytes | None,
        project: str | None,
        area: str | None,
    ) -> StoredFile:
        """The disk half of ``commit`` (blocking, safe in a thread)."""

    def register(stored: StoredFile) -> StoredFile:
        """The memory half of ``commit``: list what ``persist`` wrote."""

    def update(stored: StoredFile, info: DistFile) -> StoredFile:
        """Rewrite what is known of a stored archive (its sidecar)."""

    def remove(stored: StoredFile) -> None:
        """Delete an archive; a private one leaves a tombstone with its sha256."""

    def tombstone(project: str, filename: str) -> dict[str, Any] | None:
        """What is remembered of a deleted private file, or ``None``."""

    private_changes = Attribute(
        "Counts changes to private files made through this store."
    )

    def read_strays() -> dict[str, dict[str, StoredFile]]:
        """Indexed private archives outside their project's folders (blocking)."""

    def install_strays(strays: dict[str, dict[str, StoredFile]]) -> None:
        """Use what :meth:`read_strays` found."""

    def remove_temporaries(before: float | None) -> None:
        """Delete what a crash left behind, older than ``before`` (blocking)."""

    def add_metadata(
        project: str, filename: str, metadata: bytes, digest: str
    ) -> StoredFile:
        """Store the core metadata of an archive already stored."""

    def persist_metadata(
        stored: StoredFile, metadata: bytes, digest: str
    ) -> StoredFile:
        """The disk half of ``add_metadata`` (blocking, safe in a thread)."""

    def metadata_file(project: str, filename: str) -> FilePath | None:
        """The stored core metadata of a file (stored or not), or ``None``."""

    def write_metadata(project: str, filename: str, metadata: bytes) -> None:
        """Keep core metadata fetched from upstream, ahead of its archive."""

    def read_page(project: str) -> CachedPage | None:
        """The cached upstream page of ``project``, or ``None``."""

    def page_stamp(project: str) -> float | None:
        """When the cached page of ``project`` was last written (``None``: it is not)."""

    def write_page(project: str, cached: CachedPage) -> None:
        """Store the upstream page of ``project``."""

    def drop_page(project: str) -> None:
        """Delete the cached page of ``project``, if it is there."""
