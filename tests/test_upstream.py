"""Upstream URLs: credentials are sent, never logged."""

import base64

import pytest
import pytest_twisted
from twisted.logger import formatEvent, globalLogPublisher

from pypicache.proxy.upstream import mask_url, split_credentials
from tests.daemon import start_daemon
from tests.fakeindex import FakeIndex, start_fake_index
from tests.packages import build_wheel


@pytest.mark.parametrize(
    "url, masked",
    [
        (
            "https://user:secret@mirror.invalid/simple/",
            "https://user:***@mirror.invalid/simple/",
        ),
        (
            "https://user:secret@mirror.invalid:8443/simple/",
            "https://user:***@mirror.invalid:8443/simple/",
        ),
        ("https://mirror.invalid/simple/", "https://mirror.invalid/simple/"),
        (
            "https://token@mirror.invalid/simple/",
            "https://token@mirror.invalid/simple/",
        ),
    ],
)
def test_mask_url(url, masked):
    """Passwords in URLs are replaced by *** for logs."""
    assert mask_url(url) == masked


def test_split_credentials():
    """Credentials are taken out of the index URL, to be sent as a header."""
    assert split_credentials("https://u:p%40ss@mirror.invalid:8443/simple/") == (
        "https://mirror.invalid:8443/simple/",
        ("u", "p@ss"),
    )
    assert split_credentials("https://mirror.invalid/simple/") == (
        "https://mirror.invalid/simple/",
        None,
    )


@pytest_twisted.ensureDeferred
async def test_credentials_sent_to_upstream_and_masked_in_logs(tmp_path):
    """Credentials in --index-url go to the upstream as Basic auth and never into a log line."""
    wheel = build_wheel(tmp_path / "d", "authed", "1.0")
    index = FakeIndex(tmp_path / "d", "html")
    index.add(wheel)
    upstream = await start_fake_index(index)
    url = upstream.url.replace("http://", "http://alice:s%40cret@")
    lines = []
    observer = lambda event: lines.append(formatEvent(event))
    globalLogPublisher.addObserver(observer)
    daemon = await start_daemon(url, tmp_path / "cache")
    try:
        response = await daemon.get(f"packages/authed/{wheel.name}")
        assert await response.content() == wheel.read_bytes()
    finally:
        globalLogPublisher.removeObserver(observer)
        await daemon.stop()
        await upstream.stop()
    expected = "Basic " + base64.b64encode(b"alice:s@cret").decode()
    for request in index.requests:
        assert {k.lower(): v for k, v in request.headers.items()}.get(
            "authorization"
        ) == expected
    assert any("Fetching page" in line for line in lines)
    assert not any("cret" in line for line in lines)
