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

Reads answer at once from the listings (an already-fired Deferred: the hot
paths take it with :func:`~pypicache.concurrency.result_now`); writes that
sync go to the ``run_sync`` threads, whole-tree work to ``run_blocking``.
"""

import json
import os
import time
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
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
from pypicache.storage.interface import AlreadyStored, IStore
from pypicache.storage.listed import ListedLayout
from pypicache.storage.listings import DEFAULT_BUDGET
from pypicache.storage.pagefile import read_page_file, write_page_file
from pypicache.storage.records import (
    DELETED,
    INCOMING,
    MIRROR,
    PRERELEASES,
    RELEASES,
    SIDECAR_SUFFIX,
    CachedPage,
    Opened,
    StoredFile,
    origin_of,
)
from pypicache.storage.state import FileState, IState


def _now(f: Any, *args: Any) -> "Deferred[Any]":
    """Call ``f`` here and now: its result or failure as a fired Deferred."""
    try:
        return succeed(f(*args))
    except Exception:
        return fail()


@implementer(IStore, IState)
class FilesystemStore(ListedLayout, FileState):
    """The store on a local filesystem (the reading half is :class:`ListedLayout`).

    :param run_blocking: where whole folders are read (default: at once).
    :param run_sync: where files are written and synced (default: ``run_blocking``).
    """

    def __init__(
        self,
        root: FilePath,
        clock: Any = time,
        listing_budget: int = DEFAULT_BUDGET,
        run_blocking: RunBlocking | None = None,
        run_sync: RunBlocking | None = None,
    ) -> None:
        super().__init__(root, listing_budget, run_blocking)
        self._run_sync = run_sync or self._run_blocking
        #: Hot paths may call ``find_now``, ``private_now``, ``open_now``: no Deferreds.
        self.answers_now = type(self) is FilesystemStore  # (a subclass may wait)
        self._now = getattr(clock, "seconds", None) or clock.time
        for area in (MIRROR, RELEASES, PRERELEASES, INCOMING, DELETED, "pages"):
            self.area(area).makedirs(ignoreExistingDirectory=True)

    # -- reading -------------------------------------------------------------

    def files(self, project: str) -> "Deferred[list[StoredFile]]":
        return _now(self.listed_files, project)

    def read_files(self, projects: list[str]) -> "Deferred[list[StoredFile]]":
        return self._run_blocking(self.read_files_now, list(projects))

    def find(self, project: str, filename: str) -> "Deferred[StoredFile | None]":
        return _now(self.find_now, project, filename)

    def is_private(self, project: str) -> "Deferred[bool]":
        return _now(self.private_now, project)

    def reread(
        self, area: str, project: str, filename: str
    ) -> "Deferred[StoredFile | None]":
        """The archive ``filename`` as the disk has it now, listed if it is there.

        For a caller holding its lock: another process may have stored it a
        moment ago, sooner than a listing would notice.
        """
        return _now(self._reread, area, project, filename)

    def _reread(self, area: str, project: str, filename: str) -> StoredFile | None:
        # A safe filename, joined as ``FilePath.child`` would (see ``_ahead``).
        path = os.path.join(self.child_path(area, project), check_filename(filename))
        if not os.path.exists(path):
            return None  # as ``stored_file`` finds it (the usual case: cold)
        stored = self.stored_file(FilePath(path))
        if stored is not None and self.find_now(project, filename) != stored:
            self._indexed(stored)
        return stored

    def tombstone(
        self, project: str, filename: str
    ) -> "Deferred[dict[str, Any] | None]":
        return _now(self._tombstone, project, filename)

    def _tombstone(self, project: str, filename: str) -> dict[str, Any] | None:
        try:
            record = json.loads(self._tombstone_path(project, filename).getContent())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _tombstone_path(self, project: str, filename: str) -> FilePath:
        return self.project_dir(DELETED, project).child(
            check_filename(filename) + SIDECAR_SUFFIX
        )

    # -- serving ---------------------------------------------------------------

    def open(self, stored: StoredFile, stream: bool = False) -> "Deferred[Opened]":
        return succeed(self.open_now(stored))

    def open_metadata(self, project: str, filename: str) -> "Deferred[Opened | None]":
        return _now(self._metadata_file, project, filename)

    def _metadata_file(self, project: str, filename: str) -> Opened | None:
        stored = self.find_now(project, filename)  # (checks the filename)
        if stored is not None:
            path = stored.path.path + METADATA_SUFFIX
            return Opened(FilePath(path)) if os.path.isfile(path) else None
        # Fetched from upstream ahead of its archive; a private one counts
        # only beside its listed archive (a crash may have left one behind).
        ahead = self._ahead(project, filename)
        return self._missing.lookup(
            (project, filename, METADATA_SUFFIX),
            lambda: Opened(ahead) if ahead.isfile() else None,
        )

    def open_provenance(self, stored: StoredFile) -> "Deferred[Opened | None]":
        path = stored.provenance_path
        return succeed(Opened(path) if path.isfile() else None)

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
        *,
        replace: bool = True,
        provenance: bytes | None = None,
    ) -> "Deferred[StoredFile]":
        if not replace:
            try:
                existing = self.find_now(
                    project or temp.project or "", check_filename(info.filename)
                )
            except BaseException:
                return fail()
            if existing is not None and existing.private:
                return fail(AlreadyStored(existing))
        d = self._run_sync(
            self._persist, temp, info, metadata, project, area, replace, provenance
        )
        return d.addCallback(self._indexed)

    def _persist(
        self,
        temp: TempFile,
        info: DistFile,
        metadata: bytes | None,
        project: str | None,
        area: str | None,
        replace: bool,
        provenance: bytes | None,
    ) -> StoredFile:
        """The disk half of :meth:`commit`: sync, sidecar, rename (blocking,
        thread-safe). With ``replace=False`` the caller holds the lock of the
        filename (:meth:`lock_path`), so nothing stores it meanwhile.

        On failure nothing it wrote is left, so what is served does not
        change, and ``temp`` is left open: the caller may commit it again
        (without its metadata, say), or discard it.

        :raises InsufficientStorage: the disk is full.
        """
        check_filename(info.filename)
        if not replace:
            existing = self.stored_file(
                self.project_dir(
                    area or temp.area, project or temp.project or ""
                ).child(info.filename)
            )
            if existing is not None:
                raise AlreadyStored(existing)
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
        origin = origin_of(info.url) if temp.area == MIRROR else None
        info = attrs.evolve(info, url=None)
        sidecar = {"file": info.to_json(), "stored_at": stored_at, "origin": origin}
        stored = StoredFile(
            path=target,
            info=info,
            area=temp.area,
            stored_at=stored_at,
            project=temp.project or "",
            origin=origin,
        )
        written = []
        try:
            for path, content in (
                (stored.metadata_path, metadata),
                (stored.provenance_path, provenance),
                (target.siblingExtension(SIDECAR_SUFFIX), json.dumps(sidecar).encode()),
            ):
                if content is not None:
                    written.append(path)
                    write_atomically(path, content)
            with full_disk_is_507(info.filename):
                os.replace(temp.path.path, target.path)
                # Renamed: from here a failure must also take the archive back
                # out, or it would be listed after a restart (and make its
                # project private) although its client was told it failed.
                written.append(target)
                fsync_directory(target.parent())
        except BaseException:
            if target in written:
                # Renamed: the temporary file is gone too.
                temp.file.close()
            for path in written:
                remove_quietly(path)
            raise
        # Open (and locked) until renamed: see open_locked_temp.
        temp.file.close()
        return stored

    def update(self, stored: StoredFile, info: DistFile) -> "Deferred[StoredFile]":
        updated = attrs.evolve(stored, info=info)
        return self._run_sync(self._write_record, updated).addCallback(self._indexed)

    def _write_record(self, stored: StoredFile) -> StoredFile:
        """Write the sidecar of ``stored`` again (blocking, thread-safe)."""
        sidecar = {
            "file": stored.info.to_json(),
            "stored_at": stored.stored_at,
            "origin": stored.origin,
        }
        write_atomically(
            stored.path.siblingExtension(SIDECAR_SUFFIX), json.dumps(sidecar).encode()
        )
        return stored

    def add_metadata(
        self, project: str, filename: str, metadata: bytes, digest: str
    ) -> "Deferred[StoredFile]":
        stored = self.find_now(project, filename)
        if stored is None:
            return fail(KeyError(filename))
        updated = attrs.evolve(
            stored, info=attrs.evolve(stored.info, core_metadata={"sha256": digest})
        )
        d = self._run_sync(self._beside, updated, stored.metadata_path, metadata)
        return d.addCallback(self._indexed)

    def add_provenance(
        self, stored: StoredFile, content: bytes
    ) -> "Deferred[StoredFile]":
        d = self._run_sync(self._beside, stored, stored.provenance_path, content)
        return d.addCallback(self._indexed)

    def _beside(self, stored: StoredFile, path: FilePath, content: bytes) -> StoredFile:
        """Write ``content`` beside an archive, then its record (blocking)."""
        write_atomically(path, content)
        return self._write_record(stored)

    def remove(self, stored: StoredFile) -> "Deferred[None]":
        self._folder_cache.clear()
        d = self._run_sync(self._delete, stored)
        return d.addCallback(lambda _: self._unlisted(stored))

    def _delete(self, stored: StoredFile) -> None:
        """The disk half of :meth:`remove` (blocking, thread-safe)."""
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

    def write_metadata(
        self, project: str, filename: str, metadata: bytes
    ) -> "Deferred[None]":
        try:
            path = self._ahead(project, filename)
        except BaseException:
            return fail()
        # Found from now on (in this process: it looked for it before).
        d = self._run_sync(self._write_ahead, path, metadata)
        return d.addBoth(self._missing.changed)

    def _ahead(self, project: str, filename: str) -> FilePath:
        """Where core metadata fetched ahead of its archive is kept (a safe
        filename: joined as ``FilePath.child`` would)."""
        name = check_filename(filename) + METADATA_SUFFIX
        return FilePath(os.path.join(self.child_path(MIRROR, project), name))

    @staticmethod
    def _write_ahead(path: FilePath, metadata: bytes) -> None:
        path.parent().makedirs(ignoreExistingDirectory=True)
        write_atomically(path, metadata)

    def drop_metadata(self, project: str, filename: str) -> "Deferred[None]":
        return _now(lambda: remove_quietly(self._ahead(project, filename)))

    # -- pages ---------------------------------------------------------------

    def read_page(self, project: str) -> "Deferred[CachedPage | None]":
        path = self.page_path(project)  # (no filename is empty:)
        return succeed(
            self._missing.lookup((project, "", "page"), lambda: read_page_file(path))
        )

    def write_page(self, project: str, cached: CachedPage) -> "Deferred[None]":
        d = self._run_sync(write_page_file, self.page_path(project), cached)
        return d.addBoth(self._missing.changed)

    def drop_page(self, project: str) -> "Deferred[None]":
        return _now(self.drop_page_now, project)

    def page_stamp(self, project: str) -> "Deferred[float | None]":
        return succeed(self.page_stamp_now(project))

    # -- maintenance -------------------------------------------------------------

    def read_strays(self) -> "Deferred[dict[str, dict[str, StoredFile]]]":
        return self._run_blocking(self.strays_on_disk)

    def install_strays(
        self, strays: dict[str, dict[str, StoredFile]]
    ) -> "Deferred[None]":
        self.use_strays(strays)
        return succeed(None)

    def remove_temporaries(self, before: float | None = None) -> "Deferred[None]":
        return self._run_blocking(self.remove_leftovers, before)
