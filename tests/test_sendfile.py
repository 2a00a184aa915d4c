"""Cached files sent with ``os.sendfile`` on plain TCP, and by large reads where not.

The daemon runs in this process (``tests.daemon``), so ``os.sendfile`` and
``os.pread`` are wrapped here to see which path sent the bytes.
"""

import errno
import os
import socket
import ssl
import time
import zipfile

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet import ssl as twisted_ssl
from twisted.internet import task
from twisted.internet.defer import DeferredList
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory

from pypicache.web import sendfile as sending
from tests.daemon import start_world
from tests.packages import build_wheel

#: More than a loopback socket's send buffer can hold (4 MB at most by default),
#: so that a client that stops reading leaves the daemon waiting mid-file.
PAYLOAD = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A wheel with 16 MB of random bytes stored uncompressed."""
    path = build_wheel(tmp_path_factory.mktemp("dists"), "big", "1.0")
    with zipfile.ZipFile(path, "a", zipfile.ZIP_STORED) as archive:
        archive.writestr("big/payload.bin", os.urandom(PAYLOAD))
    return path


@pytest_twisted.async_yield_fixture()
async def world(tmp_path, big):
    """A daemon with ``big`` already cached (downloaded once, and stored)."""
    w = await start_world(tmp_path, [big], timeout=10)
    response = await w.daemon.get(f"packages/big/{big.name}")
    assert response.code == 200
    assert await response.content() == big.read_bytes()
    # Its client had it once verified; stored (synced, renamed, its spool
    # closed) next: the tests count the stored file's descriptors.
    await w.stored("big", big.name)
    yield w
    await w.stop()


class Calls:
    """Counts what the daemon sent by ``sendfile`` and read with ``pread``."""

    def __init__(self, monkeypatch):
        self.sendfile_calls = 0
        self.sendfile_bytes = 0
        self.pread_bytes = 0
        real_sendfile, real_pread = os.sendfile, os.pread

        def sendfile(out_fd, in_fd, offset, count):
            self.sendfile_calls += 1
            sent = real_sendfile(out_fd, in_fd, offset, count)
            self.sendfile_bytes += sent
            return sent

        def pread(fd, count, offset):
            data = real_pread(fd, count, offset)
            self.pread_bytes += len(data)
            return data

        monkeypatch.setattr(os, "sendfile", sendfile)
        monkeypatch.setattr(os, "pread", pread)


@pytest.fixture
def calls(monkeypatch):
    return Calls(monkeypatch)


def stored_path(world, big):
    return str(world.cache / "mirror" / "big" / big.name)


def open_descriptors(path=None):
    """This process's descriptors (those open on ``path`` if given)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if path is None or target == path:
            found.append(fd)
    return found


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_whole_file_by_sendfile(world, big, calls):
    """A cached file's bytes go out by sendfile after one first chunk through Python, byte-identical."""
    body = big.read_bytes()
    response = await world.daemon.raw_get(f"packages/big/{big.name}", {})
    assert response.code == 200
    headers = response.headers
    assert response.length == len(body)  # the client takes Content-Length out
    assert headers.getRawHeaders("content-type") == ["application/octet-stream"]
    assert headers.getRawHeaders("etag") == [f'"{world.index.sha256(big.name)}"']
    assert "immutable" in headers.getRawHeaders("cache-control")[0]
    assert headers.getRawHeaders("content-encoding") is None
    assert await treq.content(response) == body
    assert calls.sendfile_calls >= 1
    assert calls.sendfile_bytes == len(body) - sending.FIRST_CHUNK
    assert calls.pread_bytes == sending.FIRST_CHUNK


@pytest_twisted.ensureDeferred
async def test_single_range_by_sendfile(world, big, calls):
    """A single range answers 206 with its Content-Range, its bytes sent by sendfile."""
    body = big.read_bytes()
    first, last = 1000, 2_999_999
    response = await world.daemon.get(
        f"packages/big/{big.name}", headers={"Range": f"bytes={first}-{last}"}
    )
    assert response.code == 206
    assert response.headers.getRawHeaders("content-range") == [
        f"bytes {first}-{last}/{len(body)}"
    ]
    assert await response.content() == body[first : last + 1]
    assert calls.sendfile_bytes == last + 1 - first - sending.FIRST_CHUNK


@pytest_twisted.ensureDeferred
async def test_suffix_range_longer_than_file(world, big, calls):
    """A suffix range longer than the file answers 206 with the whole file, ``bytes 0-N/N+1``."""
    body = big.read_bytes()
    response = await world.daemon.get(
        f"packages/big/{big.name}", headers={"Range": f"bytes=-{len(body) + 10}"}
    )
    assert response.code == 206
    assert response.headers.getRawHeaders("content-range") == [
        f"bytes 0-{len(body) - 1}/{len(body)}"
    ]
    assert await response.content() == body
    assert calls.sendfile_calls >= 1


@pytest_twisted.ensureDeferred
async def test_open_ended_range(world, big, calls):
    """``bytes=N-`` answers 206 with the rest of the file from N."""
    body = big.read_bytes()
    start = 500_001
    response = await world.daemon.get(
        f"packages/big/{big.name}", headers={"Range": f"bytes={start}-"}
    )
    assert response.code == 206
    assert response.headers.getRawHeaders("content-range") == [
        f"bytes {start}-{len(body) - 1}/{len(body)}"
    ]
    assert response.length == len(body) - start
    assert await response.content() == body[start:]
    assert calls.sendfile_calls >= 1


@pytest_twisted.ensureDeferred
async def test_small_range_and_unsatisfiable_range(world, big, calls):
    """A range smaller than the first chunk is written whole; one past the end is a 416."""
    body = big.read_bytes()
    response = await world.daemon.get(
        f"packages/big/{big.name}", headers={"Range": "bytes=10-19"}
    )
    assert response.code == 206
    assert await response.content() == body[10:20]
    response = await world.daemon.get(
        f"packages/big/{big.name}", headers={"Range": f"bytes={len(body)}-"}
    )
    assert response.code == 416
    assert response.headers.getRawHeaders("content-range") == [f"bytes */{len(body)}"]
    assert await response.content() == b""
    assert calls.sendfile_calls == 0


@pytest_twisted.ensureDeferred
async def test_multiple_ranges_keep_multipart(world, big, calls):
    """Several ranges still answer multipart/byteranges with each part's bytes."""
    body = big.read_bytes()
    response = await world.daemon.get(
        f"packages/big/{big.name}", headers={"Range": "bytes=0-9,2000000-2000009"}
    )
    assert response.code == 206
    content_type = response.headers.getRawHeaders("content-type")[0]
    assert content_type.startswith("multipart/byteranges")
    payload = await response.content()
    assert body[0:10] in payload and body[2_000_000:2_000_010] in payload


@pytest_twisted.ensureDeferred
async def test_head_sends_no_body(world, big, calls):
    """HEAD answers the length and ETag and sends no byte of the file."""
    response = await world.daemon.head(f"packages/big/{big.name}")
    assert response.code == 200
    assert response.headers.getRawHeaders("content-length") == [str(big.stat().st_size)]
    assert response.headers.getRawHeaders("etag")
    assert await response.content() == b""
    assert calls.sendfile_calls == 0 and calls.pread_bytes == 0


@pytest_twisted.ensureDeferred
async def test_if_none_match_is_304(world, big, calls):
    """If-None-Match with the file's ETag answers 304 with no body and no file read."""
    etag = f'"{world.index.sha256(big.name)}"'
    response = await world.daemon.get(
        f"packages/big/{big.name}", headers={"If-None-Match": etag}
    )
    assert response.code == 304
    assert await response.content() == b""
    assert calls.sendfile_calls == 0 and calls.pread_bytes == 0


def _read_then_leave(port, target, keep, reset):
    """Ask for ``target``, read ``keep`` bytes with a small window, stall, then go."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    got = 0
    while got < keep:
        got += len(s.recv(65536))
    time.sleep(0.3)  # the daemon fills the socket and waits for room
    if reset:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    s.close()
    return got


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
@pytest_twisted.ensureDeferred
async def test_disconnect_mid_file_closes_descriptors(world, big, calls, reset):
    """A client that goes away mid-file (FIN or RST) leaves no descriptor open and logs no error."""
    path = stored_path(world, big)
    before = len(open_descriptors())
    port = world.daemon.port.getHost().port
    with capturedLogs() as events:
        await deferToThread(
            _read_then_leave, port, f"/packages/big/{big.name}", 300_000, reset
        )
        for _ in range(100):
            if not open_descriptors(path) and len(open_descriptors()) <= before:
                break
            await sleep(0.02)
    assert 0 < calls.sendfile_bytes < big.stat().st_size  # it left mid-file
    assert open_descriptors(path) == []
    assert len(open_descriptors()) <= before
    bad = [
        e for e in events if e.get("log_level") in (LogLevel.error, LogLevel.critical)
    ]
    assert bad == [], [formatEvent(e) for e in bad]
    response = await world.daemon.get(f"packages/big/{big.name}")
    assert await response.content() == big.read_bytes()


def _read_slowly(port, target, rate, seconds):
    """Read ``target`` at ``rate`` bytes a second for ``seconds``, then close."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    start, got = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        got += len(s.recv(16384))
        ahead = start + got / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    s.close()
    return got


@pytest_twisted.ensureDeferred
async def test_slow_reader_is_not_buffered(world, big, calls):
    """A client reading at 1 MB/s gets the file at its pace: only the first chunk passes through Python."""
    port = world.daemon.port.getHost().port
    got = await deferToThread(
        _read_slowly, port, f"/packages/big/{big.name}", 1_000_000, 1.0
    )
    assert 500_000 < got < big.stat().st_size
    assert calls.pread_bytes == sending.FIRST_CHUNK
    for _ in range(100):
        if not open_descriptors(stored_path(world, big)):
            break
        await sleep(0.02)
    assert open_descriptors(stored_path(world, big)) == []


@pytest_twisted.ensureDeferred
async def test_many_concurrent_clients(world, big, calls):
    """Eight clients at once each get the whole file, byte-identical."""
    body = big.read_bytes()
    responses = [world.daemon.get(f"packages/big/{big.name}") for _ in range(8)]
    results = await DeferredList(responses, fireOnOneErrback=True, consumeErrors=True)
    bodies = await DeferredList(
        [r.content() for _, r in results], fireOnOneErrback=True, consumeErrors=True
    )
    assert all(b == body for _, b in bodies)
    assert calls.sendfile_bytes == 8 * (len(body) - sending.FIRST_CHUNK)


@pytest.mark.parametrize(
    "error, logged", [(errno.EPIPE, False), (errno.EIO, True)], ids=["epipe", "eio"]
)
@pytest_twisted.ensureDeferred
async def test_sendfile_failing_mid_file_cuts_the_client_off(
    world, big, monkeypatch, error, logged
):
    """A sendfile error mid-file aborts the connection (no complete-looking body) and closes the file."""
    real = os.sendfile
    count = []

    def failing(out_fd, in_fd, offset, size):
        count.append(size)
        if len(count) > 1:
            raise OSError(error, os.strerror(error))
        return real(out_fd, in_fd, offset, min(size, 1_000_000))

    monkeypatch.setattr(os, "sendfile", failing)
    with capturedLogs() as events:
        response = await world.daemon.get(f"packages/big/{big.name}")
        with pytest.raises(Exception):
            await response.content()
    assert len(count) == 2
    assert open_descriptors(stored_path(world, big)) == []
    texts = [
        formatEvent(e)
        for e in events
        if e.get("log_namespace", "").startswith("pypicache")
    ]
    assert any("failed" in t for t in texts) == logged, texts


def _refuse(*args):
    raise OSError(errno.ENOSYS, "sendfile refused")


@pytest.mark.parametrize("how", ["refused", "missing"])
@pytest_twisted.ensureDeferred
async def test_without_sendfile_copies(world, big, monkeypatch, how):
    """Where sendfile is refused (ENOSYS) or missing, the file and its ranges are still served."""
    if how == "refused":
        monkeypatch.setattr(os, "sendfile", _refuse)
    else:
        monkeypatch.delattr(os, "sendfile")
    body = big.read_bytes()
    response = await world.daemon.get(f"packages/big/{big.name}")
    assert response.code == 200
    assert await response.content() == body
    response = await world.daemon.get(
        f"packages/big/{big.name}", headers={"Range": "bytes=-2000000"}
    )
    assert response.code == 206
    assert await response.content() == body[-2_000_000:]
    assert open_descriptors(stored_path(world, big)) == []


def _get_over_tls(port, target):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with context.wrap_socket(raw) as s:
            s.sendall(
                f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            chunks = []
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return head, body


@pytest_twisted.ensureDeferred
async def test_tls_never_uses_sendfile(world, big, calls):
    """Behind TLS the file goes through the TLS transport in large reads, never by sendfile."""
    certificate = twisted_ssl.KeyPair.generate(size=2048).selfSignedCert(
        1, CN="localhost"
    )
    endpoint = SSL4ServerEndpoint(
        reactor, 0, certificate.options(), interface="127.0.0.1"
    )
    port = await endpoint.listen(world.daemon.port.factory)
    try:
        head, body = await deferToThread(
            _get_over_tls, port.getHost().port, f"/packages/big/{big.name}"
        )
    finally:
        await port.stopListening()
    assert head.startswith(b"HTTP/1.1 200")
    assert body == big.read_bytes()
    assert calls.sendfile_calls == 0
    assert calls.pread_bytes == len(body)


def test_plain_socket_refuses_tls_transport():
    """A request whose channel writes to a TLS protocol has no plain socket to sendfile to."""
    factory = Factory.forProtocol(Protocol)
    tls = TLSMemoryBIOFactory(
        twisted_ssl.CertificateOptions(), False, factory
    ).buildProtocol(None)

    class Channel:
        transport = tls

    class Request:
        channel = Channel()

    assert sending.plain_socket(Request()) is None
    Channel.transport = Protocol()
    assert sending.plain_socket(Request()) is None
