# -*- test-case-name: tests.test_attestations -*-
"""PEP 740 provenance objects over HTTP: ``/packages/<project>/<file>/provenance``.

Pages point the ``provenance`` of a file here (never at the upstream), so
that what pypicache keeps stays available offline.
"""

from typing import Any

import attrs
from twisted.web.iweb import IRequest

from pypicache.index.model import ProjectPage
from pypicache.index.names import check_filename
from pypicache.proxy.provenance import Provenances
from pypicache.proxy.views import Views
from pypicache.web.routing import file_url, project_of, route

#: The media type PEP 740 gives provenance objects (JSON).
PROVENANCE_TYPE = b"application/vnd.pypi.integrity.v1+json"


def provenance_url(project: str, filename: str) -> str:
    """Where this server serves a file's provenance, relative to a project page."""
    return file_url(project, filename) + "/provenance"


def with_provenance_urls(page: ProjectPage) -> ProjectPage:
    """The page with each file's ``provenance`` pointing at this server."""
    if not any(f.provenance for f in page.files):
        return page
    return attrs.evolve(
        page,
        files=tuple(
            (
                attrs.evolve(f, provenance=provenance_url(page.name, f.filename))
                if f.provenance
                else f
            )
            for f in page.files
        ),
    )


class ProvenanceRoutes:
    """The provenance objects of files, kept or relayed."""

    _views: Views
    _provenances: Provenances

    __slots__ = ("_views", "_provenances", "__weakref__")

    def __init__(self, views: Views, provenances: Provenances) -> None:
        self._views = views
        self._provenances = provenances

    @route("/packages/<project>/<filename>/provenance", methods=["GET", "HEAD"])
    async def provenance(self, request: IRequest, project: str, filename: str) -> Any:
        check_filename(filename)
        name = project_of(project, filename)
        stored = await self._views.find(name, filename)
        content = await self._provenances.get(
            name, filename, stored, await self._views.is_private(name)
        )
        request.setHeader(b"content-type", PROVENANCE_TYPE)
        request.setHeader(b"cache-control", b"public, max-age=600")
        return content
