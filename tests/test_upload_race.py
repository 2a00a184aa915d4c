"""An upload of a name stored meanwhile by another daemon, unseen by this
one's listing: the store's ``commit(replace=False)`` refuses it with
:class:`AlreadyStored`, and the upload answers from the stored record."""

import pytest
import pytest_twisted
from twisted.internet.defer import maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.python.filepath import FilePath

from pypicache.errors import Conflict
from pypicache.private.received import copy_body
from pypicache.private.uploads import Uploads
from pypicache.storage.filesystem import FilesystemStore
from pypicache.storage.locks import Locks
from pypicache.storage.records import INCOMING
from tests.packages import build_wheel


class StaleStore(FilesystemStore):
    """A store whose view has not seen what another daemon stored: ``find``
    answers ``None`` (as an object store's view does until it revalidates)."""

    def find(self, project, filename):
        return succeed(None)


async def upload(store: FilesystemStore, path) -> tuple[bool, object]:
    with open(path, "rb") as source:
        part = copy_body(source, store.open_temp(None, INCOMING))
    clock = Clock()
    clock.advance(1_700_000_000)
    uploads = Uploads(store, maybeDeferred, clock, Locks(None))
    return await uploads.receive(part, path.name, {})


@pytest.fixture
def wheels(tmp_path):
    return {
        "first": build_wheel(tmp_path / "a", "racy", "1.0"),
        "other": build_wheel(tmp_path / "b", "racy", "1.0", module_body="X = 2\n"),
    }


@pytest_twisted.ensureDeferred
async def test_identical_bytes_stored_meanwhile_answer_200(tmp_path, wheels):
    """The same bytes, stored by another daemon unseen: not stored again
    (``False``, a 200), the stored record handed back, no temporary left."""
    cache = FilePath(str(tmp_path / "cache"))
    created, stored = await upload(FilesystemStore(cache), wheels["first"])
    assert created
    again, existing = await upload(StaleStore(cache), wheels["first"])
    assert not again
    assert existing.info.hashes["sha256"] == stored.info.hashes["sha256"]
    assert list(cache.preauthChild(INCOMING).listdir()) == []


@pytest_twisted.ensureDeferred
async def test_other_bytes_stored_meanwhile_conflict(tmp_path, wheels):
    """Other bytes under a name stored by another daemon unseen: a 409,
    and the stored file keeps its bytes."""
    cache = FilePath(str(tmp_path / "cache"))
    _, stored = await upload(FilesystemStore(cache), wheels["first"])
    with pytest.raises(Conflict):
        await upload(StaleStore(cache), wheels["other"])
    assert stored.path.getContent() == wheels["first"].read_bytes()
