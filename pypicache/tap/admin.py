# -*- test-case-name: tests.test_admin -*-
"""``pypicache-admin``: upkeep of a cache folder, also while the daemon runs.

- ``cleanup --cache DIR [--max-cache-size SIZE] [--evict-unused-after AGE]
  [--dry-run]``: evict mirrored files as the daemon would (its usage record,
  its locks, its pins), or with ``--dry-run`` only say what would go;
- ``verify --cache DIR``: hash every stored file against its record;
- ``export --cache DIR OUT.tar`` / ``import --cache DIR IN.tar``: the private
  index in one tar file;
- ``token create|list|revoke --cache DIR ...``: access tokens
  (:mod:`pypicache.tap.admintokens`);
- ``withdrawn --cache DIR [--json]``: the cached files the upstream withdrew
  (kept on disk, no longer offered by ``/simple/``).

Every command also works on a bucket: ``--storage s3://B/P`` and the
daemon's ``--s3-*`` options (:mod:`pypicache.tap.adminbucket`,
:mod:`pypicache.private.storebackup`), with the same output.

Progress bars (tqdm) go to standard error when it is a terminal.
"""

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from tqdm import tqdm
from twisted.internet.defer import Deferred
from twisted.python import usage
from twisted.python.filepath import FilePath

from pypicache.private.backup import BackupError, export_private, import_private
from pypicache.private.storebackup import export_store, import_store
from pypicache.proxy.withdrawals import withdrawn_files
from pypicache.storage.capacity import EvictionPass
from pypicache.storage.filesystem import FilesystemStore
from pypicache.storage.layout import Layout
from pypicache.storage.records import LOCKS
from pypicache.storage.usage import USAGE_FILE, Usage
from pypicache.storage.verify import stored_archives, verify_all
from pypicache.tap.adminbucket import (
    bucket_store,
    remove_orphans,
    run_here,
    verify_bucket,
    wait,
    withdrawn_in_bucket,
)
from pypicache.tap.admintokens import TokenOptions, token
from pypicache.tap.s3opts import S3StoreOptions
from pypicache.tap.stores import make_evictor
from pypicache.tap.values import duration as _duration
from pypicache.tap.values import size as _size


def _megabytes(size: int) -> str:
    return f"{size / 1024**2:.1f} MB"


class _CacheOptions(S3StoreOptions, usage.Options):
    optParameters = [
        [
            "cache",
            "c",
            None,
            "The daemon's --cache folder (with --storage s3://...: optional, "
            "a daemon's local folder whose usage record and pins are honoured).",
        ]
    ]

    def postOptions(self) -> None:
        self.read_storage()
        self["layout"] = None
        if self.s3 is not None and self["cache"] is None:
            return
        if not self["cache"] or not os.path.isdir(self["cache"]):
            raise usage.UsageError("--cache must name an existing cache folder")
        self["layout"] = Layout(FilePath(os.path.abspath(self["cache"])))


class CleanupOptions(_CacheOptions):
    synopsis = (
        "--cache DIR | --storage s3://B/P [--s3-...] [--max-cache-size SIZE] "
        "[--evict-unused-after AGE] [--dry-run]"
    )
    optFlags = [["dry-run", "n", "Only say what would be evicted and the space freed."]]
    optParameters = [
        [
            "max-cache-size",
            None,
            None,
            "Evict mirrored files least recently used first down to 90 % of this.",
            _size,
        ],
        [
            "evict-unused-after",
            None,
            None,
            "Evict mirrored files not served for this long (90d, 12h...).",
            _duration,
        ],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if self["max-cache-size"] is None and self["evict-unused-after"] is None:
            raise usage.UsageError(
                "give --max-cache-size, --evict-unused-after, or both"
            )


class VerifyOptions(_CacheOptions):
    synopsis = "--cache DIR | --storage s3://B/P [--s3-...]"


class _TarOptions(_CacheOptions):
    def parseArgs(self, tar: str) -> None:
        self["tar"] = tar


class ExportOptions(_TarOptions):
    synopsis = "--cache DIR | --storage s3://B/P [--s3-...] OUT.tar"


class ImportOptions(_TarOptions):
    synopsis = "--cache DIR | --storage s3://B/P [--s3-...] IN.tar"

    def postOptions(self) -> None:
        # A restore on a new server: the folder is made, as the daemon makes it.
        if self["cache"]:
            os.makedirs(self["cache"], exist_ok=True)
        super().postOptions()


class WithdrawnOptions(_CacheOptions):
    synopsis = "--cache DIR | --storage s3://B/P [--s3-...] [--json]"
    optFlags = [["json", None, "One JSON object per file."]]


class AdminOptions(usage.Options):
    synopsis = (
        "cleanup|verify|export|import|token|withdrawn "
        "--cache DIR | --storage s3://B/P ..."
    )
    longdesc = "Upkeep of a pypicache cache folder, also while the daemon runs."
    subCommands = [
        ["cleanup", None, CleanupOptions, "Evict mirrored files (or --dry-run)."],
        ["verify", None, VerifyOptions, "Check every stored file against its record."],
        ["export", None, ExportOptions, "Write the private index to a tar file."],
        ["import", None, ImportOptions, "Restore the private index from a tar file."],
        ["token", None, TokenOptions, "Create, list or revoke access tokens."],
        [
            "withdrawn",
            None,
            WithdrawnOptions,
            "List the cached files the upstream withdrew.",
        ],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError(
                "name a command: cleanup, verify, export, import, token, withdrawn"
            )


def _bar(err: TextIO, total: int | None, unit: str) -> Any:
    return tqdm(total=total, unit=unit, file=err, disable=not err.isatty())


def _progress(bar: Any) -> Callable[[str], None]:
    return lambda name: bar.update(1)


@contextmanager
def _store(options: Any) -> Iterator[Any]:
    """The store the command works on: the bucket's, or the folder's."""
    layout = options["layout"]
    if options.s3 is not None:
        with bucket_store(options.s3, layout.root.path if layout else None) as store:
            yield store
    else:
        yield FilesystemStore(layout.root, run_blocking=run_here)


def cleanup(options: Any, out: TextIO, err: TextIO) -> int:
    layout = options["layout"]
    usage_record = None
    if layout is not None:
        usage_record = Usage(layout.root, layout.lock_path(LOCKS, None, USAGE_FILE))
    dry = bool(options["dry-run"])
    bar = _bar(err, None, "file")
    with _store(options) as store:
        result = wait(
            make_evictor(store, run_here).run(
                EvictionPass(
                    usage_record,
                    {},
                    time.time(),
                    options["max-cache-size"],
                    options["evict-unused-after"],
                    dry_run=dry,
                    progress=lambda entry: bar.update(1),
                    planned=lambda count: setattr(bar, "total", count),
                )
            )
        )
        if options.s3 is not None and not result.busy:
            remove_orphans(store, out, dry)
    bar.close()
    if result.busy:
        err.write("Another process is evicting from this cache now: try again.\n")
        return 1
    out.writelines(
        f"{'would evict' if dry else 'evicted'} {entry.key} ({entry.size} bytes)\n"
        for entry in result.evicted
    )
    freed = sum(e.size for e in result.evicted)
    before = result.total if dry else result.total + freed
    out.write(
        f"{len(result.evicted)} files, {_megabytes(freed)} "
        f"{'would be freed' if dry else 'freed'}; the mirror "
        f"{'would hold' if dry else 'holds'} {_megabytes(before - freed)} "
        f"(was {_megabytes(before)}).\n"
    )
    return 0


def verify(options: Any, out: TextIO, err: TextIO) -> int:
    if options.s3 is not None:
        bar = _bar(err, None, "file")
        with _store(options) as store:
            status = verify_bucket(store, out, bar.update)
        bar.close()
        return status
    layout = options["layout"]
    archives = list(stored_archives(layout))
    bar = _bar(err, len(archives), "file")
    problems = list(
        verify_all(layout, layout.lock_path, archives, lambda path: bar.update(1))
    )
    bar.close()
    for problem in problems:
        where = os.path.relpath(problem.path.path, layout.root.path)
        action = (
            f"moved to {os.path.relpath(problem.moved_to.path, layout.root.path)}"
            if problem.moved_to is not None
            else (
                "left in place (private)"
                if not problem.mirrored
                else "left in place (busy)"
            )
        )
        out.write(f"CORRUPT {where}: {problem.reason}; {action}\n")
    out.write(f"{len(archives)} files checked, {len(problems)} corrupt.\n")
    return 1 if problems else 0


def export(options: Any, out: TextIO, err: TextIO) -> int:
    bar = _bar(err, None, "file")
    progress = _progress(bar)
    if options.s3 is not None:
        with _store(options) as store:
            made = export_store(store, options["tar"], progress)
            archives, problems = wait(Deferred.fromCoroutine(made))
    else:
        root = options["layout"].root
        archives, problems = export_private(root, options["tar"], progress=progress)
    bar.close()
    out.writelines(f"CORRUPT {problem}; left out\n" for problem in problems)
    out.write(f"{archives} private archives written to {options['tar']}.\n")
    return 1 if problems else 0


def import_(options: Any, out: TextIO, err: TextIO) -> int:
    layout = options["layout"]
    bar = _bar(err, None, "file")
    progress = _progress(bar)
    refused: list[str] = []
    try:
        if options.s3 is not None:
            with _store(options) as store:
                made = import_store(store, options["tar"], progress)
                stored, there, yanks, refused = wait(Deferred.fromCoroutine(made))
        else:
            stored, there, yanks = import_private(
                layout.root, options["tar"], layout.lock_path, progress=progress
            )
    except BackupError as e:
        bar.close()
        out.write(f"Refused, nothing imported: {e}\n")
        return 1
    bar.close()
    out.writelines(
        f"REFUSED {name}: other bytes were stored under this name meanwhile\n"
        for name in refused
    )
    out.write(f"{stored} private archives imported, {there} already there.\n")
    if yanks:
        out.write(f"{yanks} local yanks imported.\n")
    return 1 if refused else 0


def withdrawn(options: Any, out: TextIO, err: TextIO) -> int:
    if options.s3 is not None:
        with _store(options) as store:
            files = withdrawn_in_bucket(store)
    else:
        files = withdrawn_files(options["layout"].root.path)
    for entry in files:
        if options["json"]:
            out.write(json.dumps(entry) + "\n")
            continue
        since = entry["since"]
        when = (
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
            if isinstance(since, (int, float))
            else "?"
        )
        where = f" (upstream {entry['upstream']})" if entry["upstream"] else ""
        out.write(
            f"{entry['project']} {entry['filename']}{where} withdrawn since "
            f"{when}: {entry['reason']}\n"
        )
    if not options["json"]:
        out.write(f"{len(files)} withdrawn files kept on disk.\n")
    return 0


COMMANDS = {
    "cleanup": cleanup,
    "verify": verify,
    "export": export,
    "import": import_,
    "token": token,
    "withdrawn": withdrawn,
}


def main(
    argv: Sequence[str] | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Run ``pypicache-admin``; the exit status (1: something was wrong)."""
    options = AdminOptions()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as e:
        err.write(f"pypicache-admin: {e}\n{options}\n")
        return 2
    assert options.subCommand is not None
    return COMMANDS[options.subCommand](options.subOptions, out, err)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
