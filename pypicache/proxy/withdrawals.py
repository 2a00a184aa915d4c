# -*- test-case-name: tests.test_withdrawn -*-
"""Files the upstream withdrew: cached here, and no longer on its page.

:func:`~pypicache.proxy.views.merged` finds them when it builds a project's
``/simple/`` page from a page fetched after they were stored (a stale page,
or one older than the file, proves nothing) and leaves them out.
:class:`Withdrawals` records them, one small JSON file per project in
``DIR/withdrawn/``, so that ``/local/``, ``/+stats`` and ``pypicache-admin
withdrawn`` know them across restarts and processes; a file listed again
upstream (a quarantine lifted) leaves the record. :class:`WithdrawnRule`
hides them from ``/local/`` and refuses their URLs (``withdrawn = "hide"``),
or leaves them there (``"keep"``). The files stay on disk either way.
"""

import os
from typing import Any, Hashable, Iterable

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from pypicache.index.model import DistFile, ProjectPage
from pypicache.proxy.projectfiles import read_folder
from pypicache.storage.records import MIRROR
from pypicache.storage.shared import SharedDocs

log = Logger()

#: The record's folder under the cache root.
WITHDRAWN = "withdrawn"

#: Where the named upstreams' stores are, under the cache root (as
#: ``tap/named.py`` puts them).
UPSTREAMS = "upstreams"

#: What ``withdrawn`` may be set to.
MODES = ("hide", "keep")


def read_all(root: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Every project's withdrawn files under the cache ``root`` (blocking):
    project to filename to ``{"since": seconds, "reason": text}``."""
    found = {}
    for project, record in read_folder(os.path.join(root, WITHDRAWN)).items():
        files = record.get("files")
        if isinstance(files, dict) and files:
            found[project] = files
    return found


def _listed(
    project: str, filename: str, entry: dict[str, Any], upstream: str | None
) -> dict[str, Any]:
    return {
        "project": project,
        "filename": filename,
        "since": entry.get("since"),
        "reason": entry.get("reason"),
        "upstream": upstream,
    }


def withdrawn_files(root: str) -> list[dict[str, Any]]:
    """The withdrawn files still on disk under the cache ``root`` and each
    named upstream's store in it (blocking): ``project``, ``filename``,
    ``since``, ``reason``, and ``upstream`` (``None``: ``/simple/``'s)."""
    stores: list[tuple[str | None, str]] = [(None, root)]
    named = os.path.join(root, UPSTREAMS)
    if os.path.isdir(named):
        stores += [(n, os.path.join(named, n)) for n in sorted(os.listdir(named))]
    found = []
    for upstream, store in stores:
        for project, files in read_all(store).items():
            for filename, entry in sorted(files.items()):
                if os.path.isfile(os.path.join(store, MIRROR, project, filename)):
                    found.append(_listed(project, filename, entry, upstream))
    return found


async def withdrawn_listing(
    stores: Iterable[tuple[str | None, Any]],
) -> list[dict[str, Any]]:
    """:func:`withdrawn_files` of ``stores`` (``(upstream name, store)``,
    ``None`` for ``/simple/``'s), read through each store's state: the
    withdrawn files still stored, for ``/+stats``, on disk or in a bucket."""
    found = []
    for upstream, store in stores:
        for project in await store.state_names(WITHDRAWN):
            doc = await store.read_state(f"{WITHDRAWN}/{project}.json")
            files = doc.data.get("files")
            for filename, entry in sorted((files or {}).items()):
                stored = await store.find(project, filename)
                if stored is not None and stored.area == MIRROR:
                    found.append(_listed(project, filename, entry, upstream))
    return found


class Withdrawals:
    """The record of withdrawn files, per project (see the module's docstring)."""

    #: The store's state documents ``withdrawn/<project>.json``.
    records: SharedDocs

    __slots__ = ("records", "__weakref__")

    def __init__(self, records: SharedDocs) -> None:
        self.records = records

    def files(self, project: str) -> dict[str, dict[str, Any]]:
        """The withdrawn files of ``project``: filename to since and reason."""
        files = self.records.get(project).get("files")
        return files if isinstance(files, dict) else {}

    def version(self, project: str) -> Hashable:
        """Changes whenever the project's record does."""
        return self.records.version(project)

    def ready(self, project: str) -> "Deferred[None] | None":
        """What to wait for before :meth:`files` answers as things are."""
        return self.records.ready(project)

    def note(
        self, project: str, withdrawn: dict[str, str], listed: Iterable[str]
    ) -> None:
        """Record ``withdrawn`` (filename to reason) and forget the ``listed``
        files (upstream lists them again); written in the background (a
        read-modify-write: several daemons noting the same files agree)."""
        before = self.files(project)
        now = self.records.clock.seconds()
        listed = tuple(listed)

        def change(record: dict[str, Any]) -> dict[str, Any] | None:
            known = record.get("files")
            files = dict(known) if isinstance(known, dict) else {}
            for name in listed:
                files.pop(name, None)
            for name, reason in withdrawn.items():
                if files.get(name, {}).get("reason") != reason:
                    files[name] = {"since": now, "reason": reason}
            return {"project": project, "files": files} if files else {}

        if (change({"files": before}) or {}).get("files", {}) == before:
            return
        for name in withdrawn:
            if name not in before:
                log.warn(
                    "{filename} was withdrawn upstream ({reason}): no longer offered",
                    filename=name,
                    reason=withdrawn[name],
                )
        self.records.update(project, change).addErrback(
            lambda failure: log.failure(
                "Could not record the withdrawn files of {project}",
                failure,
                project=project,
            )
        )


class WithdrawnRule:
    """Hides recorded withdrawn files from ``/local/`` and refuses their URLs
    (``mode = "hide"``), or leaves them be (``"keep"``)."""

    withdrawals: Withdrawals
    mode: str

    __slots__ = ("withdrawals", "mode", "__weakref__")

    def __init__(self, withdrawals: Withdrawals, mode: str = "hide") -> None:
        self.withdrawals = withdrawals
        self.mode = mode

    def ready(self, area: str, project: str) -> "Deferred[None] | None":
        if self.mode != "hide" or area not in ("local", "file"):
            return None
        return self.withdrawals.ready(project)

    def version(self, area: str, project: str) -> Hashable:
        if self.mode != "hide" or area != "local":
            return self.mode
        return (self.mode, self.withdrawals.version(project))

    def page(self, area: str, project: str, page: ProjectPage) -> ProjectPage:
        if self.mode != "hide" or area != "local":
            return page
        gone = self.withdrawals.files(project)
        if not gone:
            return page
        kept = tuple(f for f in page.files if f.filename not in gone)
        return attrs.evolve(page, files=kept, versions=None)

    def refusal(self, project: str, filename: str, info: DistFile | None) -> str | None:
        if self.mode != "hide":
            return None
        entry = self.withdrawals.files(project).get(filename)
        if entry is None:
            return None
        return (
            f"{filename} was withdrawn by the upstream index "
            f"({entry.get('reason') or 'no longer on its page'}); this server "
            "keeps it but serves it no more (withdrawn = hide)"
        )
