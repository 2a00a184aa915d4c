# -*- test-case-name: tests.test_proxy -*-
"""The upstream page merged with what the disk knows (for :mod:`.views`)."""

import os
from typing import Callable

import attrs

from pypicache.index.model import DistFile, ProjectPage
from pypicache.index.names import METADATA_SUFFIX
from pypicache.index.provenance import PROVENANCE, PROVENANCE_SUFFIX
from pypicache.storage.records import StoredFile, origin_of


def local_info(stored: StoredFile) -> DistFile:
    """A stored file as pages show it: core metadata only if servable from
    disk, a provenance only if one is kept beside it (:data:`PROVENANCE`).

    The files beside are looked for by name (``os.path.exists``, a tenth of
    what a ``FilePath`` sibling costs: a page of a thousand sdists asks a
    thousand times)."""
    info = stored.info
    if info.provenance:
        kept = os.path.exists(stored.path.path + PROVENANCE_SUFFIX)
        info = attrs.evolve(info, provenance=PROVENANCE if kept else None)
    servable = info.filename.endswith(".whl") or os.path.exists(
        stored.path.path + METADATA_SUFFIX
    )
    if not servable:
        return attrs.evolve(info, core_metadata=False)
    if info.core_metadata is False:
        return attrs.evolve(info, core_metadata=True)
    return info


def advertised(
    f: DistFile, digest_of: Callable[[str], str | None]
) -> bool | dict[str, str]:
    """What a page says of the core metadata of a file.

    Every wheel has some (read by ranges, or from the whole wheel, when the
    upstream offers no ``.metadata``): its sha256 where the upstream, the
    stored wheel or a kept ``.metadata`` gives it, else ``true`` (PEP 658/714:
    hash unknown).

    :param digest_of: the sha256 of a kept ``.metadata`` of a file not stored.
    """
    if isinstance(f.core_metadata, dict):
        return f.core_metadata
    if f.core_metadata or f.filename.endswith(".whl"):
        digest = digest_of(f.filename)
        return {"sha256": digest} if digest is not None else True
    return False


def merge(
    page: ProjectPage, stored: list[StoredFile], confirmed_at: float | None = None
) -> ProjectPage:
    """The upstream page with what the disk knows added (see :func:`merged`)."""
    return merged(page, stored, confirmed_at)[0]


def merged(
    page: ProjectPage,
    stored: list[StoredFile],
    confirmed_at: float | None = None,
    origins: frozenset[str | None] | None = None,
) -> tuple[ProjectPage, dict[str, str], list[str]]:
    """The upstream page with what the disk knows added: sizes, metadata,
    extra files; and which mirrored files the upstream withdrew.

    A private file replaces an upstream file of the same name (``--mirror-private``).
    A stored wheel's own metadata hash wins over the upstream's. A mirrored
    file the page does not list is withdrawn, and left out, if the page was
    fetched (``confirmed_at``) after the file was stored and lists files
    from the host the file came from; else (a stale page, a file of another
    upstream) it is added as before. A quarantined page (PEP 792) offers no
    file but private ones.

    :param origins: where the files of the pages merged into ``page`` are
        (``None``: where ``page``'s are).

    :returns: the page, the withdrawn files (filename to reason) and the
        stored mirrored files the page lists.
    """
    quarantined = page.status == "quarantined"
    on_disk = {s.info.filename: s for s in stored}
    files = []
    listed = []
    for f in page.files:
        s = on_disk.pop(f.filename, None)
        if s is None:
            if not quarantined:
                files.append(f)
        elif s.private:
            files.append(local_info(s))
        elif quarantined:
            on_disk[f.filename] = s
        else:
            listed.append(f.filename)
            local = local_info(s).core_metadata
            files.append(
                attrs.evolve(
                    f,
                    size=s.info.size if s.info.size is not None else f.size,
                    core_metadata=(
                        local if isinstance(local, dict) else f.core_metadata or local
                    ),
                )
            )
    withdrawn = {}
    if quarantined:
        why = "the project is quarantined upstream"
        why += f": {page.status_reason}" if page.status_reason else ""
        withdrawn = {n: why for n, s in on_disk.items() if not s.private}
    elif on_disk and confirmed_at is not None:
        hosts = origins or {origin_of(f.url) for f in page.files}
        withdrawn = {
            n: "no longer on the upstream's page"
            for n, s in on_disk.items()
            if not s.private
            and s.stored_at is not None
            and s.stored_at <= confirmed_at
            and (s.origin is None or s.origin in hosts)
        }
    extra = [local_info(s) for n, s in on_disk.items() if n not in withdrawn]
    files.extend(extra)
    page = attrs.evolve(
        page,
        files=tuple(files),
        versions=page.versions if not extra and not quarantined else None,
    )
    return page, withdrawn, listed
