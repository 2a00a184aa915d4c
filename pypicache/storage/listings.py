# -*- test-case-name: tests.test_listings -*-
"""Per-project listings read from the disk, kept in a bounded cache.

A listing is checked against the modification times of its project's folders
on every use, so what another process stored (another worker,
``pypicache-import``, a copy by hand with its sidecar) is seen, and it is read
again only when a folder changed: what changed is read, the rest reused. The
cache holds at most ``budget`` files (the most recently used listing always
stays), so memory does not grow with what is stored.
"""

import itertools
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import attrs
from twisted.python.filepath import FilePath

from pypicache.storage.layout import is_archive_name
from pypicache.storage.marks import Watch, slot_of
from pypicache.storage.records import SIDECAR_SUFFIX, StoredFile

#: A folder changed less than this long (ns) before its listing was read may
#: change again within the same timestamp tick unnoticed: such a listing is
#: checked again on every use until the folder is older than that.
RACY_NS = 100_000_000

#: A listing checked against its folders this recently (ns) is used without
#: checking again: one request asks several times, and a busy project is
#: asked hundreds of times a second. So another process's change shows
#: within this long.
RECHECK_NS = 5_000_000

#: Files kept in memory by default, over all cached listings.
DEFAULT_BUDGET = 4096

#: What identifies a version of a file on disk: the sidecar's inode,
#: modification time and size, and the archive's size.
FileKey = tuple[int, int, int, int]

_versions = itertools.count(1)


def next_version() -> int:
    """A number never handed out before in this process."""
    return next(_versions)


def folder_stamps(folders: Iterable[str]) -> tuple[int | None, ...]:
    """The modification times of ``folders``, ``None`` for one that is missing."""
    stamps: list[int | None] = []
    for folder in folders:
        try:
            stamps.append(os.stat(folder).st_mtime_ns)
        except OSError:
            stamps.append(None)
    return tuple(stamps)


def file_key(folder: str, name: str) -> FileKey | None:
    try:
        sidecar = os.stat(os.path.join(folder, name + SIDECAR_SUFFIX))
        archive = os.stat(os.path.join(folder, name))
    except OSError:
        return None
    return (sidecar.st_ino, sidecar.st_mtime_ns, sidecar.st_size, archive.st_size)


@attrs.define
class Listing:
    """The stored files of one project as last read, and when."""

    #: The folder modification times the files were read at; ``None`` once a
    #: change made through this process makes them out of date.
    stamps: tuple[int | None, ...] | None
    read_at: int
    files: dict[str, StoredFile]
    #: Each file read from a folder, by path, with the key it was read at.
    read: dict[str, tuple[FileKey, StoredFile | None]]
    version: int
    #: When (monotonic ns) the folders were last found as read.
    checked_at: int = 0

    def fresh(self, now: int) -> bool:
        """Whether it was checked so recently that it is used as it is."""
        return self.stamps is not None and now - self.checked_at < RECHECK_NS

    def trusted(self, stamps: tuple[int | None, ...]) -> bool:
        """Whether the folders are as they were read, and were not changed so
        shortly before that a later change could share their timestamp."""
        if stamps != self.stamps:
            return False
        newest = max((s for s in stamps if s is not None), default=0)
        return newest < self.read_at - RACY_NS


@attrs.define
class Listings:
    """The bounded cache of per-project listings.

    ``folders(project)`` gives the project's folders, lowest precedence first
    (a later folder's file of the same name wins); ``read(path)`` reads one
    archive's record (``None`` if it has no valid sidecar); ``extra(project)``
    gives records kept elsewhere (archives dropped outside the usual folders),
    which rank just above the first folder's.
    """

    _folders: Callable[[str], tuple[str, ...]]
    _read: Callable[[FilePath], StoredFile | None]
    _extra: Callable[[str], dict[str, StoredFile]]
    budget: int = DEFAULT_BUDGET
    _cache: "OrderedDict[str, Listing]" = attrs.field(factory=OrderedDict)
    _size: int = 0
    #: Projects purged by any process on the cache folder: their listings
    #: are read again at once, not after :data:`RECHECK_NS` (``None``: none).
    marks: Watch | None = None

    def _drop_marked(self) -> None:
        assert self.marks is not None
        slots = self.marks.marked()
        for project in [p for p in self._cache if slot_of(p) in slots]:
            self._forget(project)

    def get(self, project: str) -> Listing | None:
        """The project's listing, read or brought up to date as needed;
        ``None`` when it has no folder and nothing elsewhere (not kept, so
        names looked up and never stored do not fill memory)."""
        if self.marks is not None and self.marks.moved():
            self._drop_marked()
        now = time.monotonic_ns()
        listing = self._cache.get(project)
        if listing is not None and listing.fresh(now):
            self._cache.move_to_end(project)
            return listing
        folders = self._folders(project)
        stamps = folder_stamps(folders)
        if listing is not None:
            if listing.trusted(stamps):
                listing.checked_at = now
                self._cache.move_to_end(project)
                return listing
            self._forget(project)
        elif all(s is None for s in stamps) and not self._extra(project):
            return None
        listing = self._reread(project, folders, stamps, listing)
        listing.checked_at = now
        self._keep(project, listing)
        return listing

    def read_uncached(self, project: str) -> dict[str, StoredFile]:
        """The project's files read from the disk, by filename; the cache is
        neither used nor changed (so this is safe in a thread)."""
        folders = self._folders(project)
        return self._reread(project, folders, folder_stamps(folders), None).files

    def cached(self, project: str) -> Listing | None:
        """The project's listing if it is in memory (brought up to date as
        :meth:`get` does: a change read again, reusing the records of files
        that did not change), else ``None``: a listing not in memory is not
        read."""
        if self.marks is not None and self.marks.moved():
            self._drop_marked()
        listing = self._cache.get(project)
        if listing is None:
            return None
        if listing.fresh(time.monotonic_ns()):
            return listing
        # Out of date (a file stored through this process, say): read again
        # once here, not the file alone on every later request.
        return self.get(project)

    def changed(self, project: str, filename: str, stored: StoredFile | None) -> None:
        """Record a change made through this process (``None``: removed)."""
        listing = self._cache.get(project)
        if listing is None:
            return
        before = max(1, len(listing.files))
        if stored is None:
            listing.files.pop(filename, None)
        else:
            listing.files[filename] = stored
        self._size += max(1, len(listing.files)) - before
        for folder in self._folders(project):
            listing.read.pop(os.path.join(folder, filename), None)
        listing.stamps = None
        listing.version = next_version()

    def forget(self, project: str) -> None:
        """Drop the project's listing: it is read again when next used."""
        self._forget(project)

    def forget_all(self) -> None:
        self._cache.clear()
        self._size = 0

    def _forget(self, project: str) -> None:
        listing = self._cache.pop(project, None)
        if listing is not None:
            self._size -= max(1, len(listing.files))

    def _keep(self, project: str, listing: Listing) -> None:
        self._cache[project] = listing
        self._size += max(1, len(listing.files))
        while self._size > self.budget and len(self._cache) > 1:
            _, oldest = self._cache.popitem(last=False)
            self._size -= max(1, len(oldest.files))

    def _reread(
        self,
        project: str,
        folders: tuple[str, ...],
        stamps: tuple[int | None, ...],
        old: Listing | None,
    ) -> Listing:
        """Read the folders, reusing the records of files that did not change."""
        read_at = time.time_ns()
        files: dict[str, StoredFile] = {}
        read: dict[str, tuple[FileKey, StoredFile | None]] = {}
        changed = old is None
        for i, (folder, stamp) in enumerate(zip(folders, stamps)):
            if i == 1:
                files.update(self._extra(project))
            if stamp is None:
                continue
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                if not is_archive_name(name):
                    continue
                path = os.path.join(folder, name)
                key = file_key(folder, name)
                if key is None:
                    continue
                known = old.read.get(path) if old is not None else None
                if known is not None and known[0] == key:
                    stored = known[1]
                else:
                    stored = self._read(FilePath(path))
                    changed = True
                read[path] = (key, stored)
                # A private archive counts for the project its name gives,
                # wherever it was put (as a rescan indexes it).
                if stored is not None and (
                    not stored.private or stored.project == project
                ):
                    files[name] = stored
        if old is not None and not changed and files.keys() != old.files.keys():
            changed = True
        return Listing(
            stamps=stamps,
            read_at=read_at,
            files=files,
            read=read,
            version=next_version() if changed else old.version,  # type: ignore[union-attr]
        )
