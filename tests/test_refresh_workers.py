"""``POST /+refresh/<project>`` and ``DELETE /+cache/<project>`` reach every
worker of ``twistd pypicache --workers 2``, not only the one that answered.

Each worker keeps fresh pages in its memory and answers them without a
system call; the refresh marks the project in the cache folder's shared
marks (:mod:`pypicache.storage.marks`), which every worker reads before
answering from memory. The fake upstream's request log proves which worker
fetched the page again; a keep-alive connection pinned to each worker
(:meth:`tests.test_workers.Workers.pinned`) aims the requests.
"""

import json
from pathlib import Path

import pytest_twisted

from tests.packages import build_wheel
from tests.test_crash import eventually
from tests.test_workers import dists, workers  # noqa: F401 (fixtures)

PAGE = "/simple/trickle/"


@pytest_twisted.ensureDeferred
async def test_refresh_reaches_every_worker(workers, tmp_path: Path):  # noqa: F811
    """Both workers hold the page fresh in memory; a refresh answered by one
    makes the other fetch the page again on its next request (and show the
    version published meanwhile), and a refresh answered by the other makes
    the first fetch it again: one upstream request each time."""
    on = await workers.pinned()
    assert (await workers.request(on[1], "GET", PAGE))[0] == 200
    assert (await workers.request(on[2], "GET", PAGE))[0] == 200
    for n in (1, 2, 1, 2):
        assert (await workers.request(on[n], "GET", PAGE))[0] == 200
    assert workers.index.count(PAGE) == 1  # fresh: from memory or the disk

    newer = build_wheel(tmp_path / "newer", "trickle", "2.0")
    workers.index.add(newer)
    for answering, other, fetched in ((1, 2, 2), (2, 1, 3)):
        code, body = await workers.request(on[answering], "POST", "/+refresh/trickle")
        assert code == 200 and json.loads(body)["refreshed"] is True
        code, body = await workers.request(on[other], "GET", PAGE)
        assert code == 200 and newer.name.encode() in body
        assert workers.index.count(PAGE) == fetched
        # Fetched once: the worker that answered the refresh reads that page.
        await eventually(
            lambda: (workers.cache / "pages/trickle.json").exists(), "the page"
        )
        code, body = await workers.request(on[answering], "GET", PAGE)
        assert code == 200 and newer.name.encode() in body
        assert workers.index.count(PAGE) == fetched


@pytest_twisted.ensureDeferred
async def test_purge_reaches_every_worker(workers, dists):  # noqa: F811
    """After ``DELETE /+cache/`` answered by one worker, the other no longer
    lists nor serves the purged file: ``/local/`` is 404 there and the file
    is downloaded again."""
    on = await workers.pinned()
    name = dists["small"].name
    path = f"/packages/trickle/{name}"
    assert (await workers.request(on[1], "GET", path))[0] == 200
    # Its client completes once it is verified, a moment before it is stored.
    await eventually(lambda: (workers.cache / "mirror/trickle" / name).exists(), name)
    for n in (1, 2):
        code, body = await workers.request(on[n], "GET", "/local/trickle/")
        assert code == 200 and name.encode() in body
    code, body = await workers.request(on[1], "DELETE", "/+cache/trickle")
    assert code == 200 and json.loads(body)["removed"] == [name]
    assert (await workers.request(on[2], "GET", "/local/trickle/"))[0] == 404
    code, body = await workers.request(on[2], "GET", path)
    assert code == 200 and body == dists["small"].read_bytes()
    assert workers.index.downloads(name) == 2


def test_marks_are_seen_by_every_mapping(tmp_path: Path):
    """A mark made through one mapping of DIR/marks (one process) is seen by
    another's watcher: moved() until marked() has told which slot, once."""
    from twisted.python.filepath import FilePath

    from pypicache.storage.marks import Marks, slot_of

    root = FilePath(str(tmp_path))
    here, there = Marks(root), Marks(root)
    watch = there.watch()
    assert not watch.moved()
    here.mark("requests")
    assert watch.moved()
    assert watch.marked() == {slot_of("requests")}
    assert not watch.moved() and watch.marked() == frozenset()
    assert (tmp_path / "marks").stat().st_size == (4096 + 1) * 8
