# -*- test-case-name: tests.test_s3_records -*-
"""Per-project records and cached pages in the bucket, shared by every daemon on it.

The key layout is in :mod:`pypicache.storage.s3.keys`. A project's record
(``<prefix>/projects/<project>.json``) lists every stored file of the
project with what is known of it, and the tombstones of its deleted private
files. Each daemon keeps a short-lived view of the records it uses
(:class:`ProjectRecords`): younger than ``max_age`` (2 s by default) it is
used as it is, older it is revalidated with a conditional ``GET``
(``If-None-Match`` on its ETag: a ``304`` costs no body). So a file stored
through one daemon is listed by every other within ``max_age`` plus one
round trip.

Changes are read-modify-write: the new record is written with ``If-Match``
on the ETag it was made from (``If-None-Match: *`` for a project's first
record); when another daemon wrote in between, S3 answers ``412`` (or
``409``), and the change is made again on a fresh read, after a short random
pause. No writer ever loses another's entries, whatever the number of daemons.
"""

import json
from collections import OrderedDict
from typing import Any, Callable, Mapping

import attrs
from twisted.logger import Logger

from pypicache.concurrency import SingleFlight
from pypicache.index.jsonbytes import stored
from pypicache.index.model import DistFile
from pypicache.storage.records import MIRROR, CachedPage
from pypicache.storage.s3.bucket import NOT_MODIFIED, Bucket, NotModified
from pypicache.storage.s3.errors import BucketError, RecordConflict
from pypicache.storage.s3.keys import Keys
from pypicache.storage.s3.settle import settle

log = Logger()

#: The version of the records' JSON form.
FORMAT = 1


@attrs.frozen
class FileRecord:
    """One stored file as its project's record has it."""

    info: DistFile
    area: str
    stored_at: float | None = None
    #: ``scheme://host[:port]`` of the upstream a mirrored file came from.
    origin: str | None = None

    @property
    def private(self) -> bool:
        return self.area != MIRROR

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.info.to_json(),
            "area": self.area,
            "stored_at": self.stored_at,
            "origin": self.origin,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FileRecord":
        return cls(
            info=DistFile.from_json(data["file"]),
            area=str(data["area"]),
            stored_at=data.get("stored_at"),
            origin=data.get("origin"),
        )


@attrs.frozen
class ProjectRecord:
    """What the bucket holds of one project: its files by filename, and the
    tombstones (``{"sha256": ..., "deleted_at": ...}``) of deleted private files.

    :ivar etag: the ETag of the object it was read from or written as
        (``None``: there is no record in the bucket yet).
    """

    project: str
    files: Mapping[str, FileRecord] = attrs.field(factory=dict)
    tombstones: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    etag: str | None = attrs.field(default=None, eq=False)

    @property
    def private(self) -> bool:
        """Whether the project has (or ever had) private files."""
        return bool(self.tombstones) or any(f.private for f in self.files.values())

    def with_file(self, record: FileRecord) -> "ProjectRecord":
        files = dict(self.files)
        files[record.info.filename] = record
        return attrs.evolve(self, files=files)

    def without_file(
        self, filename: str, tombstone: Mapping[str, Any] | None = None
    ) -> "ProjectRecord":
        files = dict(self.files)
        files.pop(filename, None)
        tombstones = dict(self.tombstones)
        if tombstone is not None:
            tombstones[filename] = dict(tombstone)
        return attrs.evolve(self, files=files, tombstones=tombstones)

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "format": FORMAT,
                "project": self.project,
                "files": {n: f.to_json() for n, f in sorted(self.files.items())},
                "tombstones": dict(sorted(self.tombstones.items())),
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_bytes(cls, project: str, data: bytes, etag: str | None) -> "ProjectRecord":
        """Read a record written by :meth:`to_bytes`.

        :raises BucketError: it is not one (the object was damaged by hand).
        """
        try:
            parsed = json.loads(data)
            return cls(
                project=project,
                files={
                    str(n): FileRecord.from_json(f) for n, f in parsed["files"].items()
                },
                tombstones={
                    str(n): dict(t) for n, t in parsed.get("tombstones", {}).items()
                },
                etag=etag,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise BucketError(f"The record of {project} in the bucket is damaged: {e}")


#: A change to a record: the new record, or ``None`` for no change.
Change = Callable[[ProjectRecord], "ProjectRecord | None"]


@attrs.define
class _View:
    record: ProjectRecord
    #: When the request that gave (or confirmed) it was sent.
    checked: float


class ProjectRecords:
    """Every project's record, as this daemon sees them.

    :param clock: gives the time (``seconds()``) and the pauses between retries.
    :param max_age: seconds a view is used before it is revalidated.
    :param max_projects: views kept (least recently used dropped first):
        memory does not grow with the bucket.
    :param max_attempts: writes tried before a change gives up.

    :ivar requests: ``GET`` requests made, by outcome: ``fetched`` (a body),
        ``not_modified`` (304) and ``absent`` (404).
    :ivar conflicts: writes that lost a race (412/409) and were made again.
    """

    def __init__(
        self,
        bucket: Bucket,
        keys: Keys,
        clock: Any,
        max_age: float = 2.0,
        max_projects: int = 1000,
        max_attempts: int = 20,
    ) -> None:
        self.bucket = bucket
        self.keys = keys
        self._clock = clock
        self.max_age = max_age
        self.max_projects = max_projects
        self.max_attempts = max_attempts
        self._views: OrderedDict[str, _View] = OrderedDict()
        self._reads: SingleFlight[ProjectRecord] = SingleFlight()
        self.requests = {"fetched": 0, "not_modified": 0, "absent": 0}
        #: Writes that lost to another writer (and were made again).
        self.conflicts = 0

    async def get(self, project: str) -> ProjectRecord:
        """The record of ``project`` (an empty one, ``etag`` ``None``, if the
        bucket has none), at most ``max_age`` seconds old."""
        view = self._views.get(project)
        if view is not None and self._clock.seconds() - view.checked < self.max_age:
            self._views.move_to_end(project)
            return view.record
        return await self._reads.run(project, lambda: self._read(project))

    async def _read(self, project: str) -> ProjectRecord:
        """Read (or revalidate) the record of ``project`` now."""
        key = self.keys.project_record(project)
        view = self._views.get(project)
        known = view.record if view is not None else None
        started = self._clock.seconds()
        result = await self.bucket.get(key, etag=known.etag if known else None)
        if result is NOT_MODIFIED and known is not None:
            self.requests["not_modified"] += 1
            record = known
        elif result is None or result is NOT_MODIFIED:
            self.requests["absent"] += 1
            record = ProjectRecord(project)
        else:
            self.requests["fetched"] += 1
            data, etag = result
            record = ProjectRecord.from_bytes(project, data, etag)
        self._keep(record, started)
        return record

    def _keep(self, record: ProjectRecord, checked: float) -> None:
        view = self._views.get(record.project)
        if view is not None and view.checked > checked:
            return  # a newer read or write landed meanwhile
        self._views[record.project] = _View(record, checked)
        self._views.move_to_end(record.project)
        while len(self._views) > self.max_projects:
            self._views.popitem(last=False)

    def fresh(self, project: str, margin: float = 0.0) -> ProjectRecord | None:
        """The view of ``project`` if it is younger than ``max_age - margin``
        (``None``: it must be revalidated first); no request is made."""
        view = self._views.get(project)
        if view is not None and self._clock.seconds() - view.checked < (
            self.max_age - margin
        ):
            return view.record
        return None

    async def refresh(self, project: str) -> ProjectRecord:
        """The record of ``project`` revalidated now, however young its view."""
        return await self._reads.run(project, lambda: self._read(project))

    def forget(self, project: str) -> None:
        """Drop the view of ``project``: the next :meth:`get` reads it."""
        self._views.pop(project, None)

    def seen(self) -> list[str]:
        """The projects this daemon has a view of."""
        return list(self._views)

    async def update(self, project: str, change: Change) -> ProjectRecord:
        """Apply ``change`` to the record of ``project`` and write it; return
        the record as written (or as it is, if ``change`` changed nothing).

        ``change`` may run more than once (on a fresh read each time another
        writer won the race), so it must not have side effects; an exception
        it raises (such as :class:`RecordConflict`) stops the update.

        :raises BucketError: the bucket failed, or the record could not be
            written after ``max_attempts`` tries.
        """

        def changed(current: ProjectRecord) -> ProjectRecord | None:
            new = change(current)
            if new is None or (
                new.files == current.files and new.tombstones == current.tombstones
            ):
                return None
            return new

        def conflict(attempt: int) -> None:
            self.conflicts += 1

        settled = await settle(
            self.bucket,
            self._clock,
            self.keys.project_record(project),
            await self.get(project),
            lambda record: record.etag,
            changed,
            lambda record: record.to_bytes(),
            lambda: self._read(project),
            self.max_attempts,
            conflict,
        )
        if settled.new is None:
            return settled.current
        written = attrs.evolve(settled.new, etag=settled.etag)
        self._keep(written, settled.sent)
        return written

    async def add(
        self, project: str, record: FileRecord, replace: bool = False
    ) -> ProjectRecord:
        """Record a stored file.

        The same file (same sha256) recorded already is left as it is.

        :param replace: overwrite what is recorded under its filename.
        :raises RecordConflict: another file is recorded under that filename
            (and not ``replace``).
        """

        def change(current: ProjectRecord) -> ProjectRecord | None:
            existing = current.files.get(record.info.filename)
            if existing is not None and not replace:
                ours, theirs = record.info.hashes.get(
                    "sha256"
                ), existing.info.hashes.get("sha256")
                if ours and ours == theirs:
                    return None
                raise RecordConflict(
                    f"{record.info.filename} exists already with other contents"
                )
            return current.with_file(record)

        return await self.update(project, change)

    async def remove(
        self, project: str, filename: str, tombstone: Mapping[str, Any] | None = None
    ) -> ProjectRecord:
        """Forget a stored file (leaving ``tombstone`` for it, if given)."""

        def change(current: ProjectRecord) -> ProjectRecord | None:
            if filename not in current.files and tombstone is None:
                return None
            return current.without_file(filename, tombstone)

        return await self.update(project, change)

    async def projects(self) -> list[str]:
        """Every project with a record, sorted (a listing of ``projects/``)."""
        keys = await self.bucket.list(self.keys.projects_prefix)
        return sorted(p for p in map(self.keys.project_of, keys) if p is not None)


class PageRecords:
    """The cached upstream pages in the bucket, one object per project: the
    last writer wins (a page is a cache, not a record of what is stored)."""

    def __init__(self, bucket: Bucket, keys: Keys) -> None:
        self.bucket = bucket
        self.keys = keys

    async def read(
        self, project: str, etag: str | None = None
    ) -> "tuple[CachedPage, str] | NotModified | None":
        """The cached page of ``project`` with the object's ETag; ``None`` if
        there is none (or it is damaged); :data:`NOT_MODIFIED` if it still has
        ``etag``."""
        result = await self.bucket.get(self.keys.page(project), etag=etag)
        if result is None or result is NOT_MODIFIED:
            return result
        data, object_etag = result
        try:
            return CachedPage.from_json(json.loads(data)), object_etag
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warn(
                "The cached page of {project} is damaged: ignored", project=project
            )
            return None

    async def write(self, project: str, cached: CachedPage) -> str:
        """Store the page of ``project``; return the object's ETag."""
        data = stored(cached.to_json(), len(cached.page.files))
        return await self.bucket.put(self.keys.page(project), data)

    async def drop(self, project: str) -> None:
        """Delete the cached page of ``project``, if it is there."""
        await self.bucket.delete(self.keys.page(project))
