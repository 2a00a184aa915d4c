"""The storage contract of the team's state (:class:`IState`): what every
store must do with the small shared documents (local yanks, statuses,
withdrawals, tokens). The same stores as ``tests/test_store_contract.py``
(its ``store`` fixture and :data:`FACTORIES`), the interface only."""

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater
from zope.interface.verify import verifyObject

from pypicache.errors import PypicacheError
from pypicache.storage.shared import SharedDoc, SharedDocs
from pypicache.storage.state import UNCHANGED, IState, StateDoc
from tests.test_store_contract import FACTORIES, store  # noqa: F401

NAME = "local-yanks.json"


def test_provides_istate(store):  # noqa: F811
    """The store provides every method and attribute of IState."""
    assert verifyObject(IState, store)
    assert store.state_max_age <= 2.0


@pytest_twisted.ensureDeferred
async def test_create_read_revalidate_change(store):  # noqa: F811
    """A document not there reads as empty, untagged; a change creates it;
    a read with its tag answers UNCHANGED until it changes again; a change
    that changes nothing writes nothing; an emptied document reads empty."""
    assert await store.read_state(NAME) == StateDoc({}, None)
    written = await store.change_state(NAME, lambda d: {**d, "a": 1})
    assert written.data == {"a": 1} and written.tag is not None
    read = await store.read_state(NAME)
    assert read == written
    assert await store.read_state(NAME, read.tag) == UNCHANGED
    same = await store.change_state(NAME, lambda d: None)
    assert same == written
    assert await store.change_state(NAME, lambda d: dict(d)) == written
    again = await store.change_state(NAME, lambda d: {**d, "b": 2})
    assert again.tag != read.tag
    assert (await store.read_state(NAME, read.tag)).data == {"a": 1, "b": 2}
    await store.change_state(NAME, lambda d: {})
    assert (await store.read_state(NAME)).data == {}


@pytest_twisted.ensureDeferred
async def test_documents_are_apart(store):  # noqa: F811
    """Documents of other names (one per project in a folder) are apart, and
    a folder's are listed."""
    await store.change_state("withdrawn/foo.json", lambda d: {"files": {"x": 1}})
    await store.change_state("withdrawn/bar.json", lambda d: {"files": {"y": 2}})
    assert (await store.read_state("withdrawn/foo.json")).data == {"files": {"x": 1}}
    assert (await store.read_state("withdrawn/bar.json")).data == {"files": {"y": 2}}
    assert (await store.read_state("tokens.json")).data == {}
    assert await store.state_names("withdrawn") == ["bar", "foo"]
    assert await store.state_names("private/status") == []


@pytest_twisted.ensureDeferred
async def test_bad_names_are_refused(store):  # noqa: F811
    """A name that is not a relative lower-case path ending .json is refused
    (nothing is ever named after unchecked input)."""
    for bad in ("../x.json", "/x.json", "x.txt", "a/../b.json", ".x.json", "X.json"):
        with pytest.raises(ValueError):
            await store.change_state(bad, lambda d: {"a": 1})
        with pytest.raises(ValueError):
            await store.read_state(bad)


@pytest_twisted.ensureDeferred
async def test_a_failing_change_changes_nothing(store):  # noqa: F811
    """An exception raised by the change stops it: the document stays."""
    await store.change_state(NAME, lambda d: {"a": 1})

    def refuse(d):
        raise PypicacheError("no")

    with pytest.raises(PypicacheError):
        await store.change_state(NAME, refuse)
    assert (await store.read_state(NAME)).data == {"a": 1}


@pytest_twisted.ensureDeferred
async def test_concurrent_changes_through_two_stores_all_land(
    store, tmp_path, request  # noqa: F811
):
    """Changes made at once through two stores on one backing (two daemons on
    one bucket, two processes on one folder) all land: none overwrites
    another (a lock on disk, conditional writes on S3)."""
    kind = request.node.callspec.params["store"]
    other = await FACTORIES[kind](tmp_path, request)

    def add(key):
        return lambda d: {**d, key: True}

    await gatherResults(
        [
            s.change_state(NAME, add(f"{i}-{n}"))
            for i, s in enumerate((store, other))
            for n in range(6)
        ]
    )
    data = (await store.read_state(NAME)).data
    assert sorted(data) == sorted(f"{i}-{n}" for i in range(2) for n in range(6))


@pytest_twisted.ensureDeferred
async def test_views_follow_another_store_within_max_age(
    store, tmp_path, request  # noqa: F811
):
    """A view (SharedDoc) shows a change made through this store at once,
    and one made through another store on the same backing once it has
    waited for :meth:`ready` after ``state_max_age``: the bounded delay."""
    kind = request.node.callspec.params["store"]
    other = await FACTORIES[kind](tmp_path, request)
    here = SharedDoc(store, NAME)
    assert here.ready() is None or (await here.ready()) is None
    assert here.data == {}
    await here.change(lambda d: {"mine": 1})
    assert here.data == {"mine": 1} and here.ready() is None
    turn = here.turn
    await other.change_state(NAME, lambda d: {**d, "theirs": 2})
    await deferLater(reactor, store.state_max_age)
    waiting = here.ready()
    assert waiting is not None or kind == "filesystem"
    if waiting is not None:
        await waiting
    assert here.data == {"mine": 1, "theirs": 2} and here.turn != turn

    docs = SharedDocs(store, "private/status", reactor)
    await docs.put("app", {"status": "archived"})
    assert docs.get("app") == {"status": "archived"}
    assert (await other.read_state("private/status/app.json")).data == {
        "status": "archived"
    }


@pytest_twisted.ensureDeferred
async def test_first_seen_times_shared_the_earliest_wins(
    store, tmp_path, request  # noqa: F811
):
    """The cooldown's first-seen times go through the store: a file seen
    through one store is seen through another (on the same backing) at the
    time it was first seen there, and the earliest time wins when both saw
    it."""
    from twisted.internet.task import Clock

    from pypicache.proxy.firstseen import FirstSeen

    kind = request.node.callspec.params["store"]
    other = await FACTORIES[kind](tmp_path, request)
    early, late = Clock(), Clock()
    early.advance(1000)
    late.advance(2000)
    here, there = FirstSeen(store, early), FirstSeen(other, late)
    assert here.see("app", ["app-1.0.tar.gz"]) == {"app-1.0.tar.gz": 1000}
    await deferLater(reactor, store.state_max_age + 0.3)
    waiting = there.ready("app")
    if waiting is not None:
        await waiting
    assert there.get("app", "app-1.0.tar.gz") == 1000
    here.see("app", ["app-2.0.tar.gz"])
    await deferLater(reactor, 0.3)
    # There's view may predate that (on S3, for up to state_max_age): it
    # sees the file later, but the earlier time stays.
    there.see("app", ["app-2.0.tar.gz"])
    await deferLater(reactor, store.state_max_age + 0.5)
    for each in (here, there):
        waiting = each.ready("app")
        if waiting is not None:
            await waiting
    assert here.get("app", "app-2.0.tar.gz") == there.get("app", "app-2.0.tar.gz")
    assert (await store.read_state("first-seen/app.json")).data == {
        "app-1.0.tar.gz": 1000,
        "app-2.0.tar.gz": 1000,
    }
