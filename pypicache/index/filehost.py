# -*- test-case-name: tests.test_filehost -*-
"""The public index's file-host layout: ``<2 hex>/<2 hex>/<60 hex>/<filename>``.

The public index stores each file under the blake2b-256 digest of its bytes
(hex, cut 2/2/60) followed by its filename, below ``/packages/`` on its file
host. Lock files (``uv.lock``, ``pylock.toml``, ``poetry.lock``, hashed
requirements) record those absolute URLs; pypicache answers the same paths so
that such a lock installs through it once the URL prefix is replaced.
"""

import functools
import hashlib
import re
from urllib.parse import unquote, urlsplit

from pypicache.errors import NotFound
from pypicache.index.names import METADATA_SUFFIX, parse_filename

#: Bytes of the blake2b digest the layout is made of (256 bits).
DIGEST_SIZE = 32

_HEX = re.compile(r"[0-9a-f]+")


def digest_path(digest: str) -> str:
    """``digest`` (64 lower-case hex digits) cut as the layout cuts it: ``aa/bb/<60>``."""
    return f"{digest[:2]}/{digest[2:4]}/{digest[4:]}"


def blake2b_digest(data: bytes) -> str:
    """The blake2b-256 hex digest the layout names a file's bytes by."""
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE).hexdigest()


@functools.lru_cache(maxsize=4096)
def hosted_path(first: str, second: str, rest: str, filename: str) -> str:
    """The layout path ``first/second/rest/filename``, checked (remembered:
    the hot path asks for the same files again and again).

    :raises NotFound: if the segments are not 2, 2 and 60 lower-case hex
        digits, or ``filename`` is a ``.metadata`` (served at the project's
        path only).
    """
    if (
        len(first) != 2
        or len(second) != 2
        or len(rest) != 60
        or _HEX.fullmatch(first + second + rest) is None
    ):
        raise NotFound(
            "Not a file-host path: /packages/<2 hex>/<2 hex>/<60 hex>/<filename>"
            " (lower-case blake2b-256 digest)"
        )
    if filename.endswith(METADATA_SUFFIX):
        raise NotFound(
            f"Core metadata is served at /packages/<project>/{filename}, "
            "not under the file-host layout"
        )
    return f"{first}/{second}/{rest}/{filename}"


@functools.lru_cache(maxsize=4096)
def project_from(filename: str) -> str:
    """The normalized project a distribution filename belongs to (remembered).

    :raises BadRequest: if ``filename`` is unsafe or names no project.
    """
    return parse_filename(filename)[0]


@functools.lru_cache(maxsize=4096)
def url_ends_with(url: str, path: str) -> bool:
    """Whether ``url``'s path (percent-decoded) ends with ``/`` + ``path``
    (remembered: a stored file's URL is checked on every request for it)."""
    return unquote(urlsplit(url).path).endswith("/" + path)


def check_url(url: str | None, path: str, filename: str) -> None:
    """Raise :class:`NotFound` unless the upstream's ``url`` for ``filename``
    ends with the layout ``path`` asked for.

    :param url: the upstream's URL of the file (``None``: a file known only
        from the disk, such as a private one).
    """
    if url is None:
        raise NotFound(
            f"{filename} has no upstream file URL (a private file?): "
            f"use /packages/<project>/{filename}"
        )
    if not url_ends_with(url, path):
        raise NotFound(
            f"The upstream's URL for {filename} is not at /packages/{path}: "
            "the lock file names other bytes than the index lists"
        )
