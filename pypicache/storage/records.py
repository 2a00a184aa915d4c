# -*- test-case-name: tests.test_store -*-
"""What the store holds: the areas of the layout, stored files and cached pages."""

from typing import Any

import attrs
from twisted.python.filepath import FilePath

from pypicache.index.model import DistFile, ProjectPage
from pypicache.index.names import METADATA_SUFFIX
from pypicache.index.provenance import PROVENANCE_SUFFIX

SIDECAR_SUFFIX = ".json"


TEMP_PREFIX = ".tmp-"


MIRROR = "mirror"


RELEASES = "private/releases"


PRERELEASES = "private/prereleases"


#: Where uploads are spooled before their project and area are known.
PRIVATE = "private"


INCOMING = "private/.incoming"


#: What was deleted from the private areas: ``<project>/<filename>.json``.
DELETED = "private/.deleted"


#: The lock files of work under way (``storage/locks.py``), named like temporaries.
LOCKS = "locks"


@attrs.frozen
class StoredFile:
    """An archive on disk and what we know about it."""

    path: FilePath
    info: DistFile
    area: str
    stored_at: float | None = None
    project: str = ""

    @property
    def private(self) -> bool:
        return self.area != MIRROR

    @property
    def metadata_path(self) -> FilePath:
        return self.path.siblingExtension(METADATA_SUFFIX)

    @property
    def provenance_path(self) -> FilePath:
        """Its PEP 740 provenance object, if it has one."""
        return self.path.siblingExtension(PROVENANCE_SUFFIX)


@attrs.frozen
class CachedPage:
    """An upstream project page with what is needed to revalidate it."""

    page: ProjectPage
    fetched_at: float
    etag: str | None = None
    last_modified: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "page": self.page.to_json(),
            "fetched_at": self.fetched_at,
            "etag": self.etag,
            "last_modified": self.last_modified,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CachedPage":
        return cls(
            page=ProjectPage.from_json(data["page"]),
            fetched_at=float(data["fetched_at"]),
            etag=data.get("etag"),
            last_modified=data.get("last_modified"),
        )
