"""A cold file's clients complete once it is verified, before it is stored.

The sync and rename of a downloaded file (the store's ``_persist``, in the
sync threads) is held here by a test double of ``run_sync`` to see what clients and
later requests get meanwhile, and what a failure of it leaves.
"""

import base64
import random
import threading

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from pypicache.errors import InsufficientStorage
from tests.daemon import LOCAL_JSON, start_world
from tests.packages import build_wheel


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """A small wheel (sent by the tail producer) and one of about 2 MB of
    random bytes (sent with ``sendfile`` as it is written)."""
    d = tmp_path_factory.mktemp("dists")
    blob = base64.b64encode(random.Random(9).randbytes(1_500_000)).decode()
    return {
        "small": build_wheel(d, "small", "1.0"),
        "large": build_wheel(d, "large", "1.0", module_body=f"BLOB = {blob!r}\n"),
    }


class HeldPersist:
    """``run_sync`` that parks the store's ``_persist`` until :meth:`release`,
    then runs it, or raises :attr:`failure` in its stead."""

    def __init__(self) -> None:
        self.arrived: Deferred[None] = Deferred()
        self.finished: Deferred[None] = Deferred()
        self._go = threading.Event()
        self.failure: Exception | None = None

    def __call__(self, f, *args):
        if f.__name__ != "_persist":
            return deferToThread(f, *args)

        def held(*args):
            reactor.callFromThread(_fire, self.arrived)
            self._go.wait(30)
            if self.failure is not None:
                raise self.failure
            return f(*args)

        d = deferToThread(held, *args)
        d.addBoth(lambda r: (_fire(self.finished), r)[1])
        return d

    def release(self, failure: Exception | None = None) -> None:
        self.failure = failure
        self._go.set()


def _fire(d: Deferred) -> None:
    """Fire ``d`` the first time only (a file may be persisted twice)."""
    if not d.called:
        d.callback(None)


async def until(check, what: str) -> None:
    """Poll ``check()`` until it is true; fail after 5 s."""
    for _ in range(250):
        if check():
            return
        await deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"timed out waiting until {what}")


@pytest.fixture(params=["small", "large"])
def which(request):
    return request.param


@pytest_twisted.async_yield_fixture
async def world(tmp_path, dists):
    held = HeldPersist()
    w = await start_world(tmp_path, list(dists.values()), "json", run_sync=held)
    w.held = held
    yield w
    held.release()
    await w.stop()


async def listed(world, project: str) -> str:
    """The daemon's ``/local/`` JSON page of ``project`` ('' if it has none)."""
    response = await world.daemon.get(
        f"local/{project}/", headers={"Accept": LOCAL_JSON}
    )
    text = await response.text()
    return text if response.code == 200 else ""


@pytest_twisted.ensureDeferred
async def test_client_completes_before_the_file_is_stored(world, dists, which):
    """A cold file's client gets its last byte and a complete response while
    the file is still being synced and renamed; the file is neither on disk
    under its name nor listed until that is done."""
    name = dists[which].name
    response = await world.daemon.get(f"packages/{which}/{name}")
    assert response.code == 200
    assert await response.content() == dists[which].read_bytes()
    assert not world.held.finished.called  # persist is still held
    assert name not in world.mirror_files(which)
    assert name not in await listed(world, which)
    world.held.release()
    await world.held.finished
    await world.stored(which, name)


@pytest_twisted.ensureDeferred
async def test_request_during_persist_gets_the_verified_bytes(world, dists, which):
    """A request for a file whose verified bytes are being stored joins that
    download: the whole file, once from upstream, no partial file."""
    name = dists[which].name
    first = await world.daemon.get(f"packages/{which}/{name}")
    assert await first.content() == dists[which].read_bytes()
    await world.held.arrived
    second = await world.daemon.get(f"packages/{which}/{name}")
    assert second.code == 200
    assert await second.content() == dists[which].read_bytes()
    assert world.index.count(f"/files/{name}") == 1
    world.held.release()
    await world.stored(which, name)
    third = await world.daemon.get(f"packages/{which}/{name}")
    assert await third.content() == dists[which].read_bytes()
    assert world.index.count(f"/files/{name}") == 1


@pytest_twisted.ensureDeferred
async def test_hash_mismatch_still_fails_the_client(world, dists, which):
    """Bytes that do not match the index's hash never complete a response,
    and are never stored (persist is not reached)."""
    name = dists[which].name
    world.index.corrupt(name)
    try:
        response = await world.daemon.get(f"packages/{which}/{name}")
        body = await response.content()
    except Exception:
        response = body = None
    assert body != dists[which].read_bytes()
    assert response is None or response.code != 200 or body is None
    mirror = world.daemon.app.mirror
    await until(lambda: mirror.in_flight(name) is None, "the slot is free")
    assert not world.held.arrived.called
    assert world.mirror_files(which) == []


@pytest_twisted.ensureDeferred
async def test_failed_persist_after_completion_leaves_nothing(world, dists, which):
    """If storing fails after the clients had the verified file (a full disk),
    nothing is on disk or listed, the in-flight slot is free, and the next
    request downloads the file again and stores it."""
    name = dists[which].name
    response = await world.daemon.get(f"packages/{which}/{name}")
    assert await response.content() == dists[which].read_bytes()
    mirror = world.daemon.app.mirror
    assert mirror.in_flight(name) is not None
    world.held.release(InsufficientStorage("no space left (test)"))
    await world.held.finished
    await until(lambda: mirror.in_flight(name) is None, "the slot is free")
    assert world.mirror_files(which) == []
    assert name not in await listed(world, which)
    world.held.failure = None
    again = await world.daemon.get(f"packages/{which}/{name}")
    assert await again.content() == dists[which].read_bytes()
    assert world.index.count(f"/files/{name}") == 2
    await world.stored(which, name)
