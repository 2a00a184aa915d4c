"""The reactor's split turns: the clients' reads first, costly work within a budget.

A turn of :class:`pypicache.web.turns.Turns` handles the events of the
connections clients made to us first (the fast lane answers cached reads as it
reads them, and queues the requests it leaves to twisted.web), then the events
of the connections we made (the upstream's) and the queued requests, until
the budget is spent. Unit tests drive a turn with a fake poller and clock; the
others split the test reactor's own turns under a daemon on loopback.
"""

import socket
import time
from collections import OrderedDict

import pytest
from twisted.internet import reactor, tcp
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from pypicache.web import coldlane, ready
from pypicache.web.turns import Turns
from tests.test_fastlane import (  # noqa: F401 (fixtures)
    _talk,
    dists,
    lanes,
    read_all,
    request,
)
from tests.webclient import put


class FakeClient(tcp.BaseClient):
    """A connection we made (as the upstream's), without a socket."""

    def __init__(self, name):
        self.name = name


class FakeServer:
    """A client's connection to us."""

    def __init__(self, name):
        self.name = name


class FakeReactor:
    """What :class:`Turns` uses of an epoll reactor; each handled event
    takes ``cost`` seconds of the fake clock."""

    def __init__(self, events, cost):
        self.now = 0.0
        self.cost = cost
        self.done = []
        self.timeouts = []
        self._selectables = {fd: s for fd, s in events}
        events = [(fd, 1) for fd, _ in events]
        reactor = self

        class Poller:
            def poll(self, timeout, most):
                reactor.timeouts.append(timeout)
                return events

        self._poller = Poller()

    def _doReadOrWrite(self, selectable, fd, event):
        self.done.append(selectable.name)
        self.now += self.cost


def test_clients_first_then_costly_work_within_the_budget():
    """The clients' events run first, whatever the poll's order; then the
    upstream's, the threads' results and the queued requests, each oldest
    first, until the budget is spent (at least one of each kind); what is
    left waits for the next turn, whose poll does not wait while work is
    queued."""
    events = [
        (3, FakeClient("up-a")),
        (4, FakeServer("client-a")),
        (5, FakeClient("up-b")),
        (6, FakeServer("client-b")),
    ]
    fake = FakeReactor(events, cost=0.004)
    turns = Turns(fake, budget=0.010, clock=lambda: fake.now)
    assert turns.install()
    assert turns.now is False

    def work(name):
        def run():
            fake.done.append(name)
            fake.now += 0.004

        return run

    for name in ("queued-1", "queued-2", "queued-3"):
        turns.later(work(name))
    turns.finish(work("result-1"))
    assert turns.waiting == 4
    fake.doIteration(None)
    # 4 ms each: up-a, up-b (8 ms), one result (12 ms: over), one request.
    assert fake.done == [
        "client-a",
        "client-b",
        "up-a",
        "up-b",
        "result-1",
        "queued-1",
    ]
    assert turns.waiting == 2 and fake.timeouts == [0]
    fake.done.clear()
    fake.doIteration(None)
    assert fake.done == ["client-a", "client-b", "up-a", "up-b", "queued-2"]
    turns.budget = 0.001
    fake.done.clear()
    fake.doIteration(None)
    # Over budget after the first upstream event: still one queued request.
    assert fake.done == ["client-a", "client-b", "up-a", "queued-3"]
    assert turns.waiting == 0
    fake.doIteration(None)
    assert fake.timeouts[-1] == -1  # nothing queued: the poll may wait
    turns.uninstall()
    assert "doIteration" not in fake.__dict__


def test_client_connections_read_without_a_log_context(monkeypatch):
    """A client's connection (``tcp.Server``) is read without
    ``callWithLogger`` (session 9: its log context cost a tenth of a cached
    answer's CPU); other selectables still go through it, and what a
    client's read raises is logged with the connection's prefix, the turn
    going on."""
    from twisted.python import log as legacy_log

    class Server(tcp.Server):
        def __init__(self, name):
            self.name = name
            self.logstr = "HTTPChannel," + name

    wrapped, logged = [], []
    real = legacy_log.callWithLogger

    def counted(logger, func, *args):
        wrapped.append(logger.name)
        return real(logger, func, *args)

    monkeypatch.setattr(legacy_log, "callWithLogger", counted)
    monkeypatch.setattr(legacy_log, "err", lambda *a, **kw: logged.append(kw))
    waker = FakeServer("waker")
    waker.logPrefix = lambda: "waker"
    events = [(3, Server("a")), (4, waker), (5, Server("b"))]
    fake = FakeReactor(events, cost=0)
    plain = fake._doReadOrWrite

    def handle(selectable, fd, event):
        plain(selectable, fd, event)
        if selectable.name == "a":
            raise RuntimeError("boom")

    fake._doReadOrWrite = handle
    turns = Turns(fake)
    assert turns.install()
    fake.doIteration(None)
    assert fake.done == ["a", "waker", "b"]
    assert wrapped == ["waker"]
    assert logged == [{"system": "HTTPChannel,a"}]


def test_queued_work_runs_at_once_outside_a_split_turn():
    """Work queued while the turns are not split runs at once; uninstalling
    runs what was queued, and a reactor without an epoll poller is left alone."""
    done = []
    fake = FakeReactor([], cost=0)
    turns = Turns(fake)
    turns.later(lambda: done.append(1))
    assert done == [1]
    turns.install()
    turns.later(lambda: done.append(2))
    assert done == [1]
    turns.uninstall()
    assert done == [1, 2]
    assert Turns(object()).install() is False


@pytest.fixture()
def split(lanes):  # noqa: F811
    """The daemon of ``lanes`` on the test reactor with split turns."""
    turns = Turns(reactor)
    assert turns.install()
    lanes.daemon.port.factory.turns = turns
    yield lanes
    lanes.daemon.port.factory.turns = None
    turns.uninstall()


async def test_answers_alike_with_split_turns(split, dists):  # noqa: F811
    """With split turns, pipelined requests mixing lane and twisted.web answers,
    requests split across segments, a body and an upload answer as without the
    fast lane, in order."""
    wheel = f"/packages/lane-thing/{dists['wheel'].name}"
    mixed = (
        request("GET", "/simple/lane-thing/")
        + request("GET", "/packages/other-thing/x-1.0-py3-none-any.whl")
        + request("HEAD", wheel)
        + request("GET", "/simple/Lane.Thing/")
        + request("GET", "/simple/lane-thing/", {"Content-Length": "2"})
        + b"xx"
        + request("GET", wheel + ".metadata")
        + request("GET", "/local/lane-thing/", close=True)
    )
    answer = await split.same(mixed)
    assert answer.count(b"HTTP/1.1 ") == 7
    await split.same(*(mixed[i : i + 50] for i in range(0, len(mixed), 50)), pause=0.01)
    assert (await put(split.daemon, dists["wheel2"])).code in (201, 409)


def _two_at_once(port, first, second):
    """Send ``first`` then ``second`` on two connections; both answers."""
    with socket.create_connection(("127.0.0.1", port)) as a, socket.create_connection(
        ("127.0.0.1", port)
    ) as b:
        a.sendall(first)
        b.sendall(second)
        return read_all(a), read_all(b)


async def _order_in_one_turn(split, first, second):
    """Send ``first`` and ``second`` on two connections so that the same turn
    finds both ready (the reactor is held while they are sent); return both
    answers and the order of what happened: ``("answered", uri)`` as the
    site logs an answer, ``("twisted.web", uri)`` as twisted.web renders (the
    guard, or a cold read's route below Klein)."""
    site = split.daemon.port.factory
    order = []
    log = site.log
    site.log = lambda request: order.append(("answered", request.uri)) or log(request)
    render = site.resource.render

    def rendered(request):
        order.append(("twisted.web", request.uri))
        return render(request)

    site.resource.render = rendered
    # A cold installer read renders its route below Klein (web/coldlane).
    cold_render = coldlane.ColdCall.render

    def cold_rendered(call, request):
        order.append(("twisted.web", request.uri))
        return cold_render(call, request)

    coldlane.ColdCall.render = cold_rendered
    try:
        a = socket.create_connection(("127.0.0.1", split.fast))
        b = socket.create_connection(("127.0.0.1", split.fast))
        await deferLater(reactor, 0.1, lambda: None)  # both accepted

        def hold():
            a.sendall(first)
            b.sendall(second)
            time.sleep(0.2)

        reactor.callLater(0, hold)
        answers = await deferToThread(lambda: (read_all(a), read_all(b)))
        a.close()
        b.close()
    finally:
        del site.log
        del site.resource.render
        coldlane.ColdCall.render = cold_render
    return answers, order


async def test_cached_read_answered_before_costly_request_of_its_turn(split):
    """Two requests ready in the same turn, a costly one (a page twisted.web
    answers) arrived first and a cached page: the cached page is answered
    (logged) before the costly request reaches twisted.web."""
    answers, order = await _order_in_one_turn(
        split,
        request("GET", "/simple/Lane.Thing/", close=True),
        request("GET", "/simple/lane-thing/", close=True),
    )
    assert answers[0].startswith(b"HTTP/1.1 301 ")
    assert answers[1].startswith(b"HTTP/1.1 200 ")
    assert order[:2] == [
        ("answered", b"/simple/lane-thing/"),
        ("twisted.web", b"/simple/Lane.Thing/"),
    ]


async def test_stored_file_too_large_for_the_lane_does_not_wait(
    split, dists, monkeypatch  # noqa: F811
):
    """A stored file the lane leaves to twisted.web because it is too large
    to keep in memory (here: anything over 10 bytes) is a cheap read too: it
    goes to twisted.web in the clients' part of the turn, before a costly
    request that arrived first."""
    monkeypatch.setattr(ready, "FIRST_CHUNK", 10)
    monkeypatch.setattr(ready, "_FILES", OrderedDict())
    wheel = f"/packages/lane-thing/{dists['wheel'].name}".encode()
    answers, order = await _order_in_one_turn(
        split,
        request("GET", "/simple/Lane.Thing/", close=True),
        request("GET", wheel.decode(), close=True),
    )
    assert answers[1].startswith(b"HTTP/1.1 200 ")
    assert order[0] == ("twisted.web", wheel)
    assert ("twisted.web", b"/simple/Lane.Thing/") in order[1:]


async def test_lost_while_waiting(split):
    """A connection that closes while its request waits for its turn is
    dropped quietly; the daemon goes on answering."""
    s = socket.create_connection(("127.0.0.1", split.fast))
    s.sendall(request("GET", "/simple/Lane.Thing/"))
    s.close()
    await deferLater(reactor, 0.1, lambda: None)
    answer = await deferToThread(
        _talk, split.fast, [request("GET", "/simple/lane-thing/", close=True)], 0
    )
    assert answer.startswith(b"HTTP/1.1 200 ")


async def test_thread_results_go_through_deliver():
    """A thread pool given ``deliver`` hands it the call that fires a result's
    Deferred (or its failure's), on the reactor thread, instead of firing it
    there and then: the split turns run it with the costly work."""
    from pypicache.concurrency import ThreadPoolService

    handed = []
    threads = ThreadPoolService(reactor, 1, "turns-test", deliver=handed.append)
    threads.startService()
    try:
        ok = threads(lambda: 42)
        bad = threads(lambda: 1 / 0)
        for _ in range(200):
            if len(handed) == 2:
                break
            await deferLater(reactor, 0.01, lambda: None)
        assert len(handed) == 2 and not ok.called and not bad.called
        for fire in handed:
            fire()
        assert await ok == 42
        with pytest.raises(ZeroDivisionError):
            await bad
    finally:
        threads.stopService()


async def test_kept_request_is_looked_at_once(split):
    """A request kept for the costly part of the turn goes to twisted.web when
    its turn comes without the lane looking it up again (a cold page's look-up
    costs file-system calls)."""
    answers = split.daemon.port.factory.ready
    looked = []
    answer = answers.answer

    def counted(head):
        looked.append(head.uri)
        return answer(head)

    answers.answer = counted
    try:
        reply = await deferToThread(
            _talk, split.fast, [request("GET", "/simple/Lane.Thing/", close=True)], 0
        )
    finally:
        del answers.answer
    assert reply.startswith(b"HTTP/1.1 301 ")
    assert looked == [b"/simple/Lane.Thing/"]
