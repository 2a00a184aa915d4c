# -*- test-case-name: tests.test_store -*-
"""The store on a local filesystem: atomic writes and sidecars. Knows nothing of HTTP.

Layout under the cache root::

    private/releases/<project>/<filename>      uploaded files (precious)
    private/prereleases/<project>/<filename>   uploaded pre-releases
    mirror/<project>/<filename>                files fetched from upstream (disposable)
    pages/<project>.json                       cached upstream pages

Beside each archive ``<filename>.json`` holds what was learned about it (a
:class:`~pypicache.index.model.DistFile` plus when it was stored) and, when known,
``<filename>.metadata`` its core metadata. Temporary files start with ``.tmp-``
and are never listed or served. The sidecar is written before the archive is
renamed into place, so a listed archive always has its sidecar.
"""

import json
import os
import time
from typing import Any

import attrs
from twisted.python.filepath import FilePath
from zope.interface import implementer

from pypicache.concurrency import RunBlocking
from pypicache.index.model import DistFile
from pypicache.index.names import METADATA_SUFFIX, check_filename
from pypicache.storage.atomic import (
    TempFile,
    fsync_directory,
    full_disk_is_507,
    remove_quietly,
    write_atomically,
)
from pypicache.storage.interface import IStore
from pypicache.storage.listed import ListedLayout
from pypicache.storage.listings import DEFAULT_BUDGET
from pypicache.storage.records import (
    DELETED,
    INCOMING,
    MIRROR,
    PRERELEASES,
    RELEASES,
    SIDECAR_SUFFIX,
    CachedPage,
    StoredFile,
)


@implementer(IStore)
class FilesystemStore(ListedLayout):
    """The store on a local filesystem (the reading half is :class:`ListedLayout`)."""

    def __init__(
        self,
        root: FilePath,
        clock: Any = time,
        listing_budget: int = DEFAULT_BUDGET,
        run_blocking: RunBlocking | None = None,
    ) -> None:
        super().__init__(root, listing_budget, run_blocking)
        self._now = getattr(clock, "seconds", None) or clock.time
        for area in (MIRROR, RELEASES, PRERELEASES, INCOMING, DELETED, "pages"):
            self.area(area).makedirs(ignoreExistingDirectory=True)

    # -- writing -------------------------------------------------------------

    def open_temp(self, project: str | None, area: str) -> TempFile:
        directory = (
            self.area(area) if project is None else self.project_dir(area, project)
        )
        return TempFile(directory, project, area)

    def commit(
        self,
        temp: TempFile,
        info: DistFile,
        metadata: bytes | None = None,
        project: str | None = None,
        area: str | None = None,
    ) -> StoredFile:
        return self.register(self.persist(temp, info, metadata, project, area))

    def persist(
        self,
        temp: TempFile,
        info: DistFile,
        metadata: bytes | None = None,
        project: str | None = None,
        area: str | None = None,
    ) -> StoredFile:
        """The disk half of :meth:`commit`: sync, sidecar, rename (blocking, thread-safe).

        On failure nothing it wrote is left (the caller discards ``temp``), so
        what is served does not change.

        :raises InsufficientStorage: the disk is full.
        """
        check_filename(info.filename)
        temp.flush_and_sync()
        if project is not None and area is not None:
            # An upload spooled to INCOMING: move it (same filesystem) beside its target first.
            directory = self.project_dir(area, project)
            directory.makedirs(ignoreExistingDirectory=True)
            moved = directory.child(temp.path.basename())
            os.replace(temp.path.path, moved.path)
            temp.path, temp.project, temp.area = moved, project, area
        target = temp.path.sibling(info.filename)
        stored_at = self._now()
        info = attrs.evolve(info, url=None)
        sidecar = {"file": info.to_json(), "stored_at": stored_at}
        written = []
        try:
            if metadata is not None:
                written.append(target.siblingExtension(METADATA_SUFFIX))
                write_atomically(written[-1], metadata)
            written.append(target.siblingExtension(SIDECAR_SUFFIX))
            write_atomically(written[-1], json.dumps(sidecar).encode())
            with full_disk_is_507(info.filename):
                os.replace(temp.path.path, target.path)
                # Renamed: from here a failure must also take the archive back
                # out, or it would be listed after a restart (and make its
                # project private) although its client was told it failed.
                written.append(target)
                fsync_directory(target.parent())
        except BaseException:
            for path in written:
                remove_quietly(path)
            raise
        finally:
            # Open (and locked) until renamed: see open_locked_temp.
            temp.file.close()
        assert temp.project is not None
        return StoredFile(
            path=target,
            info=info,
            area=temp.area,
            stored_at=stored_at,
            project=temp.project,
        )

    def register(self, stored: StoredFile) -> StoredFile:
        """The memory half of :meth:`commit`: list a persisted file (reactor thread)."""
        return self._indexed(stored)

    def reread(self, area: str, project: str, filename: str) -> StoredFile | None:
        """The archive ``filename`` as the disk has it now, listed if it is there.

        For a caller holding its lock: another process may have stored it a
        moment ago, sooner than a listing would notice.
        """
        stored = self.stored_file(self.project_dir(area, project).child(filename))
        if stored is not None and self.find(project, filename) != stored:
            self.register(stored)
        return stored

    def add_metadata(
        self, project: str, filename: str, metadata: bytes, digest: str
    ) -> StoredFile:
        stored = self.find(project, filename)
        if stored is None:
            raise KeyError(filename)
        return self.register(self.persist_metadata(stored, metadata, digest))

    def persist_metadata(
        self, stored: StoredFile, metadata: bytes, digest: str
    ) -> StoredFile:
        """The disk half of :meth:`add_metadata` (blocking, thread-safe): the
        ``.metadata`` file and the sidecar that records its hash; list the
        result with :meth:`register`."""
        write_atomically(stored.metadata_path, metadata)
        info = attrs.evolve(stored.info, core_metadata={"sha256": digest})
        sidecar = {"file": info.to_json(), "stored_at": stored.stored_at}
        write_atomically(
            stored.path.siblingExtension(SIDECAR_SUFFIX), json.dumps(sidecar).encode()
        )
        return attrs.evolve(stored, info=info)

    def update(self, stored: StoredFile, info: DistFile) -> StoredFile:
        sidecar = {"file": info.to_json(), "stored_at": stored.stored_at}
        write_atomically(
            stored.path.siblingExtension(SIDECAR_SUFFIX), json.dumps(sidecar).encode()
        )
        return self._indexed(attrs.evolve(stored, info=info))

    def _tombstone_path(self, project: str, filename: str) -> FilePath:
        return self.project_dir(DELETED, project).child(
            check_filename(filename) + SIDECAR_SUFFIX
        )

    def remove(self, stored: StoredFile) -> None:
        self._folder_cache.clear()
        if stored.private:
            path = self._tombstone_path(stored.project, stored.info.filename)
            path.parent().makedirs(ignoreExistingDirectory=True)
            record = {
                "sha256": stored.info.hashes.get("sha256"),
                "deleted_at": self._now(),
            }
            write_atomically(path, json.dumps(record).encode())
        for path in (
            stored.path,
            stored.path.siblingExtension(SIDECAR_SUFFIX),
            stored.metadata_path,
            stored.provenance_path,
        ):
            try:
                os.unlink(path.path)
            except FileNotFoundError:
                pass
        self._unlisted(stored)

    def tombstone(self, project: str, filename: str) -> dict[str, Any] | None:
        try:
            record = json.loads(self._tombstone_path(project, filename).getContent())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def metadata_file(self, project: str, filename: str) -> FilePath | None:
        check_filename(filename)
        stored = self.find(project, filename)
        if stored is not None and stored.metadata_path.isfile():
            return stored.metadata_path
        if stored is None:
            # Fetched from upstream ahead of its archive; a private one counts
            # only beside its listed archive (a crash may have left one behind).
            path = self.project_dir(MIRROR, project).child(filename + METADATA_SUFFIX)
            if path.isfile():
                return path
        return None

    def write_metadata(self, project: str, filename: str, metadata: bytes) -> None:
        check_filename(filename)
        directory = self.project_dir(MIRROR, project)
        directory.makedirs(ignoreExistingDirectory=True)
        write_atomically(directory.child(filename + METADATA_SUFFIX), metadata)

    # -- pages ---------------------------------------------------------------

    def read_page(self, project: str) -> CachedPage | None:
        try:
            return CachedPage.from_json(
                json.loads(self.page_path(project).getContent())
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def write_page(self, project: str, cached: CachedPage) -> None:
        write_atomically(self.page_path(project), json.dumps(cached.to_json()).encode())
