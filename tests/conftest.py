"""Fixtures shared by the test modules."""

import pytest
from twisted.internet.task import Clock


@pytest.fixture
def clock() -> Clock:
    """A fake clock set to a realistic wall-clock time."""
    clock = Clock()
    clock.advance(1_700_000_000)
    return clock
