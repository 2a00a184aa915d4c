# -*- test-case-name: tests.test_admin -*-
"""Checking stored files against their records (``pypicache-admin verify``).

Every archive is hashed again and compared with the sha256 and size its
sidecar recorded, and its core metadata with the recorded hash: the private
files, the cache's own ``mirror/`` and every named upstream's
(``upstreams/<name>/mirror/``). A corrupt mirrored file is moved aside to
its store's ``corrupt/<project>/`` (``DIR/corrupt/`` or
``DIR/upstreams/<name>/corrupt/``; with its sidecar and core metadata) under
its download lock, archive first, so it leaves the listings at once and is
fetched again on demand; a corrupt private file is only reported, since
nothing else has it. Blocking throughout.
"""

import hashlib
import json
import os
from collections.abc import Callable, Iterator

import attrs
from twisted.python.filepath import FilePath

from pypicache.index.model import DistFile
from pypicache.index.names import METADATA_SUFFIX
from pypicache.index.provenance import PROVENANCE_SUFFIX
from pypicache.storage.layout import Layout, is_archive_name, mirror_stores
from pypicache.storage.locks import try_lock
from pypicache.storage.records import MIRROR, SIDECAR_SUFFIX

#: Where corrupt mirrored files are moved, under the cache root.
CORRUPT = "corrupt"


@attrs.frozen
class Problem:
    """A stored file that does not match its record."""

    path: FilePath
    mirrored: bool
    reason: str
    #: Where it was moved (``None``: left in place).
    moved_to: FilePath | None = None


def stored_archives(layout: Layout) -> Iterator[tuple[FilePath, bool]]:
    """Every archive with a sidecar, mirrored (``True``: in any store) or private."""
    for _, root in mirror_stores(layout.root):
        yield from _mirrored(root.child(MIRROR).path)
    for path in layout.walk_private():
        if path.siblingExtension(SIDECAR_SUFFIX).exists():
            yield path, False


def _mirrored(mirror: str) -> Iterator[tuple[FilePath, bool]]:
    try:
        projects = sorted(os.listdir(mirror))
    except OSError:
        projects = []
    for project in projects:
        folder = os.path.join(mirror, project)
        try:
            names = set(os.listdir(folder))
        except OSError:
            continue
        for name in sorted(names):
            if is_archive_name(name) and name + SIDECAR_SUFFIX in names:
                yield FilePath(os.path.join(folder, name)), True


def sha256_file(path: str) -> str:
    """The sha256 of the file at ``path``, read in chunks (blocking)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _sha256(path: FilePath) -> tuple[str, int]:
    with open(path.path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256")
        return digest.hexdigest(), f.tell()


def check(path: FilePath) -> str | None:
    """Why the archive at ``path`` does not match its sidecar, or ``None``."""
    try:
        record = json.loads(path.siblingExtension(SIDECAR_SUFFIX).getContent())
        info = DistFile.from_json(record["file"])
    except FileNotFoundError:
        return None  # removed meanwhile (evicted, deleted)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "its record (sidecar) cannot be read"
    try:
        digest, size = _sha256(path)
    except FileNotFoundError:
        return None
    expected = info.hashes.get("sha256")
    if info.size is not None and size != info.size:
        return f"size {size} where its record says {info.size}"
    if expected is None:
        return "its record has no sha256"
    if digest != expected:
        return f"sha256 {digest} where its record says {expected}"
    wanted = info.core_metadata if isinstance(info.core_metadata, dict) else {}
    metadata = path.siblingExtension(METADATA_SUFFIX)
    if (
        wanted.get("sha256")
        and metadata.exists()
        and _sha256(metadata)[0] != wanted["sha256"]
    ):
        return "its core metadata does not match the hash its record says"
    return None


def move_aside(
    layout: Layout, path: FilePath, lock_path: Callable[..., str]
) -> FilePath | None:
    """Move a corrupt mirrored archive, its sidecar and core metadata to
    its store's ``corrupt/<project>/``; where the archive went (``None``: busy
    or gone). ``layout`` and ``lock_path`` are the cache's own: a named
    upstream's file is moved within its store, under its store's lock."""
    project = path.parent().basename()
    home = path.parent().parent().parent()  # <store root>/mirror/<project>/<file>
    if home != layout.root:
        layout = Layout(home)
        lock_path = layout.lock_path
    held = try_lock(lock_path(MIRROR, project, path.basename()))
    if held is None:
        return None
    try:
        aside = layout.area(CORRUPT).child(project)
        aside.makedirs(ignoreExistingDirectory=True)
        try:
            os.replace(path.path, aside.child(path.basename()).path)
        except FileNotFoundError:
            return None
        for suffix in (SIDECAR_SUFFIX, METADATA_SUFFIX, PROVENANCE_SUFFIX):
            try:
                os.replace(
                    path.siblingExtension(suffix).path,
                    aside.child(path.basename() + suffix).path,
                )
            except FileNotFoundError:
                pass
        return aside.child(path.basename())
    finally:
        held.release()


def verify_all(
    layout: Layout,
    lock_path: Callable[..., str],
    archives: list[tuple[FilePath, bool]],
    progress: Callable[[FilePath], None] | None = None,
) -> Iterator[Problem]:
    """Check ``archives`` (what :func:`stored_archives` gives); yield each
    problem (corrupt mirrored files are moved aside as they are found)."""
    for path, mirrored in archives:
        reason = check(path)
        if progress is not None:
            progress(path)
        if reason is None:
            continue
        moved = move_aside(layout, path, lock_path) if mirrored else None
        yield Problem(path, mirrored, reason, moved)
