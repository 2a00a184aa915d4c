"""The S3 settings (``pypicache.storage.s3.settings``): ``s3://bucket/prefix``
and the ``storage``/``s3-*`` keys read by ``S3Settings.from_mapping``, each bad
value refused with a message naming its key."""

from typing import Any

import pytest

from pypicache.storage.s3.settings import S3ConfigError, S3Location, S3Settings

MiB = 1024 * 1024


def test_location_parses_bucket_and_prefix() -> None:
    """``s3://bucket/some/prefix/`` gives the bucket and the prefix without
    its slashes; keys go under the prefix (at the root without one)."""
    location = S3Location.parse("s3://my-bucket/some/prefix/")
    assert (location.bucket, location.prefix) == ("my-bucket", "some/prefix")
    assert location.key("projects/a.json") == "some/prefix/projects/a.json"
    assert S3Location.parse("s3://my-bucket").key("x") == "x"
    assert str(location) == "s3://my-bucket/some/prefix"


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://bucket/x", "expected s3://bucket/prefix"),
        ("s3://Bad_Bucket/x", "is not a bucket name"),
        ("s3://ab", "is not a bucket name"),
        ("s3://bucket/a//b", "empty, '.' or '..' segment"),
        ("s3://bucket/a/../b", "empty, '.' or '..' segment"),
        ("s3://bucket/a\nb", "control character"),
    ],
)
def test_location_refuses_bad_urls(url: str, message: str) -> None:
    """A bad ``storage`` URL is refused with a message naming what is wrong."""
    with pytest.raises(S3ConfigError, match=message):
        S3Location.parse(url)


def test_settings_from_mapping() -> None:
    """Options as the command line gives them (strings, ``None`` for unset)
    become settings; path-style addressing is the default with an endpoint."""
    settings = S3Settings.from_mapping(
        {
            "storage": "s3://b-1/p",
            "s3-endpoint-url": "http://minio:9000",
            "s3-region": None,
            "s3-part-size": "64MiB",
            "s3-presign-expiry": "60",
            "s3-access-key-id": "AK",
            "s3-secret-access-key": "SK",
            "s3-local-size": "20G",
            "cache": "/unrelated",
        }
    )
    assert settings.location == S3Location("b-1", "p")
    assert settings.addressing_style == "path"
    assert settings.part_size == 64 * MiB
    assert settings.presign_expiry == 60
    assert settings.local_size == 20 * 1024 * MiB
    assert (settings.access_key_id, settings.secret_access_key) == ("AK", "SK")
    assert "SK" not in repr(settings)
    assert S3Settings.from_mapping({"storage": "s3://b-1"}).addressing_style == "auto"
    assert S3Settings.from_mapping({"storage": "s3://b-1"}).local_size is None


@pytest.mark.parametrize(
    "more, message",
    [
        ({"storage": None}, "storage: an s3://bucket/prefix URL is required"),
        ({"s3-endpoint-url": "minio:9000"}, "s3-endpoint-url: expected an http"),
        ({"s3-addressing-style": "dns"}, "s3-addressing-style: one of"),
        ({"s3-part-size": "1M"}, "s3-part-size: between 5 MiB and 5 GiB"),
        ({"s3-part-size": "lots"}, "s3-part-size: expected a number of bytes"),
        ({"s3-presign-expiry": "0"}, "s3-presign-expiry: between 1 and"),
        ({"s3-presign-expiry": 1e9}, "s3-presign-expiry: expected a whole number"),
        ({"s3-threads": "0"}, "s3-threads: between 1 and 1000"),
        ({"s3-access-key-id": "AK"}, "go together"),
        ({"s3-session-token": "T"}, "s3-session-token needs s3-access-key-id"),
        ({"s3-checksums": "never"}, "s3-checksums: one of"),
        ({"s3-region": 3}, "s3-region: expected a string"),
        ({"s3-local-size": "much"}, "s3-local-size: expected a number of bytes"),
        ({"s3-local-size": -1}, "s3-local-size: a number of bytes"),
    ],
)
def test_settings_refuse_bad_values(more: dict[str, Any], message: str) -> None:
    """Each bad setting is refused with a message that names its key."""
    with pytest.raises(S3ConfigError, match=message):
        S3Settings.from_mapping({"storage": "s3://bucket/p", **more})
