"""The storage contract: what every store behind :class:`IStore` must do.

Each test runs against every store factory in :data:`FACTORIES`; a new store
joins by adding one ``async def make(tmp_path, request) -> IStore`` there. The tests
use the interface only (no paths of a store's own layout), and await every
answer: a store may answer at once or later.
"""

import hashlib

import attrs
import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread
from twisted.python.filepath import FilePath
from zope.interface.verify import verifyObject

from pypicache.concurrency import result_now
from pypicache.errors import BadRequest
from pypicache.index.model import DistFile, ProjectPage
from pypicache.storage.filesystem import FilesystemStore
from pypicache.storage.interface import AlreadyStored, IStore
from pypicache.storage.records import (
    INCOMING,
    MIRROR,
    PRERELEASES,
    RELEASES,
    CachedPage,
)
from pypicache.storage.s3.bucket import Bucket
from pypicache.storage.s3.keys import Keys
from pypicache.storage.s3.settings import S3Settings
from pypicache.storage.s3.store import S3Store

WHEEL = "foo-1.0-py3-none-any.whl"
SDIST = "foo-1.0.tar.gz"
CONTENT = b"PK\x03\x04 not really a zip"
METADATA = b"Metadata-Version: 2.1\nName: foo\nVersion: 1.0\n"


async def make_filesystem(tmp_path) -> IStore:
    """The filesystem store, writing in threads as the daemon does."""
    run = lambda f, *args: deferToThread(f, *args)  # noqa: E731
    return FilesystemStore(FilePath(str(tmp_path)), run_blocking=run)


async def make_s3(tmp_path, request) -> IStore:
    """The S3 store on a bucket of moto's server, its local folder in ``tmp_path``."""
    from twisted.internet import reactor

    s3 = request.getfixturevalue("s3")
    threads = request.getfixturevalue("threads")
    settings = S3Settings.from_mapping(
        {"storage": s3.url("pypi"), "s3-endpoint-url": s3.endpoint}
    )
    bucket = await Bucket.open(settings, threads)
    return S3Store(
        bucket, Keys("pypi"), FilePath(str(tmp_path)), reactor, deferToThread
    )


#: Every store the contract holds for, by name: ``make(tmp_path, request)``
#: (``request`` gives the fixtures a store needs).
FACTORIES = {
    "filesystem": lambda tmp_path, request: make_filesystem(tmp_path),
    "s3": make_s3,
}


@pytest_twisted.async_fixture(params=sorted(FACTORIES))
async def store(request, tmp_path) -> IStore:
    return await FACTORIES[request.param](tmp_path, request)


def info_for(filename=WHEEL, content=CONTENT, **kwargs) -> DistFile:
    kwargs.setdefault("url", f"https://files.example/{filename}")
    kwargs.setdefault("hashes", {"sha256": hashlib.sha256(content).hexdigest()})
    return DistFile(filename=filename, size=len(content), **kwargs)


async def put(
    store,
    project="foo",
    filename=WHEEL,
    area=MIRROR,
    content=CONTENT,
    metadata=None,
    **kwargs,
):
    """Commit ``content`` as ``filename``: a mirrored file spooled in its
    project's area, a private one spooled to the incoming area (as uploads are)."""
    private = area != MIRROR
    temp = store.open_temp(None if private else project, INCOMING if private else area)
    temp.write(content)
    try:
        return await store.commit(
            temp,
            info_for(filename, content),
            metadata,
            project if private else None,
            area if private else None,
            **kwargs,
        )
    finally:
        temp.discard()


async def read(store, stored) -> bytes:
    opened = await store.open(stored)
    return opened.path.getContent()


def test_provides_istore(store):
    """The store provides every method and attribute of IStore."""
    assert verifyObject(IStore, store)


@pytest_twisted.ensureDeferred
async def test_commit_then_listed(store):
    """A committed file is found, listed, opened with its bytes, and makes
    its project appear; a mirrored one does not make it private."""
    stored = await put(store)
    assert stored.info.filename == WHEEL and stored.project == "foo"
    assert stored.info.url is None
    assert await store.find("foo", WHEEL) == stored
    assert await store.files("foo") == [stored]
    assert await store.projects() == ["foo"]
    assert not await store.is_private("foo")
    assert await read(store, stored) == CONTENT


@pytest_twisted.ensureDeferred
async def test_commit_changes_the_generation(store):
    """Each commit changes the project's generation, and not another's."""
    seen = {store.generation("foo")}
    await put(store)
    seen.add(store.generation("foo"))
    await put(store, filename=SDIST)
    seen.add(store.generation("foo"))
    assert len(seen) == 3
    assert store.generation("bar") == 0


@pytest_twisted.ensureDeferred
async def test_private_files_first_and_shadowing(store):
    """Private files make their project private, list first, and shadow a
    mirrored file of the same name."""
    await put(store, filename="foo-2.0.tar.gz")
    await put(store, filename=SDIST)
    await put(store, filename="foo-3.0rc1.tar.gz", area=PRERELEASES)
    private = await put(store, filename=SDIST, area=RELEASES)
    assert await store.is_private("foo")
    assert [(s.info.filename, s.area) for s in await store.files("foo")] == [
        (SDIST, RELEASES),
        ("foo-3.0rc1.tar.gz", PRERELEASES),
        ("foo-2.0.tar.gz", MIRROR),
    ]
    assert await store.find("foo", SDIST) == private


@pytest_twisted.ensureDeferred
async def test_commit_without_replace_refuses_a_stored_name(store):
    """``replace=False`` (uploads) fails with AlreadyStored carrying the
    stored record, for other bytes and the same bytes alike (the upload
    code answers 409 or 200 from it), and leaves the stored bytes as they were."""
    first = await put(store, area=RELEASES, replace=False)
    with pytest.raises(AlreadyStored) as caught:
        await put(store, area=RELEASES, content=b"other bytes", replace=False)
    assert caught.value.existing == first
    with pytest.raises(AlreadyStored) as again:
        await put(store, area=RELEASES, replace=False)  # the same bytes
    assert again.value.existing.info.hashes == first.info.hashes
    assert await read(store, await store.find("foo", WHEEL)) == CONTENT


@pytest_twisted.ensureDeferred
async def test_commit_replaces_by_default(store):
    """Committing a mirrored file of the same name again replaces it."""
    await put(store, content=b"old")
    stored = await put(store, content=b"newer")
    assert (await store.find("foo", WHEEL)).info.size == 5
    assert len(await store.files("foo")) == 1
    assert await read(store, stored) == b"newer"


@pytest_twisted.ensureDeferred
async def test_unverified_and_failed_files_are_never_listed(store):
    """A temporary file being written, a discarded one, and a commit refused
    for its filename list nothing and make no project appear."""
    temp = store.open_temp("foo", MIRROR)
    temp.write(CONTENT)
    temp.flush_and_sync()
    assert await store.files("foo") == []
    assert await store.find("foo", WHEEL) is None
    assert await store.projects() == []
    temp.discard()
    bad = store.open_temp("foo", MIRROR)
    bad.write(CONTENT)
    with pytest.raises(BadRequest):
        await store.commit(bad, info_for("../x.whl"))
    bad.discard()
    assert await store.files("foo") == []
    assert await store.projects() == []
    assert store.generation("foo") == 0


@pytest_twisted.ensureDeferred
async def test_update(store):
    """``update`` rewrites what is known of a file; reads give the new record."""
    stored = await put(store, area=RELEASES)
    updated = await store.update(stored, attrs.evolve(stored.info, yanked="broken"))
    assert updated.info.yanked == "broken"
    assert (await store.find("foo", WHEEL)).info.yanked == "broken"
    assert (await store.files("foo"))[0].info.yanked == "broken"
    assert await read(store, updated) == CONTENT


@pytest_twisted.ensureDeferred
async def test_remove_private_leaves_a_tombstone(store):
    """Removing a private file unlists it and leaves a tombstone with its
    sha256; the project stays private."""
    stored = await put(store, area=RELEASES)
    assert await store.tombstone("foo", WHEEL) is None
    await store.remove(stored)
    assert await store.find("foo", WHEEL) is None
    assert await store.files("foo") == []
    tombstone = await store.tombstone("foo", WHEEL)
    assert tombstone["sha256"] == stored.info.hashes["sha256"]
    assert await store.is_private("foo")


@pytest_twisted.ensureDeferred
async def test_remove_mirrored_leaves_nothing(store):
    """Removing a mirrored file unlists it, its project too, with no tombstone."""
    stored = await put(store, metadata=METADATA)
    await store.remove(stored)
    assert await store.find("foo", WHEEL) is None
    assert await store.tombstone("foo", WHEEL) is None
    assert await store.projects() == []
    assert not await store.is_private("foo")


@pytest_twisted.ensureDeferred
async def test_metadata_given_to_commit(store):
    """Core metadata committed with a file is opened with its bytes."""
    await put(store, area=PRERELEASES, metadata=METADATA)
    opened = await store.open_metadata("foo", WHEEL)
    assert opened.path.getContent() == METADATA
    assert await store.open_metadata("foo", SDIST) is None


@pytest_twisted.ensureDeferred
async def test_add_metadata(store):
    """``add_metadata`` keeps metadata beside a stored file, its sha256 in
    the record; for a file not stored it fails with KeyError."""
    await put(store)
    assert await store.open_metadata("foo", WHEEL) is None
    updated = await store.add_metadata("foo", WHEEL, METADATA, "cd" * 32)
    assert updated.info.core_metadata == {"sha256": "cd" * 32}
    assert (await store.find("foo", WHEEL)).info.core_metadata == {"sha256": "cd" * 32}
    assert (await store.open_metadata("foo", WHEEL)).path.getContent() == METADATA
    with pytest.raises(KeyError):
        await store.add_metadata("foo", SDIST, METADATA, "cd" * 32)


@pytest_twisted.ensureDeferred
async def test_write_metadata_ahead_of_the_archive(store):
    """Metadata fetched ahead of its archive is opened, lists no file nor
    project, becomes the archive's own once it is committed, and is dropped."""
    await store.write_metadata("foo", WHEEL, METADATA)
    assert (await store.open_metadata("foo", WHEEL)).path.getContent() == METADATA
    assert await store.files("foo") == []
    assert await store.projects() == []
    await put(store)
    assert (await store.open_metadata("foo", WHEEL)).path.getContent() == METADATA
    await store.drop_metadata("foo", WHEEL)
    assert await store.open_metadata("foo", WHEEL) is None


@pytest_twisted.ensureDeferred
async def test_private_metadata_wins_over_metadata_kept_ahead(store):
    """A private file's metadata is opened, not metadata kept for the mirror."""
    await store.write_metadata("foo", WHEEL, b"mirrored")
    await put(store, area=RELEASES, metadata=b"private")
    assert (await store.open_metadata("foo", WHEEL)).path.getContent() == b"private"


@pytest_twisted.ensureDeferred
async def test_provenance(store):
    """A provenance committed with a file, or added later, is opened with its
    bytes; a file without one has none."""
    with_one = await put(store, area=RELEASES, provenance=b'{"p": 1}')
    assert (await store.open_provenance(with_one)).path.getContent() == b'{"p": 1}'
    mirrored = await put(store, filename=SDIST)
    assert await store.open_provenance(mirrored) is None
    kept = await store.add_provenance(mirrored, b'{"p": 2}')
    assert (await store.open_provenance(kept)).path.getContent() == b'{"p": 2}'
    assert await store.find("foo", SDIST) == kept


@pytest_twisted.ensureDeferred
async def test_read_files(store):
    """``read_files`` gives every file of the projects named, as ``files`` does."""
    await put(store)
    await put(store, project="bar", filename="bar-1.0.tar.gz", area=RELEASES)
    read = await store.read_files(["bar", "foo", "nothing"])
    assert [(s.project, s.info.filename) for s in read] == [
        ("bar", "bar-1.0.tar.gz"),
        ("foo", WHEEL),
    ]


PAGE = CachedPage(
    page=ProjectPage(
        name="foo",
        files=(info_for(core_metadata={"sha256": "cd" * 32}, yanked="bad"),),
        versions=("1.0",),
    ),
    fetched_at=1234.5,
    etag='"abc"',
    last_modified="Tue, 02 Jan 2024 03:04:05 GMT",
)


@pytest_twisted.ensureDeferred
async def test_pages(store):
    """A written page reads back equal and has a stamp; a second write
    replaces it; once dropped it reads as None, without a stamp."""
    assert await store.read_page("foo") is None
    assert await store.page_stamp("foo") is None
    await store.write_page("foo", PAGE)
    assert await store.read_page("foo") == PAGE
    assert await store.page_stamp("foo") is not None
    await store.write_page("foo", attrs.evolve(PAGE, etag='"def"'))
    assert (await store.read_page("foo")).etag == '"def"'
    await store.drop_page("foo")
    assert await store.read_page("foo") is None
    assert await store.page_stamp("foo") is None
    await store.drop_page("foo")  # dropping no page is harmless
    assert await store.projects() == []


@pytest_twisted.ensureDeferred
async def test_remove_temporaries(store):
    """What a crash left (a spool nobody holds) goes; stored files stay."""
    stored = await put(store)
    abandoned = store.open_temp("foo", MIRROR)
    abandoned.write(b"partial")
    abandoned.file.close()  # as after a kill: nobody holds it
    await store.remove_temporaries()
    assert not abandoned.path.exists()
    assert await store.files("foo") == [stored]
    assert await read(store, stored) == CONTENT


@pytest_twisted.ensureDeferred
async def test_strays(store):
    """Reading and installing strays on a store that has none changes nothing."""
    stored = await put(store, area=RELEASES)
    await store.install_strays(await store.read_strays())
    assert await store.files("foo") == [stored]


@pytest_twisted.ensureDeferred
async def test_reread(store):
    """``reread`` gives a stored file as the store has it, ``None`` for another."""
    stored = await put(store, area=RELEASES)
    assert await store.reread(RELEASES, "foo", WHEEL) == stored
    assert await store.reread(RELEASES, "foo", SDIST) is None


@pytest_twisted.ensureDeferred
async def test_reads_of_the_filesystem_store_answer_at_once(tmp_path):
    """The filesystem store answers reads from its listings at once, so the
    hot paths take them without waiting a turn of the reactor."""
    store = await make_filesystem(tmp_path)
    stored = await put(store)
    assert result_now(store.find("foo", WHEEL)) == stored
    assert result_now(store.files("foo")) == [stored]
    assert result_now(store.is_private("foo")) is False
    assert result_now(store.open(stored)).path.getContent() == CONTENT
    assert result_now(store.open_metadata("foo", WHEEL)) is None
