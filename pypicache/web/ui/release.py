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
import re
from typing import Any

import attrs
from packaging.version import Version

from pypicache.errors import PypicacheError
from pypicache.index.names import normalize
from pypicache.storage.records import StoredFile
from pypicache.web import jsonapi
from pypicache.web.ui.render import human_size, render, when

#: The start of a requirement: its project name (PEP 508).
_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")

#: Descriptions longer than this are shown as plain text (rendering is costly).
MAX_RENDERED = 1024 * 1024


@attrs.frozen
class VersionRow:
    """One version in the list: yanked when all its files are (with a reason)."""

    version: str
    prerelease: bool
    yanked: bool
    reason: str | None
    selected: bool


@attrs.frozen
class FileRow:
    """One file of the selected release."""

    filename: str
    size: int | None
    sha256: str | None
    uploaded: float | str | None
    requires_python: str | None
    private: bool
    yanked: bool
    reason: str | None
    #: Who uploaded a private file (the user, or the access token).
    uploaded_by: str | None = None

    @property
    def size_text(self) -> str:
        return human_size(self.size)

    @property
    def uploaded_text(self) -> str:
        return when(self.uploaded)


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


def file_rows(files: list[StoredFile]) -> list[FileRow]:
    """A release's files: wheels first, by name."""
    rows = []
    for s in sorted(
        files, key=lambda s: (not s.info.filename.endswith(".whl"), s.info.filename)
    ):
        info = s.info
        rows.append(
            FileRow(
                filename=info.filename,
                size=info.size,
                sha256=info.hashes.get("sha256"),
                uploaded=info.upload_time or s.stored_at,
                requires_python=info.requires_python,
                private=s.private,
                yanked=info.yanked is not False,
                reason=info.yanked if isinstance(info.yanked, str) else None,
                uploaded_by=getattr(info, "uploaded_by", None),
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


def release_context(
    project: str,
    private: bool,
    releases: dict[Version, list[StoredFile]],
    chosen: Version,
    metadata: bytes | None,
) -> dict[str, Any]:
    """What the project template shows of ``chosen`` (its core metadata parsed,
    its description rendered)."""
    info = jsonapi.core_info(metadata, project, str(chosen))
    urls = [
        (label, url, safe_url(url))
        for label, url in (info.get("project_urls") or {}).items()
    ]
    for label, key in (("Homepage", "home_page"), ("Download", "download_url")):
        if info.get(key) and all(u != info[key] for _, u, _ in urls):
            urls.append((label, info[key], safe_url(info[key])))
    return {
        "project": project,
        "private": private,
        "release": str(chosen),
        "info": info,
        "summary": info.get("summary"),
        "license": info.get("license_expression") or info.get("license"),
        "urls": urls,
        "requirements": [requirement(r) for r in info.get("requires_dist") or ()],
        "classifiers": info.get("classifiers") or [],
        "description": describe(
            info.get("description"), info.get("description_content_type")
        ),
        "versions": version_rows(releases, chosen),
        "files": file_rows(releases[chosen]),
        "prerelease": chosen.is_prerelease,
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
) -> bytes:
    """The project page of ``chosen`` (blocking: reads the core metadata).

    :param root: the relative URL of the site's root; :param base: its
        absolute URL as the client sees it (for the install commands);
        :param auth: whether writes need a user; :param pinned: whether the
        URL names the version.
    """
    best = sorted(releases[chosen], key=lambda s: not s.info.filename.endswith(".whl"))[
        0
    ]
    try:
        metadata = jsonapi.read_core_metadata(best)
    except (PypicacheError, OSError):  # a broken archive: no metadata shown
        metadata = None
    context = release_context(project, private, releases, chosen, metadata)
    return render(
        "project.html", root=root, base=base, auth=auth, pinned=pinned, **context
    )
