"""A verified download is stored with a wheel's own core metadata beside it,
in one commit: the ``.metadata``, then the sidecar with its sha256, then the
archive."""

import hashlib
import json
import zipfile

import pytest_twisted
from twisted.internet.defer import maybeDeferred
from twisted.python.filepath import FilePath

import pypicache.storage.filesystem as filesystem
from pypicache.errors import InsufficientStorage
from pypicache.index.model import DistFile
from pypicache.proxy.kept import kept_and_own, persist_download
from pypicache.storage.filesystem import FilesystemStore
from pypicache.storage.records import MIRROR
from tests.packages import build_wheel


def own_metadata(wheel) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read("pstore-1.0.dist-info/METADATA")


async def store_download(store, wheel):
    temp = store.open_temp("pstore", MIRROR)
    temp.write(wheel.read_bytes())
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    info = DistFile(filename=wheel.name, hashes={"sha256": digest}, core_metadata=True)
    previous, own = await kept_and_own(store, maybeDeferred, temp, wheel.name)
    return await persist_download(store, temp, info, previous, own)


@pytest_twisted.ensureDeferred
async def test_wheel_stored_with_its_own_metadata(tmp_path):
    """A .metadata kept ahead that differs is replaced by the wheel's own; the
    sidecar records that metadata's sha256; the persisted result says what
    was there before."""
    wheel = build_wheel(tmp_path / "dists", "pstore", "1.0")
    store = FilesystemStore(FilePath(str(tmp_path / "cache")))
    await store.write_metadata(
        "pstore", wheel.name, b"Metadata-Version: 2.1\nName: other\n"
    )
    persisted = await store_download(store, wheel)
    own = own_metadata(wheel)
    assert persisted.own == own and persisted.previous.startswith(b"Metadata-Version")
    assert persisted.not_kept is None
    assert persisted.stored.metadata_path.getContent() == own
    digest = hashlib.sha256(own).hexdigest()
    assert persisted.stored.info.core_metadata == {"sha256": digest}
    sidecar = json.loads(persisted.stored.path.siblingExtension(".json").getContent())
    assert sidecar["file"]["core_metadata"] == {"sha256": digest}


@pytest_twisted.ensureDeferred
async def test_wheel_stored_when_its_metadata_does_not_fit(tmp_path, monkeypatch):
    """When the .metadata cannot be written (a full disk), the wheel is still
    stored, as the upstream described it, and the error is handed back."""
    wheel = build_wheel(tmp_path / "dists", "pstore", "1.0")
    store = FilesystemStore(FilePath(str(tmp_path / "cache")))

    real = filesystem.write_atomically

    def full(path, content):
        if path.basename().endswith(".metadata"):
            raise InsufficientStorage("Insufficient storage: no space left")
        return real(path, content)

    monkeypatch.setattr(filesystem, "write_atomically", full)
    persisted = await store_download(store, wheel)
    assert isinstance(persisted.not_kept, InsufficientStorage)
    assert persisted.stored.path.getContent() == wheel.read_bytes()
    assert persisted.stored.info.core_metadata is True
    assert not persisted.stored.metadata_path.exists()
