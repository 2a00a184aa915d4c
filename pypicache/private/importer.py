# -*- test-case-name: tests.test_scan -*-
"""``pypicache-import --cache DIR PATH...``: archives from other folders into the private store.

The same checks and duplicate rules as uploads apply. A running daemon lists
the imported files after ``POST /+rescan`` (or its next start).
"""

import argparse
import os
import sys
import time
from typing import Any, Callable, Iterator, TextIO

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from pypicache.errors import PypicacheError
from pypicache.index.names import is_distribution
from pypicache.private.received import copy_body
from pypicache.private.uploads import Uploads
from pypicache.storage.filesystem import FilesystemStore
from pypicache.storage.locks import Locks
from pypicache.storage.records import INCOMING


class _WallClock:
    def seconds(self) -> float:
        return time.time()


def archives(paths: list[str]) -> Iterator[str]:
    """The wheels and sdists named, or found in the folders named (recursively)."""
    for path in paths:
        if os.path.isdir(path):
            for folder, subfolders, names in os.walk(path):
                subfolders.sort()
                for name in sorted(names):
                    if name.endswith((".whl", ".tar.gz", ".zip")) and is_distribution(
                        name
                    ):
                        yield os.path.join(folder, name)
        else:
            yield path


def _result(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has already fired (everything here is synchronous)."""
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    assert outcome, "import step did not complete synchronously"
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


def import_file(store: FilesystemStore, uploads: Uploads, path: str) -> str:
    """Import one archive; returns ``stored`` or ``identical``.

    :raises PypicacheError: when it is refused (its message says why).
    :raises OSError: when it cannot be read.
    """
    with open(path, "rb") as source:
        part = copy_body(source, store.open_temp(None, INCOMING))
    created, _ = _result(
        Deferred.fromCoroutine(uploads.receive(part, os.path.basename(path), {}))
    )
    return "stored" if created else "identical"


def _progress(stream: TextIO, done: int, total: int, label: str) -> None:
    if stream.isatty():
        width = 30
        filled = width * done // max(total, 1)
        stream.write(
            f"\r[{'#' * filled}{' ' * (width - filled)}] {done}/{total} {label[:40]:<40}"
        )
        stream.flush()


def main(
    argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """Run the importer; returns the exit status (1 if any archive was refused)."""
    parser = argparse.ArgumentParser(
        prog="pypicache-import", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--cache", required=True, help="the daemon's --cache folder")
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="archives, or folders of archives"
    )
    args = parser.parse_args(argv)
    store = FilesystemStore(FilePath(os.path.abspath(args.cache)))
    run: Callable[..., Deferred[Any]] = lambda f, *a: maybeDeferred(f, *a)
    uploads = Uploads(store, run, _WallClock(), Locks(None))
    files = list(archives(args.paths))
    counts = {"stored": 0, "identical": 0, "refused": 0}
    for done, path in enumerate(files, 1):
        _progress(err, done - 1, len(files), os.path.basename(path))
        try:
            outcome = import_file(store, uploads, path)
        except (PypicacheError, OSError) as e:
            counts["refused"] += 1
            reason = e.message if isinstance(e, PypicacheError) else str(e)
            err.write(("\n" if err.isatty() else "") + f"refused {path}: {reason}\n")
        else:
            counts[outcome] += 1
            if not err.isatty():
                err.write(f"{outcome} {path}\n")
        _progress(err, done, len(files), os.path.basename(path))
    if err.isatty():
        err.write("\n")
    out.write(
        f"{len(files)} archives: {counts['stored']} stored, {counts['identical']} already there, "
        f"{counts['refused']} refused.\n"
    )
    if counts["stored"]:
        out.write(
            "A running daemon lists them after: curl -X POST http://HOST:PORT/+rescan\n"
        )
    return 1 if counts["refused"] else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
