# -*- test-case-name: tests.test_project_status -*-
"""PEP 792 project status of private projects: ``active``, ``archived``,
``deprecated`` or ``quarantined``, set through ``POST /+status/<project>``.

Upstream projects carry the upstream's status on their pages (parsed and
rendered by :mod:`pypicache.index.simple`). A private project's status is
kept in the store's state document ``private/status/<project>.json``
(``DIR/private/status/``, with the private index, so it is backed up and
exported with it; or in the bucket, shared by every daemon on it); :class:`StatusRule` puts it on the
project's pages, and hides every file of a quarantined one: its pages list
none (an empty page that says why, as the public index serves a quarantined
project) and its file URLs answer ``404``.
"""

from typing import Any, Callable, Hashable

import attrs
from twisted.internet.defer import Deferred

from pypicache.concurrency import NotReady
from pypicache.errors import BadRequest
from pypicache.index.model import STATUSES, DistFile, ProjectPage
from pypicache.storage.shared import SharedDocs

#: Where private projects' statuses are kept, under the cache root.
STATUS_FOLDER = "private/status"

#: The longest reason kept.
MAX_REASON = 1000


def check_status(status: object, reason: object) -> tuple[str, str | None]:
    """A status and reason as a client sent them, checked.

    :raises BadRequest: an unknown status, or a reason that is not text.
    """
    if not isinstance(status, str) or status.strip().lower() not in STATUSES:
        raise BadRequest(
            f"Unknown project status {str(status)[:50]!r}; "
            f"one of {', '.join(STATUSES)}"
        )
    if reason is not None and not isinstance(reason, str):
        raise BadRequest("The reason must be text")
    if reason is not None and len(reason) > MAX_REASON:
        raise BadRequest(f"The reason is longer than {MAX_REASON} characters")
    return status.strip().lower(), (reason or "").strip() or None


class Statuses:
    """The statuses of private projects (none recorded: ``active``)."""

    #: The store's state documents ``private/status/<project>.json``.
    records: SharedDocs

    __slots__ = ("records", "__weakref__")

    def __init__(self, records: SharedDocs) -> None:
        self.records = records

    def get(self, project: str) -> tuple[str, str | None] | None:
        """``(status, reason)`` of ``project``, or ``None`` if none was set."""
        record = self.records.get(project)
        status = record.get("status")
        if status not in STATUSES:
            return None
        reason = record.get("reason")
        return status, reason if isinstance(reason, str) else None

    def closed(self, project: str) -> str | None:
        """Why ``project`` takes no uploads (PEP 792: archived or
        quarantined), or ``None``."""
        found = self.get(project)
        if found is None or found[0] not in ("archived", "quarantined"):
            return None
        why = f": {found[1]}" if found[1] else ""
        return f"Project {project!r} is {found[0]} and takes no uploads{why}"

    def set(self, project: str, status: str, reason: str | None) -> "Deferred[Any]":
        """Record the status (``active`` without a reason: the record goes);
        fires once it is on disk."""
        record = {"project": project, "status": status, "reason": reason}
        if status == "active" and not reason:
            record = {}
        return self.records.put(project, record)


class StatusRule:
    """Private projects' statuses on their ``/simple/`` and ``/local/`` pages
    (with ``--mirror-private`` too, over the upstream's), quarantined ones'
    files hidden and refused."""

    statuses: Statuses
    #: Whether a project is private (only private projects have a status here).
    is_private: Callable[[str], bool]

    __slots__ = ("statuses", "is_private", "__weakref__")

    def __init__(self, statuses: Statuses, is_private: Callable[[str], bool]) -> None:
        self.statuses = statuses
        self.is_private = is_private

    def ready(self, area: str, project: str) -> "Deferred[None] | None":
        try:
            if not self.is_private(project):
                return None
        except NotReady:
            return None  # asked again once the store knows
        return self.statuses.records.ready(project)

    def version(self, area: str, project: str) -> Hashable:
        if not self.is_private(project):
            return None  # an upstream project: the upstream's status
        return self.statuses.records.version(project)

    def page(self, area: str, project: str, page: ProjectPage) -> ProjectPage:
        if not self.is_private(project):
            return page
        found = self.statuses.get(project)
        if found is None:
            return page
        status, reason = found
        if status == "quarantined":
            page = attrs.evolve(page, files=(), versions=None)
        return attrs.evolve(page, status=status, status_reason=reason)

    def refusal(self, project: str, filename: str, info: DistFile | None) -> str | None:
        if not self.is_private(project):
            return None
        found = self.statuses.get(project)
        if found is None or found[0] != "quarantined":
            return None
        why = f": {found[1]}" if found[1] else ""
        return f"{filename} is not served: project {project!r} is quarantined{why}"
