# -*- test-case-name: tests.test_store_contract -*-
"""``S3Store``: the store behind :class:`~pypicache.storage.interface.IStore`
on an S3-compatible bucket (its reading half: :mod:`pypicache.storage.s3.view`).

``commit`` uploads the verified spool file under its final key, create-only
(``If-None-Match: *``; an object there with the same sha256 is fine, other
bytes are :class:`AlreadyStored` for an upload), then what is kept beside
it, then adds it to its project's record (``If-Match`` read-modify-write):
only then is it listed, by every daemon on the bucket within ``max_age``.
The spool file becomes the local copy it is served from.
"""

from typing import Callable

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from zope.interface import implementer

from pypicache.index.model import DistFile
from pypicache.index.names import check_filename
from pypicache.storage.atomic import TempFile
from pypicache.storage.interface import AlreadyStored, IStore
from pypicache.storage.records import (
    MIRROR,
    StoredFile,
    origin_of,
)
from pypicache.storage.s3.errors import BucketError, PreconditionFailed
from pypicache.storage.s3.orphans import RECORD_WITHIN, is_orphan
from pypicache.storage.s3.records import (
    FileRecord,
    ProjectRecord,
)
from pypicache.storage.s3.view import SHA256, S3View, _bare, _sha256
from pypicache.storage.state import IState, StateChange, StateDoc


class _Taken(Exception):
    """The record names another file under this filename (inside a change)."""

    def __init__(self, existing: FileRecord) -> None:
        super().__init__(existing.info.filename)
        self.existing = existing


@implementer(IStore, IState)
class S3Store(S3View):
    """The store on a bucket: :class:`S3View` with the writing half."""

    # -- the team's state (storage/s3/state.py) --------------------------------

    @property
    def state_max_age(self) -> float:
        return self.state.state_max_age

    def read_state(
        self, name: str, tag: str | None = None
    ) -> "Deferred[StateDoc | str]":
        return self.state.read_state(name, tag)

    def change_state(self, name: str, change: StateChange) -> "Deferred[StateDoc]":
        return self.state.change_state(name, change)

    def state_names(self, folder: str) -> "Deferred[list[str]]":
        return self.state.state_names(folder)

    # -- writing -------------------------------------------------------------

    def open_temp(self, project: str | None, area: str) -> TempFile:
        return self.local.open_temp(project, area)

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
        return ensureDeferred(
            self._commit(temp, info, metadata, project, area, replace, provenance)
        )

    async def _commit(
        self,
        temp: TempFile,
        info: DistFile,
        metadata: bytes | None,
        project: str | None,
        area: str | None,
        replace: bool,
        provenance: bytes | None,
    ) -> StoredFile:
        check_filename(info.filename)
        project = project or temp.project or ""
        area = area or temp.area
        origin = origin_of(info.url) if area == MIRROR else None
        entry = FileRecord(
            attrs.evolve(info, url=None), area, self._clock.seconds(), origin
        )
        stored = self._stored(project, entry)
        if not replace:
            existing = self._found(await self._record(project), info.filename)
            if existing is not None and (existing.private or existing.area == area):
                raise AlreadyStored(existing)
        await self._run_blocking(temp.flush_and_sync)
        began = self._clock.seconds()
        await self._upload(temp, stored, replace)
        for suffix, content in ((".metadata", metadata), (".provenance", provenance)):
            if content is not None:
                await self.bucket.put(
                    self._key(stored, suffix),
                    content,
                    content_type="application/octet-stream",
                )
        try:
            record = await self.records.update(
                project,
                _adding(entry, replace or not stored.private, self._late(began)),
            )
        except _Taken as e:
            raise AlreadyStored(self._stored(project, e.existing))
        self._saw(record)
        if stored.private:
            self.private_changes += 1
        await self.copies.keep(temp, stored, metadata, provenance)
        return stored

    def _late(self, began: float) -> Callable[[], None]:
        """What refuses to list an archive whose upload began at ``began``
        more than :data:`RECORD_WITHIN` ago: it may be taken for an orphan."""

        def check() -> None:
            if self._clock.seconds() - began > RECORD_WITHIN:
                raise BucketError(
                    f"Storing took over {RECORD_WITHIN / 60:.0f} minutes: not "
                    "listed (the object left behind is an orphan); try again"
                )

        return check

    async def _upload(
        self, temp: TempFile, stored: StoredFile, replace: bool, again: bool = True
    ) -> None:
        """Put the archive under its final key: create only; an object there
        already is fine if it has the same bytes, replaced if ``replace``,
        or if it is an orphan (unlisted, older than ``ORPHAN_AFTER``: only
        that version, ``If-Match`` on its ETag)."""
        key, sha256 = self._key(stored), _sha256(stored.info)
        meta = {SHA256: sha256} if sha256 else {}
        try:
            await self.bucket.upload_file(
                key, temp.path.path, metadata=meta, if_none_match=True
            )
            return
        except PreconditionFailed:
            pass
        there = await self.bucket.head(key)
        if there is not None and sha256 and there.metadata.get(SHA256) == sha256:
            return
        if replace:
            await self.bucket.upload_file(key, temp.path.path, metadata=meta)
            return
        record = await self._record(stored.project, refresh=True)
        existing = self._found(record, stored.info.filename)
        if existing is not None and (existing.private or existing.area == stored.area):
            raise AlreadyStored(existing)
        if again and (there is None or is_orphan(there, self._clock.seconds())):
            try:
                if there is not None:
                    await self.bucket.upload_file(
                        key, temp.path.path, metadata=meta, if_match=there.etag
                    )
                    return
            except PreconditionFailed:
                pass  # replaced meanwhile: judge the new one
            return await self._upload(temp, stored, replace, again=False)
        info = DistFile(
            filename=stored.info.filename,
            size=there.size if there is not None else 0,
            hashes={"sha256": (there.metadata if there else {}).get(SHA256, "")},
        )
        raise AlreadyStored(attrs.evolve(stored, info=info))

    def update(self, stored: StoredFile, info: DistFile) -> "Deferred[StoredFile]":
        updated = attrs.evolve(stored, info=info)
        return ensureDeferred(self._rewrite(updated))

    async def _rewrite(self, stored: StoredFile, bump: bool = False) -> StoredFile:
        entry = FileRecord(stored.info, stored.area, stored.stored_at, stored.origin)

        def change(current: ProjectRecord) -> ProjectRecord | None:
            there = current.files.get(stored.info.filename)
            if there is None or there.area != stored.area:
                raise KeyError(stored.info.filename)
            return current.with_file(entry)

        self._saw(await self.records.update(stored.project, change))
        if bump:
            etag = self._generations.get(stored.project, (None, 0))[0]
            self._generations[stored.project] = (etag, next(self._counter))
        if stored.private:
            self.private_changes += 1
        return stored

    def remove(self, stored: StoredFile) -> "Deferred[None]":
        return ensureDeferred(self._remove(stored))

    async def _remove(self, stored: StoredFile) -> None:
        filename = stored.info.filename
        tombstone = None
        if stored.private:
            tombstone = {
                "sha256": _sha256(stored.info),
                "deleted_at": self._clock.seconds(),
            }

        def change(current: ProjectRecord) -> ProjectRecord | None:
            there = current.files.get(filename)
            if there is not None and there.area != stored.area:
                there = None  # another area's file of that name stays
            if there is None and tombstone is None:
                return None
            record = current.without_file(filename, tombstone)
            if there is None:
                record = attrs.evolve(record, files=current.files)
            return record

        self._saw(await self.records.update(stored.project, change))
        if stored.private:
            self.private_changes += 1
        for suffix in ("", ".metadata", ".provenance"):
            await self.bucket.delete(self._key(stored, suffix))
        await self.copies.drop(stored)

    def add_metadata(
        self, project: str, filename: str, metadata: bytes, digest: str
    ) -> "Deferred[StoredFile]":
        async def add() -> StoredFile:
            stored = self._found(await self._record(project), filename)
            if stored is None:
                raise KeyError(filename)
            updated = attrs.evolve(
                stored, info=attrs.evolve(stored.info, core_metadata={"sha256": digest})
            )
            await self._beside(updated, ".metadata", metadata)
            return await self._rewrite(updated, bump=True)

        return ensureDeferred(add())

    def add_provenance(
        self, stored: StoredFile, content: bytes
    ) -> "Deferred[StoredFile]":
        async def add() -> StoredFile:
            await self._beside(stored, ".provenance", content)
            return await self._rewrite(stored, bump=True)

        return ensureDeferred(add())

    async def _beside(self, stored: StoredFile, suffix: str, content: bytes) -> None:
        await self.bucket.put(
            self._key(stored, suffix), content, content_type="application/octet-stream"
        )
        await self.copies.write(stored.path.siblingExtension(suffix), content)

    def write_metadata(
        self, project: str, filename: str, metadata: bytes
    ) -> "Deferred[None]":
        async def write() -> None:
            ahead = self._stored(project, FileRecord(_bare(filename), MIRROR))
            await self._beside(ahead, ".metadata", metadata)

        return ensureDeferred(write())

    def drop_metadata(self, project: str, filename: str) -> "Deferred[None]":
        async def drop() -> None:
            ahead = self._stored(project, FileRecord(_bare(filename), MIRROR))
            await self.bucket.delete(self._key(ahead, ".metadata"))
            await self.copies.forget(ahead.metadata_path)

        return ensureDeferred(drop())


def _adding(
    entry: FileRecord, replace: bool, check: Callable[[], None]
) -> Callable[..., ProjectRecord | None]:
    """The change that records ``entry``: a private file shadows a mirrored
    one of its name (and is never shadowed by one); the same bytes recorded
    already are left as they are; other bytes replace them only if
    ``replace``. ``check()`` runs first (it may refuse)."""
    filename = entry.info.filename

    def change(current: ProjectRecord) -> ProjectRecord | None:
        check()
        there = current.files.get(filename)
        if there is None or (entry.private and not there.private):
            return current.with_file(entry)
        if there.private and not entry.private:
            return None  # the private file shadows it
        if not replace:
            raise _Taken(there)
        return current.with_file(entry)

    return change
