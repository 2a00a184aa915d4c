# -*- test-case-name: tests.test_proxy -*-
"""Choosing among the hashes an index gives for a file."""


def preferred_hash(hashes: dict[str, str]) -> tuple[str, str] | None:
    """Return the strongest ``(algorithm, digest)`` that hashlib can check."""
    for algorithm in ("sha256", "sha512", "sha384", "sha224", "blake2b", "sha1", "md5"):
        if algorithm in hashes:
            return algorithm, hashes[algorithm].lower()
    return None
