# -*- test-case-name: tests.test_ui_descriptions -*-
"""A project's files by version, grouped once per version of its view.

A project page shows the list of every version (newest first, pre-releases
and yanks marked) and one release's files. Grouping 3,000 files by version,
sorting a thousand versions and finding the newest takes a page tens of
milliseconds; a :class:`Listing` does it once, and the routes keep it per
version of the project's view (``Views.local_key``), so that every other
page of the project (another version, a group of files) reuses it.
"""

from typing import Iterable, NamedTuple

import attrs
from markupsafe import Markup
from packaging.version import Version

from pypicache.index.model import DistFile
from pypicache.storage.records import StoredFile
from pypicache.web import jsonapi
from pypicache.web.ui.filetable import Group, escape_text, group_of, natural


class VersionRow(NamedTuple):
    """One version in the list: yanked when all its files are (with a reason).

    A named tuple: a thousand versions are a thousand rows, made in a tenth
    of the time attrs classes take."""

    version: str
    prerelease: bool
    yanked: bool
    reason: str | None
    selected: bool


@attrs.frozen(eq=False)
class Listing:
    """A project's files by version (as :func:`~pypicache.web.jsonapi.versions_of`
    groups them), its versions newest first and the one shown by default."""

    releases: dict[Version, list[StoredFile]]
    #: Every version's row, newest first, none selected.
    rows: tuple[VersionRow, ...]
    #: Where each version's row is in :attr:`rows`.
    places: dict[Version, int]
    #: :func:`~pypicache.web.jsonapi.latest` (``None``: no versions).
    latest: Version | None
    #: Per version, its groups of files (:meth:`grouped`), made on first use.
    _grouped: dict[Version, tuple[list[Group], dict[str, list[StoredFile]]]] = (
        attrs.field(factory=dict, init=False)
    )
    #: Per version, :meth:`best`.
    _best: dict[Version, StoredFile] = attrs.field(factory=dict, init=False)

    @classmethod
    def of(
        cls,
        releases: dict[Version, list[StoredFile]],
        finals: dict[Version, str] | None = None,
    ) -> "Listing":
        """The listing of files grouped by version (``finals``: final
        versions and their text, see :func:`~pypicache.web.jsonapi.versions_of`)."""
        finals = finals or {}
        rows = []
        places = {}
        latest = None
        order = sorted(releases, reverse=True)
        for place, version in enumerate(order):
            yanked, reason = True, None
            for s in releases[version]:
                flag = s.info.yanked
                if flag is False:
                    yanked = False
                elif reason is None and isinstance(flag, str):
                    reason = flag
            text = finals.get(version)
            prerelease = text is None and version.is_prerelease
            if latest is None and not prerelease and not yanked:
                latest = version  # as jsonapi.latest: the newest final, unyanked
            rows.append(
                VersionRow(text or str(version), prerelease, yanked, reason, False)
            )
            places[version] = place
        if latest is None and order:
            latest = order[0]
        return cls(releases, tuple(rows), places, latest)

    @classmethod
    def of_shown(cls, stored: list[StoredFile], shown: Iterable[DistFile]) -> "Listing":
        """The listing of the ``stored`` files a page ``shown`` lists, each
        as the page shows it (the rules applied: a yank by rule shows)."""
        page = {f.filename: f for f in shown}
        files = [
            (
                s
                if page[s.info.filename] is s.info
                else attrs.evolve(s, info=page[s.info.filename])
            )
            for s in stored
            if s.info.filename in page
        ]
        finals: dict[Version, str] = {}
        return cls.of(jsonapi.versions_of(files, finals), finals)

    def pick(self, text: str | None) -> Version:
        """The version asked for (``None``: the newest); raises ``KeyError``
        if absent, :class:`~pypicache.errors.BadRequest` if invalid."""
        if text is None:
            if self.latest is None:
                raise KeyError(text)
            return self.latest
        return jsonapi.pick_version(self.releases, text)

    def grouped(
        self, version: Version
    ) -> tuple[list[Group], dict[str, list[StoredFile]]]:
        """The groups of ``version``'s files (:func:`groups_of`) and the
        files of each, made once (a release of 3,000 files has a page per
        group: each would read every name again). Thread-safe: two threads
        may both make it, alike."""
        kept = self._grouped.get(version)
        if kept is None:
            files: dict[str, list[StoredFile]] = {}
            for s in self.releases[version]:
                key = group_of(s.info.filename)
                found = files.get(key)
                if found is None:
                    files[key] = [s]
                else:
                    found.append(s)
            groups = [Group(key, len(files[key])) for key in sorted(files, key=natural)]
            kept = self._grouped[version] = (groups, files)
        return kept

    def best(self, version: Version) -> StoredFile:
        """The file whose core metadata a page of ``version`` shows: its
        first wheel, else its first file (found once)."""
        kept = self._best.get(version)
        if kept is None:
            kept = self._best[version] = min(
                self.releases[version],
                key=lambda s: not s.info.filename.endswith(".whl"),
            )
        return kept

    def version_rows(self, chosen: Version) -> list[VersionRow]:
        """Every version, newest first, ``chosen`` selected."""
        rows = list(self.rows)
        place = self.places.get(chosen)
        if place is not None:
            rows[place] = rows[place]._replace(selected=True)
        return rows


def versions_list(rows: list[VersionRow], here: str) -> Markup:
    """The list of versions as HTML, made without a template loop (a project
    may have thousands), escaped here."""
    prefix = escape_text(here)
    items = []
    for v in rows:
        version = escape_text(v.version)
        badges = '\n  <span class="badge pre">pre</span>' if v.prerelease else ""
        if v.yanked:
            reason = f": {escape_text(v.reason)}" if v.reason else ""
            badges += f'\n  <span class="badge yanked">yanked{reason}</span>'
        if v.selected:
            items.append(
                f'<li class="selected"><a href="{prefix}{version}/" '
                f'aria-current="page">{version}</a>{badges}</li>\n'
            )
        else:
            items.append(
                f'<li><a href="{prefix}{version}/">{version}</a>{badges}</li>\n'
            )
    return Markup('<ol class="versions">\n' + "".join(items) + "</ol>\n")
