# -*- test-case-name: tests.test_store_contract -*-
"""The team's state: small JSON documents every daemon on a store shares.

What people decided and what the daemon learned that is not a stored file
(local yanks, private projects' statuses, withdrawn files, access tokens)
is kept as small JSON objects named by a relative path such as
``local-yanks.json`` or ``withdrawn/<project>.json``. :class:`IState` reads
and changes them; both stores implement it:

- the filesystem store keeps each as the file of that name under its root
  (the layout it always had), changed under a local lock and written
  atomically, read at once;
- the S3 store keeps each as the object ``<prefix>/state/<name>`` of the
  bucket, changed with conditional writes (``If-None-Match: *`` to create,
  ``If-Match`` on the ETag to update, made again on a fresh read when another
  daemon won the race), so several daemons on one bucket share them.

A reader keeps its own view of a document and revalidates it with
:meth:`IState.read_state` and the tag it has (a conditional ``GET`` on S3,
one ``stat`` on disk): :class:`pypicache.storage.shared.SharedDoc`.
"""

import json
import os
import re
import time
from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.filepath import FilePath
from zope.interface import Attribute, Interface

from pypicache.errors import PypicacheError
from pypicache.storage.atomic import write_atomically
from pypicache.storage.listings import RACY_NS, RECHECK_NS
from pypicache.storage.locks import try_lock
from pypicache.storage.records import LOCKS

#: A change: the new document (``{}``: none) from the current one, or
#: ``None`` for no change. It may run more than once (a lost race), so it
#: must have no side effects; an exception it raises stops the change.
StateChange = Callable[[dict[str, Any]], "dict[str, Any] | None"]

#: What :meth:`IState.read_state` answers when the document still has the tag given.
UNCHANGED = "unchanged"

#: Documents only the daemon's own user may read on disk.
SECRET = frozenset({"tokens.json"})

_PART = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")


@attrs.frozen
class StateDoc:
    """A document as read or written: its content (``{}``: there is none)
    and a tag that changes whenever it does (``None``: there is none)."""

    data: dict[str, Any]
    tag: str | None


def check_state_name(name: str) -> str:
    """``name`` if it names a document: lower-case relative path parts, none
    starting with a dot, ending ``.json``.

    :raises ValueError: it does not.
    """
    parts = name.split("/")
    if not name.endswith(".json") or not all(_PART.match(p) for p in parts):
        raise ValueError(f"Not a name of a state document: {name!r}")
    return name


class IState(Interface):
    """The shared small documents of a store (see the module's docstring)."""

    state_max_age = Attribute(
        "Seconds a reader may use its view of a document before it asks "
        ":meth:`read_state` again (what another daemon changed shows within it)."
    )

    def read_state(name: str, tag: str | None = None) -> "Deferred[StateDoc | str]":
        """The document ``name`` (``StateDoc({}, None)``: there is none), or
        :data:`UNCHANGED` if it still has ``tag``.

        :raises PypicacheError: it is there but is not a JSON object.
        """

    def state_names(folder: str) -> "Deferred[list[str]]":
        """The keys of the documents ``<folder>/<key>.json`` there are, sorted."""

    def change_state(name: str, change: StateChange) -> "Deferred[StateDoc]":
        """Apply ``change`` to the document ``name`` as it is now, atomically
        against every other writer (other processes, other daemons), and
        write it; the document as written (as it is, if ``change`` changed
        nothing).

        :raises PypicacheError: the document there is damaged (it is left
            as it is, so no decision is lost), or could not be written.
        """


def parse_state(name: str, content: bytes) -> dict[str, Any]:
    """The document in ``content``.

    :raises PypicacheError: it is not a JSON object.
    """
    try:
        data = json.loads(content)
    except ValueError as e:
        raise PypicacheError(
            f"{name} cannot be read ({e}); nothing was changed: repair or remove it"
        ) from e
    if not isinstance(data, dict):
        raise PypicacheError(f"{name} is not a JSON object: repair or remove it")
    return data


def _names_in(folder: str) -> list[str]:
    try:
        found = os.listdir(folder)
    except OSError:
        return []
    return sorted(
        n[: -len(".json")] for n in found if n.endswith(".json") and _PART.match(n)
    )


#: Folders whose missing documents :meth:`FileState.read_state_now`
#: remembers, and documents per folder, at most (then forgotten at once).
MISSING_FOLDERS = 64
MISSING_NAMES = 4096


def _folder_stamp(folder: str) -> int | None:
    try:
        return os.stat(folder).st_mtime_ns
    except OSError:
        return None


@attrs.define
class _Missing:
    """Documents found missing from a folder: the folder as it was then."""

    folder: str
    #: The folder's modification time (``None``: no folder) before they were
    #: looked for, on the wall clock (ns) then, and when it was last found
    #: so (monotonic s).
    stamp: int | None
    read_at: int
    checked: float

    def holds(self, stamp: int | None) -> bool:
        """Whether the folder, now at ``stamp``, cannot have gained a document
        since: unchanged, and not changed so shortly before the documents
        were looked for that a change within the same tick would not show."""
        if stamp != self.stamp:
            return False
        return stamp is None or stamp < self.read_at - RACY_NS


@attrs.define
class _MissingDocs:
    """A store's documents found missing: each folder's state, and the
    folder's state each name was found missing in (a name counts while that
    is its folder's current one)."""

    folders: dict[str, _Missing] = attrs.field(factory=dict)
    names: dict[str, _Missing] = attrs.field(factory=dict)


def _tag(status: os.stat_result) -> str:
    return f"{status.st_ino}-{status.st_mtime_ns}-{status.st_size}"


def dump_state(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


class FileState:
    """:class:`IState` on the files under a store's ``root`` (a mixin of the
    filesystem store: ``root``, ``lock_path`` and ``_run_blocking`` are its)."""

    root: FilePath
    _run_blocking: Any

    #: A stat is cheap: views of documents on disk are checked this often
    #: (as the listings are: what another process wrote shows at once).
    state_max_age = RECHECK_NS / 1e9

    def lock_path(self, area: str, project: str | None, name: str) -> str:
        raise NotImplementedError

    def _state_path(self, name: str) -> FilePath:
        return self.root.preauthChild(check_state_name(name))

    def read_state(
        self, name: str, tag: str | None = None
    ) -> "Deferred[StateDoc | str]":
        try:
            return succeed(self._read_state(name, tag))
        except Exception:
            return fail()

    def read_state_now(
        self, name: str, tag: str | None = None
    ) -> "tuple[StateDoc | str, float]":
        """:meth:`read_state` answered at once, and since when (on the
        monotonic clock) the answer is known to hold: for a
        :class:`~pypicache.storage.shared.SharedDoc`, whose view is then
        fresh for :attr:`state_max_age` from that time.

        A document found missing is not looked for again while its folder
        is unchanged: its folder's modification time is checked at most
        once per :attr:`state_max_age` for all the documents missing from
        it (a cold cache has no ``local-yanks.json``, no
        ``withdrawn/<project>.json``...), as the listings check a project's
        folders (every write of a document renames a file into its folder;
        a folder changed within :data:`~.listings.RACY_NS` of the check is
        not trusted). A change made through this process forgets that at
        once.

        :raises PypicacheError: as :meth:`read_state`.
        """
        now = time.monotonic()
        if tag is not None:
            return self._read_state(name, tag), now
        docs = self._missing_docs()
        seen = docs.names.get(name)
        if seen is not None and docs.folders.get(seen.folder) is seen:
            if now - seen.checked < self.state_max_age:
                return StateDoc({}, None), seen.checked
            if seen.holds(_folder_stamp(seen.folder)):
                seen.checked = now
                return StateDoc({}, None), now
            docs.folders.pop(seen.folder, None)
        folder = os.path.dirname(self._state_file(name))
        read_at = time.time_ns()
        stamp = _folder_stamp(folder)
        found = self._read_state(name, tag)
        if isinstance(found, StateDoc) and found.tag is None:
            seen = docs.folders.get(folder)
            if seen is None or seen.stamp != stamp:
                if len(docs.folders) >= MISSING_FOLDERS:
                    docs.folders.clear()
                seen = docs.folders[folder] = _Missing(folder, stamp, read_at, now)
            if len(docs.names) >= MISSING_NAMES:
                docs.names.clear()
            docs.names[name] = seen
        return found, now

    def _missing_docs(self) -> "_MissingDocs":
        found = self.__dict__.get("_missing_state")
        if found is None:
            found = self.__dict__["_missing_state"] = _MissingDocs()
        return found  # type: ignore[no-any-return]

    def _state_file(self, name: str) -> str:
        paths: dict[str, str] = self.__dict__.setdefault("_state_files", {})
        path = paths.get(name)
        if path is None:
            # Remembered: the rules revalidate a few documents on nearly
            # every request, and ``preauthChild`` costs more than the ``stat``.
            path = self._state_path(name).path
            if len(paths) < 4096:
                paths[name] = path
        return path

    def _read_state(self, name: str, tag: str | None) -> "StateDoc | str":
        path = self._state_file(name)
        try:
            if tag is not None and _tag(os.stat(path)) == tag:
                return UNCHANGED  # one stat: the common case
            with open(path, "rb") as f:
                found = _tag(os.fstat(f.fileno()))
                content = f.read()
        except FileNotFoundError:
            return StateDoc({}, None)
        return StateDoc(parse_state(name, content), found)

    def state_names(self, folder: str) -> "Deferred[list[str]]":
        path = self._state_path(folder + "/x.json").parent()
        return self._run_blocking(_names_in, path.path)

    def change_state(self, name: str, change: StateChange) -> "Deferred[StateDoc]":
        check_state_name(name)
        return self._run_blocking(self._change_state, name, change)

    def _change_state(self, name: str, change: StateChange) -> StateDoc:
        """:meth:`change_state` (blocking): under the document's lock."""
        held = try_lock(self.lock_path(LOCKS, None, name), wait=True)
        assert held is not None
        try:
            current = self._read_state(name, None)
            assert isinstance(current, StateDoc)
            new = change(current.data)
            if new is None or new == current.data:
                return current
            path = self._state_path(name)
            if new:
                path.parent().makedirs(ignoreExistingDirectory=True)
                write_atomically(path, dump_state(new))
                if name in SECRET:
                    os.chmod(path.path, 0o600)
            elif path.exists():
                path.remove()
            # Found missing before: looked for again (see read_state_now).
            self._missing_docs().folders.pop(path.parent().path, None)
            written = self._read_state(name, None)
            assert isinstance(written, StateDoc)
            return written
        finally:
            held.release()
