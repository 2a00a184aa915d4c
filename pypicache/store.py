# -*- test-case-name: tests.test_store -*-
"""The on-disk layout: atomic writes, sidecars, listings. Knows nothing of HTTP.

Layout under the cache root::

    private/releases/<project>/<filename>      uploaded files (precious)
    private/prereleases/<project>/<filename>   uploaded pre-releases
    mirror/<project>/<filename>                files fetched from upstream (disposable)
    pages/<project>.json                       cached upstream pages

Beside each archive ``<filename>.json`` holds what was learned about it (a
:class:`~pypicache.model.DistFile` plus when it was stored) and, when known,
``<filename>.metadata`` its core metadata. Temporary files start with ``.tmp-``
and are never listed or served. The sidecar is written before the archive is
renamed into place, so a listed archive always has its sidecar.
"""

import json
import os
import secrets
import time
from typing import IO, Any, Iterator

import attrs
from twisted.python.filepath import FilePath
from zope.interface import Interface, implementer

from .model import DistFile, ProjectPage
from .names import METADATA_SUFFIX, check_filename, is_distribution

SIDECAR_SUFFIX = ".json"
TEMP_PREFIX = ".tmp-"
MIRROR = "mirror"
RELEASES = "private/releases"
PRERELEASES = "private/prereleases"
#: Where uploads are spooled before their project and area are known.
INCOMING = "private/.incoming"
#: What was deleted from the private areas: ``<project>/<filename>.json``.
DELETED = "private/.deleted"


@attrs.frozen
class StoredFile:
    """An archive on disk and what we know about it."""

    path: FilePath
    info: DistFile
    area: str
    stored_at: float | None = None

    @property
    def private(self) -> bool:
        return self.area != MIRROR

    @property
    def project(self) -> str:
        return self.path.parent().basename()

    @property
    def metadata_path(self) -> FilePath:
        return self.path.siblingExtension(METADATA_SUFFIX)


@attrs.frozen
class CachedPage:
    """An upstream project page with what is needed to revalidate it."""

    page: ProjectPage
    fetched_at: float
    etag: str | None = None
    last_modified: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "page": self.page.to_json(),
            "fetched_at": self.fetched_at,
            "etag": self.etag,
            "last_modified": self.last_modified,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CachedPage":
        return cls(
            page=ProjectPage.from_json(data["page"]),
            fetched_at=float(data["fetched_at"]),
            etag=data.get("etag"),
            last_modified=data.get("last_modified"),
        )


class IStore(Interface):
    """Where archives, their sidecars and cached pages live."""

    def projects() -> list[str]:
        """Normalized names of every project with a stored file, sorted."""

    def files(project: str) -> list[StoredFile]:
        """The stored archives of a project (private first), sorted by filename."""

    def find(project: str, filename: str) -> StoredFile | None:
        """The stored archive ``filename`` of ``project``, or ``None``."""

    def generation(project: str) -> int:
        """A number that changes whenever the project's stored files change."""

    def is_private(project: str) -> bool:
        """Whether the project has (or ever had) private files."""

    def open_temp(project: str | None, area: str) -> "TempFile":
        """A new temporary file in the folder the archive will be committed to."""

    def commit(temp: "TempFile", info: DistFile, metadata: bytes | None, project: str | None, area: str | None) -> StoredFile:
        """Make ``temp`` the archive ``info.filename``, with its sidecar."""

    def update(stored: StoredFile, info: DistFile) -> StoredFile:
        """Rewrite what is known of a stored archive (its sidecar)."""

    def remove(stored: StoredFile) -> None:
        """Delete an archive; a private one leaves a tombstone with its sha256."""

    def tombstone(project: str, filename: str) -> dict[str, Any] | None:
        """What is remembered of a deleted private file, or ``None``."""

    def add_metadata(project: str, filename: str, metadata: bytes, digest: str) -> StoredFile:
        """Store the core metadata of an archive already stored."""

    def metadata_file(project: str, filename: str) -> FilePath | None:
        """The stored core metadata of a file (stored or not), or ``None``."""

    def write_metadata(project: str, filename: str, metadata: bytes) -> None:
        """Keep core metadata fetched from upstream, ahead of its archive."""

    def read_page(project: str) -> CachedPage | None:
        """The cached upstream page of ``project``, or ``None``."""

    def write_page(project: str, cached: CachedPage) -> None:
        """Store the upstream page of ``project``."""


class TempFile:
    """A temporary file opened for writing beside its final place."""

    def __init__(self, directory: FilePath, project: str | None, area: str) -> None:
        directory.makedirs(ignoreExistingDirectory=True)
        self.project = project
        self.area = area
        self.path = directory.child(TEMP_PREFIX + secrets.token_hex(8))
        self.file: IO[bytes] = open(self.path.path, "xb")

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def flush_and_sync(self) -> None:
        """Flush Python's buffer and the kernel's to the disk."""
        self.file.flush()
        os.fsync(self.file.fileno())

    def discard(self) -> None:
        """Close and delete the temporary file."""
        if not self.file.closed:
            self.file.close()
        try:
            os.unlink(self.path.path)
        except FileNotFoundError:
            pass


def write_atomically(path: FilePath, content: bytes) -> None:
    """Write ``content`` to ``path`` through a synced temporary file and a rename."""
    temp = path.sibling(TEMP_PREFIX + secrets.token_hex(8))
    with open(temp.path, "xb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp.path, path.path)


def _is_archive_name(name: str) -> bool:
    return (
        not name.startswith(".")
        and not name.endswith((SIDECAR_SUFFIX, METADATA_SUFFIX))
        and is_distribution(name)
    )


@implementer(IStore)
class FilesystemStore:
    """The store on a local filesystem; listings are kept in memory once read."""

    def __init__(self, root: FilePath, clock: Any = time) -> None:
        self.root = root
        self._now = getattr(clock, "seconds", None) or clock.time
        self._listings: dict[str, dict[str, StoredFile]] = {}
        self._generations: dict[str, int] = {}
        for area in (MIRROR, RELEASES, PRERELEASES, INCOMING, DELETED, "pages"):
            self._area(area).makedirs(ignoreExistingDirectory=True)
        self.remove_temporaries()

    def _area(self, area: str) -> FilePath:
        return self.root.preauthChild(area)

    def _project_dir(self, area: str, project: str) -> FilePath:
        return self._area(area).child(project)

    def remove_temporaries(self) -> None:
        """Delete temporary files a crash may have left behind."""
        for area in (MIRROR, RELEASES, PRERELEASES, INCOMING, "pages"):
            directory = self._area(area)
            for path in [directory, *directory.children()]:
                if path.isdir():
                    for child in path.children():
                        if child.basename().startswith(TEMP_PREFIX):
                            child.remove()

    # -- listings ------------------------------------------------------------

    def projects(self) -> list[str]:
        names = set()
        for area in (RELEASES, PRERELEASES, MIRROR):
            for child in self._area(area).children():
                if child.isdir() and not child.basename().startswith(".") and self.files(child.basename()):
                    names.add(child.basename())
        return sorted(names)

    def _read(self, area: str, project: str) -> Iterator[StoredFile]:
        directory = self._project_dir(area, project)
        if not directory.isdir():
            return
        for path in directory.children():
            name = path.basename()
            if not _is_archive_name(name) or not path.isfile():
                continue
            sidecar = path.siblingExtension(SIDECAR_SUFFIX)
            stored_at = None
            try:
                data = json.loads(sidecar.getContent())
                info = DistFile.from_json(data["file"])
                stored_at = data.get("stored_at")
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                # An archive without a readable sidecar (dropped in by hand):
                # listed with what the filesystem knows until it is rescanned.
                info = DistFile(filename=name, size=path.getsize())
            yield StoredFile(path=path, info=attrs.evolve(info, filename=name, url=None), area=area, stored_at=stored_at)

    def _listing(self, project: str) -> dict[str, StoredFile]:
        listing = self._listings.get(project)
        if listing is None:
            listing = {}
            for area in (MIRROR, PRERELEASES, RELEASES):
                for stored in self._read(area, project):
                    listing[stored.info.filename] = stored
            self._listings[project] = listing
        return listing

    def files(self, project: str) -> list[StoredFile]:
        listing = self._listing(project)
        return sorted(listing.values(), key=lambda s: (not s.private, s.info.filename))

    def find(self, project: str, filename: str) -> StoredFile | None:
        stored = self._listing(project).get(filename)
        if stored is not None and not os.path.isfile(stored.path.path):
            self.forget(project)
            return None
        return stored

    def generation(self, project: str) -> int:
        return self._generations.get(project, 0)

    def forget(self, project: str) -> None:
        """Drop the in-memory listing of ``project`` so it is read again."""
        self._listings.pop(project, None)
        self._generations[project] = self.generation(project) + 1

    # -- writing -------------------------------------------------------------

    def is_private(self, project: str) -> bool:
        return any(self._project_dir(area, project).isdir() for area in (RELEASES, PRERELEASES))

    def open_temp(self, project: str | None, area: str) -> TempFile:
        directory = self._area(area) if project is None else self._project_dir(area, project)
        return TempFile(directory, project, area)

    def commit(
        self,
        temp: TempFile,
        info: DistFile,
        metadata: bytes | None = None,
        project: str | None = None,
        area: str | None = None,
    ) -> StoredFile:
        check_filename(info.filename)
        temp.flush_and_sync()
        temp.file.close()
        if project is not None and area is not None:
            # An upload spooled to INCOMING: move it (same filesystem) beside its target first.
            directory = self._project_dir(area, project)
            directory.makedirs(ignoreExistingDirectory=True)
            moved = directory.child(temp.path.basename())
            os.replace(temp.path.path, moved.path)
            temp.path, temp.project, temp.area = moved, project, area
        target = temp.path.sibling(info.filename)
        stored_at = self._now()
        info = attrs.evolve(info, url=None)
        if metadata is not None:
            write_atomically(target.siblingExtension(METADATA_SUFFIX), metadata)
        sidecar = {"file": info.to_json(), "stored_at": stored_at}
        write_atomically(target.siblingExtension(SIDECAR_SUFFIX), json.dumps(sidecar).encode())
        os.replace(temp.path.path, target.path)
        self.forget(temp.project)
        return StoredFile(path=target, info=info, area=temp.area, stored_at=stored_at)

    def add_metadata(self, project: str, filename: str, metadata: bytes, digest: str) -> StoredFile:
        stored = self.find(project, filename)
        if stored is None:
            raise KeyError(filename)
        write_atomically(stored.metadata_path, metadata)
        return self.update(stored, attrs.evolve(stored.info, core_metadata={"sha256": digest}))

    def update(self, stored: StoredFile, info: DistFile) -> StoredFile:
        sidecar = {"file": info.to_json(), "stored_at": stored.stored_at}
        write_atomically(stored.path.siblingExtension(SIDECAR_SUFFIX), json.dumps(sidecar).encode())
        self.forget(stored.project)
        return attrs.evolve(stored, info=info)

    def _tombstone_path(self, project: str, filename: str) -> FilePath:
        return self._project_dir(DELETED, project).child(check_filename(filename) + SIDECAR_SUFFIX)

    def remove(self, stored: StoredFile) -> None:
        if stored.private:
            path = self._tombstone_path(stored.project, stored.info.filename)
            path.parent().makedirs(ignoreExistingDirectory=True)
            record = {"sha256": stored.info.hashes.get("sha256"), "deleted_at": self._now()}
            write_atomically(path, json.dumps(record).encode())
        for path in (stored.path, stored.path.siblingExtension(SIDECAR_SUFFIX), stored.metadata_path):
            try:
                os.unlink(path.path)
            except FileNotFoundError:
                pass
        self.forget(stored.project)

    def tombstone(self, project: str, filename: str) -> dict[str, Any] | None:
        try:
            record = json.loads(self._tombstone_path(project, filename).getContent())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def metadata_file(self, project: str, filename: str) -> FilePath | None:
        check_filename(filename)
        for area in (RELEASES, PRERELEASES, MIRROR):
            path = self._project_dir(area, project).child(filename + METADATA_SUFFIX)
            if path.isfile():
                return path
        return None

    def write_metadata(self, project: str, filename: str, metadata: bytes) -> None:
        check_filename(filename)
        directory = self._project_dir(MIRROR, project)
        directory.makedirs(ignoreExistingDirectory=True)
        write_atomically(directory.child(filename + METADATA_SUFFIX), metadata)

    # -- pages ---------------------------------------------------------------

    def _page_path(self, project: str) -> FilePath:
        return self._area("pages").child(project + ".json")

    def read_page(self, project: str) -> CachedPage | None:
        try:
            return CachedPage.from_json(json.loads(self._page_path(project).getContent()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def write_page(self, project: str, cached: CachedPage) -> None:
        write_atomically(self._page_path(project), json.dumps(cached.to_json()).encode())
