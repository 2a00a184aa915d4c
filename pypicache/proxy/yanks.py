# -*- test-case-name: tests.test_local_yanks -*-
"""Local yanks as a rule: files and releases the team yanked show as yanked
(PEP 592) on every page, whatever the upstream says, until unyanked.

A yank does not refuse the file: like the upstream's, it tells installers to
skip the release unless it is pinned (``==``), so the file stays
downloadable. The records are kept by
:class:`~pypicache.storage.yanks.YankRecords`.
"""

from typing import Hashable

import attrs
from packaging.version import InvalidVersion, Version
from twisted.internet.defer import Deferred

from pypicache.errors import BadRequest
from pypicache.index.model import DistFile, ProjectPage
from pypicache.index.names import parse_filename
from pypicache.proxy.rules import Area
from pypicache.storage.yanks import MAX_REASON, ProjectYanks, YankRecords


def release_of(text: str) -> str:
    """The normalized form of a version given for a release-level yank.

    :raises BadRequest: not a version.
    """
    try:
        return str(Version(text))
    except InvalidVersion as e:
        raise BadRequest(f"{text!r} is neither a file name nor a version") from e


def release_key(records: YankRecords, project: str, text: str) -> str:
    """The key a release-level yank of version ``text`` is kept under: that
    of a yank of the same version already kept (``2.0`` for ``2.0.0``),
    else its normalized form.

    :raises BadRequest: not a version.
    """
    version = Version(release_of(text))
    for kept, _ in getattr(records.of(project), "releases", ()):
        if Version(kept) == version:
            return kept
    return str(version)


def checked_reason(reason: str) -> str:
    """A yank's reason, stripped.

    :raises BadRequest: too long, or with control characters.
    """
    reason = reason.strip()
    if len(reason) > MAX_REASON:
        raise BadRequest(f"The reason is longer than {MAX_REASON} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in reason):
        raise BadRequest("The reason has control characters (line breaks...)")
    return reason


def yanked_as(
    f: DistFile, files: dict[str, str], releases: dict[Version, str]
) -> bool | str | None:
    """What ``f`` is yanked as locally (a reason or ``True``), else ``None``."""
    reason = files.get(f.filename)
    if reason is None and releases:
        try:
            version = parse_filename(f.filename)[1]
        except BadRequest:
            version = None
        if version is not None:
            reason = releases.get(version)
    if reason is None:
        return None
    return reason or True


@attrs.frozen
class LocalYanks:
    """The rule: local yanks applied to every page (``/simple/``, private
    and ``/local/`` alike); never a refusal."""

    records: YankRecords
    #: Never refuses a file (see :meth:`~pypicache.proxy.rules.Rules.__bool__`).
    refuses = False

    def ready(self, area: Area, project: str) -> "Deferred[None] | None":
        return self.records.ready()

    def version(self, area: Area, project: str) -> Hashable:
        return self.records.of(project)

    def page(self, area: Area, project: str, page: ProjectPage) -> ProjectPage:
        yanks: ProjectYanks | None = self.records.of(project)
        if not yanks:
            return page
        files = dict(yanks.files)
        releases = {Version(v): reason for v, reason in yanks.releases}
        changed = []
        for f in page.files:
            reason = yanked_as(f, files, releases)
            changed.append(f if reason is None else attrs.evolve(f, yanked=reason))
        return attrs.evolve(page, files=tuple(changed))

    def refusal(self, project: str, filename: str, info: DistFile | None) -> None:
        return None
