"""The access log: with ``--access-log FILE``, combined-format lines written in
batches and reopened after rotation; without it, the same lines gathered into
one event of twistd's log per batch."""

import os
import re

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.web.test.requesthelper import DummyRequest

from pypicache.tap import Options
from pypicache.web.accesslog import (
    AccessLines,
    AccessLoggedSite,
    BufferedLogFile,
    combined_formatter,
    make_site,
)
from pypicache.web.limits import limited_request_factory
from tests import rawhttp
from tests.daemon import start_world
from tests.packages import build_wheel

LINE = re.compile(
    r"^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+|-) '
    r'"(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$'
)


def test_lines_wait_for_the_interval(tmp_path):
    """Lines are kept in memory and written once the flush interval has passed."""
    clock = task.Clock()
    path = tmp_path / "access.log"
    log = BufferedLogFile(str(path), clock, interval=1.0)
    log.write("one\n")
    log.write("two\n")
    assert path.read_text() == ""
    clock.advance(1)
    assert path.read_text() == "one\ntwo\n"
    log.close()


def test_lines_written_at_the_limit(tmp_path):
    """Past the buffer limit the lines are written at once, without waiting."""
    clock = task.Clock()
    path = tmp_path / "access.log"
    log = BufferedLogFile(str(path), clock, limit=10)
    log.write("12345\n")
    assert path.read_text() == ""
    log.write("67890\n")
    assert path.read_text() == "12345\n67890\n"
    log.close()


def test_close_writes_what_is_kept(tmp_path):
    """Closing (the daemon stopping) writes the lines still in memory; the timer stops."""
    clock = task.Clock()
    path = tmp_path / "access.log"
    log = BufferedLogFile(str(path), clock)
    log.write("last\n")
    log.close()
    assert path.read_text() == "last\n"
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("how", ["moved", "removed"])
def test_reopened_after_rotation(tmp_path, how):
    """A log file moved or removed (logrotate) is replaced by a new one at the
    next write; lines written before go to the old file."""
    clock = task.Clock()
    path = tmp_path / "access.log"
    log = BufferedLogFile(str(path), clock)
    log.write("before\n")
    clock.advance(1)
    if how == "moved":
        path.rename(tmp_path / "access.log.1")
    else:
        path.unlink()
    log.write("after\n")
    clock.advance(1)
    assert path.read_text() == "after\n"
    if how == "moved":
        assert (tmp_path / "access.log.1").read_text() == "before\n"
    log.close()


def test_combined_format_escapes_headers():
    """The combined log format: host, time, request line, status, bytes sent,
    referer and user agent quoted, with quotes, backslashes and control
    characters escaped; the host from the given function."""
    request = DummyRequest([b"simple", b"x", b""])
    request.method = b"GET"
    request.uri = b"/simple/x/?q=1"
    request.clientproto = b"HTTP/1.1"
    request.code = 200
    request.sentLength = 1234
    request.requestHeaders.setRawHeaders(b"referer", [b"http://r/"])
    request.requestHeaders.setRawHeaders(b"user-agent", [b'pip "x"\\y\x01'])
    line = combined_formatter(lambda r: "10.1.2.3")(
        "[02/Dec/2026:13:00:00 +0000]", request
    )
    assert line == (
        '10.1.2.3 - - [02/Dec/2026:13:00:00 +0000] "GET /simple/x/?q=1 HTTP/1.1" '
        '200 1234 "http://r/" "pip \\"x\\"\\\\y\\x01"'
    )
    request.sentLength = 0
    request.requestHeaders.removeHeader(b"referer")
    request.requestHeaders.removeHeader(b"user-agent")
    line = combined_formatter(lambda r: "")("[t]", request)
    assert line == '- - - [t] "GET /simple/x/?q=1 HTTP/1.1" 200 - "-" "-"'


@pytest_twisted.async_yield_fixture()
async def world(tmp_path):
    wheel = build_wheel(tmp_path / "dists", "logged", "1.0")
    w = await start_world(tmp_path, [wheel], timeout=5)
    w.wheel = wheel
    yield w
    await w.stop()


async def serve(world, access_log):
    """Serve the world's app with ``make_site``; return the listening port."""
    app = world.daemon.app
    site = make_site(
        app.resource(),
        limited_request_factory(1024**2),
        reactor,
        access_log=access_log,
        client_address=app.policy.client_address,
    )
    return await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)


def access_events():
    """Start collecting the text of twistd log events that carry access lines."""
    events = []

    def observer(event):
        text = formatEvent(event)
        if '"GET /' in text or '"HEAD /' in text:
            events.append(text)

    globalLogPublisher.addObserver(observer)
    return events, observer


async def test_access_log_file(world, tmp_path):
    """With --access-log, each request is one combined-format line in the file
    (written at the latest when the daemon stops), and none goes to twistd's log."""
    path = tmp_path / "access.log"
    events, observer = access_events()
    port = await serve(world, str(path))
    try:
        assert isinstance(port.factory, AccessLoggedSite)
        number = port.getHost().port
        headers = {"Referer": "http://example.invalid/", "User-Agent": "tester/1.0"}
        for target in ("/simple/logged/", "/simple/no-such-thing-here/", "/health"):
            await rawhttp.request(number, rawhttp.build("GET", target, headers))
        await rawhttp.request(number, rawhttp.build("HEAD", "/health"))
    finally:
        await port.stopListening()
        globalLogPublisher.removeObserver(observer)
    lines = path.read_text().splitlines()
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    assert [(m["request"], m["status"]) for m in matches] == [
        ("GET /simple/logged/ HTTP/1.1", "200"),
        ("GET /simple/no-such-thing-here/ HTTP/1.1", "404"),
        ("GET /health HTTP/1.1", "200"),
        ("HEAD /health HTTP/1.1", "200"),
    ]
    assert matches[0]["referer"] == "http://example.invalid/"
    assert matches[0]["agent"] == "tester/1.0"
    assert int(matches[0]["bytes"]) > 0 and matches[3]["bytes"] == "-"
    assert events == []


async def test_default_access_lines_go_to_twistd_log(world):
    """Without --access-log, each request's combined-format line goes to
    twistd's log (in batches: see the next test), and what is still gathered
    when the site stops is logged then."""
    events, observer = access_events()
    port = await serve(world, None)
    try:
        number = port.getHost().port
        headers = {"User-Agent": "tester/1.0"}
        for target in ("/simple/logged/", "/simple/no-such-thing-here/", "/health"):
            await rawhttp.request(number, rawhttp.build("GET", target, headers))
    finally:
        await port.stopListening()
        globalLogPublisher.removeObserver(observer)
    lines = [line for text in events for line in text.splitlines()]
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    assert [(m["request"], m["status"], m["agent"]) for m in matches] == [
        ("GET /simple/logged/ HTTP/1.1", "200", "tester/1.0"),
        ("GET /simple/no-such-thing-here/ HTTP/1.1", "404", "tester/1.0"),
        ("GET /health HTTP/1.1", "200", "tester/1.0"),
    ]


def test_access_lines_batched_into_one_event():
    """Access lines for twistd's log wait for the batch window (one timer per
    batch), then go out as one ``pypicache.web.accesslog`` info event whose
    text is the lines; a full batch goes at once; closing logs what is kept."""
    clock = task.Clock()
    published = []
    globalLogPublisher.addObserver(published.append)
    try:
        lines = AccessLines(clock, window=0.5, limit=3)
        lines.write("one\n")
        lines.write("two\n")
        assert published == [] and len(clock.getDelayedCalls()) == 1
        clock.advance(0.5)
        assert [formatEvent(e) for e in published] == ["one\ntwo"]
        assert published[0]["log_namespace"] == "pypicache.web.accesslog"
        assert published[0]["log_level"].name == "info"
        for n in range(4):
            lines.write(f"{n}\n")
        assert [formatEvent(e) for e in published[1:]] == ["0\n1\n2"]
        lines.close()
        assert [formatEvent(e) for e in published[2:]] == ["3"]
        assert clock.getDelayedCalls() == []
        lines.close()
        assert len(published) == 3
    finally:
        globalLogPublisher.removeObserver(published.append)


def test_access_log_option(tmp_path, monkeypatch):
    """--access-log is made absolute; a folder that does not exist, or a
    folder given as the file, is refused."""
    base = ["--cache", str(tmp_path / "c"), "--index-url", "http://127.0.0.1:1/simple/"]
    monkeypatch.chdir(tmp_path)
    options = Options()
    options.parseOptions([*base, "--access-log", "access.log"])
    assert options["access-log"] == os.path.join(str(tmp_path), "access.log")
    assert Options()["access-log"] is None
    for bad in (str(tmp_path / "missing" / "access.log"), str(tmp_path)):
        with pytest.raises(usage.UsageError, match="--access-log"):
            Options().parseOptions([*base, "--access-log", bad])
