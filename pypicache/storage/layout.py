# -*- test-case-name: tests.test_store -*-
"""Where things are on disk, and reading them back: the filesystem store's base.

Nothing here keeps state or writes anything but the removal of leftover
temporary files, so all of it is safe in a thread.
"""

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from typing import Any

import attrs
from twisted.python.filepath import FilePath

from pypicache.errors import BadRequest
from pypicache.index.model import DistFile
from pypicache.index.names import METADATA_SUFFIX, is_distribution, parse_filename
from pypicache.storage.atomic import remove_if_unlocked
from pypicache.storage.records import (
    DELETED,
    INCOMING,
    LOCKS,
    MIRROR,
    PRERELEASES,
    PRIVATE,
    RELEASES,
    SIDECAR_SUFFIX,
    TEMP_PREFIX,
    UPSTREAMS,
    StoredFile,
)


def is_archive_name(name: str) -> bool:
    return (
        not name.startswith(".")
        and not name.endswith((SIDECAR_SUFFIX, METADATA_SUFFIX))
        and is_distribution(name)
    )


def mirror_stores(root: FilePath) -> list[tuple[str, FilePath]]:
    """Every store under the cache root ``root`` that may hold mirrored
    files, as ``(store, its root)``: the cache's own (``""``), then each named
    upstream's (``"upstreams/<name>"``) found on disk, configured or not
    (blocking). One cap and one usage record cover them all."""
    stores = [("", root)]
    for path in sorted(_subfolders(root.child(UPSTREAMS).path)):
        name = os.path.basename(path)
        if not name.startswith("."):
            stores.append((f"{UPSTREAMS}/{name}", FilePath(path)))
    return stores


def store_root(root: FilePath, store: str) -> FilePath:
    """The root of ``store`` (as :func:`mirror_stores` names it) under ``root``."""
    return root.preauthChild(store) if store else root


def is_tombstone_name(name: str) -> bool:
    return not name.startswith(".") and name.endswith(SIDECAR_SUFFIX)


def _subfolders(directory: str) -> list[str]:
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    return [e.path for e in entries if e.is_dir(follow_symlinks=False)]


#: Folders of small records written atomically (the team's state, kept
#: descriptions): the start-up clean-up removes their temporary files.
STATE_FOLDERS = ("withdrawn", "private/status", "ui/descriptions")


def _remove_temporaries(folder: str) -> None:
    """Delete the temporary files directly in ``folder`` that no writer holds."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if name.startswith(TEMP_PREFIX):
            remove_if_unlocked(os.path.join(folder, name))


def _remove_orphan(path: str, before: float | None) -> None:
    """Remove a sidecar or metadata file left without its archive (never a
    folder dropped in by hand), if older than ``before``: a newer one may be
    another process's commit, whose archive is about to be renamed into place."""
    try:
        status = os.lstat(path)
        if not stat.S_ISREG(status.st_mode):
            return
        if before is not None and status.st_mtime >= before:
            return
        os.unlink(path)
    except FileNotFoundError:
        pass


def has_listed_archive(folder: str) -> bool:
    """Whether ``folder`` holds an archive beside its sidecar."""
    try:
        names = set(os.listdir(folder))
    except OSError:
        return False
    return any(
        is_archive_name(name) and name + SIDECAR_SUFFIX in names for name in names
    )


#: Paths of :meth:`Layout.child` remembered at most (then forgotten at once).
CHILDREN_KEPT = 4096


class Layout:
    """The folders of a cache root, and the archives and sidecars in them."""

    def __init__(self, root: FilePath) -> None:
        self.root = root
        #: ``FilePath`` checks and normalizes every path it is given, which
        #: costs more than the ``stat`` done with it: the paths of the areas
        #: and of the children asked for on every request are found once
        #: (strings: a ``FilePath`` keeps what it learned of its file, so
        #: each caller gets its own; dict operations: safe in a thread).
        self._areas: dict[str, str] = {}
        self._children: dict[tuple[str, str], str] = {}

    def area(self, area: str) -> FilePath:
        path = self._areas.get(area)
        if path is None:
            path = self._areas[area] = self.root.preauthChild(area).path
        return FilePath(path)

    def child_path(self, area: str, name: str) -> str:
        """``area(area).child(name).path``, remembered (raises as ``child`` does)."""
        key = (area, name)
        path = self._children.get(key)
        if path is None:
            path = self.area(area).child(name).path
            if len(self._children) >= CHILDREN_KEPT:
                self._children.clear()
            self._children[key] = path
        return path

    def child(self, area: str, name: str) -> FilePath:
        """``area(area).child(name)`` (see :meth:`child_path`)."""
        return FilePath(self.child_path(area, name))

    def project_dir(self, area: str, project: str) -> FilePath:
        return self.child(area, project)

    def remove_leftovers(self, before: float | None = None) -> None:
        """Delete what a crash may have left behind: temporary files, and the
        sidecars and core metadata of an archive that never got renamed into
        place (a bare ``.metadata`` in ``mirror/`` is kept: it is fetched ahead
        of its archive on purpose).

        Blocking: run at start-up in a thread, while the daemon already
        answers. A temporary file goes only if no writer holds it (see
        :func:`~pypicache.storage.atomic.open_locked_temp`); with ``before``
        (a time in seconds), a sidecar or metadata file without its archive
        goes only if it was last changed before then.
        """
        # "first-seen": the cooldown's records (pypicache.proxy.firstseen).
        for area in (
            MIRROR,
            RELEASES,
            PRERELEASES,
            INCOMING,
            DELETED,
            "pages",
            LOCKS,
            "first-seen",
        ):
            directory = self.area(area).path
            for folder in [directory, *_subfolders(directory)]:
                try:
                    names = set(os.listdir(folder))
                except OSError:
                    continue
                for name in names:
                    orphan = area in (MIRROR, RELEASES, PRERELEASES) and (
                        name.endswith(SIDECAR_SUFFIX)
                        or (name.endswith(METADATA_SUFFIX) and area != MIRROR)
                    )
                    path = os.path.join(folder, name)
                    if name.startswith(TEMP_PREFIX):
                        remove_if_unlocked(path)
                    elif orphan and name.rsplit(".", 1)[0] not in names:
                        _remove_orphan(path, before)
        # The records at the top (usage, tokens, local yanks...) and the
        # folders of the team's state and of kept descriptions: only their
        # temporary files (a kill during a record's write leaves one).
        _remove_temporaries(self.root.path)
        for area in STATE_FOLDERS:
            directory = self.area(area).path
            for folder in [directory, *_subfolders(directory)]:
                _remove_temporaries(folder)

    def stored_file(self, path: FilePath) -> StoredFile | None:
        """The archive at ``path`` with its sidecar; ``None`` if it has no valid one.

        A sidecar is valid when it parses and records the archive's current size.
        """
        name = path.basename()
        try:
            data = json.loads(path.siblingExtension(SIDECAR_SUFFIX).getContent())
            info = DistFile.from_json(data["file"])
            stored_at = data.get("stored_at")
            project, version = parse_filename(name)
            if info.size != os.stat(path.path).st_size:
                return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, BadRequest):
            return None
        area = self._area_of(path, version)
        return StoredFile(
            path=path,
            info=attrs.evolve(info, filename=name, url=None),
            area=area,
            stored_at=stored_at,
            project=project,
            origin=data.get("origin"),
        )

    def _area_of(self, path: FilePath, version: Any) -> str:
        """The area of an archive: its folder's, or for one dropped in elsewhere, its version's."""
        top = path.parent().parent()
        for area in (MIRROR, RELEASES, PRERELEASES):
            if top == self.area(area):
                return area
        return (
            PRERELEASES if version is not None and version.is_prerelease else RELEASES
        )

    def walk_private(self) -> Iterator[FilePath]:
        """Every archive anywhere under ``private/`` (dot folders and files skipped)."""
        top = self.area(PRIVATE).path
        for folder, subfolders, names in os.walk(top):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            for name in sorted(names):
                if is_archive_name(name):
                    yield FilePath(os.path.join(folder, name))

    def lock_path(self, area: str, project: str | None, name: str) -> str:
        """The name of the lock that serializes work on ``name`` across processes.

        No file is made at that path: the locks of ``locks/`` are bytes of
        its one lock table (:mod:`pypicache.storage.locks`).
        """
        digest = hashlib.sha256(f"{area}/{project}/{name}".encode()).hexdigest()[:40]
        return os.path.join(self.area(LOCKS).path, f"lock-{digest}")

    def page_stamp_now(self, project: str) -> float | None:
        """When the cached page of ``project`` was last written, if it is there."""
        try:
            return os.stat(self.child_path("pages", project + ".json")).st_mtime
        except OSError:
            return None

    def drop_page_now(self, project: str) -> None:
        """Delete the cached page of ``project``, if it is there."""
        try:
            os.unlink(self.child_path("pages", project + ".json"))
        except FileNotFoundError:
            pass

    def page_path(self, project: str) -> FilePath:
        return self.child("pages", project + ".json")
