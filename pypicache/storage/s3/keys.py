# -*- test-case-name: tests.test_s3_records -*-
"""Where everything lives in the bucket (under the prefix of ``s3://bucket/prefix``).

::

    <prefix>/projects/<project>.json          the project's record: every stored
                                              file (filename -> DistFile, area,
                                              stored_at, origin) and the
                                              tombstones of deleted private files
    <prefix>/pages/<project>.json             the cached upstream page (CachedPage)
    <prefix>/files/<area>/<project>/<filename>            an archive
    <prefix>/files/<area>/<project>/<filename>.metadata   its core metadata (PEP 658)
    <prefix>/files/<area>/<project>/<filename>.provenance its provenance (PEP 740)
    <prefix>/state/<name>                     the team's state (storage/state.py):
                                              local-yanks.json, tokens.json,
                                              withdrawn/<project>.json,
                                              private/status/<project>.json,
                                              first-seen/<project>.json,
                                              refreshed.json
    <prefix>/upstreams/<name>/...             a named upstream's own store: the
                                              same layout under a prefix of its own
    <prefix>/leases/<name>.json               a lease: which daemon does a chore
                                              (``evict``) until when

``<area>`` is the filesystem store's: ``mirror``, ``private/releases``,
``private/prereleases``, so that an archive's key reads like its path under
``--cache``. ``<project>`` is the PEP 503 normalized name and ``<filename>`` a
checked distribution filename: no key is made from unchecked input.

An archive is written under its final key only once it is verified (uploaded
from the local spool, multipart if large: invisible until complete), then
listed by adding it to the project's record. The record, not a listing of
``files/``, is what pages are built from: one conditional ``GET`` per project
revalidates them, and ``If-Match``/``If-None-Match: *`` writes settle
concurrent changes from several daemons. An archive without a record entry
(a daemon stopped between the two writes) is not listed; ``files/`` listings
find such strays for a clean-up.
"""

import attrs

from pypicache.errors import BadRequest
from pypicache.index.names import METADATA_SUFFIX, check_filename, normalize
from pypicache.index.provenance import PROVENANCE_SUFFIX
from pypicache.storage.records import MIRROR, PRERELEASES, RELEASES

#: The areas an archive may be stored in.
AREAS = (MIRROR, RELEASES, PRERELEASES)

PROJECTS = "projects/"
PAGES = "pages/"
FILES = "files/"
UPSTREAMS = "upstreams/"
LEASES = "leases/"
STATE = "state/"
RECORD_SUFFIX = ".json"


def checked_project(project: str) -> str:
    """``project`` if it is a normalized project name.

    :raises BadRequest: it is not.
    """
    if normalize(project) != project:
        raise BadRequest(f"Not a normalized project name: {project!r}")
    return project


@attrs.frozen
class Keys:
    """The key layout under one prefix (``""``: the bucket's root)."""

    prefix: str = ""

    def _key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def project_record(self, project: str) -> str:
        return self._key(f"{PROJECTS}{checked_project(project)}{RECORD_SUFFIX}")

    def page(self, project: str) -> str:
        return self._key(f"{PAGES}{checked_project(project)}{RECORD_SUFFIX}")

    def archive(self, area: str, project: str, filename: str) -> str:
        if area not in AREAS:
            raise ValueError(f"Unknown area {area!r}")
        return self._key(
            f"{FILES}{area}/{checked_project(project)}/{check_filename(filename)}"
        )

    def metadata(self, area: str, project: str, filename: str) -> str:
        return self.archive(area, project, filename) + METADATA_SUFFIX

    def provenance(self, area: str, project: str, filename: str) -> str:
        return self.archive(area, project, filename) + PROVENANCE_SUFFIX

    def state(self, name: str) -> str:
        """The object of the state document ``name`` (checked by the caller)."""
        return self._key(f"{STATE}{name}")

    @property
    def projects_prefix(self) -> str:
        """What every project record's key starts with."""
        return self._key(PROJECTS)

    @property
    def pages_prefix(self) -> str:
        return self._key(PAGES)

    @property
    def files_prefix(self) -> str:
        return self._key(FILES)

    def lease(self, name: str) -> str:
        """The lease of the chore ``name`` (see :mod:`.lease`)."""
        return self._key(f"{LEASES}{name}{RECORD_SUFFIX}")

    def area_prefix(self, area: str) -> str:
        """What the key of every object kept in ``area`` starts with."""
        if area not in AREAS:
            raise ValueError(f"Unknown area {area!r}")
        return self._key(f"{FILES}{area}/")

    def project_of(self, key: str) -> str | None:
        """The project whose record ``key`` is (``None``: not a record key)."""
        start = self.projects_prefix
        if not (key.startswith(start) and key.endswith(RECORD_SUFFIX)):
            return None
        name = key[len(start) : -len(RECORD_SUFFIX)]
        return name if name and "/" not in name else None

    def upstream(self, name: str) -> "Keys":
        """The layout of the named upstream ``name``'s own store."""
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"Bad upstream name {name!r}")
        return Keys(self._key(f"{UPSTREAMS}{name}"))
