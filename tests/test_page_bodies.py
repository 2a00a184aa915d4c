"""Index pages go out as one pre-built body: ``Content-Length``, never chunked.

Project lists and project pages (``/simple/``, ``/simple/<p>/``, ``/local/<p>/``),
HTML and JSON, plain and gzip: the wire is read with :mod:`tests.rawhttp`
(nothing decoded, every header seen), against a daemon in front of a fake
upstream on loopback.
"""

import gzip
import json
import socket
from urllib.parse import urlsplit

import pytest
import pytest_twisted
import treq
from twisted.internet import task
from twisted.internet.threads import deferToThread

from pypicache.web.rendered import RenderCache, gzipped
from pypicache.web.routing import PIECE, Body, accepts_gzip, etag_matches, validated
from tests import rawhttp
from tests.daemon import start_world
from tests.packages import build_wheel
from tests.webclient import put

JSON = "application/vnd.pypi.simple.v1+json"
HTML = "text/html"
VARY = "Accept, Accept-Encoding"
CONTENT_TYPES = {HTML: "text/html; charset=utf-8", JSON: JSON}
#: Enough files for an HTML or JSON page of several pieces (over 2 x PIECE).
MANY = 800


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """The wheels served upstream or uploaded; ``many`` has a page of several pieces."""
    d = tmp_path_factory.mktemp("dists")
    return {
        "app": build_wheel(d, "app", "1.0"),
        "app2": build_wheel(d, "app", "2.0"),
        "priv": build_wheel(d, "priv", "1.0"),
        "priv2": build_wheel(d, "priv", "2.0"),
        "other": build_wheel(d, "other", "1.0"),
        "many": [build_wheel(d, "many", f"{k // 100}.{k % 100}") for k in range(MANY)],
    }


@pytest_twisted.async_yield_fixture(scope="module")
async def world(tmp_path_factory, dists):
    """A daemon whose ``app`` and ``many`` are upstream, one file of each on disk."""
    w = await start_world(
        tmp_path_factory.mktemp("world"), [dists["app"], *dists["many"]], timeout=5
    )
    for project, path in (("app", dists["app"]), ("many", dists["many"][0])):
        response = await w.daemon.get(f"packages/{project}/{path.name}")
        assert response.code == 200
        await response.content()
        await w.stored(project, path.name)  # listed once stored, after the client
    yield w
    await w.stop()


@pytest_twisted.async_yield_fixture
async def clocked(tmp_path, dists):
    """A daemon in front of ``app`` with a fake page clock (``--page-ttl 600``)."""
    clock = task.Clock()
    clock.advance(1_000_000)
    w = await start_world(
        tmp_path, [dists["app"]], page_clock=clock, page_ttl=600, timeout=5
    )
    w.clock = clock
    yield w
    await w.stop()


def wire(daemon, path, accept=HTML, gzipped=False, method="GET", headers=None):
    """One request on its own connection; the answer exactly as sent."""
    sent = {"Accept": accept, "Accept-Encoding": "gzip" if gzipped else "identity"}
    sent.update(headers or {})
    port = urlsplit(daemon.url).port
    return rawhttp.request(port, rawhttp.build(method, "/" + path, sent))


def decoded(answer):
    """The body of a whole answer (gunzipped if it says so), as text."""
    body = answer.raw.partition(b"\r\n\r\n")[2]
    if answer.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    return body.decode()


def assert_whole(answer, accept, gzipped):
    """A 200 with Content-Length equal to the bytes that followed, and no chunking."""
    assert answer.status == 200, answer.raw[:300]
    assert "transfer-encoding" not in answer.headers
    body = answer.raw.partition(b"\r\n\r\n")[2]
    assert int(answer.headers["content-length"]) == len(body) > 0
    assert answer.headers["content-type"] == CONTENT_TYPES[accept]
    assert answer.headers["vary"] == VARY
    assert answer.headers.get("content-encoding") == ("gzip" if gzipped else None)
    assert answer.headers["etag"].startswith('"')


PAGES = ["simple/", "local/", "simple/app/", "local/app/", "simple/many/"]


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("accept", [HTML, JSON], ids=["html", "json"])
@pytest.mark.parametrize("path", PAGES)
@pytest_twisted.ensureDeferred
async def test_pages_have_content_length_not_chunks(world, path, accept, gzipped):
    """Every index page, in each format and encoding, carries a Content-Length equal
    to its body and no Transfer-Encoding, the second time (from memory) as the first."""
    first = await wire(world.daemon, path, accept, gzipped)
    assert_whole(first, accept, gzipped)
    again = await wire(world.daemon, path, accept, gzipped)
    assert_whole(again, accept, gzipped)
    assert again.raw.partition(b"\r\n\r\n")[2] == first.raw.partition(b"\r\n\r\n")[2]
    text = decoded(again)
    if accept == JSON:
        json.loads(text)
    else:
        assert text.startswith("<!DOCTYPE html>") and text.endswith("</html>\n")


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("accept", [HTML, JSON], ids=["html", "json"])
@pytest_twisted.ensureDeferred
async def test_large_page_arrives_whole(world, dists, accept, gzipped):
    """A page of several pieces arrives whole and in order, on a kept-alive
    connection too: every file is listed, the JSON parses."""
    response = await world.daemon.raw_get(
        "simple/many/",
        {"Accept": accept, "Accept-Encoding": "gzip" if gzipped else "identity"},
    )
    body = await treq.content(response)
    assert response.length == len(body)
    if gzipped:
        body = gzip.decompress(body)
    else:
        assert len(body) > 2 * PIECE
    names = [path.name for path in dists["many"]]
    if accept == JSON:
        files = json.loads(body)["files"]
        assert sorted(f["filename"] for f in files) == sorted(names)
    else:
        assert all(name.encode() in body for name in names)


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("accept", [HTML, JSON], ids=["html", "json"])
@pytest.mark.parametrize("path", PAGES)
@pytest_twisted.ensureDeferred
async def test_head_has_get_headers_and_no_body(world, path, accept, gzipped):
    """HEAD answers the headers GET does (Content-Length of the GET's body
    included) and no body at all."""
    got = await wire(world.daemon, path, accept, gzipped)
    head = await wire(world.daemon, path, accept, gzipped, method="HEAD")
    assert head.status == 200
    assert head.raw.endswith(b"\r\n\r\n") and head.body == b""
    assert {k: v for k, v in head.headers.items() if k != "date"} == {
        k: v for k, v in got.headers.items() if k != "date"
    }


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("accept", [HTML, JSON], ids=["html", "json"])
@pytest_twisted.ensureDeferred
async def test_if_none_match_gets_304(world, accept, gzipped):
    """The page's ETag in If-None-Match (alone, in a list, weak) gets a 304 with
    the ETag and Vary and no body; another representation's ETag gets the page."""
    page = await wire(world.daemon, "simple/app/", accept, gzipped)
    etag = page.headers["etag"]
    for tags in (etag, f'"other", W/{etag}', "*"):
        again = await wire(
            world.daemon,
            "simple/app/",
            accept,
            gzipped,
            headers={"If-None-Match": tags},
        )
        assert again.status == 304
        assert again.headers["etag"] == etag and again.headers["vary"] == VARY
        assert again.raw.endswith(b"\r\n\r\n")
    other = JSON if accept == HTML else HTML
    elsewhere = await wire(
        world.daemon, "simple/app/", other, gzipped, headers={"If-None-Match": etag}
    )
    assert_whole(elsewhere, other, gzipped)
    assert elsewhere.headers["etag"] != etag


async def both_ways(daemon, path, accept):
    """The page plain and gzipped, each checked whole; their texts must agree."""
    plain = await wire(daemon, path, accept)
    zipped = await wire(daemon, path, accept, gzipped=True)
    assert_whole(plain, accept, False)
    assert_whole(zipped, accept, True)
    assert decoded(plain) == decoded(zipped)
    return plain


@pytest.mark.parametrize("accept", [HTML, JSON], ids=["html", "json"])
@pytest_twisted.ensureDeferred
async def test_upload_changes_pages(clocked, dists, accept):
    """After an upload, the project's pages and the project list are sent anew:
    the new body, its own Content-Length and a new ETag."""
    daemon = clocked.daemon
    assert (await put(daemon, dists["priv"])).code == 201
    before = {}
    for path in ("simple/", "simple/priv/", "local/priv/"):
        before[path] = await both_ways(daemon, path, accept)
        assert dists["priv2"].name not in decoded(before[path])
    assert (await put(daemon, dists["priv2"])).code == 201
    assert (await put(daemon, dists["other"])).code == 201
    for path, old in before.items():
        new = await both_ways(daemon, path, accept)
        assert new.headers["etag"] != old.headers["etag"]
        assert int(new.headers["content-length"]) > int(old.headers["content-length"])
        expected = "other" if path == "simple/" else dists["priv2"].name
        assert expected in decoded(new) and expected not in decoded(old)


@pytest.mark.parametrize("accept", [HTML, JSON], ids=["html", "json"])
@pytest_twisted.ensureDeferred
async def test_refreshed_upstream_page_is_sent_anew(clocked, dists, accept):
    """Once the upstream page is refreshed with a new file, /simple/<p>/ sends the
    new body with its Content-Length; the old ETag no longer gets a 304."""
    daemon = clocked.daemon
    old = await both_ways(daemon, "simple/app/", accept)
    clocked.index.add(dists["app2"])
    unchanged = await wire(daemon, "simple/app/", accept)  # still fresh: from memory
    assert unchanged.raw.partition(b"\r\n\r\n")[2] == old.raw.partition(b"\r\n\r\n")[2]
    clocked.clock.advance(601)
    new = await both_ways(daemon, "simple/app/", accept)
    assert dists["app2"].name in decoded(new) and dists["app2"].name not in decoded(old)
    assert int(new.headers["content-length"]) > int(old.headers["content-length"])
    stale = await wire(
        daemon, "simple/app/", accept, headers={"If-None-Match": old.headers["etag"]}
    )
    assert stale.status == 200 and stale.headers["etag"] == new.headers["etag"]


@pytest_twisted.ensureDeferred
async def test_client_gone_mid_page_leaves_the_daemon_serving(world):
    """A client that closes while a large page is being written costs nothing
    further: the next request gets the whole page."""
    port = urlsplit(world.daemon.url).port
    request = rawhttp.build("GET", "/simple/many/", {"Accept": HTML})

    def read_a_little() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(request)
            s.recv(1000)

    for _ in range(3):
        await deferToThread(read_a_little)
    assert_whole(await wire(world.daemon, "simple/many/"), HTML, False)


def test_body_pieces_and_etag():
    """A body is cut into a first PIECE, whole PIECEs, then the rest, which join
    back to it; its ETag is a digest of the bytes."""
    for size in (0, 1, PIECE, PIECE + 1, 3 * PIECE, 5 * PIECE + 17):
        data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        body = Body.of(data, [(b"content-type", b"text/plain")])
        assert body.data() == data and body.size == size
        assert body.length == str(size).encode()
        assert body.pieces[0] == data[:PIECE]
        assert all(len(p) % PIECE == 0 for p in body.pieces[1:-1])
        assert len(body.pieces) <= 3
        assert Body.of(data, []).etag == body.etag != Body.of(data + b"!", []).etag


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, False),
        (b"", False),
        (b"identity", False),
        (b"gzip", True),
        (b"gzip, deflate", True),
        (b"deflate, GZIP;q=0.5", True),
        (b"gzip;q=0", False),
        (b"gzip; q=0.0, *", False),
        (b"br, *", True),
        (b"*;q=0", False),
        (b"x-gzip", True),
    ],
)
def test_accepts_gzip(value, expected):
    """Accept-Encoding is read by its q-values, not by a substring."""
    assert accepts_gzip(value) is expected


@pytest.mark.parametrize(
    "header, expected",
    [
        (None, False),
        (b'"abc"', True),
        (b'W/"abc"', True),
        (b'"x", "abc"', True),
        (b"*", True),
        (b'"abcd"', False),
        (b"abc", False),
    ],
)
def test_etag_matches(header, expected):
    """If-None-Match matches by weak comparison, in a list, or with ``*``."""
    assert etag_matches(header, b'"abc"') is expected


def test_gzip_levels_and_their_etags():
    """A page gzipped at level 6 has the plain ETag with ``-gzip``; at
    another level, ``-gzip<level>``: each names its own bytes, which
    decompress to the same page. A body names a ``former`` ETag that
    :func:`validated` answers too, naming it; its own ETag comes first."""
    plain = Body.of(
        b"<html>" + b"x" * 5000 + b"</html>", [(b"content-type", b"text/html")]
    )
    best, quick = gzipped(plain), gzipped(plain, 1)
    assert best.etag == plain.etag[:-1] + b'-gzip"'
    assert quick.etag == plain.etag[:-1] + b'-gzip1"'
    assert best.data() == gzip.compress(plain.data(), 6, mtime=0)
    assert quick.data() == gzip.compress(plain.data(), 1, mtime=0)
    assert (
        best.headers
        == quick.headers
        == plain.headers + ((b"content-encoding", b"gzip"),)
    )
    assert best.former is None and validated(quick.etag, best) is None
    swapped = gzipped(plain, 6, quick.etag)
    assert swapped.data() == best.data() and swapped.etag == best.etag
    assert validated(quick.etag, swapped) == quick.etag
    assert validated(b"W/" + quick.etag, swapped) == quick.etag
    assert validated(best.etag + b", " + quick.etag, swapped) == best.etag
    assert validated(b"*", swapped) == best.etag
    assert validated(b'"other"', swapped) is None and validated(None, swapped) is None


def test_render_cache_swap():
    """:meth:`RenderCache.swap` replaces a slot's body only if it is still the
    one named, at the same version; the bytes counted follow."""
    cache = RenderCache()
    old, new, other = (Body.of(b"x" * n, []) for n in (10, 7, 3))
    assert not cache.swap("slot", 1, old, new)  # nothing kept
    cache.get("slot", 1, lambda: old)
    assert not cache.swap("slot", 2, old, new)  # another version
    assert not cache.swap("slot", 1, other, new)  # another body
    assert cache.peek("slot", 1) is old and cache._bytes == 10
    assert cache.swap("slot", 1, old, new)
    assert cache.peek("slot", 1) is new and cache._bytes == 7
