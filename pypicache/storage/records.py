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


#: The named upstreams' own stores: ``upstreams/<name>/`` (each a cache root
#: of its own: ``mirror/``, ``pages/``, ``locks/``).
UPSTREAMS = "upstreams"


#: The locks of work under way: one lock table (``storage/locks.py``).
LOCKS = "locks"


@attrs.frozen
class StoredFile:
    """An archive on disk and what we know about it."""

    path: FilePath
    info: DistFile
    area: str
    stored_at: float | None = None
    project: str = ""
    #: ``scheme://host[:port]`` of the URL a mirrored file came from (``None``:
    #: not known), to tell the files of one upstream from another's.
    origin: str | None = None

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
class Opened:
    """How to serve the bytes of a stored file (an archive, its core
    metadata, its provenance)."""

    #: A local file holding the bytes: the filesystem store's own file; an
    #: object store may fetch a local copy.
    path: FilePath
    #: Where a client may be sent for them instead (a short-lived URL), if anywhere.
    url: str | None = None
    #: The bytes still arriving at ``path`` (an object store's first read,
    #: opened with ``stream=True``): a
    #: :class:`~pypicache.storage.growing.Download` to serve as it grows.
    download: Any = None


def origin_of(url: str | None) -> str | None:
    """``scheme://host[:port]`` of ``url`` (``None`` for none)."""
    if not url:
        return None
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme.lower()}://{host.lower()}" if rest else None


@attrs.frozen
class CachedPage:
    """An upstream project page with what is needed to revalidate it."""

    page: ProjectPage
    fetched_at: float
    etag: str | None = None
    last_modified: str | None = None
    #: Where the files of the pages merged into this one are (``None``: the
    #: page's own files say), for telling withdrawn files from another
    #: upstream's; not stored.
    origins: frozenset[str | None] | None = attrs.field(default=None, eq=False)

    def to_json(self) -> dict[str, Any]:
        """The stored form: the page as rows (:meth:`ProjectPage.to_rows`)
        under ``listing``; older versions stored it as dicts under ``page``
        (still read; an older daemon finds no ``page`` in a newer file and
        fetches the page again)."""
        return {
            "listing": self.page.to_rows(),
            "fetched_at": self.fetched_at,
            "etag": self.etag,
            "last_modified": self.last_modified,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CachedPage":
        listing = data.get("listing")
        return cls(
            page=(
                ProjectPage.from_rows(listing)
                if listing is not None
                else ProjectPage.from_json(data["page"])
            ),
            fetched_at=float(data["fetched_at"]),
            etag=data.get("etag"),
            last_modified=data.get("last_modified"),
        )
