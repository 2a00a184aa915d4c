"""JSON made by orjson only where it is byte for byte what :mod:`json` makes
(the pages' answers), or reads back the same (the stored page files)."""

import json
import time

import pytest
from twisted.python.filepath import FilePath

from pypicache.index import jsonbytes
from pypicache.index.jsonbytes import compact, stored
from pypicache.index.model import DistFile, ProjectPage
from pypicache.storage.pagefile import read_page_file, write_page_file
from pypicache.storage.records import CachedPage

VALUES = [
    {"files": [{"filename": "a-1.0.tar.gz", "size": 12, "yanked": False}]},
    {"name": "caf\u00e9", "reason": "broken \U0001f4a5"},  # outside ASCII
    {"ascii": "".join(chr(i) for i in range(128))},  # control characters, DEL
    {"big": 2**64, "small": -(2**63)},  # past orjson's 64 bits
    {"lone": "\ud800"},  # a surrogate json.loads lets through
    {"tuple": ("a", 1, None, True), "empty": {}, "nested": [[[]]]},
    {1: "an int key"},
    ["\u2028", "</script>", "\\", '"'],
]


@pytest.fixture(params=["orjson", "json"])
def speed(request, monkeypatch):
    """With orjson (where installed), and without."""
    if request.param == "json":
        monkeypatch.setattr(jsonbytes, "orjson", None)
    elif jsonbytes.orjson is None:
        pytest.skip("orjson is not installed")
    return request.param


@pytest.mark.parametrize("value", VALUES)
def test_compact_is_json_dumps(speed, value):
    """:func:`compact` gives the bytes of ``json.dumps`` with compact
    separators, whatever the text holds."""
    assert compact(value) == json.dumps(value, separators=(",", ":")).encode()


@pytest.mark.parametrize("value", VALUES + [{"when": time.time(), "tiny": 1e-300}])
def test_stored_reads_back(speed, value):
    """:func:`stored` gives JSON that :func:`json.loads` reads back as the
    value (keys as JSON has them: strings)."""
    assert json.loads(stored(value)) == json.loads(json.dumps(value))


def test_page_file_round_trip(speed, tmp_path):
    """A page with text outside ASCII is stored and read back as it was."""
    page = ProjectPage(
        "caf\u00e9",
        (
            DistFile(
                "caf\u00e9-1.0.tar.gz",
                "https://up/caf%C3%A9-1.0.tar.gz",
                {"sha256": "0" * 64},
                ">=3.8",
                "d\u00e9fectueux",
                {"sha256": "1" * 64},
                2**70,
                "2024-01-01T00:00:00Z",
            ),
        ),
        versions=("1.0",),
    )
    cached = CachedPage(page, time.time(), '"e"', "Mon, 01 Jan 2024 00:00:00 GMT")
    path = FilePath(str(tmp_path)).child("page.json")
    write_page_file(path, cached)
    assert read_page_file(path) == cached
