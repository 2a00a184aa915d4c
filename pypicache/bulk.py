# -*- test-case-name: tests.test_bulk -*-
"""Bulk caching: ``POST /requirements.txt`` (placeholder until implemented)."""

from typing import Any

from .errors import BadRequest


def parse_bulk_params(args: dict[bytes, list[bytes]]) -> Any:
    """Parse the query parameters of ``POST /requirements.txt``."""
    raise BadRequest("Bulk caching is not implemented yet")
