# -*- test-case-name: tests.test_simple -*-
"""Our pages of the simple repository API: PEP 503 HTML (with PEP 592, 629,
658/714 attributes), PEP 691 JSON with the PEP 700 additions, both with the
PEP 792 project status. Pure: no I/O.
"""

import re
from html import escape
from typing import Any, Iterable

from pypicache.errors import BadRequest
from pypicache.index.jsonbytes import compact
from pypicache.index.model import DistFile, MetadataOf, ProjectPage, UrlFor
from pypicache.index.names import parse_filename

#: The API version of our pages: PEP 792's, which carries the project status
#: (1.2 and 1.3, PEP 708 and 740, add only optional fields).
API_VERSION = "1.4"


def api_version(files: Iterable[DistFile]) -> str:
    """PEP 700 makes ``size`` mandatory from 1.1: declare 1.0 where one is unknown."""
    return API_VERSION if all(f.size is not None for f in files) else "1.0"


def _metadata_attribute(value: bool | dict[str, str]) -> str | None:
    if value is False:
        return None
    if isinstance(value, dict):
        if len(value) == 1:
            algorithm, digest = next(iter(value.items()))
        else:
            algorithm, digest = next(iter(sorted(value.items())))
        return f"{algorithm}={digest}"
    return "true"


#: What :func:`html.escape` changes (with ``quote=True``).
_SPECIAL = re.compile("[&<>\"']")


def _escape(text: str) -> str:
    """:func:`html.escape`, at once for text it would leave as it is (file
    names, URLs and hashes almost always): a page of 3,000 files escapes
    12,000 values."""
    return escape(text) if _SPECIAL.search(text) else text


def _fragment(hashes: dict[str, str]) -> str:
    for algorithm in ("sha256", "sha384", "sha512", "sha224", "sha1", "md5"):
        if algorithm in hashes:
            return f"#{algorithm}={hashes[algorithm]}"
    return ""


_HTML_HEAD = (
    "<!DOCTYPE html>\n<html>\n  <head>\n"
    '    <meta name="pypi:repository-version" content="{version}">\n'
    "{status}    <title>{title}</title>\n  </head>\n  <body>\n    <h1>{title}</h1>\n"
)
_HTML_TAIL = "  </body>\n</html>\n"


def render_html_page(
    page: ProjectPage, url_for: UrlFor, offer: MetadataOf = DistFile.recorded_metadata
) -> bytes:
    """Render a project page as PEP 503 HTML.

    :param url_for: gives the (relative) URL this server serves a file at;
        ``offer``, what to say of its core metadata.
    """
    title = escape(f"Links for {page.name}")
    status = ""
    if page.status is not None:
        status = (
            f'    <meta name="pypi:project-status" content="{escape(page.status)}">\n'
        )
        if page.status_reason:
            status += (
                '    <meta name="pypi:project-status-reason" '
                f'content="{escape(page.status_reason)}">\n'
            )
    parts = [
        _HTML_HEAD.format(version=api_version(page.files), status=status, title=title)
    ]
    append = parts.append
    for f in page.files:
        line = f'    <a href="{_escape(url_for(f) + _fragment(f.hashes))}"'
        if f.requires_python:
            line += f' data-requires-python="{_escape(f.requires_python)}"'
        if f.yanked is not False:
            reason = f.yanked if isinstance(f.yanked, str) else ""
            line += f' data-yanked="{_escape(reason)}"'
        metadata = _metadata_attribute(offer(f))
        if metadata:
            metadata = _escape(metadata)
            line += (
                f' data-dist-info-metadata="{metadata}"'
                f' data-core-metadata="{metadata}"'
            )
        if f.provenance:
            line += f' data-provenance="{_escape(f.provenance)}"'
        append(f"{line}>{_escape(f.filename)}</a><br/>\n")
    parts.append(_HTML_TAIL)
    return "".join(parts).encode("utf-8")


def render_json_page(
    page: ProjectPage, url_for: UrlFor, offer: MetadataOf = DistFile.recorded_metadata
) -> bytes:
    """Render a project page as PEP 691 JSON (with PEP 700 fields)."""
    files = []
    for f in page.files:
        entry: dict[str, Any] = {
            "filename": f.filename,
            "url": url_for(f),
            "hashes": f.hashes,
        }
        if f.requires_python:
            entry["requires-python"] = f.requires_python
        entry["yanked"] = f.yanked
        metadata = offer(f)
        if metadata is not False:
            # PEP 714: JSON carries only the new key (pip 22.3-23.1 break on the old one).
            entry["core-metadata"] = metadata
        if f.size is not None:
            entry["size"] = f.size
        if f.upload_time:
            entry["upload-time"] = f.upload_time
        if f.provenance:
            entry["provenance"] = f.provenance
        files.append(entry)
    data: dict[str, Any] = {
        "meta": {"api-version": api_version(page.files)},
        "name": page.name,
        "files": files,
        "versions": list(
            page.versions if page.versions is not None else versions_of(page)
        ),
    }
    if page.status is not None:
        marker = {"status": page.status}
        if page.status_reason:
            marker["reason"] = page.status_reason
        data["project-status"] = marker
    return compact(data, len(files))


def versions_of(page: ProjectPage) -> list[str]:
    """Return the versions of a page's files, oldest first (PEP 700)."""
    found = {}
    for f in page.files:
        try:
            _, version = parse_filename(f.filename)
        except BadRequest:
            continue
        if version is not None:
            found[version] = str(version)
    return [found[v] for v in sorted(found)]


def render_html_index(names: Iterable[str]) -> bytes:
    """Render the project list as PEP 503 HTML (links relative to ``/simple/``)."""
    parts = [_HTML_HEAD.format(version=API_VERSION, status="", title="Simple index")]
    for name in names:
        parts.append(f'    <a href="{escape(name)}/">{escape(name)}</a><br/>\n')
    parts.append(_HTML_TAIL)
    return "".join(parts).encode("utf-8")


def render_json_index(names: Iterable[str]) -> bytes:
    """Render the project list as PEP 691 JSON."""
    data = {
        "meta": {"api-version": API_VERSION},
        "projects": [{"name": n} for n in names],
    }
    return compact(data)
