"""Fixtures shared by the test modules."""

import pytest
from twisted.internet.task import Clock

#: The S3 fixtures (``s3server``, ``s3``, ``threads``): moto's server on loopback.
pytest_plugins = ["tests.s3server"]


@pytest.fixture
def clock() -> Clock:
    """A fake clock set to a realistic wall-clock time."""
    clock = Clock()
    clock.advance(1_700_000_000)
    return clock
