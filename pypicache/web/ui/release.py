# -*- test-case-name: tests.test_ui -*-
"""What a project page shows: its versions, one release's files, that release's
core metadata and its long description rendered as the public index renders
it (``readme_renderer``, which sanitizes what it renders).

Built from the same records as the JSON API (:mod:`pypicache.web.jsonapi`):
the stored files with what the :class:`~pypicache.proxy.rules.Rules` make of
them (a yank by rule shows), grouped once per version of the project's view
(:class:`~pypicache.web.ui.listing.Listing`). Descriptions are rendered once
and kept (:class:`~pypicache.web.ui.descriptions.Descriptions`). Everything
here blocks (reading an archive, rendering a description): the routes run it
in a thread.
"""

import functools
import re
from typing import Any

import attrs
from packaging.version import Version

from pypicache.errors import PypicacheError
from pypicache.index.names import normalize
from pypicache.storage.records import StoredFile
from pypicache.web import jsonapi
from pypicache.web.jsonapi import read_metadata_at
from pypicache.web.routing import Body
from pypicache.web.ui.descriptions import MAX_RENDERED, Descriptions, describe
from pypicache.web.ui.filetable import (
    GROUP_AT,
    Group,
    file_rows,
    files_table,
)
from pypicache.web.ui.listing import Listing, VersionRow, versions_list
from pypicache.web.ui.render import both_forms, render

__all__ = ["MAX_RENDERED", "describe", "VersionRow", "versions_list"]

#: The start of a requirement: its project name (PEP 508).
_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")

#: Releases whose parsed metadata are kept in memory.
KEPT_DESCRIPTIONS = 32


@attrs.frozen
class Requirement:
    """A ``Requires-Dist`` line, and the normalized name of the project it names."""

    text: str
    project: str | None


def requirement(text: str) -> Requirement:
    """A requirement line and the project it names (``None`` if unreadable)."""
    match = _REQUIREMENT_NAME.match(text)
    return Requirement(text, normalize(match.group(1)) if match else None)


def safe_url(url: str) -> str | None:
    """``url`` if it is an http(s) URL that may be a link, else ``None``."""
    url = url.strip()
    return url if re.match(r"(?i)https?://[^\s\"'<>]+$", url) else None


def metadata_context(
    metadata: bytes | None,
    project: str,
    version: str,
    descriptions: Descriptions | None = None,
) -> dict[str, Any]:
    """What the project template shows of a release's core metadata (parsed,
    its description rendered: by ``descriptions``, which keep what they render,
    else here and now)."""
    context = parsed_context(metadata, project, version)
    return with_description(context, descriptions)


def parsed_context(
    metadata: bytes | None, project: str, version: str
) -> dict[str, Any]:
    """:func:`metadata_context` but for the description, left to render."""
    info = jsonapi.core_info(metadata, project, version)
    urls = [
        (label, url, safe_url(url))
        for label, url in (info.get("project_urls") or {}).items()
    ]
    for label, key in (("Homepage", "home_page"), ("Download", "download_url")):
        if info.get(key) and all(u != info[key] for _, u, _ in urls):
            urls.append((label, info[key], safe_url(info[key])))
    return {
        "info": info,
        "summary": info.get("summary"),
        "license": info.get("license_expression") or info.get("license"),
        "urls": urls,
        "requirements": [requirement(r) for r in info.get("requires_dist") or ()],
        "classifiers": info.get("classifiers") or [],
    }


def with_description(
    context: dict[str, Any], descriptions: Descriptions | None
) -> dict[str, Any]:
    """``context`` (:func:`parsed_context`, not changed) with its description rendered."""
    info = context["info"]
    text, kind = info.get("description"), info.get("description_content_type")
    html = descriptions.html(text, kind) if descriptions else describe(text, kind)
    return {**context, "description": html}


def read_release(
    path: str, filename: str, project: str, version: str
) -> dict[str, Any]:
    """:func:`parsed_context` of the archive at ``path`` (blocking: reads it)."""
    try:
        metadata = read_metadata_at(path, filename)
    except (PypicacheError, OSError):  # a broken archive: no metadata shown
        metadata = None
    return parsed_context(metadata, project, version)


def prepare(descriptions: Descriptions, stored: StoredFile) -> None:
    """Render the description of a file just stored (an upload) and keep it,
    as the public index does at upload time, so that the first view of its
    release renders none (blocking: run it in a thread, after the commit)."""
    path, filename = stored.path.path, stored.info.filename
    info = read_release(path, filename, stored.project, "")["info"]
    descriptions.html(info.get("description"), info.get("description_content_type"))


@functools.lru_cache(maxsize=KEPT_DESCRIPTIONS)
def described(
    path: str, filename: str, sha256: str | None, project: str, version: str
) -> dict[str, Any]:
    """:func:`read_release`, kept by the archive's name and digest: the page
    of a release rendered again (the project changed) reads and parses its
    metadata no more. Never changed by its callers."""
    return read_release(path, filename, project, version)


def release_context(
    project: str,
    private: bool,
    releases: dict[Version, list[StoredFile]] | Listing,
    chosen: Version,
    metadata: bytes | None | dict[str, Any],
    group: str | None = None,
) -> dict[str, Any]:
    """What the project template shows of ``chosen``: ``releases`` are the
    project's files by version (or their :class:`Listing`), ``metadata`` is
    its core metadata, or what :func:`metadata_context` made of it; ``group``,
    the group of files shown (:func:`~pypicache.web.ui.filetable.group_of`;
    ``None``: every file, or the groups' list for a release of many)."""
    if not isinstance(metadata, dict):
        metadata = metadata_context(metadata, project, str(chosen))
    listing = releases if isinstance(releases, Listing) else Listing.of(releases)
    files = every = listing.releases[chosen]
    groups = listing.grouped(chosen)[0] if len(files) > GROUP_AT else []
    if group is not None:
        files = listing.grouped(chosen)[1].get(group, [])
    elif groups:
        files = []
    return {
        "project": project,
        "private": private,
        "release": str(chosen),
        **metadata,
        "versions": listing.version_rows(chosen),
        "files": file_rows(files),
        "groups": groups,
        "group": Group(group, len(files)) if group is not None else None,
        "total": len(every),
        "deletable": any(s.private for s in every),
        "prerelease": chosen.is_prerelease,
        # Lists of thousands of rows, made in Python (escaped there).
        "files_table": files_table,
        "versions_list": versions_list,
    }


def project_page(
    root: str,
    base: str,
    auth: bool,
    project: str,
    private: bool,
    listing: Listing,
    chosen: Version,
    pinned: bool,
    group: str | None = None,
    descriptions: Descriptions | None = None,
) -> bytes:
    """The project page of ``chosen`` (blocking: reads the core metadata,
    renders the description unless ``descriptions`` have it).

    :param root: the relative URL of the site's root; :param base: its
        absolute URL as the client sees it (for the install commands);
        :param auth: whether writes need a user; :param pinned: whether the
        URL names the version; :param group: the group of files shown.
    """
    best = listing.best(chosen)
    digest = best.info.hashes.get("sha256")
    args = (best.path.path, best.info.filename, digest, project, str(chosen))
    parsed = described(*args) if digest else described.__wrapped__(*args)
    metadata = with_description(parsed, descriptions)
    context = release_context(project, private, listing, chosen, metadata, group)
    return render(
        "project.html", root=root, base=base, auth=auth, pinned=pinned, **context
    )


def page_forms(*args: Any, **kwargs: Any) -> tuple[Body, Body]:
    """:func:`project_page` as sent, plain and gzipped (blocking: the page
    of a release of 3,000 files takes milliseconds to compress)."""
    return both_forms(project_page(*args, **kwargs))
