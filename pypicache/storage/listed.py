# -*- test-case-name: tests.test_store -*-
"""Reading what is stored: per-project listings, project names, privacy.

The listings are read from the disk when needed and kept in a bounded cache
that notices changes made by other processes (:mod:`.listings`); only the few
archives dropped outside their project's folders are held in memory as a whole
(found by :meth:`ListedLayout.strays_on_disk`, installed by the rescan).
"""

import os
import time
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.python.filepath import FilePath

from pypicache.concurrency import RunBlocking, SingleFlight
from pypicache.errors import BadRequest
from pypicache.index.names import check_filename, parse_filename
from pypicache.storage.layout import (
    Layout,
    has_listed_archive,
    is_archive_name,
    is_tombstone_name,
)
from pypicache.storage.listings import DEFAULT_BUDGET, RECHECK_NS, Listing, Listings
from pypicache.storage.marks import Watch
from pypicache.storage.missing import MissingLookups
from pypicache.storage.records import (
    DELETED,
    MIRROR,
    PRERELEASES,
    RELEASES,
    Opened,
    StoredFile,
)
from pypicache.storage.singles import SingleReads

#: Longest time (s) the project names are kept without looking again.
PROJECTS_TTL = 10.0


class ListedLayout(Layout):
    """The reading half of the filesystem store; changes made through it are
    recorded with :meth:`_indexed` and :meth:`_unlisted`."""

    def __init__(
        self,
        root: FilePath,
        listing_budget: int = DEFAULT_BUDGET,
        run_blocking: RunBlocking | None = None,
    ) -> None:
        super().__init__(root)
        #: Where folders are listed (a thread pool; ``None``: right away).
        self._run_blocking = run_blocking or maybeDeferred
        self._listing_projects: SingleFlight[list[str]] = SingleFlight()
        self._area_paths = {
            a: self.area(a).path for a in (MIRROR, RELEASES, PRERELEASES, DELETED)
        }
        self._folders_of: dict[str, tuple[str, ...]] = {}
        #: Per area: when checked (monotonic ns), its mtime, its folder names.
        self._folder_cache: dict[str, tuple[int, int, frozenset[str]]] = {}
        #: :meth:`private_now`'s answers: project to (when, changes, answer).
        self._private_seen: dict[str, tuple[int, int, bool]] = {}
        self._strays: dict[str, dict[str, StoredFile]] = {}
        self._private_changes = 0
        self._changes = 0
        self._projects: tuple[Any, list[str]] | None = None
        self._listings = Listings(
            folders=self._project_folders,
            read=self.stored_file,
            extra=lambda project: self._strays.get(project, {}),
            budget=listing_budget,
        )
        #: Archives found one at a time, while their listing is not in memory.
        self._singles = SingleReads(self.stored_file)
        #: Lookups that found nothing, not made again at once.
        self._missing = MissingLookups()

    def _project_folders(self, project: str) -> tuple[str, ...]:
        """Where a project's archives are, lowest precedence first (remembered:
        every lookup asks)."""
        found = self._folders_of.get(project)
        if found is None:
            found = tuple(
                os.path.join(self._area_paths[a], project)
                for a in (MIRROR, PRERELEASES, RELEASES)
            )
            if len(self._folders_of) >= PRIVATE_SEEN_MAX:
                self._folders_of.clear()
            self._folders_of[project] = found
        return found

    def projects(self) -> "Deferred[list[str]]":
        """Every project with an archive and its sidecar, from the folder names.

        The project folders are looked into in a thread (one ``listdir`` each),
        once for all the callers that ask meanwhile. The names are kept while
        no area folder changed, nothing changed through this store, and for
        at most :data:`PROJECTS_TTL` seconds (a first file in an existing
        folder, stored by another process, shows within that).
        """
        folders = tuple(self._folders(a) for a in (MIRROR, RELEASES, PRERELEASES))
        key = (self._private_changes, self._changes, folders)
        now = time.monotonic()
        if self._projects is not None:
            (cached_key, at), names = self._projects
            if cached_key == key and now - at < PROJECTS_TTL:
                return succeed(names)

        async def listed() -> list[str]:
            names = await self._run_blocking(
                _project_names, self._area_paths, folders, frozenset(self._strays)
            )
            self._projects = ((key, now), names)
            return names

        return self._listing_projects.run(key, listed)

    def strays_on_disk(self) -> dict[str, dict[str, StoredFile]]:
        """Indexed private archives outside their project's folders, by project
        and filename (blocking, thread-safe)."""
        strays: dict[str, dict[str, StoredFile]] = {}
        for path in self.walk_private():
            folder = path.parent().path
            stored = None
            if folder not in self._canonical(path.basename()):
                stored = self.stored_file(path)
            if stored is not None:
                strays.setdefault(stored.project, {}).setdefault(
                    stored.info.filename, stored
                )
        return strays

    def _canonical(self, filename: str) -> tuple[str, ...]:
        try:
            project = parse_filename(filename)[0]
        except BadRequest:
            return ()
        return self._project_folders(project)[1:]

    def use_strays(self, strays: dict[str, dict[str, StoredFile]]) -> None:
        """Use what :meth:`strays_on_disk` found (after a rescan)."""
        for project in {*self._strays, *strays}:
            self._listings.forget(project)
        self._strays = strays
        self._changes += 1
        self._missing.changed()

    @property
    def private_changes(self) -> int:
        """Counts changes to private files made through this store."""
        return self._private_changes

    def listed_files(self, project: str) -> list[StoredFile]:
        """The project's listing, read or brought up to date as needed (reactor thread)."""
        listing = self._listing(project)
        return [] if listing is None else _ordered(listing.files.values())

    def _listing(self, project: str) -> "Listing | None":
        """``Listings.get``, a project without folders remembered as a
        lookup that found nothing (:mod:`.missing`): a cold page asks
        for its files and their generation, three failing ``stat`` calls each."""
        return self._missing.lookup((project,), lambda: self._listings.get(project))

    def read_files_now(self, projects: list[str]) -> list[StoredFile]:
        """What :meth:`listed_files` gives for each of ``projects``, read from the disk and not kept
        (blocking, thread-safe): for reading every project at once."""
        return [
            s
            for project in projects
            for s in _ordered(self._listings.read_uncached(project).values())
        ]

    def find_now(self, project: str, filename: str) -> StoredFile | None:
        """A stored archive: from its listing when that is in memory, else read
        from the disk alone (an upload's duplicate check must not pull a whole
        listing into memory)."""
        check_filename(filename)
        listing = self._listings.cached(project)
        if listing is not None:
            stored = listing.files.get(filename)
        else:
            stored = self._missing.lookup(
                (project, filename), lambda: self._read_one(project, filename)
            )
        if stored is not None and not os.path.isfile(stored.path.path):
            self._listings.forget(project)
            return None
        return stored

    def open_now(self, stored: StoredFile) -> Opened:
        """How to serve a stored archive: its local file."""
        return Opened(stored.path)

    def _read_one(self, project: str, filename: str) -> StoredFile | None:
        """What the project's listing would give for ``filename``, read alone."""
        mirror, *private = self._project_folders(project)
        for area, folder in zip((RELEASES, PRERELEASES), reversed(private)):
            if project not in self._folders(area):
                continue  # no folder: no failing stat of an archive in it
            stored = self._read_at(os.path.join(folder, filename))
            if stored is not None and stored.project == project:
                return stored
        stray = self._strays.get(project, {}).get(filename)
        if stray is not None:
            return stray
        return self._read_at(os.path.join(mirror, filename))

    def _read_at(self, path: str) -> StoredFile | None:
        return self._singles.get(path)

    def generation(self, project: str) -> int:
        """Changes whenever the project's stored files change, here or in
        another process; ``0`` while it has none (all empty listings look alike)."""
        listing = self._listing(project)
        return listing.version if listing is not None and listing.files else 0

    def follow_marks(self, marks: Watch) -> None:
        """Read again at once the listings of projects another process
        purged (``DELETE /+cache/``; see :mod:`.marks`)."""
        self._listings.marks = marks

    def forget(self, project: str) -> None:
        """Drop the in-memory listing of ``project`` so it is read again."""
        self._missing.changed()
        self._listings.forget(project)

    def forget_all(self) -> None:
        """Read every listing from the disk again (after a rescan)."""
        self._missing.changed()
        self._listings.forget_all()

    def _clear_folders(self, stored: StoredFile) -> None:
        """Forget the folder names of the areas a change to ``stored`` may
        have changed (a mirrored file's leaves the private areas' names,
        which every request checks, as they are), and the lookups that
        found nothing."""
        self._missing.changed()
        if stored.private:
            self._folder_cache.clear()
        else:
            self._folder_cache.pop(MIRROR, None)

    def _indexed(self, stored: StoredFile) -> StoredFile:
        """Record a change to a stored file in the in-memory listings."""
        self._clear_folders(stored)
        self._changes += 1
        if stored.private:
            self._private_changes += 1
        self._listings.changed(stored.project, stored.info.filename, stored)
        return stored

    def _unlisted(self, stored: StoredFile) -> None:
        """Record the removal of a stored file."""
        self._clear_folders(stored)
        strays = self._strays.get(stored.project, {})
        if strays.get(stored.info.filename) == stored:
            del strays[stored.info.filename]
            if not strays:
                del self._strays[stored.project]
        self._changes += 1
        if stored.private:
            self._private_changes += 1
        self._listings.changed(stored.project, stored.info.filename, None)

    def private_now(self, project: str) -> bool:
        """A project with private files: listed, dropped in its folder and not
        yet scanned, or deleted (a tombstone).

        A folder alone never counts: a failed upload may leave an empty one.
        The answer is kept for :data:`~.listings.RECHECK_NS`, as the folders'
        names are (a request asks it several times: the page, the rules), and
        read again at once after a change made through this store.
        """
        now = time.monotonic_ns()
        seen = self._private_seen.get(project)
        if seen is not None and seen[1] == self._changes and now - seen[0] < RECHECK_NS:
            return seen[2]
        private = self._private_on_disk(project)
        if len(self._private_seen) >= PRIVATE_SEEN_MAX:
            self._private_seen.clear()
        self._private_seen[project] = (now, self._changes, private)
        return private

    def _private_on_disk(self, project: str) -> bool:
        """:meth:`private_now` as the folders say now."""
        if project in self._strays:
            return True
        for area, wanted in (
            (RELEASES, is_archive_name),
            (PRERELEASES, is_archive_name),
            (DELETED, is_tombstone_name),
        ):
            if project not in self._folders(area):
                continue
            try:
                # Read until the first archive: a project of thousands of
                # files is not listed whole on every request.
                with os.scandir(os.path.join(self._area_paths[area], project)) as it:
                    if any(wanted(entry.name) for entry in it):
                        return True
            except OSError:
                continue
        return False

    def _folders(self, area: str) -> frozenset[str]:
        """The project folders of a private area, read again when it changes.

        At most one ``stat`` per :data:`~.listings.RECHECK_NS` instead of a
        failing ``listdir`` per project: ``is_private`` runs on every request.
        Our own writes clear the cache (a folder made within the timestamp
        granularity keeps the mtime).
        """
        now = time.monotonic_ns()
        cached = self._folder_cache.get(area)
        if cached is not None and now - cached[0] < RECHECK_NS:
            return cached[2]
        path = self._area_paths[area]
        try:
            stamp = os.stat(path).st_mtime_ns
        except OSError:
            return frozenset()
        if cached is None or cached[1] != stamp:
            cached = (now, stamp, frozenset(os.listdir(path)))
        else:
            cached = (now, stamp, cached[2])
        self._folder_cache[area] = cached
        return cached[2]


#: Projects whose :meth:`ListedLayout.private_now` answer is kept at most.
PRIVATE_SEEN_MAX = 4096


def _ordered(files: Any) -> list[StoredFile]:
    """Private files first, then by filename."""
    return sorted(files, key=lambda s: (not s.private, s.info.filename))


def _project_names(
    area_paths: dict[str, str],
    folders: tuple[frozenset[str], ...],
    strays: frozenset[str],
) -> list[str]:
    """The projects whose folder (of ``folders``, per area: mirror, releases,
    prereleases) holds an archive beside its sidecar, and ``strays``, sorted
    (blocking, thread-safe)."""
    found = set(strays)
    for area, names in zip((MIRROR, RELEASES, PRERELEASES), folders):
        for project in names:
            if project not in found and has_listed_archive(
                os.path.join(area_paths[area], project)
            ):
                found.add(project)
    return sorted(found)
