"""A cold file's reactor work, done once (docs/benchmark.rst, "Session 11, a
cold wheel's reactor time"): the route does not look again for what its
``_now`` look-up found missing in the same step, nor asks the rules again
when the page they judged by is fresh; a download's tail sends a file that
arrived whole in one write, once verified; temporary files' folders are made
as needed; ``full_disk_is_507`` still turns a full disk into a 507."""

import errno
from typing import Any

import pytest
from twisted.python.filepath import FilePath
from twisted.web.test.requesthelper import DummyRequest

from pypicache.errors import InsufficientStorage
from pypicache.index.model import DistFile
from pypicache.proxy.rules import Rules
from pypicache.proxy.views import Views
from pypicache.storage.atomic import TempFile, full_disk_is_507
from pypicache.storage.growing import Download
from pypicache.storage.records import MIRROR
from pypicache.web.files import _Tail
from tests.daemon import start_world
from tests.packages import build_wheel
from tests.test_rules import HideVersion


@pytest.fixture
def dists(tmp_path):
    d = tmp_path / "dists"
    d.mkdir()
    return [build_wheel(d, "cold", v) for v in ("1.0", "2.0", "3.0")]


def _counted(monkeypatch: Any, cls: Any, name: str) -> list[tuple[Any, ...]]:
    """Record the calls of ``cls.name`` (the method still runs)."""
    calls: list[tuple[Any, ...]] = []
    original = getattr(cls, name)

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, counting)
    return calls


async def test_cold_file_and_metadata_are_not_looked_up_twice(
    tmp_path, dists, monkeypatch
):
    """With rules that may refuse files and the project's page fresh, a cold
    wheel's route asks neither ``Views.find`` nor ``Views.check_upstream``
    (its ``_now`` look-up answered both), a cold ``.metadata``'s neither
    ``Views.check`` nor ``check_upstream``, nor ``Mirror.metadata`` the store
    again; both are served from upstream once, and a file the rules refuse
    still answers 404."""
    world = await start_world(tmp_path, dists, rules=Rules((HideVersion("-3.0-"),)))
    try:
        d = world.daemon
        assert (await d.get("simple/cold/")).code == 200  # fresh from now on
        find = _counted(monkeypatch, Views, "find")
        check = _counted(monkeypatch, Views, "check")
        upstream = _counted(monkeypatch, Views, "check_upstream")
        opened = _counted(monkeypatch, type(world.daemon.app.store), "open_metadata")
        wheel = dists[0]
        answer = await d.get(f"packages/cold/{wheel.name}")
        assert answer.code == 200
        assert await answer.content() == wheel.read_bytes()
        assert (find, upstream) == ([], [])
        metadata = await d.get(f"packages/cold/{dists[1].name}.metadata")
        assert metadata.code == 200
        assert b"Name: cold" in await metadata.content()
        assert (check, upstream) == ([], [])
        # The lane's look-up and the route's, then once under the lock.
        assert opened.count(("cold", dists[1].name)) == 3
        refused = await d.get(f"packages/cold/{dists[2].name}")
        assert refused.code == 404
        assert "held back by a test rule" in await refused.text()
        assert world.file_requests() == [
            f"/files/{wheel.name}",
            f"/files/{dists[1].name}.metadata",
        ]
        await world.stored("cold", wheel.name)
    finally:
        await world.stop()


async def test_a_stale_page_still_judges_a_cold_file_again(
    tmp_path, dists, monkeypatch
):
    """When the page the rules judged a cold file by is not fresh, the route
    asks ``Views.check_upstream`` as before (the page fetched again judges)."""
    world = await start_world(
        tmp_path, dists, rules=Rules((HideVersion("-3.0-"),)), page_ttl=0
    )
    try:
        d = world.daemon
        assert (await d.get("simple/cold/")).code == 200
        upstream = _counted(monkeypatch, Views, "check_upstream")
        answer = await d.get(f"packages/cold/{dists[0].name}")
        assert answer.code == 200
        assert await answer.content() == dists[0].read_bytes()
        assert upstream == [("cold", dists[0].name)]
        await world.stored("cold", dists[0].name)
    finally:
        await world.stop()


class _Request(DummyRequest):
    """A ``DummyRequest`` that takes a push producer as twisted.web does
    (its own calls a producer's ``resumeProducing`` in a loop)."""

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None


def _download(tmp_path: Any, body: bytes) -> Download:
    temp = TempFile(FilePath(str(tmp_path)).child("mirror").child("x"), "x", MIRROR)
    info = DistFile("x-1.0-py3-none-any.whl", size=len(body))
    download = Download("x", info, temp, length=len(body))
    temp.write(body)
    download.written = len(body)
    return download


def test_a_whole_unverified_download_is_sent_once_verified(tmp_path):
    """A client tailing a download whose every byte is written but not yet
    verified gets nothing until the verification, then the whole body in
    one write and the end of its response."""
    download = _download(tmp_path, b"0123456789")
    request = _Request([b""])
    _Tail(request, download)
    assert request.written == [] and request.finished == 0
    download.verify()
    assert request.written == [b"0123456789"]
    assert request.finished == 1


def test_a_partial_download_streams_all_but_its_last_byte(tmp_path):
    """Until its last byte is written, a download's tail sends what is
    written but the last byte, as it comes."""
    download = _download(tmp_path, b"0123456789")
    download.written = 6
    request = _Request([b""])
    _Tail(request, download)
    assert request.written == [b"01234"]
    download.written = 10
    download._notify()
    assert request.written == [b"01234"]  # whole now: held for the check
    download.verify()
    assert request.written == [b"01234", b"56789"]
    assert request.finished == 1


def test_temporary_files_make_their_folders(tmp_path):
    """A temporary file is made in its folder whether it exists, is missing,
    or its parent is missing too."""
    root = FilePath(str(tmp_path))
    for folder in (root, root.child("new"), root.child("a").child("b")):
        temp = TempFile(folder, "p", MIRROR)
        temp.write(b"x")
        assert temp.path.parent() == folder
        temp.discard()


def test_full_disk_is_507():
    """No space left (or no quota) becomes a 507 naming what was stored, with
    the ``OSError`` as its cause; any other error passes unchanged."""
    for code in (errno.ENOSPC, errno.EDQUOT):
        with pytest.raises(InsufficientStorage) as raised:
            with full_disk_is_507("a file of p"):
                raise OSError(code, "full")
        assert "a file of p" in raised.value.message
        assert isinstance(raised.value.__cause__, OSError)
    with pytest.raises(PermissionError):
        with full_disk_is_507("a file of p"):
            raise PermissionError(errno.EACCES, "no")
    with full_disk_is_507("a file of p"):
        pass
