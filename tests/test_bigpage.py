"""Large rendered pages go out by ``sendfile`` from a memory file, byte for byte
as the same page sent from its bytes.

A daemon's page is padded (in process) past
:data:`~pypicache.web.bodyfile.FILE_MIN`, in HTML and JSON, gzip and
identity; it is read on raw sockets from the daemon's own site (fast lane)
and from a site without the lane (twisted.web's ``send_body``), with
``os.sendfile`` counted: ``GET``, ``HEAD``, ``If-None-Match``, pipelined
requests behind a large answer, a client reading slowly. The render cache's
memory files are bounded and closed when their entry goes (open descriptors
counted in ``/proc/self/fd``).
"""

import gzip
import os
import re
import socket
import time

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from pypicache.web import routes
from pypicache.web.bodyfile import FILE_MIN, BodyFile
from pypicache.web.rendered import RenderCache
from pypicache.web.routing import Body
from tests.daemon import start_world
from tests.packages import build_wheel
from tests.test_fastlane import lanes_for, request

JSON = "application/vnd.pypi.simple.v1+json"
PAGE = "/simple/big-page/"
#: Hex text: gzip keeps about half of it, so both forms pass FILE_MIN.
PADDING = os.urandom(3 * FILE_MIN // 2).hex().encode()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build_wheel(tmp_path_factory.mktemp("dists"), "big-page", "1.0")


@pytest_twisted.async_yield_fixture()
async def big(tmp_path, wheel, monkeypatch):
    """Lanes on a daemon whose pages carry :data:`PADDING`, with its page
    fetched; ``sendfile`` calls are counted in ``lanes.sendfiles``."""
    plain = routes.installer.plain
    monkeypatch.setattr(
        routes.installer,
        "plain",
        lambda data, media, max_age: plain(
            data + b"<!--" + PADDING + b"-->", media, max_age
        ),
    )
    sendfiles = []
    real = os.sendfile

    def counted(out_fd, in_fd, offset, count):
        sent = real(out_fd, in_fd, offset, count)
        sendfiles.append(sent)
        return sent

    monkeypatch.setattr(os, "sendfile", counted)
    world = await start_world(tmp_path, [wheel], timeout=5)
    lanes = await lanes_for(world)
    lanes.sendfiles = sendfiles
    lanes.rendered = world.daemon.app.installer._rendered
    await lanes.same(request("GET", PAGE, close=True))
    lanes.calls.clear()
    yield lanes
    await lanes.stop()


def parse(answer: bytes, heads=()) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """The responses on a connection: status line, headers, body (by
    Content-Length; none for the responses numbered in ``heads``)."""
    out = []
    while answer:
        head, _, answer = answer.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines)
        if headers.get(b"transfer-encoding") == b"chunked":
            body, end, answer = answer.partition(b"\r\n0\r\n\r\n")
            out.append((status, headers, body + end))
            continue
        size = int(headers.get(b"content-length", b"0"))
        if status.endswith(b"304 Not Modified") or len(out) in heads:
            size = 0
        out.append((status, headers, answer[:size]))
        answer = answer[size:]
    return out


@pytest.mark.parametrize("gzipped", [False, True], ids=["identity", "gzip"])
@pytest.mark.parametrize("accept", ["text/html", JSON], ids=["html", "json"])
async def test_large_page_by_sendfile_alike(big, accept, gzipped):
    """A page past FILE_MIN goes by sendfile from both the lane and
    twisted.web, byte-identical between them and to the page's own bytes,
    with Content-Length; HEAD gets the same headers and no body; a matching
    If-None-Match gets a 304; requests pipelined behind come back in order."""
    headers = {"Accept": accept, "Accept-Encoding": "gzip" if gzipped else "identity"}
    big.sendfiles.clear()
    answer = await big.same(request("GET", PAGE, headers, close=True))
    assert big.sendfiles and big.calls == []
    ((status, got, body),) = parse(answer)
    assert status == b"HTTP/1.1 200 OK"
    assert int(got[b"content-length"]) == len(body) >= FILE_MIN
    assert (got.get(b"content-encoding") == b"gzip") == gzipped
    text = gzip.decompress(body) if gzipped else body
    assert text.endswith(b"<!--" + PADDING + b"-->")
    kept = [b for _, (_, b) in big.rendered._entries.items() if b.etag == got[b"etag"]]
    assert [b.data() for b in kept] == [body] and kept[0].file is not None

    etag = got[b"etag"].decode()
    pipelined = (
        request("GET", PAGE, headers)
        + request("HEAD", PAGE, headers)
        + request("GET", PAGE, {**headers, "If-None-Match": etag})
        + request("GET", PAGE, headers)
        + request("GET", "/nowhere")
        + request("GET", PAGE, headers, close=True)
    )
    answers = parse(await big.same(pipelined), heads=(1,))
    assert [a[0].split(b" ", 1)[1] for a in answers] == [
        b"200 OK", b"200 OK", b"304 Not Modified", b"200 OK", b"404 Not Found", b"200 OK"
    ]
    for status, h, b in (answers[0], answers[3], answers[5]):
        assert b == body and h[b"content-length"] == got[b"content-length"]
    assert answers[1][1][b"content-length"] == got[b"content-length"]
    assert answers[1][2] == answers[2][2] == b""
    assert big.calls == [b"/nowhere"]


def _slow_read(port: int, data: bytes) -> bytes:
    """Send ``data`` with a small receive buffer, read a little at a time."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(20)
        s.connect(("127.0.0.1", port))
        s.sendall(data)
        chunks = []
        while chunk := s.recv(16384):
            chunks.append(chunk)
            if len(chunks) % 8 == 0:
                time.sleep(0.01)
    return re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\nDate: -\r\n", b"".join(chunks))


async def test_slow_reader_gets_whole_page(big):
    """A client reading slowly (small receive buffer) gets every byte of two
    pipelined large pages, in order, alike from both sites, by sendfile."""
    two = request("GET", PAGE) + request("GET", PAGE, {"Accept": JSON}, close=True)
    big.sendfiles.clear()
    fast = await deferToThread(_slow_read, big.fast, two)
    slow = await deferToThread(_slow_read, big.slow, two)
    assert fast == slow
    assert len(big.sendfiles) > 2  # the socket filled: sendfile went on when it drained
    answers = parse(fast)
    assert [len(b) for _, _, b in answers] == [int(h[b"content-length"]) for _, h, b in answers]
    assert answers[1][2].startswith(b"{")


def test_eviction_closes_memory_files():
    """Large bodies get a memory file, small ones not; at most max_files are
    open (the least recently used body loses its file, and is still whole);
    replaced and evicted entries close theirs: /proc/self/fd counts return to
    where they were. An answer under way keeps its own descriptor."""
    before = open_fds()
    cache = RenderCache(max_bytes=8 * FILE_MIN, max_entries=10, max_files=2)
    big_data = [bytes([65 + i]) * FILE_MIN for i in range(4)]

    def body(data: bytes) -> Body:
        return Body.of(data, [])

    small = cache.get("small", 1, lambda: body(b"tiny"))
    assert small.file is None
    first = cache.get("a", 1, lambda: body(big_data[0]))
    assert first.file is not None and cache.open_files == 1
    assert open_fds() == before + 1
    opened = first.file.open()
    cache.get("b", 1, lambda: body(big_data[1]))
    cache.get("c", 1, lambda: body(big_data[2]))
    assert cache.open_files == 2 and first.file.closed
    assert cache.get("a", 1, lambda: pytest.fail("kept")).data() == big_data[0]
    # The answer under way reads its own descriptor to the end.
    assert os.pread(opened.fileno(), FILE_MIN + 1, 0) == big_data[0]
    opened.close()
    cache.get("b", 2, lambda: body(big_data[3]))  # replaced: the old file closes
    assert cache.open_files == 2 and open_fds() == before + 2
    for i in range(10):  # evicts every large body
        cache.get(("small", i), 1, lambda: body(b"tiny"))
    assert cache.open_files == 0
    assert open_fds() == before


def test_body_file_holds_the_bytes():
    """A BodyFile holds the pieces' bytes, its size is theirs; a closed one
    opens no more."""
    pieces = (b"a" * 100_000, b"b" * 200_000, b"c")
    file = BodyFile.of(pieces)
    assert file is not None and file.size == 300_001
    opened = file.open()
    assert os.pread(opened.fileno(), file.size + 1, 0) == b"".join(pieces)
    opened.close()
    file.close()
    assert file.closed and file.open() is None
