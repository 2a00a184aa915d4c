# -*- test-case-name: tests.test_s3_ops -*-
"""``pypicache-admin`` on a bucket (``--storage s3://...``): the store, run
without a reactor, and the commands that differ from a folder's (``export``
and ``import``: :mod:`pypicache.private.storebackup`).

A command is one short-lived process with nothing else to do: the bucket's
calls run in the calling thread (:func:`run_here`, fired Deferreds), and
pauses between retries sleep (:class:`WallClock`), so the store's
asynchronous code runs to its end before :func:`wait` reads its result.
Eviction and removal go through the same code as the daemons' (and take the
bucket's ``evict`` lease), so they are safe while daemons run on the bucket;
so is the removal of orphans (:mod:`pypicache.storage.s3.orphans`).
"""

import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.filepath import FilePath

from pypicache.concurrency import result_now
from pypicache.errors import NotFound
from pypicache.proxy.withdrawals import withdrawn_listing
from pypicache.storage.records import StoredFile
from pypicache.storage.s3.bucket import Bucket
from pypicache.storage.s3.errors import InvalidRange
from pypicache.storage.s3.keys import UPSTREAMS, Keys
from pypicache.storage.s3.orphans import ORPHAN_AFTER, find_orphans, remove_orphan
from pypicache.storage.s3.settings import S3Settings
from pypicache.storage.s3.store import S3Store

T = TypeVar("T")


def run_here(f: Callable[..., T], *args: Any) -> "Deferred[T]":
    """``run_blocking`` that runs ``f`` at once, in this thread."""
    try:
        return succeed(f(*args))
    except BaseException:
        return fail()


class _Done:
    def cancel(self) -> None:
        pass

    def active(self) -> bool:
        return False


class WallClock:
    """The time, and ``callLater`` that sleeps then calls (no reactor)."""

    def seconds(self) -> float:
        return time.time()

    def callLater(self, delay: float, f: Callable[..., Any], *a: Any, **kw: Any) -> Any:
        time.sleep(delay)
        f(*a, **kw)
        return _Done()


def wait(d: "Deferred[T]") -> T:
    """The result of ``d``, which runs to its end in this thread."""
    return result_now(d)


@contextmanager
def bucket_store(settings: S3Settings, local: str | None) -> Iterator[S3Store]:
    """The store on the bucket of ``settings``; its local folder is
    ``local`` (a daemon's ``--cache``: its pins and local copies are
    honoured) or a temporary one, removed after."""
    bucket = wait(Deferred.fromCoroutine(Bucket.open(settings, run_here)))
    folder = local or tempfile.mkdtemp(prefix="pypicache-admin-")
    try:
        yield S3Store(
            bucket,
            Keys(settings.location.prefix),
            FilePath(folder),
            WallClock(),
            run_here,
        )
    finally:
        if local is None:
            shutil.rmtree(folder, ignore_errors=True)


async def _problem(store: S3Store, stored: StoredFile) -> str | None:
    """What is wrong with the archive of ``stored`` in the bucket (``None``:
    its bytes are those its record names)."""
    digest = hashlib.sha256()
    size = 0

    def take(chunk: bytes) -> None:
        nonlocal size
        digest.update(chunk)
        size += len(chunk)

    try:
        await store.bucket.read_range(store._key(stored), 0, None, take)
    except NotFound:
        return "listed, but its object is missing"
    except InvalidRange:
        pass  # an empty object
    expected = stored.info.hashes.get("sha256")
    if stored.info.size is not None and size != stored.info.size:
        return f"{size} bytes, its record says {stored.info.size}"
    if expected and digest.hexdigest() != expected:
        return f"sha256 {digest.hexdigest()}, its record says {expected}"
    return None


async def _verify(
    store: S3Store, out: TextIO, progress: Callable[[int], None]
) -> tuple[int, int]:
    checked = corrupt = 0
    for project in await store.projects():
        for stored in await store.read_files([project]):
            problem = await _problem(store, stored)
            checked += 1
            progress(1)
            if problem is None:
                continue
            corrupt += 1
            if stored.private:
                action = "left in place (private)"
            else:
                await store.remove(stored)
                action = "removed (fetched again from upstream when next asked for)"
            out.write(f"CORRUPT {store._key(stored)}: {problem}; {action}\n")
    return checked, corrupt


def verify_bucket(store: S3Store, out: TextIO, progress: Callable[[int], None]) -> int:
    """Hash every listed archive in the bucket against its record; a
    corrupt mirrored one is removed (record first, then objects), a private
    one reported. The exit status."""
    checked, corrupt = wait(Deferred.fromCoroutine(_verify(store, out, progress)))
    out.write(f"{checked} files checked, {corrupt} corrupt.\n")
    return 1 if corrupt else 0


#: The time orphans are judged at (a test freezes it).
_now = time.time


def remove_orphans(store: S3Store, out: TextIO, dry_run: bool) -> int:
    """Delete the orphaned objects of the bucket (unlisted archives older
    than :data:`ORPHAN_AFTER`, and what is kept beside them), or with
    ``dry_run`` only name them; say what, and return how many."""

    async def sweep() -> int:
        now = _now()
        count = 0
        for orphan in await find_orphans(store, now):
            if dry_run or await remove_orphan(store, orphan, now):
                verb = "would remove" if dry_run else "removed"
                out.write(f"{verb} orphan {orphan.key} ({orphan.size} bytes)\n")
                count += 1
        return count

    count = wait(Deferred.fromCoroutine(sweep()))
    if count:
        out.write(
            f"{count} orphaned objects (unlisted for over "
            f"{ORPHAN_AFTER / 3600:.0f} hour) {'would be ' if dry_run else ''}"
            "removed.\n"
        )
    return count


def _upstream_names(store: S3Store) -> list[str]:
    """The named upstreams with a store in the bucket (``<prefix>/upstreams/<name>/``)."""
    start = store.keys._key(UPSTREAMS)
    pages = store.bucket.client.get_paginator("list_objects_v2").paginate(
        Bucket=store.bucket.name, Prefix=start, Delimiter="/"
    )
    return sorted(
        found["Prefix"][len(start) :].rstrip("/")
        for page in pages
        for found in page.get("CommonPrefixes", [])
    )


def withdrawn_in_bucket(store: S3Store) -> list[dict[str, Any]]:
    """The withdrawn files still stored in the bucket, its own and each
    named upstream's (as :func:`~pypicache.proxy.withdrawals.withdrawn_files`
    lists a folder's)."""
    stores: list[tuple[str | None, Any]] = [(None, store)]
    for name in _upstream_names(store):
        local = store.root.preauthChild(f"upstreams/{name}")
        named = S3Store(
            store.bucket, store.keys.upstream(name), local, WallClock(), run_here
        )
        stores.append((name, named))
    return wait(Deferred.fromCoroutine(withdrawn_listing(stores)))
