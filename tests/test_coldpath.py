"""The cold path's work kept off the reactor, or made cheap: what a cold
install pays for the pages it fetches (issue 9)."""

import json

import attrs
import pytest
from twisted.internet.defer import succeed
from twisted.python.filepath import FilePath

from pypicache.index.model import DistFile, ProjectPage
from pypicache.storage.filesystem import FilesystemStore
from pypicache.storage.records import CachedPage

FILES = [
    DistFile("a-1.0-py3-none-any.whl"),
    DistFile(
        "a-1.0.tar.gz",
        "https://files.example/a-1.0.tar.gz",
        {"sha256": "ab" * 32, "md5": "cd" * 16},
        ">=3.9",
        "broken build",
        {"sha256": "ef" * 32},
        1234,
        "2024-01-02T03:04:05Z",
        "https://files.example/a-1.0.tar.gz.provenance",
        "alice (token 3)",
    ),
    DistFile("a-2.0-py3-none-any.whl", yanked=True, core_metadata=True),
]


def test_record_json_is_what_asdict_gives():
    """``DistFile.to_json``, written out field by field for speed, gives what
    ``attrs.asdict`` gave (same keys in the same order, copied dicts,
    ``uploaded_by`` only where known): cached pages on disk stay as they were."""
    for record in FILES:
        expected = attrs.asdict(
            record, filter=lambda a, v: v is not None or a.name != "uploaded_by"
        )
        got = record.to_json()
        assert got == expected
        assert list(got) == list(expected)
        assert got["hashes"] is not record.hashes
        assert DistFile.from_json(got) == record
    assert list(attrs.fields_dict(DistFile)) == list(FILES[1].to_json())


def test_page_serialized_in_the_sync_thread(tmp_path):
    """Storing a fetched page hands the page itself to the sync threads, which
    serialize and write it: a page of thousands of files is no longer turned
    into JSON on the reactor thread."""
    calls = []

    def run_sync(f, *args):
        calls.append(args)
        return succeed(f(*args))

    store = FilesystemStore(FilePath(str(tmp_path)), run_sync=run_sync)
    cached = CachedPage(ProjectPage("a", tuple(FILES)), 12.5, '"v1"', None)
    store.write_page("a", cached)
    assert len(calls) == 1 and cached in calls[0]
    assert not any(isinstance(arg, bytes) for arg in calls[0])
    written = json.loads(store.page_path("a").getContent())
    assert written == json.loads(json.dumps(cached.to_json()))
    assert store.read_page("a").result == cached


def test_page_stored_as_rows(tmp_path):
    """A cached page is stored as one row per file under ``listing`` (its
    columns named once), which dumps and loads faster than a dict per file;
    it reads back equal, and so does a page stored in the older form (a
    dict per file under ``page``)."""
    store = FilesystemStore(FilePath(str(tmp_path)))
    cached = CachedPage(ProjectPage("a", tuple(FILES), ("1.0", "2.0")), 12.5, '"v1"')
    store.write_page("a", cached)
    written = json.loads(store.page_path("a").getContent())
    assert "page" not in written
    assert written["listing"]["fields"] == list(attrs.fields_dict(DistFile))
    first = ["a-1.0-py3-none-any.whl", None, {}, None, False, False]
    assert written["listing"]["rows"][0] == first + [None] * 4
    assert store.read_page("a").result == cached
    old = {
        "page": cached.page.to_json(),
        "fetched_at": 12.5,
        "etag": '"v1"',
        "last_modified": None,
    }
    store.page_path("a").setContent(json.dumps(old).encode())
    assert store.read_page("a").result == cached


def test_page_rows_of_other_columns():
    """Rows written with other columns (a newer or older version's) are
    read by name: unknown columns dropped, missing ones left at their
    defaults; a row that is not a list of one value per column is refused."""
    data = {
        "name": "a",
        "fields": ["url", "filename", "colour"],
        "rows": [["https://x/a-1.0.tar.gz", "a-1.0.tar.gz", "blue"]],
    }
    page = ProjectPage.from_rows(data)
    assert page.files == (DistFile("a-1.0.tar.gz", "https://x/a-1.0.tar.gz"),)
    for rows in (["oops"], [None], [["a-1.0.tar.gz"]], [["a", "b", "c", "d"]]):
        with pytest.raises(ValueError):
            ProjectPage.from_rows({**data, "rows": rows})


def test_access_line_escaping_remembered():
    """A field that needs escaping (uv's ``User-Agent`` is JSON, quotes and
    all) is escaped once and remembered: every request of that client repeats
    it. The escaping itself is unchanged."""
    from pypicache.web import accesslog

    agent = b'uv/0.9 {"installer":{"name":"uv"},"ci":null}\x01'
    expected = 'uv/0.9 {\\"installer\\":{\\"name\\":\\"uv\\"},\\"ci\\":null}\\x01'
    accesslog._escaped.cache_clear()
    assert accesslog._field(agent) == expected
    assert accesslog._field(agent) == expected
    assert accesslog._escaped.cache_info().hits == 1
    assert accesslog._field(b"pip/24.0") == "pip/24.0"
    assert accesslog._field(None) == "-"


def test_json_entry_hashes_kept_as_loaded():
    """Parsing an upstream JSON page keeps a ``hashes`` (and ``core-metadata``)
    dict as ``json.loads`` made it when its names are lower-case already (no
    copy per file of a 3,000-file page); other names are still lower-cased,
    and a value of another type still leaves the entry out."""
    from pypicache.index.fileurls import FileUrls
    from pypicache.index.simple import _json_file

    hashes, metadata = {"sha256": "ab"}, {"sha256": "cd"}
    entry = {
        "filename": "a-1.0-py3-none-any.whl",
        "url": "a-1.0-py3-none-any.whl",
        "hashes": hashes,
        "core-metadata": metadata,
    }
    got = _json_file(entry, FileUrls("https://x/simple/a/"))
    assert got.hashes is hashes and got.core_metadata is metadata
    assert got.url == "https://x/simple/a/a-1.0-py3-none-any.whl"
    upper = _json_file({**entry, "hashes": {"SHA256": "ab"}}, FileUrls("https://x/"))
    assert upper.hashes == {"sha256": "ab"}
    for bad in ({"sha256": 5}, ["sha256"], "ab"):
        with pytest.raises(ValueError):
            _json_file({**entry, "hashes": bad}, FileUrls("https://x/"))
