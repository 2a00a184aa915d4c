# -*- test-case-name: tests.test_ui -*-
"""What a project page shows: its versions, one release's files, that release's
core metadata and its long description rendered as the public index renders
it (``readme_renderer``, which sanitizes what it renders).

Built from the same records as the JSON API (:mod:`pypicache.web.jsonapi`):
the stored files with what the :class:`~pypicache.proxy.rules.Rules` make of
them (a yank by rule shows), grouped by :func:`~pypicache.web.jsonapi.versions_of`.
Everything here blocks (reading an archive, rendering a description): the
routes run it in a thread.
"""

import email.message
import functools
import re
from typing import Any

import attrs
from markupsafe import Markup
from packaging.version import Version

from pypicache.errors import PypicacheError
from pypicache.index.names import normalize
from pypicache.storage.records import StoredFile
from pypicache.web import jsonapi
from pypicache.web.jsonapi import read_metadata_at
from pypicache.web.routing import Body
from pypicache.web.ui.filetable import (
    GROUP_AT,
    Group,
    escape_text,
    file_rows,
    files_table,
    group_of,
    groups_of,
)
from pypicache.web.ui.render import both_forms, render

#: The start of a requirement: its project name (PEP 508).
_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")

#: Descriptions longer than this are shown as plain text (rendering is costly).
MAX_RENDERED = 1024 * 1024

#: Releases whose parsed metadata and rendered description are kept.
KEPT_DESCRIPTIONS = 32


@attrs.frozen
class VersionRow:
    """One version in the list: yanked when all its files are (with a reason)."""

    version: str
    prerelease: bool
    yanked: bool
    reason: str | None
    selected: bool


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


@attrs.frozen
class Requirement:
    """A ``Requires-Dist`` line, and the normalized name of the project it names."""

    text: str
    project: str | None


def version_rows(
    releases: dict[Version, list[StoredFile]], chosen: Version
) -> list[VersionRow]:
    """Every version, newest first."""
    rows = []
    for version in sorted(releases, reverse=True):
        files = releases[version]
        yanked = all(s.info.yanked is not False for s in files)
        reason = next(
            (s.info.yanked for s in files if isinstance(s.info.yanked, str)), None
        )
        rows.append(
            VersionRow(
                str(version), version.is_prerelease, yanked, reason, version == chosen
            )
        )
    return rows


def requirement(text: str) -> Requirement:
    """A requirement line and the project it names (``None`` if unreadable)."""
    match = _REQUIREMENT_NAME.match(text)
    return Requirement(text, normalize(match.group(1)) if match else None)


def safe_url(url: str) -> str | None:
    """``url`` if it is an http(s) URL that may be a link, else ``None``."""
    url = url.strip()
    return url if re.match(r"(?i)https?://[^\s\"'<>]+$", url) else None


def describe(text: str | None, content_type: str | None) -> str | None:
    """The long description as HTML, rendered as the public index renders it:
    reStructuredText by default, Markdown (GFM or CommonMark) or plain text as
    its content type says, plain text where rendering fails; always sanitized.
    """
    if not text:
        return None
    import readme_renderer.markdown
    import readme_renderer.rst
    import readme_renderer.txt

    header = email.message.Message()
    header["content-type"] = content_type or "text/x-rst"
    kind = header.get_content_type() if content_type else "text/x-rst"
    params = {k.lower(): v for k, v in header.get_params(failobj=[])[1:]}
    rendered = None
    if len(text) <= MAX_RENDERED:
        if kind == "text/markdown":
            rendered = readme_renderer.markdown.render(
                text, variant=params.get("variant", "GFM")
            )
        elif kind in ("text/x-rst", "text/rst"):
            rendered = readme_renderer.rst.render(text)
    if rendered is None:
        rendered = f"<pre>{readme_renderer.txt.render(text)}</pre>"
    return rendered


def metadata_context(
    metadata: bytes | None, project: str, version: str
) -> dict[str, Any]:
    """What the project template shows of a release's core metadata (parsed,
    its description rendered)."""
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
        "description": describe(
            info.get("description"), info.get("description_content_type")
        ),
    }


@functools.lru_cache(maxsize=KEPT_DESCRIPTIONS)
def described(
    path: str, filename: str, sha256: str | None, project: str, version: str
) -> dict[str, Any]:
    """:func:`metadata_context` of the archive at ``path`` (blocking: reads
    it), kept by its name and digest: the page of a release rendered again
    (the project changed) parses and renders its description no more. Never
    changed by its callers."""
    try:
        metadata = read_metadata_at(path, filename)
    except (PypicacheError, OSError):  # a broken archive: no metadata shown
        metadata = None
    return metadata_context(metadata, project, version)


def release_context(
    project: str,
    private: bool,
    releases: dict[Version, list[StoredFile]],
    chosen: Version,
    metadata: bytes | None | dict[str, Any],
    group: str | None = None,
) -> dict[str, Any]:
    """What the project template shows of ``chosen``: ``metadata`` is its core
    metadata, or what :func:`metadata_context` made of it; ``group``, the
    group of files shown (:func:`~pypicache.web.ui.filetable.group_of`;
    ``None``: every file, or the groups' list for a release of many)."""
    if not isinstance(metadata, dict):
        metadata = metadata_context(metadata, project, str(chosen))
    files = releases[chosen]
    groups = groups_of(s.info.filename for s in files) if len(files) > GROUP_AT else []
    if group is not None:
        files = [s for s in files if group_of(s.info.filename) == group]
    elif groups:
        files = []
    return {
        "project": project,
        "private": private,
        "release": str(chosen),
        **metadata,
        "versions": version_rows(releases, chosen),
        "files": file_rows(files),
        "groups": groups,
        "group": Group(group, len(files)) if group is not None else None,
        "total": len(releases[chosen]),
        "deletable": any(s.private for s in releases[chosen]),
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
    releases: dict[Version, list[StoredFile]],
    chosen: Version,
    pinned: bool,
    group: str | None = None,
) -> bytes:
    """The project page of ``chosen`` (blocking: reads the core metadata).

    :param root: the relative URL of the site's root; :param base: its
        absolute URL as the client sees it (for the install commands);
        :param auth: whether writes need a user; :param pinned: whether the
        URL names the version; :param group: the group of files shown.
    """
    best = min(releases[chosen], key=lambda s: not s.info.filename.endswith(".whl"))
    digest = best.info.hashes.get("sha256")
    args = (best.path.path, best.info.filename, digest, project, str(chosen))
    metadata = described(*args) if digest else described.__wrapped__(*args)
    context = release_context(project, private, releases, chosen, metadata, group)
    return render(
        "project.html", root=root, base=base, auth=auth, pinned=pinned, **context
    )


def page_forms(*args: Any) -> tuple[Body, Body]:
    """:func:`project_page` as sent, plain and gzipped (blocking: the page
    of a release of 3,000 files takes milliseconds to compress)."""
    return both_forms(project_page(*args))
