"""A page is looked up once per turn of the reactor (session 10).

In the first part of a split turn (:mod:`pypicache.web.turns`) the fast lane
answers every request for the same page (same ``Accept`` and
``Accept-Encoding``) with the body found for the first one
(:meth:`~pypicache.web.routes.readyanswers.ReadyAnswers.page_ready`); the
next turn looks again. These tests run the daemon of ``tests/test_fastlane``
on the test reactor with split turns and real sockets, and check that the
answers are still those twisted.web gives, that the per-request checks
(``If-None-Match``, ``HEAD``, ``Accept``) still apply within one turn, and
that a change is seen by the next turn.
"""

import socket
import time

import pytest
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.threads import deferToThread

from pypicache.tap import Options
from pypicache.tap.service import serving
from pypicache.web.turns import Turns
from tests.packages import build_wheel
from tests.test_fastlane import (  # noqa: F401 (fixtures)
    JSON,
    dists,
    etag_of,
    lanes,
    read_all,
    request,
)
from tests.webclient import put


@pytest.fixture()
def turned(lanes):  # noqa: F811
    """The daemon of ``lanes`` with split turns, pages looked up once per turn
    (as ``tap/service.py`` wires them); its page lookups are counted in
    ``turned.lookups``."""
    turns = Turns(reactor)
    assert turns.install()
    site = lanes.daemon.port.factory
    installer = lanes.daemon.app.installer
    site.turns = turns
    installer.turns = turns
    lanes.lookups = []
    look = installer._page_now

    def counted(asked):
        lanes.lookups.append(asked)
        return look(asked)

    installer._page_now = counted
    yield lanes
    del installer._page_now
    installer.turns = None
    site.turns = None
    turns.uninstall()


async def _in_one_turn(port, requests):
    """Send each of ``requests`` on its own connection while the reactor is
    held, so that one turn finds them all; return the answers, in order."""
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in requests]
    try:
        await deferLater(reactor, 0.1, lambda: None)  # all accepted

        def hold():
            for s, data in zip(sockets, requests):
                s.sendall(data)
            time.sleep(0.2)

        reactor.callLater(0, hold)
        return await deferToThread(lambda: [read_all(s) for s in sockets])
    finally:
        for s in sockets:
            s.close()


async def test_same_page_in_one_turn_looked_up_once(turned):
    """Five clients asking for the same page in one turn: one lookup per
    form asked for (HTML, JSON gzip), and every answer byte for byte the
    one twisted.web gives, a ``HEAD`` without body and an ``If-None-Match``
    of the page's tag a 304, as when asked alone."""
    page = "/simple/lane-thing/"
    zipped = {"Accept": JSON, "Accept-Encoding": "gzip"}
    plain = await turned.same(request("GET", page, close=True))
    asked = [
        request("GET", page, close=True),
        request("GET", page, close=True),
        request("HEAD", page, close=True),
        request("GET", page, {"If-None-Match": etag_of(plain)}, close=True),
        request("GET", page, zipped, close=True),
    ]
    alone = [await turned.same(data) for data in asked]
    turned.lookups.clear()
    answers = await _in_one_turn(turned.fast, asked)
    assert answers == alone
    assert answers[3].startswith(b"HTTP/1.1 304 ")
    assert b"\r\n\r\n" == answers[2][-4:]  # HEAD: no body
    assert sorted(turned.lookups, key=repr) == [
        ("simple", "lane-thing", None, None),
        ("simple", "lane-thing", JSON.encode(), b"gzip"),
    ]
    assert turned.calls == []  # all from the lane


async def test_next_turn_looks_again(turned, tmp_path):
    """A file uploaded to a private project is on its page at the next
    request, turns split and pages kept per turn: the page is looked up
    again in each turn, and answers as twisted.web does."""
    page = request("GET", "/simple/secret-lane/", close=True)
    before = await turned.same(page)
    assert b"secret_lane-1.0-" in before
    turned.lookups.clear()
    await turned.same(page)
    assert len(turned.lookups) == 1
    assert (
        await put(turned.daemon, build_wheel(tmp_path, "secret-lane", "2.0"))
    ).code == 201
    after = await turned.same(page)
    assert b"secret_lane-2.0-" in after
    assert len(turned.lookups) == 2


async def test_lookup_per_turn_and_outside_split_turns(turned):
    """``page_ready`` itself: the same body (one lookup) within the first part
    of one turn, a new lookup once the next turn's poll returned, and a
    lookup per call outside the first part of a turn (``now``) or without
    turns."""
    installer = turned.daemon.app.installer

    class Turn:
        polls = 7
        now = False

    installer.turns = Turn()
    ask = ("simple", "lane-thing", None, b"gzip")
    first = installer.page_ready(*ask)
    assert first is not None and installer.page_ready(*ask) is first
    assert len(turned.lookups) == 1
    Turn.polls = 8
    installer.page_ready(*ask)
    assert len(turned.lookups) == 2
    Turn.now = True
    installer.page_ready(*ask)
    installer.page_ready(*ask)
    assert len(turned.lookups) == 4
    installer.turns = None
    installer.page_ready(*ask)
    assert len(turned.lookups) == 5


def test_daemon_gives_its_pages_the_turns(tmp_path):
    """The site ``twistd pypicache`` serves (``tap.service.serving``) gives
    the installer routes of its fast lane the reactor's ``Turns``: its
    pages are looked up once per turn."""
    options = Options()
    options.parseOptions(
        ["--cache", str(tmp_path / "c"), "--index-url", "http://127.0.0.1:9/simple/"]
    )
    _, site = serving(options, MemoryReactorClock())
    assert site.turns is not None
    assert site.ready._installer.turns is site.turns
