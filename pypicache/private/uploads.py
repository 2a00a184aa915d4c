# -*- test-case-name: tests.test_uploads -*-
"""Private packages: validate uploads, refuse conflicts, delete and yank."""

import datetime
import hashlib
from typing import Any, Callable

import attrs
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pypicache.concurrency import RunBlocking
from pypicache.errors import BadRequest, Conflict, Forbidden, NotFound
from pypicache.index.archives import ArchiveMetadata, inspect_archive
from pypicache.index.hygiene import check_metadata_version
from pypicache.index.model import DistFile
from pypicache.index.names import check_filename, parse_filename
from pypicache.index.provenance import PROVENANCE, provenance_of_upload
from pypicache.private.received import FilePart
from pypicache.storage.atomic import full_disk_is_507
from pypicache.storage.interface import AlreadyStored, IStore
from pypicache.storage.locks import Locks
from pypicache.storage.records import MIRROR, PRERELEASES, RELEASES, StoredFile

log = Logger()

#: The digest fields of the upload API, and the hash each one checks.
DIGEST_FIELDS = {
    "sha256_digest": "sha256",
    "md5_digest": "md5",
    "blake2_256_digest": "blake2_256",
}


def iso_time(seconds: float) -> str:
    """An upload time as PEP 700 writes it: ISO 8601 UTC with a ``Z``."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_upload_filename(filename: str) -> tuple[str, Version]:
    """The project and version of an uploadable file: a wheel or an sdist.

    :raises BadRequest: for anything else.
    """
    check_filename(filename)
    if not filename.endswith((".whl", ".tar.gz", ".zip")):
        raise BadRequest(
            f"Only wheels and sdists (.whl, .tar.gz, .zip) can be uploaded, not {filename!r}"
            + (
                ": an sdist must be a .tar.gz (PEP 625); .tar.bz2, .tar.xz and other "
                "forms are refused"
                if ".tar" in filename or filename.endswith((".tgz", ".tbz", ".txz"))
                else ""
            )
        )
    project, version = parse_filename(filename)
    if version is None:
        raise BadRequest(f"No valid version in {filename!r}")
    return project, version


def _same_version(a: str, b: Version) -> bool:
    try:
        return Version(a) == b
    except InvalidVersion:
        return False


class Uploads:
    """Takes uploaded archives into the private store."""

    _store: IStore
    _run_blocking: RunBlocking
    _clock: IReactorTime
    #: One upload per filename at a time across the processes on the cache folder.
    _locks: Locks
    #: Filenames being stored now: a second upload of one waits for the first.
    _storing: dict[str, DeferredLock]
    #: Told of each file stored by an upload, for the metrics.
    on_upload: Callable[[], None] | None
    #: Told of each file stored by an upload, once it is (its description is
    #: rendered ahead of its first page); must not raise.
    on_stored: Callable[[StoredFile], None] | None
    #: Why a project takes no uploads (archived, quarantined: PEP 792), or ``None``.
    closed: Callable[[str], str | None] | None
    #: What to wait for before :attr:`closed` answers as things are (the
    #: statuses' view revalidated, on S3), or ``None``.
    closed_ready: Callable[[str], Any] | None

    __slots__ = (
        "_store",
        "_run_blocking",
        "_clock",
        "_locks",
        "_storing",
        "on_upload",
        "on_stored",
        "closed",
        "closed_ready",
        "__weakref__",
    )

    def __init__(
        self,
        store: IStore,
        run_blocking: RunBlocking,
        clock: IReactorTime,
        locks: Locks,
        storing: dict[str, DeferredLock] | None = None,
        *,
        on_upload: Callable[[], None] | None = None,
        on_stored: Callable[[StoredFile], None] | None = None,
        closed: Callable[[str], str | None] | None = None,
        closed_ready: Callable[[str], Any] | None = None,
    ) -> None:
        self._store = store
        self._run_blocking = run_blocking
        self._clock = clock
        self._locks = locks
        self._storing = {} if storing is None else storing
        self.on_upload = on_upload
        self.on_stored = on_stored
        self.closed = closed
        self.closed_ready = closed_ready

    async def receive(
        self,
        part: FilePart,
        filename: str,
        form: dict[str, str | None] | None = None,
        uploader: str | None = None,
    ) -> tuple[bool, StoredFile]:
        """Validate an upload and store it; its temporary file is always used up.

        :param form: the upload API's fields (``name``, ``version``, digests).
        :param uploader: who uploads (kept in the file's record).
        :returns: whether it was stored now (``False``: identical bytes were there).
        :raises BadRequest: bad filename, digests, archive or metadata.
        :raises Conflict: other bytes under this filename exist or existed.
        """
        try:
            result = await self._receive(part, filename, form or {}, uploader)
        finally:
            part.temp.discard()
        if result[0] and self.on_upload is not None:
            self.on_upload()
        if result[0] and self.on_stored is not None:
            self.on_stored(result[1])
        return result

    async def _receive(
        self,
        part: FilePart,
        filename: str,
        form: dict[str, str | None],
        uploader: str | None = None,
    ) -> tuple[bool, StoredFile]:
        project, version = parse_upload_filename(filename)
        if self.closed_ready is not None:
            waiting = self.closed_ready(project)
            if waiting is not None:
                await waiting
        why = self.closed(project) if self.closed is not None else None
        if why is not None:
            raise Forbidden(why)
        if part.size == 0:
            raise BadRequest(f"{filename} is empty")
        if form.get("name") and canonicalize_name(form["name"] or "") != project:
            raise BadRequest(
                f"The form's name {form['name']!r} does not match {filename!r}"
            )
        if form.get("version") and not _same_version(form["version"] or "", version):
            raise BadRequest(
                f"The form's version {form['version']!r} does not match {filename!r}"
            )
        if form.get("metadata_version"):
            check_metadata_version(form["metadata_version"], "The upload form")
        for field, algorithm in DIGEST_FIELDS.items():
            claimed = (form.get(field) or "").strip().lower()
            if claimed and claimed != part.hashes[algorithm]:
                raise BadRequest(
                    f"{field} does not match the uploaded bytes of {filename}"
                )
        attestations = form.get("attestations")
        provenance = None
        if attestations and attestations.strip():
            provenance = await self._run_blocking(
                provenance_of_upload, attestations, filename, part.hashes["sha256"]
            )
        metadata = await self._run_blocking(
            inspect_archive, part.temp.path.path, filename
        )
        if canonicalize_name(metadata.name) != project or not _same_version(
            metadata.version, version
        ):
            raise BadRequest(
                f"The archive's metadata names {metadata.name} {metadata.version}, not what {filename!r} says"
            )
        area = PRERELEASES if version.is_prerelease else RELEASES
        lock = self._storing.setdefault(filename, DeferredLock())
        await lock.acquire()
        try:
            with full_disk_is_507(filename):
                held = await self._locks.acquire(
                    self._store.lock_path(area, project, filename),
                    lambda: log.info(
                        "Waiting for another process's upload of {filename}",
                        filename=filename,
                    ),
                )
            try:
                # Another process may have stored it since this one listed its folder.
                await self._store.reread(area, project, filename)
                return await self._store_checked(
                    part,
                    filename,
                    project,
                    version,
                    metadata,
                    uploader=uploader,
                    provenance=provenance,
                )
            finally:
                held.release()
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._storing.pop(filename, None)

    async def _store_checked(
        self,
        part: FilePart,
        filename: str,
        project: str,
        version: Version,
        metadata: ArchiveMetadata,
        uploader: str | None = None,
        provenance: bytes | None = None,
    ) -> tuple[bool, StoredFile]:
        """Refuse conflicts, then store (one upload per filename at a time).

        :param provenance: the PEP 740 provenance object of its attestations,
            kept beside it (also when identical bytes are there without one).
        """
        digest = part.hashes["sha256"]
        existing = await self._store.find(project, filename)
        if existing is not None and existing.private:
            return await self._identical(existing, digest, provenance)
        tombstone = await self._store.tombstone(project, filename)
        if tombstone is not None and tombstone.get("sha256") != digest:
            raise Conflict(
                f"File already exists: {filename} was deleted, and its name cannot be reused for other contents"
            )
        core = metadata.core_metadata
        info = DistFile(
            filename=filename,
            hashes={"sha256": digest},
            requires_python=metadata.requires_python,
            core_metadata=(
                {"sha256": hashlib.sha256(core).hexdigest()}
                if core is not None
                else False
            ),
            size=part.size,
            upload_time=iso_time(self._clock.seconds()),
            uploaded_by=uploader,
            provenance=PROVENANCE if provenance is not None else None,
        )
        area = PRERELEASES if version.is_prerelease else RELEASES
        try:
            stored = await self._store.commit(
                part.temp,
                info,
                core,
                project,
                area,
                replace=False,
                provenance=provenance,
            )
        except AlreadyStored as e:
            # Stored meanwhile (by another process, or another daemon on the
            # same object store).
            return await self._identical(e.existing, digest, provenance)
        log.info(
            "Uploaded {filename} ({size} bytes, sha256 {digest}) by {uploader}",
            filename=filename,
            size=part.size,
            digest=digest,
            uploader=uploader or "an anonymous local client",
        )
        return True, stored

    async def _identical(
        self, existing: StoredFile, digest: str, provenance: bytes | None
    ) -> tuple[bool, StoredFile]:
        """An upload of a stored file's name: identical bytes (``False``, the
        file, its provenance kept if it had none), else :class:`Conflict`."""
        if existing.info.hashes.get("sha256") != digest:
            raise Conflict(
                f"File already exists: {existing.info.filename} was uploaded with other contents"
            )
        if provenance is not None and not existing.info.provenance:
            kept = await self._store.add_provenance(existing, provenance)
            existing = await self._store.update(
                kept, attrs.evolve(kept.info, provenance=PROVENANCE)
            )
        return False, existing

    async def delete_file(self, project: str, filename: str) -> StoredFile:
        """Delete one stored file (private, or a cached mirror copy).

        :raises NotFound: no such file.
        """
        stored = await self._store.find(project, filename)
        if stored is None:
            raise NotFound(f"No file {filename!r} in {project!r}")
        await self._store.remove(stored)
        log.info("Deleted {filename}", filename=filename)
        return stored

    async def delete_release(self, project: str, version: str) -> list[StoredFile]:
        """Delete every private file of one release.

        :raises NotFound: the release has no private files.
        """
        try:
            wanted = Version(version)
        except InvalidVersion as e:
            raise BadRequest(f"Invalid version {version!r}") from e
        doomed = [
            s
            for s in await self._store.files(project)
            if s.private and parse_filename(s.info.filename)[1] == wanted
        ]
        if not doomed:
            raise NotFound(f"No private files of {project} {version}")
        for stored in doomed:
            await self._store.remove(stored)
            log.info("Deleted {filename}", filename=stored.info.filename)
        return doomed

    async def yank(self, project: str, filename: str, reason: str | bool) -> StoredFile:
        """Set (a reason or ``True``) or clear (``False``) the yanked flag of a private file.

        :raises NotFound: no such private file.
        """
        stored = await self._store.find(project, filename)
        if stored is None or stored.area == MIRROR:
            raise NotFound(f"No private file {filename!r} in {project!r}")
        return await self._store.update(
            stored, attrs.evolve(stored.info, yanked=reason)
        )

    async def yank_release(
        self, project: str, version: str, reason: str | bool
    ) -> list[StoredFile]:
        """:meth:`yank` every private file of one release.

        :raises NotFound: the release has no private files.
        """
        wanted = Version(version)
        files = [
            s
            for s in await self._store.files(project)
            if s.private and parse_filename(s.info.filename)[1] == wanted
        ]
        if not files:
            raise NotFound(f"No private files of {project} {version}")
        return [
            await self._store.update(s, attrs.evolve(s.info, yanked=reason))
            for s in files
        ]
