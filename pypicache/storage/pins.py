# -*- test-case-name: tests.test_eviction -*-
"""Pins: mirrored files that eviction must leave alone while a bulk job lists them.

A file being served needs no pin (on POSIX an open descriptor keeps reading a
removed file to its end), and one being downloaded is under its download
lock, which eviction also takes. But a bulk job tells its client which files
are cached so that it installs them from ``/local/`` next: those must not
vanish while the job is open. Each job holds one pin file in
``locks/pins/``, open and locked for as long as it runs (see
:func:`~pypicache.storage.atomic.open_locked_temp`: a crash leaves an
unlocked file, which is ignored and cleaned), with a line per pinned file.

Pinning and eviction meet without a lock between them: a pinner writes its
line, then checks that the file is still there (:meth:`PinSet.pin` returns
``False`` when it is not, and the caller fetches it again); eviction renames
the archive out of sight, then reads the pins, and puts the archive back if
it is pinned. Either the pinner sees the file gone or eviction sees the pin.
"""

import fcntl
import os

from twisted.python.filepath import FilePath

from pypicache.storage.atomic import open_locked_temp, remove_quietly
from pypicache.storage.records import LOCKS, TEMP_PREFIX, StoredFile
from pypicache.storage.usage import Usage, usage_key

PINS = LOCKS + "/pins"


class PinSet:
    """The pins of one bulk job, released by :meth:`close`.

    A pinned file also counts as used now, so that the client the job
    answered finds it still there when it installs.
    """

    def __init__(self, folder: FilePath, usage: Usage | None = None) -> None:
        folder.makedirs(ignoreExistingDirectory=True)
        self._usage = usage
        self._path, self._file = open_locked_temp(folder, buffering=0)
        self._pinned: set[str] = set()

    def pin(self, stored: StoredFile) -> bool:
        """Keep ``stored`` from eviction while this set is open; ``False`` if
        it was evicted already (fetch it again, then pin it again)."""
        if stored.private:
            return True
        if self._usage is not None:
            self._usage.record(stored.project, stored.info.filename)
        key = usage_key(stored.project, stored.info.filename)
        if key not in self._pinned:
            self._pinned.add(key)
            self._file.write((key + "\n").encode())
        return os.path.isfile(stored.path.path)

    def close(self) -> None:
        """Let eviction have the files again; never raises."""
        try:
            self._file.close()
        except OSError:
            pass
        remove_quietly(self._path)


class Pins:
    """Makes the pin sets of a cache."""

    def __init__(self, root: FilePath, usage: Usage | None = None) -> None:
        self._folder = root.preauthChild(PINS)
        self._usage = usage

    def open(self) -> PinSet:
        return PinSet(self._folder, self._usage)


def read_pins(root: FilePath) -> set[str]:
    """Every file pinned by a live pin set, as ``"<project>/<filename>"``
    (blocking). A pin file nobody holds (a crash's) does not count."""
    folder = root.preauthChild(PINS).path
    try:
        names = os.listdir(folder)
    except OSError:
        return set()
    pinned: set[str] = set()
    for name in names:
        if not name.startswith(TEMP_PREFIX):
            continue
        try:
            with open(os.path.join(folder, name), "rb") as f:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    pinned.update(f.read().decode("utf-8", "replace").split())
                # Got it: its holder is gone (closing lets the lock go).
        except OSError:
            continue
    return pinned
