# -*- test-case-name: tests.test_s3_admin -*-
"""``pypicache-admin export`` and ``import`` on a bucket: the tar file of
:mod:`pypicache.private.backup`, read from and written to a store through its
interfaces (:class:`~pypicache.storage.interface.IStore`,
:class:`~pypicache.storage.state.IState`), so a tar made from a folder
restores into a bucket and the reverse.

Export: every private archive listed, read back (the store checks it against
its record; it is hashed again here), with its record as a sidecar, its core
metadata and provenance; the tombstones of deleted files (in the projects'
records of the bucket); the private projects' statuses
(``private/status/<project>.json``) and the local yanks
(``local-yanks.json``), from the team's state.

Import: the tar is unpacked and checked as for a folder (only regular files
under ``private/``, every archive against its sidecar, no name taken by
other bytes), and refused whole if anything fails. Then each archive is
committed as an upload is (``replace=False``: uploaded under its final key
only once checked, create-only, then listed), so nothing unverified is ever
visible and the conflict rule holds against uploads running meanwhile:
other bytes stored under a name since the check are reported, never
replaced. Tombstones, statuses and yanks the store lacks are added (one it
has is kept as it is); an archive's upload time (``stored_at``) is kept.

What :class:`IStore` does not offer is read from the bucket's project
records (``store.records``: the list of projects, tombstones, a record
rewritten with its upload time): these functions are for an ``S3Store``.
"""

import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from typing import Any

import attrs
from twisted.python.filepath import FilePath

from pypicache.index.model import DistFile
from pypicache.index.names import METADATA_SUFFIX, normalize
from pypicache.index.provenance import PROVENANCE_SUFFIX
from pypicache.private.backup import BackupError, atomic_tar, check_staged, unpack
from pypicache.storage.interface import AlreadyStored
from pypicache.storage.layout import is_archive_name
from pypicache.storage.records import DELETED, PRERELEASES, RELEASES, SIDECAR_SUFFIX
from pypicache.storage.verify import sha256_file
from pypicache.storage.yanks import KINDS, YANKS_FILE, parse_record

#: The private projects' statuses, in the team's state and in the tar.
STATUS = "private/status"

Progress = Callable[[str], None]


def _add(tar: tarfile.TarFile, name: str, content: bytes, when: Any) -> None:
    member = tarfile.TarInfo(name)
    member.size, member.mode = len(content), 0o644
    member.mtime = int(when) if isinstance(when, (int, float)) else 0
    tar.addfile(member, io.BytesIO(content))


def _mismatch(path: str, info: DistFile) -> str | None:
    """How the file at ``path`` differs from its record (``None``: it does not)."""
    size, expected = os.path.getsize(path), info.hashes.get("sha256")
    if info.size is not None and size != info.size:
        return f"{size} bytes, its record says {info.size}"
    if expected and sha256_file(path) != expected:
        return "its sha256 is not the one its record names"
    return None


async def _export_project(
    store: Any, tar: tarfile.TarFile, project: str, progress: Progress | None
) -> tuple[int, list[str]]:
    archives, problems = 0, []
    for stored in await store.read_files([project]):
        if not stored.private:
            continue
        name = f"{stored.area}/{project}/{stored.info.filename}"
        try:
            opened = await store.open(stored)
            reason = _mismatch(opened.path.path, stored.info)
        except Exception as e:  # missing, or not the bytes recorded
            reason = str(e)
        if reason is not None:
            problems.append(f"{name}: {reason}")
            continue
        tar.add(opened.path.path, arcname=name, recursive=False)
        sidecar = {
            "file": stored.info.to_json(),
            "stored_at": stored.stored_at,
            "origin": stored.origin,
        }
        _add(tar, name + SIDECAR_SUFFIX, json.dumps(sidecar).encode(), stored.stored_at)
        beside = (
            (METADATA_SUFFIX, await store.open_metadata(project, stored.info.filename)),
            (PROVENANCE_SUFFIX, await store.open_provenance(stored)),
        )
        for suffix, extra in beside:
            if extra is not None:
                tar.add(extra.path.path, arcname=name + suffix, recursive=False)
        archives += 1
        if progress is not None:
            progress(name)
    record = await store.records.get(project)
    for filename, tombstone in sorted(record.tombstones.items()):
        _add(
            tar,
            f"{DELETED}/{project}/{filename}{SIDECAR_SUFFIX}",
            json.dumps(tombstone).encode(),
            tombstone.get("deleted_at"),
        )
    return archives, problems


async def export_store(
    store: Any, out: str, progress: Progress | None = None
) -> tuple[int, list[str]]:
    """:func:`~pypicache.private.backup.export_private` of a bucket's store:
    the tar file ``out`` (written atomically); the number of archives and
    the problems found (archives missing or not matching their records,
    left out)."""
    archives, problems = 0, []
    with atomic_tar(out) as tar:
        # Every record, also of a project whose files were all deleted.
        for project in await store.records.projects():
            count, found = await _export_project(store, tar, project, progress)
            archives += count
            problems += found
        for project in await store.state_names(STATUS):
            doc = await store.read_state(f"{STATUS}/{project}.json")
            if doc.data:
                content = json.dumps(doc.data).encode()
                _add(tar, f"{STATUS}/{project}.json", content, None)
        yanks = await store.read_state(YANKS_FILE)
        if yanks.data:
            _add(tar, YANKS_FILE, json.dumps(yanks.data).encode(), None)
    return archives, problems


@attrs.frozen
class _Staged:
    """An archive of the tar, unpacked and checked."""

    name: str
    area: str
    project: str
    path: FilePath
    info: DistFile
    stored_at: float | None = None

    def beside(self, suffix: str) -> bytes | None:
        there = self.path.siblingExtension(suffix)
        return there.getContent() if there.isfile() else None


def _sort(staging: FilePath, names: list[str]) -> tuple[list[_Staged], dict, dict]:
    """The archives, tombstones and statuses of the tar.

    :raises BackupError: a file of ``private/`` the store does not keep.
    """
    archives, tombstones, statuses, strays = [], {}, {}, []
    for name in names:
        parts, path = name.split("/"), staging.preauthChild(name)
        folder, base = "/".join(parts[:-2]), parts[-1]
        if len(parts) > 3 and normalize(parts[-2]) != parts[-2]:
            strays.append(name)  # not a project's folder
            continue
        if folder in (RELEASES, PRERELEASES) and is_archive_name(base):
            sidecar = json.loads(path.siblingExtension(SIDECAR_SUFFIX).getContent())
            info = DistFile.from_json(sidecar["file"])
            info = attrs.evolve(info, filename=base, url=None)
            when = sidecar.get("stored_at")
            archives.append(_Staged(name, folder, parts[-2], path, info, when))
        elif folder in (RELEASES, PRERELEASES) and base.endswith(
            (SIDECAR_SUFFIX, METADATA_SUFFIX, PROVENANCE_SUFFIX)
        ):
            continue  # read with its archive
        elif folder == DELETED and base.endswith(SIDECAR_SUFFIX):
            tombstones[(parts[-2], base[: -len(SIDECAR_SUFFIX)])] = path
        elif "/".join(parts[:-1]) == STATUS and base.endswith(".json"):
            statuses[base] = path
        else:
            strays.append(name)
    if strays:
        raise BackupError(
            "; ".join(f"{n}: not a file a bucket keeps" for n in sorted(strays))
        )
    return archives, tombstones, statuses


async def _conflicts(store: Any, archives: list[_Staged]) -> list[str]:
    found = []
    for staged in archives:
        there = await store.find(staged.project, staged.info.filename)
        if there is None or not there.private:
            continue
        if there.info.hashes.get("sha256") != staged.info.hashes.get("sha256"):
            found.append(f"{staged.name}: other bytes are stored under this name")
    return found


async def _commit(store: Any, staged: _Staged) -> bool:
    """Store ``staged`` as an upload is; whether it was new.

    :raises AlreadyStored: other bytes are stored under its name.
    """
    temp = store.open_temp(staged.project, staged.area)
    try:
        with open(staged.path.path, "rb") as f:
            while chunk := f.read(1024 * 1024):
                temp.write(chunk)
        stored = await store.commit(
            temp,
            staged.info,
            staged.beside(METADATA_SUFFIX),
            staged.project,
            staged.area,
            replace=False,
            provenance=staged.beside(PROVENANCE_SUFFIX),
        )
        if isinstance(staged.stored_at, (int, float)):
            # When it was uploaded, not restored (the bucket's own record).
            await store._rewrite(attrs.evolve(stored, stored_at=staged.stored_at))
        return True
    except AlreadyStored as e:
        if e.existing.info.hashes.get("sha256") == staged.info.hashes.get("sha256"):
            return False
        raise
    finally:
        temp.discard()


def _if_absent(new: dict[str, Any]) -> Callable[[dict], dict | None]:
    return lambda current: None if current else new


def _adding_yanks(incoming: dict, counted: list[int]) -> Callable[[dict], dict | None]:
    """The change that adds the yanks of ``incoming`` the document lacks."""

    def change(data: dict[str, Any]) -> dict[str, Any] | None:
        record = parse_record(data) if data else {}
        added = 0
        for project, kinds in incoming.items():
            mine = record.setdefault(project, {k: {} for k in KINDS})
            for kind in KINDS:
                for target, entry in kinds.get(kind, {}).items():
                    if target not in mine.setdefault(kind, {}):
                        mine[kind][target] = entry
                        added += 1
        counted[:] = [added]
        kept = {p: k for p, k in sorted(record.items()) if any(k.values())}
        return {"yanks": kept} if added else None

    return change


async def import_store(
    store: Any, tar_path: str, progress: Progress | None = None
) -> tuple[int, int, int, list[str]]:
    """:func:`~pypicache.private.backup.import_private` into a bucket's
    store; the numbers of archives stored and already there, of local yanks
    added, and the archives refused because other bytes were stored under
    their names since the check.

    :raises BackupError: the tar is refused; nothing was changed.
    """
    staging = FilePath(tempfile.mkdtemp(prefix="pypicache-import-"))
    try:
        try:
            names = unpack(tar_path, staging.path)
        except (tarfile.TarError, OSError) as e:
            raise BackupError(f"{tar_path} cannot be read as a tar file: {e}") from e
        try:
            archives, tombstones, statuses = _sort(staging, names)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise BackupError(f"a record of the tar cannot be read: {e}") from e
        problems = [
            f"{s.name}: {reason}"
            for s in archives
            if (reason := check_staged(s.path)) is not None
        ]
        problems += await _conflicts(store, archives)
        yanks = {}
        if staging.child(YANKS_FILE).isfile():
            try:
                yanks = parse_record(json.loads(staging.child(YANKS_FILE).getContent()))
            except (OSError, ValueError, TypeError, AttributeError) as e:
                problems.append(f"{YANKS_FILE}: not a record of local yanks ({e})")
        if problems:
            raise BackupError("; ".join(problems))
        return await _restore(store, archives, tombstones, statuses, yanks, progress)
    finally:
        shutil.rmtree(staging.path, ignore_errors=True)


async def _restore(
    store: Any,
    archives: list[_Staged],
    tombstones: dict,
    statuses: dict,
    yanks: dict,
    progress: Progress | None,
) -> tuple[int, int, int, list[str]]:
    stored, refused = 0, []
    for staged in archives:
        try:
            stored += await _commit(store, staged)
        except AlreadyStored:
            refused.append(staged.name)
        if progress is not None:
            progress(staged.name)
    for (project, filename), path in sorted(tombstones.items()):
        await _tombstone(store, project, filename, json.loads(path.getContent()))
    for base, path in sorted(statuses.items()):
        data = json.loads(path.getContent())
        await store.change_state(f"{STATUS}/{base}", _if_absent(data))
    added = [0]
    if yanks:
        await store.change_state(YANKS_FILE, _adding_yanks(yanks, added))
    return stored, len(archives) - stored - len(refused), added[0], refused


async def _tombstone(
    store: Any, project: str, filename: str, tombstone: dict[str, Any]
) -> None:
    """Keep the tombstone of a deleted file in its project's record, unless
    it has one (the bucket's tombstones live in the records)."""

    def change(current: Any) -> Any:
        if filename in current.tombstones:
            return None
        kept = {**current.tombstones, filename: dict(tombstone)}
        return attrs.evolve(current, tombstones=kept)

    await store.records.update(project, change)
