# -*- test-case-name: tests.test_s3_daemon -*-
"""The options of the object store: ``--storage s3://bucket/prefix`` and the ``s3-*`` settings."""

from typing import TYPE_CHECKING, Any

from twisted.python import usage

if TYPE_CHECKING:
    from pypicache.storage.s3.settings import S3Settings


class S3StoreOptions:
    """A mixin of ``usage.Options``: where the store is, and how to reach an
    S3-compatible bucket (read by
    :meth:`~pypicache.storage.s3.settings.S3Settings.from_mapping`); the
    daemon's and ``pypicache-admin``'s."""

    optParameters: list[list[Any]] = [
        [
            "storage",
            None,
            None,
            "Where files and records are kept: filesystem (the default: the "
            "--cache folder) or s3://bucket/prefix, an S3-compatible object "
            "store shared by several daemons (--cache is then a disposable "
            "local working folder).",
        ],
        ["s3-endpoint-url", None, None, "The S3 service's URL (default: AWS)."],
        ["s3-region", None, None, "The bucket's region (R2: auto)."],
        [
            "s3-addressing-style",
            None,
            None,
            "path, virtual or auto (default: path with --s3-endpoint-url, else auto).",
        ],
        [
            "s3-access-key-id",
            None,
            None,
            "Access key (default: the environment, the shared files, the instance role).",
        ],
        ["s3-secret-access-key", None, None, "Secret key, with --s3-access-key-id."],
        ["s3-session-token", None, None, "Session token of temporary credentials."],
        ["s3-profile", None, None, "A profile of the shared AWS config files."],
        [
            "s3-presign-expiry",
            None,
            None,
            "Seconds a presigned URL is valid (--s3-redirect; default 300).",
        ],
        [
            "s3-part-size",
            None,
            None,
            "Bytes per part of multipart uploads, 5M to 5G (default 16M).",
        ],
        [
            "s3-threads",
            None,
            None,
            "Threads (and connections) to the bucket (default 8).",
        ],
        ["s3-max-attempts", None, None, "Tries of a failed request (default 4)."],
        [
            "s3-checksums",
            None,
            None,
            "when_supported (default) or when_required (R2, older Ceph RGW).",
        ],
    ]

    def read_storage(self) -> None:
        """Read the object store's settings into ``self.s3`` (``None``: the
        filesystem, and the ``s3-*`` settings are not used)."""
        self.s3: "S3Settings | None" = None
        storage = self["storage"]  # type: ignore[index]
        if storage in (None, FILESYSTEM):
            self["storage"] = FILESYSTEM  # type: ignore[index]
            return
        # Imported only for an object store: botocore costs start-up time and memory.
        from pypicache.storage.s3.settings import S3ConfigError, S3Settings

        try:
            self.s3 = S3Settings.from_mapping(
                # s3-local-size: the daemon's only (None for pypicache-admin).
                {k: self.get(k) for k in ("storage", *_S3_KEYS)}  # type: ignore[attr-defined]
            )
        except S3ConfigError as e:
            raise usage.UsageError(str(e)) from e


class S3Options(S3StoreOptions):
    """A mixin of :class:`~pypicache.tap.options.Options`: the daemon's
    object store options."""

    optFlags: list[list[Any]] = [
        [
            "s3-redirect",
            None,
            "Serve stored archives by redirecting clients to a short-lived "
            "presigned URL of the bucket (default: stream them through the daemon).",
        ],
    ]

    optParameters: list[list[Any]] = [
        [
            "s3-local-size",
            None,
            None,
            "Most bytes of local copies of archives kept under --cache (the "
            "least recently served go first; default: no bound), e.g. 20G.",
        ],
    ]

    def check_storage(self) -> None:
        """:meth:`read_storage`. Everything works with S3 too: ``--workers``
        (the bucket is the shared state, the workers share the local
        folder) and named upstreams (each under its own prefix)."""
        self.read_storage()


#: ``storage``'s default: the ``--cache`` folder.
FILESYSTEM = "filesystem"

_S3_KEYS = [
    "s3-endpoint-url",
    "s3-region",
    "s3-addressing-style",
    "s3-access-key-id",
    "s3-secret-access-key",
    "s3-session-token",
    "s3-profile",
    "s3-presign-expiry",
    "s3-part-size",
    "s3-threads",
    "s3-max-attempts",
    "s3-checksums",
    "s3-local-size",
]
