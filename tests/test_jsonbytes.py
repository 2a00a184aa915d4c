"""JSON made by orjson only where it is byte for byte what :mod:`json` makes
(the pages' answers), or reads back the same (the stored page files)."""

import json
import time

import pytest
from twisted.python.filepath import FilePath

from pypicache.index import jsonbytes
from pypicache.index.jsonbytes import MANY, compact, stored
from pypicache.index.model import DistFile, ProjectPage
from pypicache.index.rendering import render_json_page
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
        monkeypatch.setattr(jsonbytes, "_orjson", False)
    elif jsonbytes._fast() is None:
        pytest.skip("orjson is not installed")
    return request.param


@pytest.mark.parametrize("value", VALUES)
def test_compact_is_json_dumps(speed, value):
    """:func:`compact` gives the bytes of ``json.dumps`` with compact
    separators, whatever the text holds."""
    expected = json.dumps(value, separators=(",", ":")).encode()
    assert compact(value, MANY) == compact(value) == expected


@pytest.mark.parametrize("value", VALUES + [{"when": time.time(), "tiny": 1e-300}])
def test_stored_reads_back(speed, value):
    """:func:`stored` gives JSON that :func:`json.loads` reads back as the
    value (keys as JSON has them: strings)."""
    for items in (0, MANY):
        assert json.loads(stored(value, items)) == json.loads(json.dumps(value))


@pytest.mark.parametrize("count", [1, MANY])
def test_page_file_round_trip(speed, tmp_path, count):
    """A page with text outside ASCII is stored and read back as it was,
    small (by json) or large (by orjson, where installed)."""
    page = ProjectPage(
        "caf\u00e9",
        tuple(
            DistFile(
                f"caf\u00e9-1.{k}.tar.gz",
                "https://up/caf%C3%A9-1.0.tar.gz",
                {"sha256": "0" * 64},
                ">=3.8",
                "d\u00e9fectueux",
                {"sha256": "1" * 64},
                2**70,
                "2024-01-01T00:00:00Z",
            )
            for k in range(count)
        ),
        versions=("1.0",),
    )
    cached = CachedPage(page, time.time(), '"e"', "Mon, 01 Jan 2024 00:00:00 GMT")
    path = FilePath(str(tmp_path)).child("page.json")
    write_page_file(path, cached)
    assert read_page_file(path) == cached


def test_small_data_leaves_orjson_alone(monkeypatch):
    """Data of fewer than :data:`MANY` items is written by :mod:`json`
    (orjson is not imported for it: not at start-up, not on the reactor
    for a small page)."""
    monkeypatch.setattr(jsonbytes, "_orjson", None)
    compact({"files": []}, MANY - 1)
    stored({"files": []})
    assert jsonbytes._orjson is None


@pytest.mark.parametrize("reason", ["gone", "d\u00e9fectueux", "tab\there\x7f"])
def test_large_json_page_is_the_same_bytes(monkeypatch, reason):
    """A page of :data:`MANY` files or more renders to the same bytes with
    orjson as without it, whatever its text holds."""
    page = ProjectPage(
        "big",
        tuple(
            DistFile(
                f"big-1.{k}-py3-none-any.whl",
                f"https://up/big-1.{k}-py3-none-any.whl",
                {"sha256": f"{k:064x}"},
                ">=3.8" if k % 2 else None,
                reason if k == 7 else False,
                {"sha256": "1" * 64},
                1000 + k,
                "2024-01-01T00:00:00Z",
            )
            for k in range(MANY + 50)
        ),
    )
    fast = render_json_page(page, lambda f: f.filename)
    monkeypatch.setattr(jsonbytes, "_orjson", False)
    assert render_json_page(page, lambda f: f.filename) == fast
