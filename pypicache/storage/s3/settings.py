# -*- test-case-name: tests.test_s3_bucket -*-
"""Where the bucket is and how to reach it: ``s3://bucket/prefix`` and the ``s3-*`` settings.

Credentials come from botocore's default chain (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and the shared
``~/.aws/config`` and ``~/.aws/credentials`` files, web identity, container and
instance roles) unless an access key and its secret are given in the
configuration. Signing and the protocol are botocore's.
"""

import re
from typing import Any, Mapping

import attrs
import botocore.exceptions
import botocore.session
from botocore.config import Config

#: Parts of a multipart upload: S3's smallest part (but the last) is 5 MiB.
MIN_PART_SIZE = 5 * 1024 * 1024

#: S3's largest part, and the most parts an upload may have.
MAX_PART_SIZE = 5 * 1024 * 1024 * 1024
MAX_PARTS = 10_000

#: A presigned URL lives at most a week (SigV4's limit).
MAX_PRESIGN_EXPIRY = 7 * 24 * 3600

ADDRESSING_STYLES = ("auto", "path", "virtual")

CHECKSUM_MODES = ("when_supported", "when_required")

#: Bucket names every S3-compatible service accepts: 3 to 63 lower-case
#: letters, digits, dots and hyphens, starting and ending with a letter or digit.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

_SIZE = re.compile(r"(\d+)\s*([kmg]i?b?)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class S3ConfigError(ValueError):
    """A bad ``storage``/``s3-*`` setting; the message names the key and the value."""


@attrs.frozen
class S3Location:
    """A bucket and the key prefix under which everything is kept.

    :ivar prefix: ``""`` or segments joined by ``/``, without leading or
        trailing slash.
    """

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> "S3Location":
        """Read ``s3://bucket`` or ``s3://bucket/some/prefix``.

        :raises S3ConfigError: not an ``s3://`` URL, a bad bucket name, or a
            prefix with empty, ``.`` or ``..`` segments or control characters.
        """
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() != "s3":
            raise S3ConfigError(f"storage: expected s3://bucket/prefix, got {url!r}")
        bucket, _, prefix = rest.partition("/")
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise S3ConfigError(
                f"storage: {bucket!r} is not a bucket name (3 to 63 lower-case "
                "letters, digits, dots and hyphens)"
            )
        prefix = prefix.strip("/")
        if prefix:
            segments = prefix.split("/")
            if any(s in ("", ".", "..") for s in segments) or not prefix.isprintable():
                raise S3ConfigError(
                    f"storage: the prefix {prefix!r} has an empty, '.' or '..' "
                    "segment or a control character"
                )
        return cls(bucket, prefix)

    def key(self, relative: str) -> str:
        """The bucket key of ``relative`` under the prefix."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def __str__(self) -> str:
        return (
            f"s3://{self.bucket}/{self.prefix}"
            if self.prefix
            else f"s3://{self.bucket}"
        )


@attrs.frozen
class S3Settings:
    """Everything needed to make the botocore client of one bucket.

    :ivar endpoint_url: ``None`` for AWS itself, else the service's URL
        (``http://minio:9000``, ``https://<account>.r2.cloudflarestorage.com``).
    :ivar region: ``None``: botocore's default (``AWS_DEFAULT_REGION``, the
        config file, else ``us-east-1``); R2 wants ``auto``.
    :ivar addressing_style: ``path`` (``endpoint/bucket/key``: MinIO, Ceph,
        moto), ``virtual`` (``bucket.endpoint/key``) or ``auto`` (botocore picks:
        virtual-hosted on AWS). :meth:`from_mapping` defaults to ``path`` when
        an endpoint URL is given, else ``auto``.
    :ivar access_key_id: with ``secret_access_key``, explicit credentials;
        ``None``: botocore's default chain (see the module docstring).
    :ivar profile: a named profile of the shared config files.
    :ivar presign_expiry: seconds a presigned GET URL is valid.
    :ivar part_size: bytes per part of a multipart upload; smaller files are
        sent in one ``PUT``.
    :ivar threads: the bucket's own threads (and connections).
    :ivar checksums: ``when_supported`` (botocore's default: CRC checksums on
        every upload) or ``when_required`` (for services that reject them).
    :ivar local_size: most bytes of local copies of archives a daemon keeps
        in its working folder (``None``: no bound).
    """

    location: S3Location
    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str = "auto"
    access_key_id: str | None = None
    secret_access_key: str | None = attrs.field(default=None, repr=False)
    session_token: str | None = attrs.field(default=None, repr=False)
    profile: str | None = None
    presign_expiry: int = 300
    part_size: int = 16 * 1024 * 1024
    threads: int = 8
    max_attempts: int = 4
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    checksums: str = "when_supported"
    local_size: int | None = None

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> "S3Settings":
        """Read the settings from a mapping of option names (``usage.Options``,
        the config file's table); ``None`` or a missing key means the default.

        Keys: ``storage`` (``s3://bucket/prefix``, required), ``s3-endpoint-url``,
        ``s3-region``, ``s3-addressing-style``, ``s3-access-key-id``,
        ``s3-secret-access-key``, ``s3-session-token``, ``s3-profile``,
        ``s3-presign-expiry`` (seconds), ``s3-part-size`` (bytes, or ``16M``),
        ``s3-threads``, ``s3-max-attempts``, ``s3-checksums``,
        ``s3-local-size`` (bytes, or ``20G``; ``0``: no bound).

        :raises S3ConfigError: a missing or bad value, named in the message.
        """

        def text(name: str) -> str | None:
            value = config.get(name)
            if value is None or value == "":
                return None
            if not isinstance(value, str):
                raise S3ConfigError(f"{name}: expected a string, got {value!r}")
            return value

        storage = text("storage")
        if storage is None:
            raise S3ConfigError("storage: an s3://bucket/prefix URL is required")
        endpoint = text("s3-endpoint-url")
        if endpoint is not None:
            scheme, sep, rest = endpoint.partition("://")
            if (
                scheme.lower() not in ("http", "https")
                or not sep
                or not rest.strip("/")
            ):
                raise S3ConfigError(
                    f"s3-endpoint-url: expected an http:// or https:// URL, got {endpoint!r}"
                )
        style = text("s3-addressing-style") or ("path" if endpoint else "auto")
        if style not in ADDRESSING_STYLES:
            raise S3ConfigError(
                f"s3-addressing-style: one of {', '.join(ADDRESSING_STYLES)}, got {style!r}"
            )
        checksums = text("s3-checksums") or "when_supported"
        if checksums not in CHECKSUM_MODES:
            raise S3ConfigError(
                f"s3-checksums: one of {', '.join(CHECKSUM_MODES)}, got {checksums!r}"
            )
        key_id, secret = text("s3-access-key-id"), text("s3-secret-access-key")
        if (key_id is None) != (secret is None):
            raise S3ConfigError(
                "s3-access-key-id and s3-secret-access-key go together: give both "
                "or neither (then the environment, the shared files or the "
                "instance role provide them)"
            )
        token = text("s3-session-token")
        if token is not None and key_id is None:
            raise S3ConfigError("s3-session-token needs s3-access-key-id")
        part_size = _number(config, "s3-part-size", 16 * 1024 * 1024, sizes=True)
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise S3ConfigError(
                f"s3-part-size: between 5 MiB and 5 GiB (S3's limits), got {part_size}"
            )
        expiry = _number(config, "s3-presign-expiry", 300)
        if not 1 <= expiry <= MAX_PRESIGN_EXPIRY:
            raise S3ConfigError(
                f"s3-presign-expiry: between 1 and {MAX_PRESIGN_EXPIRY} seconds, got {expiry}"
            )
        threads = _number(config, "s3-threads", 8)
        attempts = _number(config, "s3-max-attempts", 4)
        for name, value in (("s3-threads", threads), ("s3-max-attempts", attempts)):
            if not 1 <= value <= 1000:
                raise S3ConfigError(f"{name}: between 1 and 1000, got {value}")
        local_size = _number(config, "s3-local-size", 0, sizes=True)
        if local_size < 0:
            raise S3ConfigError(f"s3-local-size: a number of bytes, got {local_size}")
        return cls(
            location=S3Location.parse(storage),
            endpoint_url=endpoint,
            region=text("s3-region"),
            addressing_style=style,
            access_key_id=key_id,
            secret_access_key=secret,
            session_token=token,
            profile=text("s3-profile"),
            presign_expiry=expiry,
            part_size=part_size,
            threads=threads,
            max_attempts=attempts,
            checksums=checksums,
            local_size=local_size or None,
        )

    def client(self) -> Any:
        """A new botocore S3 client (blocking: it loads the service model and
        may look for credentials; run it in a thread).

        :raises S3ConfigError: the profile does not exist.
        """
        try:
            session = botocore.session.Session(profile=self.profile)
            return session.create_client(
                "s3",
                region_name=self.region,
                endpoint_url=self.endpoint_url,
                aws_access_key_id=self.access_key_id,
                aws_secret_access_key=self.secret_access_key,
                aws_session_token=self.session_token,
                config=Config(
                    signature_version="s3v4",
                    s3={"addressing_style": self.addressing_style},
                    retries={"mode": "standard", "max_attempts": self.max_attempts},
                    max_pool_connections=self.threads,
                    connect_timeout=self.connect_timeout,
                    read_timeout=self.read_timeout,
                    request_checksum_calculation=self.checksums,
                    response_checksum_validation="when_required",
                ),
            )
        except botocore.exceptions.ProfileNotFound as e:
            raise S3ConfigError(f"s3-profile: {e}") from e


def _number(
    config: Mapping[str, Any], name: str, default: int, sizes: bool = False
) -> int:
    """An integer setting (a string from the command line, an int from TOML);
    sizes may carry a unit: ``16M``, ``16MiB``, ``1G``."""
    value = config.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise S3ConfigError(f"{name}: expected a number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip()) if sizes else None
        if match:
            return int(match.group(1)) * _UNITS[(match.group(2) or "")[:1].lower()]
        if value.strip().isdigit():
            return int(value.strip())
    what = "a number of bytes (16777216, 16M)" if sizes else "a whole number"
    raise S3ConfigError(f"{name}: expected {what}, got {value!r}")
