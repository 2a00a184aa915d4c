# -*- test-case-name: tests.test_jsonapi -*-
"""The JSON read API in the public index's shape: ``/pypi/<project>/json`` and ``/index.json``."""

import datetime
import json
import re
from typing import Any

from packaging.version import InvalidVersion, Version

from pypicache.errors import BadRequest
from pypicache.index.archives import (
    MAX_METADATA,
    read_sdist_metadata,
    read_wheel_metadata,
)
from pypicache.index.names import METADATA_SUFFIX, parse_filename
from pypicache.storage.records import StoredFile

#: Core metadata fields and the ``info`` keys they fill.
_INFO_FIELDS = {
    "author": "author",
    "author_email": "author_email",
    "classifiers": "classifiers",
    "description": "description",
    "description_content_type": "description_content_type",
    "download_url": "download_url",
    "home_page": "home_page",
    "keywords": "keywords",
    "license": "license",
    "license_expression": "license_expression",
    "maintainer": "maintainer",
    "maintainer_email": "maintainer_email",
    "name": "name",
    "platforms": "platform",
    "provides_extras": "provides_extra",
    "requires_dist": "requires_dist",
    "requires_python": "requires_python",
    "summary": "summary",
    "version": "version",
}


def read_core_metadata(stored: StoredFile) -> bytes | None:
    """The core metadata of a stored archive, or ``None`` (blocking: run it in a thread).

    Never more than ``MAX_METADATA`` bytes: a larger ``.metadata`` file beside
    the archive counts as none, and the archive is read through the bounded
    reader of :mod:`pypicache.index.archives`.
    """
    return read_metadata_at(stored.path.path, stored.info.filename)


def read_metadata_at(path: str, filename: str) -> bytes | None:
    """:func:`read_core_metadata` of the archive at ``path`` called ``filename``."""
    try:
        with open(path + METADATA_SUFFIX, "rb") as f:
            content = f.read(MAX_METADATA + 1)
        if len(content) <= MAX_METADATA:
            return content
    except FileNotFoundError:
        pass
    if filename.endswith(".whl"):
        return read_wheel_metadata(path)
    return read_sdist_metadata(path)


def core_info(raw: bytes | None, project: str, version: str) -> dict[str, Any]:
    """The ``info`` of a release from its core metadata (``raw``; ``None``: unknown)."""
    info: dict[str, Any] = {key: None for key in _INFO_FIELDS.values()}
    info.update(
        name=project,
        version=version,
        classifiers=[],
        requires_dist=None,
        project_urls=None,
    )
    if raw:
        import pkginfo  # here: most daemons never serve this API

        dist: Any = pkginfo.Distribution()
        dist.parse(raw)
        for attribute, key in _INFO_FIELDS.items():
            value = getattr(dist, attribute, None)
            if isinstance(value, tuple):
                value = list(value)
            if value not in (None, "", []) or key not in info:
                info[key] = value
        urls = getattr(dist, "project_urls", None) or ()
        if urls:
            info["project_urls"] = dict(
                u.split(",", 1) if "," in u else (u, u) for u in urls
            )
            info["project_urls"] = {
                k.strip(): v.strip() for k, v in info["project_urls"].items()
            }
    return info


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def file_entry(stored: StoredFile, base_url: str) -> dict[str, Any]:
    """One file as the public JSON API lists it."""
    info = stored.info
    filename = info.filename
    if filename.endswith(".whl"):
        packagetype = "bdist_wheel"
        python_version = filename[: -len(".whl")].split("-")[-3]
    elif filename.endswith(".egg"):
        packagetype, python_version = "bdist_egg", "source"
    else:
        packagetype, python_version = "sdist", "source"
    upload_iso = info.upload_time or _iso(stored.stored_at)
    yanked = info.yanked is not False
    return {
        "comment_text": "",
        "digests": dict(info.hashes),
        "downloads": -1,
        "filename": filename,
        "has_sig": False,
        "md5_digest": info.hashes.get("md5"),
        "packagetype": packagetype,
        "python_version": python_version,
        "requires_python": info.requires_python,
        "size": info.size,
        "upload_time": upload_iso.rstrip("Z").split(".")[0] if upload_iso else None,
        "upload_time_iso_8601": upload_iso,
        "url": f"{base_url}packages/{stored.project}/{filename}",
        "yanked": yanked,
        "yanked_reason": info.yanked if isinstance(info.yanked, str) else None,
        # pypicache's own: who uploaded a private file (user, token id).
        "uploaded_by": info.uploaded_by,
    }


#: A final release written as ``str(Version)`` writes it (no leading zeros).
_FINAL = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")


def versions_of(
    files: list[StoredFile], finals: dict[Version, str] | None = None
) -> dict[Version, list[StoredFile]]:
    """The stored files grouped by version (files without a version are left out).

    A wheel's version is the second part of its name, an sdist's the part
    after its last dash (as ``packaging`` reads them; stored names are
    valid): files are grouped by that text first, and each distinct text is
    parsed once, as a release of 3,000 wheels has one (:func:`parse_filename`
    takes some 30 µs a wheel).

    :param finals: filled with the versions whose text is a final release
        as ``str(version)`` writes it (``1.0.500``), and that text: what
        a list of a thousand versions shows, without formatting each.
    """
    by_text: dict[str | None, list[StoredFile]] = {}
    for stored in files:
        filename = stored.info.filename
        text = None
        if filename.endswith(".whl") and filename.count("-") in (4, 5):
            text = filename.split("-", 2)[1]
        elif filename.endswith((".tar.gz", ".zip")):
            stem = filename[: -7 if filename.endswith(".tar.gz") else -4]
            name, dash, text = stem.rpartition("-")
            text = text if dash and name else None
        by_text.setdefault(text, []).append(stored)
    releases: dict[Version, list[StoredFile]] = {}
    for text, group in by_text.items():
        version: Version | None = None
        if text is not None:
            try:
                version = Version(text)
            except InvalidVersion:
                pass
        if version is not None and text is not None:
            if version not in releases:  # this text is the key's: str() writes it
                releases[version] = []
                if finals is not None and _FINAL.fullmatch(text):
                    finals[version] = text
            releases[version].extend(group)
            continue
        for stored in group:  # read as the whole name says
            _, found = parse_filename(stored.info.filename)
            if found is not None:
                releases.setdefault(found, []).append(stored)
    return releases


def latest(releases: dict[Version, list[StoredFile]]) -> Version:
    """The version the API describes by default: the newest final, unyanked one."""

    def usable(v: Version) -> bool:
        return not v.is_prerelease and any(s.info.yanked is False for s in releases[v])

    candidates = [v for v in releases if usable(v)] or list(releases)
    return max(candidates)


def pick_version(
    releases: dict[Version, list[StoredFile]], text: str | None
) -> Version:
    """The version asked for (``None``: :func:`latest`); raises ``KeyError`` if absent."""
    if text is None:
        return latest(releases)
    try:
        wanted = Version(text)
    except ValueError as e:
        raise BadRequest(f"Invalid version {text!r}") from e
    if wanted not in releases:
        raise KeyError(text)
    return wanted


def project_json(
    project: str,
    releases: dict[Version, list[StoredFile]],
    version: Version,
    metadata: bytes | None,
    base_url: str,
    with_releases: bool,
) -> dict[str, Any]:
    """The ``/pypi/<project>/json`` (or ``/<version>/json``) document."""
    info = core_info(metadata, project, str(version))
    chosen = releases[version]
    info.update(
        package_url=f"{base_url}pypi/{project}/",
        project_url=f"{base_url}pypi/{project}/",
        release_url=f"{base_url}pypi/{project}/{version}/",
        yanked=all(s.info.yanked is not False for s in chosen),
        yanked_reason=next(
            (s.info.yanked for s in chosen if isinstance(s.info.yanked, str)), None
        ),
        bugtrack_url=None,
        docs_url=None,
        downloads={"last_day": -1, "last_month": -1, "last_week": -1},
    )
    document: dict[str, Any] = {
        "info": info,
        "last_serial": 0,
        "urls": [
            file_entry(s, base_url)
            for s in sorted(chosen, key=lambda s: s.info.filename)
        ],
        "vulnerabilities": [],
    }
    if with_releases:
        document["releases"] = {
            str(v): [
                file_entry(s, base_url)
                for s in sorted(files, key=lambda s: s.info.filename)
            ]
            for v, files in sorted(releases.items())
        }
    return document


def index_entry(stored: StoredFile) -> dict[str, Any]:
    """One archive in ``/index.json``."""
    _, version = parse_filename(stored.info.filename)
    return {
        "name": stored.project,
        "version": str(version) if version is not None else None,
        "filename": stored.info.filename,
        "sha256": stored.info.hashes.get("sha256"),
        "size": stored.info.size,
        "added": _iso(stored.stored_at),
        "private": stored.private,
    }


def index_body(files: list[StoredFile]) -> bytes:
    """``/index.json``: every archive of ``files`` (blocking: run it in a thread)."""
    return json.dumps([index_entry(s) for s in files]).encode()
