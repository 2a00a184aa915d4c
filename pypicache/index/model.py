# -*- test-case-name: tests.test_simple -*-
"""Immutable records of what an index says about a project and its files."""

from operator import attrgetter
from typing import Any, Callable

import attrs


@attrs.frozen
class DistFile:
    """One distribution file as a simple index describes it.

    :ivar url: where the file can be fetched (absolute upstream URL, or ``None``
        for a file known only from the disk).
    :ivar hashes: lower-case hash name to hex digest.
    :ivar yanked: ``False``, ``True``, or the reason (a non-empty string).
    :ivar core_metadata: ``False``, ``True``, or a dict of hashes of the
        ``.metadata`` file (PEP 658/714).
    :ivar uploaded_by: who uploaded a private file (never on index pages).
    """

    filename: str
    url: str | None = None
    hashes: dict[str, str] = attrs.field(factory=dict)
    requires_python: str | None = None
    yanked: bool | str = False
    core_metadata: bool | dict[str, str] = False
    size: int | None = None
    upload_time: str | None = None
    provenance: str | None = None
    #: Who uploaded a private file (user, and token id), where known.
    uploaded_by: str | None = None

    def recorded_metadata(self) -> bool | dict[str, str]:
        """What this record says of the file's core metadata."""
        return self.core_metadata

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-able dict (our own storage form, not the PEP 691 one);
        ``uploaded_by`` only where known (cached pages stay as they were).

        What ``attrs.asdict`` gives, field by field, written out: a page of
        3,000 files is stored once per fetch, and ``asdict`` took a fifth of a
        second of the reactor for it.
        """
        metadata = self.core_metadata
        data = {
            "filename": self.filename,
            "url": self.url,
            "hashes": dict(self.hashes),
            "requires_python": self.requires_python,
            "yanked": self.yanked,
            "core_metadata": dict(metadata) if isinstance(metadata, dict) else metadata,
            "size": self.size,
            "upload_time": self.upload_time,
            "provenance": self.provenance,
        }
        if self.uploaded_by is not None:
            data["uploaded_by"] = self.uploaded_by
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "DistFile":
        """Inverse of :meth:`to_json`; unknown keys are ignored."""
        names = _FIELDS.get(cls)
        if names is None:
            names = _FIELDS[cls] = frozenset(a.name for a in attrs.fields(cls))
        if names.issuperset(data):
            return cls(**data)
        return cls(**{k: v for k, v in data.items() if k in names})


#: The field names of :class:`DistFile` (and subclasses), read once: a
#: stored page of 3,000 files is read back file by file.
_FIELDS: dict[type, frozenset[str]] = {}


#: The columns of a stored page's rows (:meth:`ProjectPage.to_rows`): the
#: fields of :class:`DistFile`, in order.
FILE_FIELDS: tuple[str, ...] = tuple(a.name for a in attrs.fields(DistFile))
_row_of = attrgetter(*FILE_FIELDS)


#: Gives the (relative) URL a page links a file at.
UrlFor = Callable[[DistFile], str]

#: Gives what a page says of a file's core metadata (by default
#: :meth:`DistFile.recorded_metadata`).
MetadataOf = Callable[[DistFile], bool | dict[str, str]]


#: PEP 792 project status markers (``None`` on a page: ``active``).
STATUSES = ("active", "archived", "quarantined", "deprecated")


@attrs.frozen
class ProjectPage:
    """A project's file list, with the PEP 700 ``versions`` if the index gave them.

    :ivar status: the PEP 792 project status marker (``None``: none given,
        which means ``active``); :ivar status_reason: its free-form reason.
    """

    name: str
    files: tuple[DistFile, ...] = ()
    versions: tuple[str, ...] | None = None
    status: str | None = None
    status_reason: str | None = None

    def file(self, filename: str) -> DistFile | None:
        """Return the file called ``filename``, or ``None``."""
        for f in self.files:
            if f.filename == filename:
                return f
        return None

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-able dict (our own storage form)."""
        return {
            "name": self.name,
            "files": [f.to_json() for f in self.files],
            "versions": list(self.versions) if self.versions is not None else None,
            "status": self.status,
            "status_reason": self.status_reason,
        }

    def to_rows(self) -> dict[str, Any]:
        """Return a JSON-able dict that stores and loads fast: each file as
        one row (a tuple of its fields, named once in ``fields``), not a dict
        of its own. A page of 3,000 files dumps in half the time of
        :meth:`to_json`, and loads in a third (no dict per file to make, the
        records built positionally)."""
        return {
            "name": self.name,
            "fields": FILE_FIELDS,
            "rows": [_row_of(f) for f in self.files],
            "versions": self.versions,
            "status": self.status,
            "status_reason": self.status_reason,
        }

    @classmethod
    def from_rows(cls, data: dict[str, Any]) -> "ProjectPage":
        """Inverse of :meth:`to_rows` (of this version or another: columns
        this one does not know are dropped).

        :raises ValueError: a row is not a list of one value per column.
        """
        fields = data["fields"]
        rows = data["rows"]
        if not isinstance(fields, list) or not isinstance(rows, list):
            raise ValueError("fields and rows must be lists")
        width = len(fields)
        if fields == list(FILE_FIELDS):
            make: Callable[[list[Any]], DistFile] = lambda row: DistFile(*row)
        else:
            known = [(i, n) for i, n in enumerate(fields) if n in FILE_FIELDS]
            make = lambda row: DistFile(**{n: row[i] for i, n in known})  # noqa: E731
        files = []
        for row in rows:
            if type(row) is not list or len(row) != width:
                raise ValueError("a stored file is not a row of its fields")
            files.append(make(row))
        versions = data.get("versions")
        return cls(
            name=data["name"],
            files=tuple(files),
            versions=tuple(versions) if versions is not None else None,
            status=data.get("status"),
            status_reason=data.get("status_reason"),
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ProjectPage":
        """Inverse of :meth:`to_json`."""
        versions = data.get("versions")
        return cls(
            name=data["name"],
            files=tuple(DistFile.from_json(f) for f in data.get("files", ())),
            versions=tuple(versions) if versions is not None else None,
            status=data.get("status"),
            status_reason=data.get("status_reason"),
        )
