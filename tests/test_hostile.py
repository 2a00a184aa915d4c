"""Hostile requests on every route and body parser: a short 4xx, never a 5xx, a hang or a change on disk.

One daemon (in front of a fake upstream with one real project) takes every
case in turn over raw sockets, so that requests no client library would send
reach it byte for byte. Each case must end within a deadline, with a status
below 500 (or, for input over Twisted's own size limits, a closed
connection), a short body without a traceback, and nothing new on disk
outside the page cache; the daemon must answer ``/health`` after each.
"""

import os
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests import rawhttp
from tests.daemon import start_world
from tests.packages import build_wheel
from tests.webclient import multipart

#: Status 0: the daemon closed the connection on input over Twisted's limits
#: (a header line past 16 KB); it answers 400 first, which the client may not
#: read when the daemon closes with the request still unread.
CLOSED = 0


@pytest_twisted.async_yield_fixture(scope="module")
async def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    wheel = build_wheel(tmp / "dists", "real", "1.0")
    w = await start_world(tmp, [wheel], timeout=5, auth_failures=1000)
    # Cached first, so that what a hostile request may legitimately fetch is there already.
    for path in ("/simple/real/", f"/packages/real/{wheel.name}"):
        response = await w.daemon.get(path)
        assert response.code == 200
        await response.content()
    # The wheel's METADATA is extracted just after it is stored.
    metadata = w.cache / "mirror" / "real" / (wheel.name + ".metadata")
    for _ in range(100):
        if metadata.exists() and not list(metadata.parent.glob(".tmp-*")):
            break
        await deferLater(reactor, 0.05, lambda: None)
    yield w
    await w.stop()


def on_disk(cache: Path) -> set[str]:
    """Every file under the cache but the page cache (which a read may fill)."""
    found = set()
    for folder, _, names in os.walk(cache):
        relative = os.path.relpath(folder, cache)
        if relative == "pages" or relative.startswith("pages" + os.sep):
            continue
        found.update(os.path.join(relative, n) for n in names)
    return found


async def check(
    world, data: bytes, allowed: set[int] | None = None
) -> rawhttp.RawAnswer:
    """Send ``data``; assert a clean refusal, nothing new on disk, and a healthy daemon."""
    before = on_disk(world.cache)
    answer = await rawhttp.request(world.daemon.port.getHost().port, data)
    assert answer.status < 500, answer.raw[:500]
    if allowed is not None:
        assert answer.status in allowed, answer.raw[:500]
    assert b"Traceback" not in answer.raw
    assert len(answer.body) < 4096, answer.raw[:500]
    assert on_disk(world.cache) == before
    health = await rawhttp.request(
        world.daemon.port.getHost().port, rawhttp.build("GET", "/health")
    )
    assert health.status == 200
    return answer


# -- paths -------------------------------------------------------------------------------

#: What a path segment may be turned into by someone looking for the filesystem.
TRAVERSALS = [
    "..",
    "%2e%2e",
    "%2E%2E",
    ".%2e",
    "%2e.",
    "..%2f..%2fetc%2fpasswd",
    "..%5c..%5cwindows",
    "%252e%252e%252f",
    "%c0%ae%c0%ae",
    "%2fetc%2fpasswd",
    "a%00b.whl",
    "%00",
    ".tmp-0123456789abcdef",
    ".deleted",
    "real-1.0-py3-none-any.whl.json",
    "real-1.0-py3-none-any.whl%00.json",
    "%ff%fe.whl",
    "%",
    "%zz",
    "~root",
    "$(id).whl",
    "a%20b.whl",
    "a\\b.whl",
    "x" * 300 + ".whl",
    "real-1.0-py3-none-any.whl%2f..%2f..%2fx",
    "..;",
    "CON.whl",
]

#: Route templates: the method, the path with ``{}`` for the hostile segment, and a body.
READS = [
    "/simple/{}/",
    "/local/{}/",
    "/packages/{}/real-1.0-py3-none-any.whl",
    "/packages/real/{}",
    "/packages/real/{}.metadata",
    "/packages/source/r/{}/real-1.0.tar.gz",
    "/packages/source/r/real/{}",
    "/pypi/{}/json",
    "/pypi/real/{}/json",
]
WRITES = [
    ("PUT", "/packages/real/{}"),
    ("PUT", "/packages/{}/real-1.0-py3-none-any.whl"),
    ("DELETE", "/packages/real/{}"),
    ("DELETE", "/simple/{}/1.0/"),
    ("POST", "/packages/real/{}/yank"),
]


@pytest.mark.parametrize("segment", TRAVERSALS)
@pytest.mark.parametrize("template", READS)
@pytest_twisted.ensureDeferred
async def test_hostile_paths_on_reads(world, template, segment):
    """A hostile path segment on any read route is refused or not found; nothing reaches the filesystem."""
    await check(world, rawhttp.build("GET", template.format(segment)))


@pytest.mark.parametrize("segment", TRAVERSALS)
@pytest.mark.parametrize("method, template", WRITES)
@pytest_twisted.ensureDeferred
async def test_hostile_paths_on_writes(world, method, template, segment):
    """A hostile path segment on any write route is refused; nothing is written or removed."""
    await check(
        world,
        rawhttp.build(method, template.format(segment), body=b"PK\x03\x04not a wheel"),
    )


# -- the request line and headers ------------------------------------------------------------

REQUESTS = {
    "host label too long": rawhttp.build("GET", "/simple/", host="a" * 64 + ".example"),
    "host with a bad port": rawhttp.build("GET", "/simple/", host="example:99999999"),
    "host bracket": rawhttp.build("GET", "/simple/", host="[::1"),
    "host 8 KB": rawhttp.build("GET", "/simple/", host="h" * 8000),
    "header line past 16 KB": rawhttp.build("GET", "/simple/", {"X-Big": "a" * 20000}),
    "600 headers": rawhttp.build(
        "GET", "/simple/", {f"X-H{i}": "a" for i in range(600)}
    ),
    "negative content-length": rawhttp.build("POST", "/", {"Content-Length": "-1"}),
    "content-length not a number": rawhttp.build(
        "POST", "/", {"Content-Length": "abc"}
    ),
    "content-length past the limit": rawhttp.build(
        "PUT",
        "/packages/real/real-1.0-py3-none-any.whl",
        {"Content-Length": str(10**15)},
    ),
    "two content-lengths": b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "bad chunk size": b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
    "unknown method": rawhttp.build("FOO", "/simple/"),
    "TRACE": rawhttp.build("TRACE", "/simple/"),
    "CONNECT": rawhttp.build("CONNECT", "127.0.0.1:1"),
    "asterisk target": rawhttp.build("OPTIONS", "*"),
    "absolute target": rawhttp.build("GET", "http://elsewhere.invalid/simple/real/"),
    "double slash": rawhttp.build("GET", "//simple/"),
    "many slashes": rawhttp.build("GET", "////packages//real//x.whl"),
    "HTTP/9.9": b"GET /simple/ HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n",
    "HTTP/0.9": b"GET /simple/\r\n\r\n",
    "no version": b"GET\r\n\r\n",
    "control character in path": rawhttp.build("GET", "/simple/\x7f/"),
    "range garbage": rawhttp.build(
        "GET", "/packages/real/real-1.0-py3-none-any.whl", {"Range": "bytes=z-y"}
    ),
    "range huge numbers": rawhttp.build(
        "GET",
        "/packages/real/real-1.0-py3-none-any.whl",
        {"Range": "bytes=99999999999999999999999-"},
    ),
    "range 2,000 parts": rawhttp.build(
        "GET",
        "/packages/real/real-1.0-py3-none-any.whl",
        {"Range": "bytes=" + ",".join(["0-"] * 2000)},
    ),
    "accept garbage": rawhttp.build("GET", "/simple/real/", {"Accept": ";;;q=abc,,"}),
    "accept 1,000 types": rawhttp.build(
        "GET", "/simple/real/", {"Accept": ",".join(["a/b;q=0.1"] * 1000)}
    ),
    "accept-encoding garbage": rawhttp.build(
        "GET", "/simple/real/", {"Accept-Encoding": "gzip;q=abc, ;;"}
    ),
    "basic garbage": rawhttp.build(
        "PUT", "/packages/real/x-1.0.tar.gz", {"Authorization": "Basic !!!"}
    ),
    "basic 10 KB": rawhttp.build(
        "GET", "/simple/", {"Authorization": "Basic " + "QUFB" * 2500}
    ),
    "basic without colon": rawhttp.build(
        "POST", "/+rescan", {"Authorization": "Basic bm9ib2R5"}
    ),
    "bearer": rawhttp.build("POST", "/+rescan", {"Authorization": "Bearer x"}),
    "x-forwarded-for 1,000": rawhttp.build(
        "PUT",
        "/packages/real/real-1.0-py3-none-any.whl",
        {"X-Forwarded-For": ",".join(["1.2.3.4"] * 1000)},
        body=b"x",
    ),
    "forwarded garbage": rawhttp.build(
        "PUT",
        "/packages/real/real-1.0-py3-none-any.whl",
        {"Forwarded": 'for="'},
        body=b"x",
    ),
    "if-none-match 10 KB": rawhttp.build(
        "GET",
        "/packages/real/real-1.0-py3-none-any.whl",
        {"If-None-Match": "x" * 10000},
    ),
    "query 10 KB": rawhttp.build("GET", "/simple/real/?" + "a=b&" * 2500),
    "format garbage": rawhttp.build("GET", "/simple/real/?format=%00%ff"),
    "unknown bulk parameter": rawhttp.build(
        "POST", "/requirements.txt?evil=1", body=b"real\n"
    ),
    "python-version garbage": rawhttp.build(
        "POST", "/requirements.txt?python-version=three", body=b"real\n"
    ),
    "platform garbage": rawhttp.build(
        "POST", "/requirements.txt?platform=../../etc", body=b"real\n"
    ),
}


@pytest.mark.parametrize("name", sorted(REQUESTS))
@pytest_twisted.ensureDeferred
async def test_hostile_requests(world, name):
    """Malformed request lines, headers and query strings get a clean 4xx (never a 5xx or a hang)."""
    closes = name in ("header line past 16 KB",)
    answer = await check(world, REQUESTS[name])
    if not closes:
        assert answer.status != CLOSED, answer.raw[:300]


# -- bodies --------------------------------------------------------------------------------

BOUNDARY = "hostile0123456789"
FORM = f"multipart/form-data; boundary={BOUNDARY}"


def _form(parts: bytes, content_type: str = FORM) -> tuple[str, bytes]:
    return content_type, parts


_, ONE_FILE = multipart(
    [(":action", "file_upload")],
    [("content", b"../../evil-1.0-py3-none-any.whl", b"PK\x03\x04")],
    boundary=BOUNDARY,
)

BODIES = {
    "no boundary": ("multipart/form-data", ONE_FILE),
    "boundary mismatch": ("multipart/form-data; boundary=other", ONE_FILE),
    "empty boundary": ('multipart/form-data; boundary=""', ONE_FILE),
    "truncated": (FORM, ONE_FILE[: len(ONE_FILE) // 2]),
    "no closing boundary": (FORM, ONE_FILE.rsplit(b"--" + BOUNDARY.encode(), 1)[0]),
    "part without disposition": (
        FORM,
        f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(),
    ),
    "2,000 parts": (
        FORM,
        "".join(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n'
            for i in range(2000)
        ).encode()
        + f"--{BOUNDARY}--\r\n".encode(),
    ),
    "field of 2 MB": (
        FORM,
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="name"\r\n\r\n'.encode()
        + b"a" * (2 * 1024 * 1024)
        + f"\r\n--{BOUNDARY}--\r\n".encode(),
    ),
    "part header of 20 KB": (
        FORM,
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{"n" * 20000}"\r\n\r\nx\r\n'
        f"--{BOUNDARY}--\r\n".encode(),
    ),
    "traversal filename": (FORM, ONE_FILE),
    "NUL in filename": (
        FORM,
        ONE_FILE.replace(
            b"../../evil-1.0-py3-none-any.whl", b"evil-1.0-py3-none-any.whl\x00.json"
        ),
    ),
    "CRLF in field name": (
        FORM,
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="a\r\nX: y"\r\n\r\nx\r\n'
        f"--{BOUNDARY}--\r\n".encode(),
    ),
    "nested multipart": (
        FORM,
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; filename="x.whl"\r\n'
        f"Content-Type: multipart/mixed; boundary=inner\r\n\r\n--inner\r\n\r\nx\r\n--inner--\r\n"
        f"--{BOUNDARY}--\r\n".encode(),
    ),
    "not multipart": ("text/plain", b"hello"),
    "urlencoded": (
        "application/x-www-form-urlencoded",
        b":action=file_upload&content=x",
    ),
    "json": ("application/json", b'{"a": 1}'),
    "empty": (FORM, b""),
    "binary noise": (FORM, os.urandom(4096)),
}

FORM_ROUTES = [
    "/",
    "/legacy/",
    "/uploadpackage/",
    "/requirements.txt",
    "/packages/real/real-1.0-py3-none-any.whl/yank",
]


@pytest.mark.parametrize("name", sorted(BODIES))
@pytest.mark.parametrize("route", FORM_ROUTES)
@pytest_twisted.ensureDeferred
async def test_hostile_bodies(world, route, name):
    """Malformed, oversized or lying form bodies on every POST route get a clean 4xx; nothing is stored."""
    content_type, body = BODIES[name]
    await check(
        world, rawhttp.build("POST", route, {"Content-Type": content_type}, body)
    )


# -- requirements files ------------------------------------------------------------------------

REQUIREMENTS = {
    "million-digit pin": b"real==" + b"9" * 1_000_000 + b"\n",
    "line of 1.5 MB": b"real" + b" " * 1_500_000 + b"\n",
    "NUL bytes": b"real\x00\x00==1\n",
    "not UTF-8": b"real\xff\xfe==1\n",
    "deep parentheses in a marker": b"real; "
    + b"(" * 500
    + b'python_version > "3"'
    + b")" * 500
    + b"\n",
    "huge marker string": b'real; python_version == "' + b"3" * 100_000 + b'"\n',
    "10,000 extras": b"real[" + b",".join(b"e%d" % i for i in range(10_000)) + b"]\n",
    "10,000 includes": b"-r x.txt\n" * 10_000,
    "bad hash": b"real --hash=sha256:zz\n",
    "hash of another algorithm": b"real --hash=crc32:00\n",
    "only CRs": b"real\rother\r",
    "garbage": os.urandom(2048).replace(b"\x00", b""),
    "editable path": b"-e /etc\n",
    "URL to a file": b"x @ file:///etc/passwd\n",
    "index to elsewhere": b"--index-url http://169.254.169.254/\nreal\n",
}


@pytest.mark.parametrize("name", sorted(REQUIREMENTS))
@pytest.mark.parametrize("as_form", [False, True])
@pytest_twisted.ensureDeferred
async def test_hostile_requirements(world, name, as_form):
    """Pathological requirements files, raw or as a form field, give a 4xx or a report
    (never a 5xx or a hang), and never read a file or reach another index."""
    body = REQUIREMENTS[name]
    if as_form:
        content_type, body = multipart(
            [], [("requirements", b"requirements.txt", body)], boundary=BOUNDARY
        )
    else:
        content_type = "text/plain"
    answer = await rawhttp.request(
        world.daemon.port.getHost().port,
        rawhttp.build(
            "POST", "/requirements.txt", {"Content-Type": content_type}, body
        ),
        timeout=60,
    )
    assert answer.status in (200, 400, 413, 422), answer.raw[:500]
    assert b"Traceback" not in answer.raw and b"root:" not in answer.raw
    assert not [r for r in world.index.requests if "169.254" in r.path]
