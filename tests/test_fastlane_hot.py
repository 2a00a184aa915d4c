"""The fast lane's own shortcuts (session 7), each still answering as twisted.web does.

- answers go to the socket at once (``sendmsg``), and a large page's body by
  ``sendfile`` from an in-memory file; a client that reads slowly gets the
  rest through the transport, byte for byte as twisted.web sends it;
- pages and small files carry ``Content-Length`` (never chunked);
- a small stored file's bytes are kept in memory, but every request is still
  checked (the block list set while running refuses a file whose copy is
  kept) and a copy is used only while the file on disk is unchanged;
- request heads are read once and remembered.
"""

import socket
import time

from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from pypicache.proxy.blocklist import with_block_list
from pypicache.web import fastlane, ready
from pypicache.web.heads import parse_head
from pypicache.web.sendfile import FileRest
from tests import test_fastlane
from tests.daemon import start_world
from tests.test_fastlane import JSON, lanes_for, pad_pages, read_all, request

#: The fixtures of tests/test_fastlane.py: its wheels, and its two sites.
dists = test_fastlane.dists
lanes = test_fastlane.lanes


def _talk_slowly(port, data, wait):
    """Send ``data`` from a socket with a small receive buffer, read nothing
    for ``wait`` seconds (the server's socket fills), then read to the end."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(data)
        time.sleep(wait)
        return read_all(s)


def _framing(answer):
    """Status line and headers (lower-cased names) of the first response."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
    return lines[0], headers, body


async def test_pages_and_files_carry_content_length(lanes, dists):
    """Pages in both formats and encodings and a small stored wheel are sent
    from the lane with ``Content-Length`` equal to the body, never chunked."""
    wheel = f"/packages/lane-thing/{dists['wheel'].name}"
    for path, headers in (
        ("/simple/lane-thing/", {}),
        ("/simple/lane-thing/", {"Accept": JSON}),
        ("/simple/lane-thing/", {"Accept-Encoding": "gzip"}),
        ("/local/lane-thing/", {"Accept": JSON, "Accept-Encoding": "gzip"}),
        (wheel, {}),
    ):
        for _ in range(2):  # made, then kept
            answer = await lanes.same(request("GET", path, headers, close=True))
            status, got, body = _framing(answer)
            assert status == b"HTTP/1.1 200 OK", path
            assert int(got[b"content-length"]) == len(body) > 0, path
            assert b"transfer-encoding" not in got, path
    assert body == dists["wheel"].read_bytes()
    assert lanes.calls == []


async def test_large_page_to_a_slow_reader(tmp_path, dists, monkeypatch):
    """A large page goes by ``sendfile`` from an in-memory file; when the
    client's socket is full the rest goes by ``sendfile`` too as the socket
    drains (session 8; it went through the transport before): the bytes of
    pipelined answers (large, small, HEAD, a 404 from twisted.web) are those
    twisted.web sends, in order, and the lane answered every page, even
    with the page's in-memory file closed meanwhile."""
    pad_pages(monkeypatch, 3_000_000)
    rests = []

    def file_rest(transport, file, offset, end, done):
        rests.append(end - offset)
        return FileRest(transport, file, offset, end, done)

    monkeypatch.setattr(fastlane, "FileRest", file_rest)
    ready.forget_pages()
    world = await start_world(tmp_path, [dists["wheel"]], timeout=5)
    sites = await lanes_for(world)
    try:
        page = request("GET", "/simple/lane-thing/")
        await sites.same(page + request("GET", "/simple/lane-thing/", close=True))
        sites.calls.clear()
        rests.clear()
        data = (
            page
            + page
            + request("HEAD", "/simple/lane-thing/")
            + request("GET", "/nowhere")
            + request("GET", "/simple/lane-thing/", {"Accept": JSON}, close=True)
        )
        # The kept answers' files closed while one is being sent: it goes on
        # from its own duplicate of the file.
        reactor.callLater(0.2, ready.forget_pages)
        fast = await deferToThread(_talk_slowly, sites.fast, data, 0.5)
        slow = await deferToThread(_talk_slowly, sites.slow, data, 0.5)
        assert fast == slow
        assert fast.count(b"HTTP/1.1 200 OK") == 4
        assert fast.count(b"HTTP/1.1 404 ") == 1
        assert sites.calls == [b"/nowhere"]
        assert any(0 < n < 3_000_000 for n in rests)  # partly sent by sendfile
        files = [r.file for _, r in ready._PAGES.values() if r.sent > ready.FILE_BODY]
        assert files and all(f >= 0 for f in files)
    finally:
        await sites.stop()
        ready.forget_pages()


async def test_kept_file_copy_still_checked(lanes, dists):
    """A wheel whose bytes the lane keeps in memory is refused (404, by
    twisted.web) once the block list names it, and served again once cleared."""
    path = f"/packages/lane-thing/{dists['wheel'].name}"
    await lanes.same(request("GET", path, close=True))
    assert any(p.endswith(dists["wheel"].name) for p in ready._FILES)
    views = lanes.daemon.app.views
    rules = views.rules
    views.rules = with_block_list(rules, ["lane-thing"])
    try:
        answer = await lanes.same(request("GET", path, close=True))
        assert answer.startswith(b"HTTP/1.1 404 ")
        assert b"blocked on this server" in answer
        assert lanes.calls == [path.encode()]
    finally:
        views.rules = rules
    lanes.calls.clear()
    answer = await lanes.same(request("GET", path, close=True))
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert lanes.calls == []


def test_file_copy_follows_the_file(tmp_path):
    """A kept copy is used only while the file is unchanged: a file replaced
    (renamed over, as the store does) is read again; a removed one is not
    answered; a file past FIRST_CHUNK is not kept."""
    path = tmp_path / "a.whl"
    path.write_bytes(b"one")
    rest, data, _ = ready._small_file(str(path))
    assert data == b"one" and b"Content-Length: 3\r\n" in rest
    assert ready._small_file(str(path))[1] == b"one"
    new = tmp_path / "a.tmp"
    new.write_bytes(b"second")
    new.replace(path)
    rest, data, _ = ready._small_file(str(path))
    assert data == b"second" and b"Content-Length: 6\r\n" in rest
    path.unlink()
    assert ready._small_file(str(path)) is None
    big = tmp_path / "big.whl"
    big.write_bytes(b"x" * (ready.FIRST_CHUNK + 1))
    assert ready._small_file(str(big)) is None
    assert str(big) not in ready._FILES


def test_heads_read_once():
    """The same head bytes give a new RequestHead (its own transport, code
    and length) sharing the parts read the first time; a head the lane
    leaves to twisted.web is remembered as such."""
    raw = b"GET /simple/x/ HTTP/1.1\r\nHost: h\r\nAccept: */*"
    one, two = parse_head(raw, "t1"), parse_head(raw, "t2")
    assert one is not two and one._transport == "t1" and two._transport == "t2"
    assert one.headers is two.headers == {b"host": b"h", b"accept": b"*/*"}
    one.code = 404
    assert two.code == 200
    bad = b"POST /x HTTP/1.1\r\nHost: h"
    assert parse_head(bad, None) is None and parse_head(bad, None) is None


def test_kept_file_answers_follow_the_file(tmp_path, monkeypatch):
    """The answers made from a kept copy (session 9: kept with it, per
    method and ETag) are those of the file as it is: a file replaced gets
    new answers (new bytes, length, ETag given), a removed one none (left
    to twisted.web), a ``HEAD`` never the ``GET``'s body; the answers are
    dropped with their copy when the copies pass SMALL_FILES_BYTES, and
    at most _ANSWERS_PER_FILE are kept per file."""
    monkeypatch.setattr(ready, "_FILES", type(ready._FILES)())
    monkeypatch.setattr(ready, "_files_bytes", 0)
    path = tmp_path / "a.whl"
    path.write_bytes(b"one")
    get = parse_head(b"GET /packages/a/a.whl HTTP/1.1\r\nHost: h", None)
    head = parse_head(b"HEAD /packages/a/a.whl HTTP/1.1\r\nHost: h", None)
    first = ready._archive(get, str(path), b'"e1"')
    assert first.body == (b"one",) and b"Content-Length: 3\r\n" in first.headers
    assert ready._archive(get, str(path), b'"e1"') is first  # kept
    assert ready._archive(head, str(path), b'"e1"').body == ()
    new = tmp_path / "a.tmp"
    new.write_bytes(b"second")
    new.replace(path)
    second = ready._archive(get, str(path), b'"e2"')
    assert second.body == (b"second",) and b'ETag: "e2"\r\n' in second.headers
    assert b"Content-Length: 6\r\n" in second.headers
    path.unlink()
    assert ready._archive(get, str(path), b'"e2"') is ready.ON_DISK
    path.write_bytes(b"x")
    for n in range(ready._ANSWERS_PER_FILE + 3):
        ready._archive(get, str(path), b'"%d"' % n)
    assert len(ready._FILES[str(path)][3]) == ready._ANSWERS_PER_FILE
    monkeypatch.setattr(ready, "SMALL_FILES_BYTES", 4)
    other = tmp_path / "b.whl"
    other.write_bytes(b"four")
    ready._archive(get, str(other), None)
    assert list(ready._FILES) == [str(other)] and ready._files_bytes == 4
