# -*- test-case-name: tests.test_admin -*-
"""The private index in one tar file: ``pypicache-admin export`` and ``import``.

The tar holds ``private/`` as it is on disk: the archives, their records
(sidecars: hashes, upload times, yanks), their core metadata, and the
tombstones of deleted files (``private/.deleted/``), and the team's local
yanks of upstream files (``local-yanks.json``); temporary files and the
upload spool are left out. Each archive is checked against its record as it
is written. An import unpacks into the upload spool first (only regular
files under ``private/``, tarfile's ``data`` filter), checks every archive
against its record, and refuses the whole file if one fails or if a file of
the same name with other bytes is already stored; then it moves each file
into place (core metadata and record before the archive, as an upload
does), under the same locks as uploads, so a running daemon lists them at
once; local yanks the cache lacks are added to its record (one it has is
kept as it is), and a running daemon shows them at once. Blocking throughout.
"""

import json
import os
import secrets
import shutil
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from twisted.python.filepath import FilePath

from pypicache.storage.atomic import fsync_directory, open_locked_temp
from pypicache.storage.layout import is_archive_name
from pypicache.storage.locks import try_lock
from pypicache.storage.records import (
    DELETED,
    INCOMING,
    LOCKS,
    PRIVATE,
    SIDECAR_SUFFIX,
    TEMP_PREFIX,
)
from pypicache.storage.verify import check
from pypicache.storage.yanks import YANKS_FILE, merge_records, read_record


class BackupError(Exception):
    """An export or import that cannot be done; the message says why."""


def private_files(root: FilePath) -> Iterator[str]:
    """Paths (relative to ``root``) of everything an export holds."""
    top = root.child(PRIVATE).path
    for folder, subfolders, names in os.walk(top):
        relative = os.path.relpath(folder, root.path)
        subfolders[:] = sorted(
            d
            for d in subfolders
            if not d.startswith(".") or os.path.join(relative, d) == DELETED
        )
        for name in sorted(names):
            if not name.startswith(".") and os.path.isfile(os.path.join(folder, name)):
                yield os.path.join(relative, name)


def export_private(
    root: FilePath, out: str, progress: Callable[[str], None] | None = None
) -> tuple[int, list[str]]:
    """Write the private index to the tar file ``out`` (atomically); the
    number of archives and the problems found (archives not matching their
    records, which are left out)."""
    problems: list[str] = []
    archives = 0
    with atomic_tar(out) as tar:
        for relative in private_files(root):
            path = root.preauthChild(relative)
            if is_archive_name(path.basename()) and not relative.startswith(DELETED):
                reason = check(path)
                if reason is not None:
                    problems.append(f"{relative}: {reason}")
                    continue
                archives += 1
            try:
                tar.add(path.path, arcname=relative, recursive=False)
            except FileNotFoundError:
                continue  # deleted meanwhile
            if progress is not None:
                progress(relative)
        if root.child(YANKS_FILE).isfile():
            tar.add(root.child(YANKS_FILE).path, arcname=YANKS_FILE)
    return archives, problems


@contextmanager
def atomic_tar(out: str) -> Iterator[tarfile.TarFile]:
    """A tar file to write to ``out`` atomically: a locked temporary file
    beside it, synced and renamed into place when the block ends (removed
    if it raises)."""
    target = FilePath(os.path.abspath(out))
    temp, file = open_locked_temp(target.parent())
    try:
        with file, tarfile.open(fileobj=file, mode="w") as tar:
            yield tar
            tar.close()
            file.flush()
            os.fsync(file.fileno())
            os.replace(temp.path, target.path)
    except BaseException:
        if temp.exists():
            temp.remove()
        raise


def unpack(tar_path: str, staging: str) -> list[str]:
    """Unpack the regular files under ``private/`` into ``staging``."""
    names = []
    with tarfile.open(tar_path) as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isdir():
                continue
            if member.name == YANKS_FILE and member.isfile():
                tar.extract(member, staging, filter="data")
                continue
            if not member.isfile() or parts[0] != PRIVATE or ".." in parts:
                raise BackupError(f"{member.name!r} is not a file of private/")
            if parts[-1].startswith(TEMP_PREFIX) or member.name.startswith(INCOMING):
                raise BackupError(f"{member.name!r} is not a file of private/")
            tar.extract(member, staging, filter="data")
            names.append(member.name)
    return names


def _conflicts(root: FilePath, staging: FilePath, names: list[str]) -> list[str]:
    """Files of the tar that would replace other bytes under the same name."""
    found = []
    for name in names:
        target = root.preauthChild(name)
        if not (target.exists() and is_archive_name(target.basename())):
            continue
        theirs = json.loads(target.siblingExtension(SIDECAR_SUFFIX).getContent())
        ours = json.loads(
            staging.preauthChild(name).siblingExtension(SIDECAR_SUFFIX).getContent()
        )
        if theirs["file"]["hashes"].get("sha256") != ours["file"]["hashes"].get(
            "sha256"
        ):
            found.append(f"{name}: other bytes are stored under this name")
    return found


def _order(names: list[str]) -> list[str]:
    """Core metadata and records before their archives."""
    return sorted(names, key=lambda n: is_archive_name(os.path.basename(n)))


def import_private(
    root: FilePath,
    tar_path: str,
    lock_path: Callable[..., str],
    progress: Callable[[str], None] | None = None,
) -> tuple[int, int, int]:
    """Restore the private index from ``tar_path``; the numbers of archives
    stored and already there, and of local yanks added.

    :raises BackupError: the tar is refused; nothing was changed.
    """
    spool = root.preauthChild(INCOMING)
    spool.makedirs(ignoreExistingDirectory=True)
    staging = spool.child(TEMP_PREFIX + "import-" + secrets.token_hex(8))
    staging.makedirs()
    try:
        try:
            names = unpack(tar_path, staging.path)
        except (tarfile.TarError, OSError) as e:
            raise BackupError(f"{tar_path} cannot be read as a tar file: {e}") from e
        archives = [
            n
            for n in names
            if is_archive_name(os.path.basename(n)) and not n.startswith(DELETED)
        ]
        problems = [
            f"{n}: {reason}"
            for n in archives
            if (reason := check_staged(staging.preauthChild(n))) is not None
        ]
        problems += _conflicts(root, staging, archives)
        try:
            yanks = read_record(staging)
        except (OSError, ValueError, TypeError, AttributeError) as e:
            problems.append(f"{YANKS_FILE}: not a record of local yanks ({e})")
        if problems:
            raise BackupError("; ".join(problems))
        stored = _move_in(root, staging, names, lock_path, progress)
        added = merge_records(root, lock_path(LOCKS, None, YANKS_FILE), yanks)
        return stored, len(archives) - stored, added
    finally:
        shutil.rmtree(staging.path, ignore_errors=True)


def check_staged(path: FilePath) -> str | None:
    if not path.siblingExtension(SIDECAR_SUFFIX).exists():
        return "no record (sidecar) beside it"
    return check(path)


def _move_in(
    root: FilePath,
    staging: FilePath,
    names: list[str],
    lock_path: Callable[..., str],
    progress: Callable[[str], None] | None,
) -> int:
    stored = 0
    for name in _order(names):
        target = root.preauthChild(name)
        if target.exists():
            continue  # the same bytes, or a record or tombstone kept as it is
        folder = target.parent()
        folder.makedirs(ignoreExistingDirectory=True)
        base = target.basename()
        area = os.path.dirname(os.path.dirname(name))
        held = try_lock(lock_path(area, folder.basename(), base), wait=True)
        try:
            os.replace(staging.preauthChild(name).path, target.path)
            fsync_directory(folder)
        finally:
            if held is not None:
                held.release()
        if is_archive_name(base) and not name.startswith(DELETED):
            stored += 1
        if progress is not None:
            progress(name)
    return stored
