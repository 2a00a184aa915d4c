# -*- test-case-name: tests.test_scan -*-
"""Archives dropped into ``private/`` by hand: checked, hashed and indexed.

Everything here but :func:`rescan` blocks (it reads whole archives): run it in
a thread, as :func:`rescan` does.
"""

import hashlib
import json
import os
import time

import attrs
from packaging.utils import canonicalize_name
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from pypicache.concurrency import RunBlocking
from pypicache.errors import BadRequest
from pypicache.index.archives import inspect_archive
from pypicache.index.model import DistFile
from pypicache.index.names import METADATA_SUFFIX, parse_filename
from pypicache.private.uploads import iso_time, parse_upload_filename
from pypicache.storage.atomic import write_atomically
from pypicache.storage.filesystem import FilesystemStore
from pypicache.storage.records import SIDECAR_SUFFIX
from pypicache.storage.verify import sha256_file

log = Logger()

CHUNK_SIZE = 1024 * 1024


@attrs.define
class ScanReport:
    """What a rescan found: archives indexed now, and those it had to skip."""

    indexed: list[str] = attrs.field(factory=list)
    broken: list[dict[str, str]] = attrs.field(factory=list)
    known: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "indexed": self.indexed,
            "broken": self.broken,
            "already_indexed": self.known,
        }


def index_archive(store: FilesystemStore, path: str, stored_at: float) -> None:
    """Check one archive and write its sidecar (and core metadata) beside it.

    :raises BadRequest: if it is not a valid wheel or sdist.
    """
    filename = os.path.basename(path)
    project, version = parse_upload_filename(filename)
    metadata = inspect_archive(path, filename)
    if (
        canonicalize_name(metadata.name) != project
        or parse_filename(filename)[1] != version
    ):
        raise BadRequest(
            f"metadata names {metadata.name} {metadata.version}, not what the filename says"
        )
    core = metadata.core_metadata
    info = DistFile(
        filename=filename,
        hashes={"sha256": sha256_file(path)},
        requires_python=metadata.requires_python,
        core_metadata=(
            {"sha256": hashlib.sha256(core).hexdigest()} if core is not None else False
        ),
        size=os.stat(path).st_size,
        upload_time=iso_time(os.stat(path).st_mtime),
    )
    archive = FilePath(path)
    if core is not None:
        write_atomically(archive.siblingExtension(METADATA_SUFFIX), core)
    sidecar = {"file": info.to_json(), "stored_at": stored_at}
    write_atomically(
        archive.siblingExtension(SIDECAR_SUFFIX), json.dumps(sidecar).encode()
    )


def scan_private(store: FilesystemStore, now: float) -> ScanReport:
    """Index every archive under ``private/`` that has no valid sidecar yet."""
    report = ScanReport()
    seen: set[str] = set()
    for path in store.walk_private():
        filename = path.basename()
        if store.stored_file(path) is not None:
            report.known += 1
            seen.add(filename)
            continue
        relative = os.path.relpath(path.path, store.root.path)
        if filename in seen:
            report.broken.append(
                {
                    "path": relative,
                    "reason": "another archive of that name is already indexed",
                }
            )
            continue
        try:
            index_archive(store, path.path, now)
        except BadRequest as e:
            report.broken.append({"path": relative, "reason": e.message})
            log.warn("Skipped {path}: {reason}", path=relative, reason=e.message)
        except OSError as e:
            report.broken.append({"path": relative, "reason": str(e)})
        else:
            seen.add(filename)
            report.indexed.append(relative)
            log.info("Indexed {path}", path=relative)
    return report


async def rescan(store: FilesystemStore, run_blocking: RunBlocking) -> ScanReport:
    """Index archives dropped into ``private/`` (in a thread), then list them.

    Archives in their project's folders show through the store's listings as
    soon as their sidecars are written; those elsewhere are installed here.

    :raises BadRequest: the store is not a folder (an object store: upload
        the files with twine instead).
    """
    if not isinstance(store, FilesystemStore):
        raise BadRequest(
            "The store is an object store: there is no private/ folder to scan; "
            "upload archives with twine instead"
        )
    report = await run_blocking(scan_private, store, time.time())
    await store.install_strays(await store.read_strays())
    return report  # type: ignore[no-any-return]


async def start_up(store: FilesystemStore, run_blocking: RunBlocking) -> ScanReport:
    """What the daemon does once it answers: remove what a crash left behind
    (temporary files nobody holds; sidecars without archives from before it
    started, less a second for the coarse clock of file times), then
    :func:`rescan`."""
    await store.remove_temporaries(time.time() - 1.0)
    if not isinstance(store, FilesystemStore):
        return ScanReport()  # an object store: no folder to scan
    return await rescan(store, run_blocking)
