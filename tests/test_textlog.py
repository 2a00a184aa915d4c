"""twistd's text log written by :mod:`pypicache.tap.textlog`: the same lines
as Twisted's observer, batched on the reactor's thread, all written on stop."""

import io
import re
import threading
import time

import pytest_twisted
from twisted.internet.task import Clock
from twisted.logger import (
    LogLevel,
    LogPublisher,
    formatEventAsClassicLogText,
    formatTime,
    textFileLogObserver,
    timeFormatRFC3339,
)
from twisted.python.failure import Failure

from pypicache.tap.textlog import (
    FLUSH_DELAY,
    ClassicText,
    TextLog,
    TextLogService,
)
from tests.clients import clean_env
from tests.daemon import spawn_twistd
from tests.test_config import NO_UPSTREAM, started


def twisted_text(event):
    """What twistd's own observer writes for ``event``."""
    return formatEventAsClassicLogText(
        event, formatTime=lambda t: formatTime(t, timeFormatRFC3339)
    )


def events():
    now = time.time()
    try:
        1 / 0
    except ZeroDivisionError:
        failure = Failure()
    base = {"log_time": now, "log_level": LogLevel.info, "log_namespace": "ns"}
    return [
        {
            **base,
            "log_format": "Stored {filename} ({size} bytes, sha256 {digest})",
            "filename": "a-1-py3-none-any.whl",
            "size": 12,
            "digest": "ab" * 32,
        },
        {
            **base,
            "log_time": now + 0.999,
            "log_format": "two\nlines {x!r:>9}",
            "x": "q",
        },
        {**base, "log_format": "missing {y}"},
        {**base, "log_format": "call {y()}", "y": lambda: 5},
        {**base, "log_format": "{}"},
        {**base, "log_format": "{a.real} {b[0]}", "a": 1, "b": [2]},
        {**base, "log_format": ""},
        {**base, "log_format": "no namespace {a}", "a": 1, "log_namespace": None},
        {**base, "log_format": "legacy {a}", "a": 1, "log_system": "HTTPChannel,0"},
        {**base, "log_format": "failed {a}", "a": 1, "log_failure": failure},
        {**base, "log_format": b"bytes {a}", "a": 1},
        {**base, "log_format": "no time", "log_time": None},
        {**base, "log_format": "{a:{w}}", "a": 1, "w": 4},
        {"log_format": "no level", "log_time": now},
        {**base, "log_text": "no format", "log_format": None},
    ]


def test_lines_are_twisteds():
    """Every line :class:`ClassicText` makes is the one Twisted's text
    observer makes: plain formats (pypicache's own), tracebacks, calls in
    formats, unformattable events, legacy systems, no time, no level."""
    text = ClassicText()
    for event in events():
        assert text(dict(event)) == twisted_text(dict(event)), event


def test_time_is_formatted_once_per_second():
    """The time stamp is made once per second of the events' times, and
    stays right across seconds."""
    text = ClassicText()
    start = float(int(time.time()))
    for when in (start, start + 0.5, start + 1.0, start + 0.2, start + 61.7):
        event = {"log_time": when, "log_level": LogLevel.info, "log_format": "x"}
        assert text(dict(event)) == twisted_text(dict(event))


class FakeReactor(Clock):
    running = True


def test_reactor_lines_are_written_together_later():
    """Lines logged on the reactor's thread wait for one write, at most
    FLUSH_DELAY later; a line logged in another thread is written at once,
    after those waiting; once the reactor stops, lines go at once."""
    out = io.StringIO()
    reactor = FakeReactor()
    log = TextLog(out, reactor, None)
    event = {"log_time": time.time(), "log_level": LogLevel.info, "log_namespace": "n"}
    log({**event, "log_format": "one"})
    log({**event, "log_format": "two"})
    assert out.getvalue() == ""
    reactor.advance(FLUSH_DELAY)
    assert re.findall(r"\] (\w+)\n", out.getvalue()) == ["one", "two"]
    log({**event, "log_format": "three"})
    thread = threading.Thread(target=log, args=({**event, "log_format": "four"},))
    thread.start()
    thread.join()
    assert re.findall(r"\] (\w+)\n", out.getvalue()) == ["one", "two", "three", "four"]
    reactor.running = False
    log({**event, "log_format": "five"})
    assert out.getvalue().endswith("] five\n")


def test_service_takes_twistds_place_and_gives_it_back():
    """The service puts its observer in place of twistd's text observer (only
    that one), writing to twistd's file; stopping writes what waits and puts
    twistd's back."""
    out = io.BytesIO()
    other = []
    publisher = LogPublisher()
    twistds = textFileLogObserver(out)
    publisher.addObserver(other.append)
    publisher.addObserver(twistds)
    reactor = FakeReactor()
    logs = TextLogService(reactor, publisher)
    logs.startService()
    assert publisher._observers[0] == other.append
    assert isinstance(publisher._observers[1], TextLog)
    event = {"log_time": time.time(), "log_level": LogLevel.info, "log_namespace": "n"}
    publisher({**event, "log_format": "waiting {n}", "n": 1})
    assert out.getvalue() == b"" and len(other) == 1
    logs.stopService()
    assert (
        out.getvalue()
        == twisted_text({**event, "log_format": "waiting {n}", "n": 1}).encode()
    )
    assert publisher._observers == [other.append, twistds]


def test_other_observers_are_left_alone():
    """Without twistd's text observer (a worker, a test's own) nothing changes."""
    publisher = LogPublisher()
    mine = textFileLogObserver(io.StringIO(), timeFormat=None)
    publisher.addObserver(mine)
    logs = TextLogService(FakeReactor(), publisher)
    logs.startService()
    assert publisher._observers == [mine]
    logs.stopService()
    assert publisher._observers == [mine]


@pytest_twisted.ensureDeferred
async def test_twistd_log_is_whole_after_sigterm(tmp_path):
    """A real ``twistd -n pypicache`` stopped with SIGTERM: its log has every
    line, from the start to "Server Shut Down.", each in Twisted's form, the
    request's access line among them."""
    twistd = spawn_twistd(tmp_path, NO_UPSTREAM, clean_env(tmp_path))
    client = None
    try:
        client = await started(twistd)
        await client.get("simple/", headers={"User-Agent": "probe"})
    finally:
        if client is not None:
            await client.close()
        await twistd.stop()
    lines = twistd.output.decode().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[[^\]]+\] "
    assert all(re.match(stamp, line) or line.startswith("\t") for line in lines), lines
    text = "\n".join(lines)
    assert '"GET /simple/ HTTP/1.1" 200' in text
    for said in ("Site starting on", "Received SIGTERM", "Main loop terminated."):
        assert said in text, text
    assert lines[-1].endswith("Server Shut Down.")
