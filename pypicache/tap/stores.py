# -*- test-case-name: tests.test_s3_daemon -*-
"""The daemon's store: the filesystem store on ``--cache``, or the object
store on ``--storage s3://...`` with ``--cache`` as its local working folder."""

import os
from typing import Any, Callable

from twisted.python.filepath import FilePath

from pypicache.storage.capacity import Evictor, FolderEvictor
from pypicache.storage.filesystem import FilesystemStore


def make_store(
    cache: str,
    reactor: Any,
    run_blocking: Any,
    run_sync: Any,
    s3_bucket: Any = None,
    s3_prefix: str = "",
    s3_redirect: bool = False,
    s3_local_size: int | None = None,
) -> Any:
    """The store :func:`~pypicache.tap.build.build_live` serves from."""
    root = FilePath(os.path.abspath(cache))
    if s3_bucket is not None:
        # Imported here: botocore and the object store cost start-up time
        # and memory that a daemon on the filesystem does not need.
        from pypicache.storage.s3.keys import Keys
        from pypicache.storage.s3.store import S3Store

        return S3Store(
            s3_bucket,
            Keys(s3_prefix),
            root,
            reactor,
            run_sync,
            redirect=s3_redirect,
            local_size=s3_local_size,
        )
    return FilesystemStore(
        root, clock=reactor, run_blocking=run_blocking, run_sync=run_sync
    )


def make_evictor(store: Any, run_blocking: Any) -> Evictor:
    """What runs eviction passes (and counts the mirror) over ``store``'s
    mirrored files: the cache folder's, or the bucket's (under its lease)."""
    if isinstance(store, FilesystemStore):
        return FolderEvictor(store.root, store.lock_path, run_blocking)
    from pypicache.storage.s3.eviction import BucketEvictor

    return BucketEvictor(store, run_blocking)


def named_stores(
    store: Any, prefix: str, reactor: Any, run_sync: Any
) -> Callable[[FilePath, str], Any]:
    """How the named upstreams' stores are made on S3: on the bucket of
    ``store``, each under ``<prefix>/upstreams/<name>/``, its local folder
    ``<cache>/upstreams/<name>``, sharing the local copies (and their bound)
    of ``store``."""
    from pypicache.storage.s3.keys import Keys
    from pypicache.storage.s3.store import S3Store

    def make(root: FilePath, name: str) -> Any:
        return S3Store(
            store.bucket,
            Keys(prefix).upstream(name),
            root,
            reactor,
            run_sync,
            redirect=store.copies.redirect,
            copies=store.copies,
        )

    return make
