# -*- test-case-name: tests.test_store_contract -*-
"""The reading half of ``S3Store``, the store behind :class:`~pypicache.storage.interface.IStore`
on an S3-compatible bucket, shared by every daemon on it.

The bucket is the source of truth (its layout: :mod:`pypicache.storage.s3.keys`);
the daemon's local folder (``--cache``) is disposable: it holds the spool
files of downloads and uploads, the locks of this host, and local copies of
archives for serving. A file is listed once its bytes are under their final
key and its project's record names it (:class:`ProjectRecords`), so nothing
unverified or half-written is ever listed; listings, privacy and tombstones
come from the records, as this daemon last saw them (at most ``max_age``
seconds old, 2 s by default).

Answering at once: a record younger than ``max_age`` is answered with an
already-fired Deferred. :meth:`S3Store.is_private` answers at once only while
the view has ``ANSWER_MARGIN`` seconds left, so that the :meth:`files` and
:meth:`find` that follow it (while a page is built) answer at once too.
"""

import itertools
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.python.filepath import FilePath

from pypicache.concurrency import RunBlocking
from pypicache.index.model import DistFile
from pypicache.index.names import check_filename
from pypicache.storage.filesystem import FilesystemStore
from pypicache.storage.marks import Watch, slot_of
from pypicache.storage.records import (
    MIRROR,
    CachedPage,
    Opened,
    StoredFile,
)
from pypicache.storage.s3.bucket import Bucket
from pypicache.storage.s3.keys import Keys
from pypicache.storage.s3.records import (
    FileRecord,
    PageRecords,
    ProjectRecord,
    ProjectRecords,
)
from pypicache.storage.s3.serving import LocalCopies
from pypicache.storage.s3.state import BucketState

#: Seconds of its view left for :meth:`S3Store.is_private` to answer at once.
ANSWER_MARGIN = 0.5

#: The user metadata naming an archive's sha256 (``x-amz-meta-sha256``).
SHA256 = "sha256"


def _sha256(info: DistFile) -> str | None:
    return info.hashes.get("sha256")


class S3View:
    """The reading half of :class:`~pypicache.storage.s3.store.S3Store`: the
    records as this daemon sees them, local copies, pages, the local folder.

    :param bucket: the bucket (its operations run in its own threads).
    :param keys: the key layout under the prefix.
    :param local: the local working folder (spools, locks, local copies).
    :param clock: the reactor (``seconds()``, and pauses between retries).
    :param run_blocking: where local files are hashed, moved and written.
    :param redirect: serve archives by a presigned URL (``s3-redirect``).
    :param max_age: seconds a view of a record is used as it is.
    :param local_size: most bytes of local copies of archives kept in
        ``local`` (least recently served evicted first; ``None``: no bound).
    :param copies: the local copies of another store, shared (a named
        upstream's store shares the default's, and its bound).
    """

    def __init__(
        self,
        bucket: Bucket,
        keys: Keys,
        local: FilePath,
        clock: Any,
        run_blocking: RunBlocking,
        redirect: bool = False,
        max_age: float = 2.0,
        local_size: int | None = None,
        copies: LocalCopies | None = None,
    ) -> None:
        self.bucket = bucket
        self.keys = keys
        self._clock = clock
        self._run_blocking = run_blocking
        self.local = FilesystemStore(local, clock=clock, run_blocking=run_blocking)
        self.records = ProjectRecords(bucket, keys, clock, max_age=max_age)
        self.pages = PageRecords(bucket, keys)
        #: The team's state (yanks, statuses, tokens...) in the bucket.
        self.state = BucketState(bucket, keys, clock, state_max_age=max_age)
        self.copies = copies or LocalCopies(
            bucket, run_blocking, redirect, local_size, local, clock
        )
        self._counter = itertools.count(1)
        #: project -> (the ETag last seen of its record, its generation)
        self._generations: dict[str, tuple[str | None, int]] = {}
        self.private_changes = 0
        #: When the bucket's project records were last listed, and their names.
        self._names: tuple[float, list[str]] | None = None
        self._marks: Watch | None = None

    @property
    def root(self) -> FilePath:
        """The local working folder (what is kept per daemon lives there)."""
        return self.local.root

    def area(self, area: str) -> FilePath:
        """An area of the local folder (its local copies: the web
        interface's search reads summaries from those it finds)."""
        return self.local.area(area)

    def forget(self, project: str) -> None:
        """Read the record of ``project`` afresh next time (its local copies
        were evicted, say)."""
        self.records.forget(project)

    def follow_marks(self, marks: Watch) -> None:
        """Read again at once the records of projects another process on
        this local folder purged (``--workers``; see
        :mod:`pypicache.storage.marks`), not ``max_age`` later."""
        self._marks = marks

    def _drop_marked(self) -> None:
        assert self._marks is not None
        slots = self._marks.marked()
        for project in self.records.seen():
            if slot_of(project) in slots:
                self.records.forget(project)

    # -- records ---------------------------------------------------------------

    def _saw(self, record: ProjectRecord) -> ProjectRecord:
        """Note ``record`` as the latest seen: a new ETag is a new generation
        (and the project list is listed again)."""
        seen = self._generations.get(record.project)
        if (seen is None and record.etag is not None and record.files) or (
            seen is not None and seen[0] != record.etag
        ):
            self._generations[record.project] = (record.etag, next(self._counter))
            self._names = None
        return record

    def _record(
        self, project: str, margin: float = 0.0, refresh: bool = False
    ) -> "Deferred[ProjectRecord]":
        """The record of ``project``: at once if its view is fresh enough."""
        if self._marks is not None and self._marks.moved():
            self._drop_marked()
        try:
            view = None if refresh else self.records.fresh(project, margin)
        except BaseException as e:
            return Deferred.fromCoroutine(_raise(e))
        if view is not None:
            return succeed(self._saw(view))
        if refresh or margin:
            d = ensureDeferred(self.records.refresh(project))
        else:
            d = ensureDeferred(self.records.get(project))
        return d.addCallback(self._saw)

    def _stored(self, project: str, record: FileRecord) -> StoredFile:
        return StoredFile(
            path=self.local.project_dir(record.area, project).child(
                record.info.filename
            ),
            info=record.info,
            area=record.area,
            stored_at=record.stored_at,
            project=project,
            origin=record.origin,
        )

    def _listed(self, record: ProjectRecord) -> list[StoredFile]:
        stored = [self._stored(record.project, f) for f in record.files.values()]
        return sorted(stored, key=lambda s: (not s.private, s.info.filename))

    def _found(self, record: ProjectRecord, filename: str) -> StoredFile | None:
        entry = record.files.get(filename)
        return self._stored(record.project, entry) if entry is not None else None

    def _key(self, stored: StoredFile, suffix: str = "") -> str:
        return self.keys.archive(stored.area, stored.project, stored.info.filename) + (
            suffix
        )

    # -- reading -------------------------------------------------------------

    def projects(self) -> "Deferred[list[str]]":
        return ensureDeferred(self._projects())

    async def _projects(self) -> list[str]:
        """The projects with a record (one listing of ``projects/``, kept
        ``max_age`` seconds), less those this daemon's fresh view shows
        empty (every file removed): no request per project."""
        now = self._clock.seconds()
        if self._names is None or now - self._names[0] >= self.records.max_age:
            self._names = (now, await self.records.projects())
        found = []
        for name in self._names[1]:
            view = self.records.fresh(name)
            if view is None or view.files:
                found.append(name)
        return found

    def files(self, project: str) -> "Deferred[list[StoredFile]]":
        # With the margin of is_private: a page built from these at once asks
        # is_private at once (the project status rule) in the same turn.
        d = self._record(project, margin=ANSWER_MARGIN)
        return d.addCallback(self._listed)

    def read_files(self, projects: list[str]) -> "Deferred[list[StoredFile]]":
        async def read() -> list[StoredFile]:
            result = []
            for project in projects:
                result.extend(self._listed(await self._record(project, refresh=True)))
            return result

        return ensureDeferred(read())

    def find(self, project: str, filename: str) -> "Deferred[StoredFile | None]":
        return self._record(project).addCallback(self._found, filename)

    def reread(
        self, area: str, project: str, filename: str
    ) -> "Deferred[StoredFile | None]":
        def pick(record: ProjectRecord) -> StoredFile | None:
            found = self._found(record, filename)
            return found if found is not None and found.area == area else None

        return self._record(project, refresh=True).addCallback(pick)

    def is_private(self, project: str) -> "Deferred[bool]":
        d = self._record(project, margin=ANSWER_MARGIN)
        return d.addCallback(lambda record: record.private)

    def tombstone(
        self, project: str, filename: str
    ) -> "Deferred[dict[str, Any] | None]":
        def pick(record: ProjectRecord) -> dict[str, Any] | None:
            found = record.tombstones.get(filename)
            return dict(found) if found is not None else None

        return self._record(project).addCallback(pick)

    # -- serving ---------------------------------------------------------------

    def open(self, stored: StoredFile, stream: bool = False) -> "Deferred[Opened]":
        return self.copies.archive(self._key(stored), stored, stream)

    def open_metadata(self, project: str, filename: str) -> "Deferred[Opened | None]":
        async def opened() -> Opened | None:
            check_filename(filename)
            stored = self._found(await self._record(project), filename)
            if stored is None:
                # Fetched ahead of its archive: kept under the mirror's key.
                stored = self._stored(project, FileRecord(_bare(filename), MIRROR))
            return await self.copies.small(
                self._key(stored, ".metadata"), stored.metadata_path
            )

        return ensureDeferred(opened())

    def open_provenance(self, stored: StoredFile) -> "Deferred[Opened | None]":
        return self.copies.small(
            self._key(stored, ".provenance"), stored.provenance_path
        )

    # -- pages -----------------------------------------------------------------

    def read_page(self, project: str) -> "Deferred[CachedPage | None]":
        async def read() -> CachedPage | None:
            found = await self.pages.read(project)
            return found[0] if isinstance(found, tuple) else None

        return ensureDeferred(read())

    def write_page(self, project: str, cached: CachedPage) -> "Deferred[None]":
        async def write() -> None:
            await self.pages.write(project, cached)

        return ensureDeferred(write())

    def drop_page(self, project: str) -> "Deferred[None]":
        return ensureDeferred(self.pages.drop(project))

    def page_stamp(self, project: str) -> "Deferred[float | None]":
        async def stamp() -> float | None:
            there = await self.bucket.head(self.keys.page(project))
            return there.last_modified if there is not None else None

        return ensureDeferred(stamp())

    # -- maintenance -------------------------------------------------------------

    def read_strays(self) -> "Deferred[dict[str, dict[str, StoredFile]]]":
        return succeed({})

    def install_strays(
        self, strays: dict[str, dict[str, StoredFile]]
    ) -> "Deferred[None]":
        return succeed(None)

    def remove_temporaries(self, before: float | None = None) -> "Deferred[None]":
        return self.local.remove_temporaries(before)

    # -- this process's view (synchronous) ---------------------------------------

    def lock_path(self, area: str, project: str | None, name: str) -> str:
        return self.local.lock_path(area, project, name)

    def generation(self, project: str) -> int:
        return self._generations.get(project, (None, 0))[1]


def _bare(filename: str) -> DistFile:
    """A file known by its name only (metadata kept ahead of its archive)."""
    return DistFile(filename=check_filename(filename), size=0)


async def _raise(error: BaseException) -> Any:
    raise error
