# -*- test-case-name: tests.test_simple -*-
"""The simple repository API both ways: parse upstream pages, render ours
(:mod:`~pypicache.index.rendering`, whose names are here too).

HTML is PEP 503 (with PEP 592, 629, 658/714 attributes); JSON is PEP 691 with
the PEP 700 additions; both carry the PEP 792 project status. Everything here
is pure (no I/O, no reactor); it only logs the malformed file entries it leaves
out of an upstream page.
"""

import json
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from twisted.logger import Logger

from pypicache.index.fileurls import FileUrls
from pypicache.index.model import (
    STATUSES,
    DistFile,
    ProjectPage,
)
from pypicache.index.negotiation import HTML_TYPE as HTML_TYPE
from pypicache.index.negotiation import JSON_TYPE as JSON_TYPE
from pypicache.index.negotiation import OFFERED as OFFERED
from pypicache.index.negotiation import TEXT_HTML as TEXT_HTML
from pypicache.index.negotiation import UPSTREAM_ACCEPT as UPSTREAM_ACCEPT
from pypicache.index.negotiation import negotiate as negotiate
from pypicache.index.rendering import API_VERSION as API_VERSION
from pypicache.index.rendering import api_version as api_version
from pypicache.index.rendering import render_html_index as render_html_index
from pypicache.index.rendering import render_html_page as render_html_page
from pypicache.index.rendering import render_json_index as render_json_index
from pypicache.index.rendering import render_json_page as render_json_page
from pypicache.index.rendering import versions_of as versions_of

log = Logger()

# -- parsing -----------------------------------------------------------------


def parse_page(body: bytes, content_type: str, page_url: str, name: str) -> ProjectPage:
    """Parse an upstream project page, JSON or HTML by its content type.

    :param page_url: the URL the page came from, to resolve relative file URLs.
    :param name: the normalized project name (used when the page has none).
    :raises ValueError: if the body cannot be parsed.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media.endswith("+json") or media == "application/json":
        return parse_json_page(body, page_url, name)
    return parse_html_page(body.decode("utf-8", "replace"), page_url, name)


def _metadata_value(value: Any) -> bool | dict[str, str]:
    if type(value) is dict:
        return _hashes(value) or True
    if value is None or isinstance(value, bool):
        return bool(value)
    raise ValueError(f"core-metadata is {type(value).__name__}")


def _hashes(value: Any) -> dict[str, str]:
    """A PEP 691 ``hashes`` dict: hash names to hex digests, both strings
    (names lower-cased); ``value`` itself when it is one already (as almost
    every upstream's is: ``json.loads`` made it, nothing else holds it)."""
    if type(value) is not dict:
        raise ValueError("hashes is not a dict of strings")
    for k, v in value.items():
        if type(k) is not str or type(v) is not str or not k.islower():
            break
    else:
        return value
    hashes = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError("hashes is not a dict of strings")
        hashes[k.lower()] = v
    return hashes


def _optional(entry: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = entry.get(key)
    if value is not None and (
        not isinstance(value, kind) or isinstance(value, bool) and kind is int
    ):
        raise ValueError(f"{key} is {type(value).__name__}")
    return value


_ABSENT = object()


def _json_file(entry: Any, resolve: FileUrls) -> DistFile:
    """One PEP 691 file entry; :raises ValueError: if any field has the wrong type.

    Written for speed (a page of 3,000 files makes 3,000 of these): the
    types of what ``json.loads`` made are checked with ``type() is``, the
    usual fields of the usual types (or absent) taking one test each, the
    others going through the general checks.
    """
    if type(entry) is not dict:
        raise ValueError("a file entry is not an object")
    get = entry.get
    filename, url = get("filename"), get("url")
    if type(filename) is not str or type(url) is not str:
        raise ValueError("filename and url must be strings")
    metadata = get("core-metadata", _ABSENT)
    if metadata is _ABSENT:
        metadata = get("dist-info-metadata", False)
    yanked = get("yanked", False)
    if yanked is not False:
        if not isinstance(yanked, (bool, str, type(None))):
            raise ValueError(f"yanked is {type(yanked).__name__}")
        yanked = yanked if isinstance(yanked, str) and yanked else bool(yanked)
    requires_python = get("requires-python")
    if requires_python is not None and type(requires_python) is not str:
        requires_python = _optional(entry, "requires-python", str)
    size = get("size")
    if size is not None and type(size) is not int:
        raise ValueError(f"size is {type(size).__name__}")
    upload_time = get("upload-time")
    if upload_time is not None and type(upload_time) is not str:
        raise ValueError(f"upload-time is {type(upload_time).__name__}")
    hashes, provenance = get("hashes"), get("provenance")
    return DistFile(  # (checked in the order of its arguments, as ever)
        filename,
        resolve(url),
        _hashes(hashes) if hashes else {},
        requires_python or None,
        yanked,
        metadata if metadata is False else _metadata_value(metadata),
        size,
        upload_time,
        (
            provenance
            if provenance is None or type(provenance) is str
            else _optional(entry, "provenance", str)
        ),
    )


def parse_json_page(body: bytes, page_url: str, name: str) -> ProjectPage:
    """Parse a PEP 691 JSON project page; malformed file entries are left out.

    :raises ValueError: if the page itself is not a PEP 691 project page.
    """
    try:
        data = json.loads(body)
    except RecursionError as e:
        raise ValueError("JSON nested too deeply") from e
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise ValueError("not a PEP 691 project page")
    files = []
    resolve = FileUrls(page_url)
    for entry in data["files"]:
        try:
            files.append(_json_file(entry, resolve))
        except ValueError as e:
            _skipped(name, entry, e)
    versions = data.get("versions")
    if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        versions = None
    marker = data.get("project-status")
    if not isinstance(marker, dict):
        marker = {}
    status, reason = _status(name, marker.get("status"), marker.get("reason"))
    return ProjectPage(
        name=name,
        files=tuple(files),
        versions=tuple(versions) if versions is not None else None,
        status=status,
        status_reason=reason,
    )


def _status(name: str, status: Any, reason: Any) -> tuple[str | None, str | None]:
    """A PEP 792 status marker and its reason as a page gives them; an
    unknown status is left out (logged), as a page without one is ``active``."""
    if status is None:
        return None, None
    if not isinstance(status, str) or status.strip().lower() not in STATUSES:
        log.warn(
            "Ignored the unknown project status {status!r} of {project}",
            status=str(status)[:100],
            project=name,
        )
        return None, None
    return status.strip().lower(), (
        reason if isinstance(reason, str) and reason else None
    )


def _skipped(project: str, entry: Any, error: Exception) -> None:
    shown = entry.get("filename") if isinstance(entry, dict) else None
    log.warn(
        "Skipped a malformed file entry ({filename!r}) on the upstream page of {project}: {reason}",
        filename=str(shown)[:100],
        project=project,
        reason=str(error),
    )


def _hash_attribute(value: str | None) -> bool | dict[str, str]:
    """Parse ``data-core-metadata``: ``true`` or ``<hashname>=<hexdigest>``."""
    if value is None or value.lower() == "false":
        return False
    algorithm, sep, digest = value.partition("=")
    if sep and algorithm and digest:
        return {algorithm.lower(): digest}
    return True


class _AnchorParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.anchors: list[dict[str, str | None]] = []
        self.meta: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")
        elif tag == "meta":
            attributes = dict(attrs)
            self.meta.setdefault(
                attributes.get("name") or "", attributes.get("content")
            )
        elif tag == "a":
            attributes = dict(attrs)
            if attributes.get("href"):
                self.anchors.append(attributes)


def _html_file(anchor: dict[str, str | None], base: str) -> DistFile | None:
    """One PEP 503 anchor (``None`` for one that names no file).

    :raises ValueError: for an unparseable URL.
    """
    url, fragment = urldefrag(urljoin(base, anchor["href"] or ""))
    filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not filename:
        return None
    hashes = {}
    algorithm, sep, digest = fragment.partition("=")
    if sep and algorithm and digest:
        hashes[algorithm.lower()] = digest
    metadata = anchor.get("data-core-metadata", anchor.get("data-dist-info-metadata"))
    yanked: bool | str = False
    if "data-yanked" in anchor:
        yanked = anchor["data-yanked"] or True
    return DistFile(
        filename=filename,
        url=url,
        hashes=hashes,
        requires_python=anchor.get("data-requires-python") or None,
        yanked=yanked,
        core_metadata=_hash_attribute(metadata),
        provenance=anchor.get("data-provenance") or None,
    )


def parse_html_page(text: str, page_url: str, name: str) -> ProjectPage:
    """Parse a PEP 503 HTML project page."""
    parser = _AnchorParser()
    parser.feed(text)
    parser.close()
    base = urljoin(page_url, parser.base) if parser.base else page_url
    files = []
    for anchor in parser.anchors:
        try:
            f = _html_file(anchor, base)
        except ValueError as e:
            _skipped(name, {"filename": anchor.get("href")}, e)
            continue
        if f is not None:
            files.append(f)
    status, reason = _status(
        name,
        parser.meta.get("pypi:project-status"),
        parser.meta.get("pypi:project-status-reason"),
    )
    return ProjectPage(
        name=name, files=tuple(files), status=status, status_reason=reason
    )
