# -*- test-case-name: tests.test_ui_pages -*-
"""The files table of a release page as HTML, made without a template loop,
and the groups of a release of many files.

A release may have thousands of files (a wheel per Python and platform): a
template loop costs some 15 µs a row, these f-strings a few. Every value is
escaped here (:func:`escape_text`, as the templates' autoescaping does: ``& < > "
'``); the template inserts the result as it is.

Above :data:`GROUP_AT` files, a release's page lists its groups (the source
distributions, then the wheels of each Python tag) with their counts, each a
link to the page of that group's files (``?files=cp312``): every file is one
click away, and no page has a table of thousands of rows.
"""

import html
import re
from typing import Any, Iterable

import attrs
from markupsafe import Markup

from pypicache.storage.records import StoredFile
from pypicache.web.ui.render import human_size, when

#: Releases with more files than this show them in groups.
GROUP_AT = 50

#: The group of the files that are not wheels.
SOURCE = "source"

_HEAD = (
    "<thead><tr><th>File</th><th>Size</th><th>Uploaded</th><th>Python</th>"
    "<th>From</th><th>SHA-256</th>{actions}</tr></thead>\n"
)


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


#: What :func:`escape_text` escapes.
_SPECIAL = re.compile(r"[&<>\"']")


def escape_text(text: str) -> str:
    """``text`` escaped for HTML text and quoted attributes (most values
    need nothing: a search is cheaper than escaping)."""
    return html.escape(text) if _SPECIAL.search(text) else text


@attrs.frozen
class Group:
    """A group of a release's files: the link to its page, and its count."""

    key: str
    count: int

    @property
    def label(self) -> str:
        return (
            "Source distributions" if self.key == SOURCE else f"Wheels for {self.key}"
        )


def group_of(filename: str) -> str:
    """A file's group: its Python tag for a wheel (``cp312``, ``py3``),
    :data:`SOURCE` for anything else (source distributions)."""
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        if len(parts) >= 5:
            return parts[-3]
    return SOURCE


def natural(key: str) -> tuple[Any, ...]:
    """Sort ``cp38`` before ``cp310``; the source distributions first."""
    if key == SOURCE:
        return ("",)
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key))


def groups_of(filenames: Iterable[str]) -> list[Group]:
    """The groups of these files, in natural order (``cp38`` before ``cp310``)."""
    counts: dict[str, int] = {}
    for filename in filenames:
        key = group_of(filename)
        counts[key] = counts.get(key, 0) + 1
    return [Group(key, counts[key]) for key in sorted(counts, key=natural)]


def _row(f: FileRow, index: int, download: str, actions: str | None) -> str:
    name = escape_text(f.filename)
    badge = ""
    if f.yanked:
        reason = f": {escape_text(f.reason)}" if f.reason else ""
        badge = f'\n    <span class="badge yanked">yanked{reason}</span>'
    origin = "private upload" if f.private else "upstream"
    if f.uploaded_by:
        origin += f" by {escape_text(f.uploaded_by)}"
    if f.sha256:
        sha = escape_text(f.sha256)
        digest = (
            f'<code id="sha-{index}" title="{sha}">{sha}</code>'
            f'<button type="button" class="copy" data-copy="sha-{index}">Copy</button>'
        )
    else:
        digest = "&ndash;"
    cell = ""
    if actions is not None:
        links = ""
        if f.private:
            target = f"{actions}{name}/"
            yank = (
                f'<a href="{target}unyank">Unyank&hellip;</a>'
                if f.yanked
                else f'<a href="{target}yank">Yank&hellip;</a>'
            )
            links = (
                f"\n    {yank}\n"
                f'    <a class="danger" href="{target}delete">Delete&hellip;</a>'
            )
        cell = f'  <td class="actions" data-label="Actions">{links}</td>\n'
    python = escape_text(f.requires_python) if f.requires_python else "any"
    yanked = ' class="yanked"' if f.yanked else ""
    return (
        f"<tr{yanked}>\n"
        f'  <td><a href="{download}{name}">{name}</a>{badge}</td>\n'
        f'  <td data-label="Size">{escape_text(f.size_text)}</td>\n'
        f'  <td data-label="Uploaded">{escape_text(f.uploaded_text)}</td>\n'
        f'  <td data-label="Python">{python}</td>\n'
        f'  <td data-label="From">{origin}</td>\n'
        f'  <td class="hash" data-label="SHA-256">{digest}</td>\n'
        f"{cell}</tr>\n"
    )


def files_table(
    files: list[FileRow], root: str, project: str, actions: str | None
) -> Markup:
    """The table of ``files``.

    :param root: the relative URL of the site's root;
    :param actions: the URL, relative to the page, under which a file's
        confirmation pages are (``<actions><filename>/yank``); ``None``: no
        actions column (a project without private files).
    """
    download = f"{escape_text(root)}packages/{escape_text(project)}/"
    prefix = None if actions is None else escape_text(actions)
    head = _HEAD.format(actions="" if actions is None else "<th>Actions</th>")
    rows = "".join(_row(f, i, download, prefix) for i, f in enumerate(files, 1))
    return Markup(
        '<div class="table-wrap">\n<table class="files">\n'
        f"{head}<tbody>\n{rows}</tbody>\n</table>\n</div>\n"
    )
