"""The web interface's descriptions rendered once and kept across processes
(``DIR/ui/descriptions/``), and a project's versions grouped once per
version of its view."""

import json
import os

import pytest
import pytest_twisted
from packaging.version import Version
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.python.filepath import FilePath

from pypicache.web import jsonapi
from pypicache.web.metrics import Metrics
from pypicache.web.ui import descriptions, release
from pypicache.web.ui.descriptions import Descriptions, description_key
from pypicache.web.ui.listing import Listing
from tests.clients import twine_upload
from tests.daemon import start_world
from tests.test_ui import assert_inert, get, stored
from tests.uiwheels import HOSTILE, wheel_with_metadata

README = "Kept\n====\n\nA *rendered* description.\n"


def kept_files(root: FilePath) -> list[str]:
    """Every file in the descriptions' folder under the cache ``root``."""
    folder = root.descendant(descriptions.FOLDER).path
    return sorted(os.path.join(d, n) for d, _, names in os.walk(folder) for n in names)


def test_a_description_is_rendered_once_and_reused_by_a_new_process(tmp_path):
    """A description rendered once is kept in its file (by the digest of its
    text and content type): the same text again renders nothing, in this
    process or in a new one (a new object on the same folder, nothing in
    memory); other text, or the same text of another content type, renders."""
    root = FilePath(str(tmp_path))
    first = Descriptions.under(root)
    html = first.html(README, "text/x-rst")
    assert "<em>rendered</em>" in html and first.renders == 1
    assert first.html(README, "text/x-rst") == html and first.renders == 1
    assert kept_files(root) == [first.path(description_key(README, "text/x-rst")).path]
    again = Descriptions.under(root)  # a new process
    assert again.html(README, "text/x-rst") == html
    assert again.renders == 0
    again.html(README, "text/plain")
    again.html(README + "More.\n", "text/x-rst")
    assert again.renders == 2 and len(kept_files(root)) == 3
    assert first.html(None, None) is None and first.renders == 1


def test_a_hostile_readme_is_kept_sanitized(tmp_path):
    """What is kept is what readme_renderer made of a hostile README
    (sanitized): the kept file holds no script or event handler, and the page
    of a new process, made from it, none either."""
    root = FilePath(str(tmp_path))
    text = f"Title\n=====\n\n{HOSTILE}\n\n.. raw:: html\n\n   <script>x()</script>\n"
    for content_type in (None, "text/markdown", "text/plain"):
        html = Descriptions.under(root).html(text, content_type)
        assert_inert(html)
        kept = json.loads(
            Descriptions.under(root)
            .path(description_key(text, content_type))
            .getContent()
        )
        assert_inert(kept["html"])
        again = Descriptions.under(root)
        assert again.html(text, content_type) == html and again.renders == 0


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b'{"renderer": "1;',  # cut short: a partial write
        b"\x00\xff not json",
        b"[]",
        b'{"renderer": "an older renderer", "key": "K", "html": "<p>old</p>"}',
        b'{"renderer": "R", "key": "another key", "html": "<p>other</p>"}',
        b'{"renderer": "R", "key": "K", "html": 3}',
    ],
)
def test_a_corrupt_or_stale_kept_file_is_rendered_again(tmp_path, content):
    """A kept file that is empty, cut short, not JSON, of another renderer
    (an upgrade of readme_renderer or its sanitizer), of another key or of
    the wrong shape is ignored: the description is rendered again and its
    file replaced, atomically (no temporary file left beside it)."""
    root = FilePath(str(tmp_path))
    key = description_key(README, None)
    path = Descriptions.under(root).path(key)
    path.parent().makedirs()
    stamp = descriptions.renderer()
    path.setContent(
        content.replace(b'"R"', json.dumps(stamp).encode()).replace(
            b'"K"', json.dumps(key).encode()
        )
    )
    fresh = Descriptions.under(root)
    html = fresh.html(README, None)
    assert "<em>rendered</em>" in html and fresh.renders == 1
    kept = json.loads(path.getContent())
    assert kept == {"renderer": stamp, "key": key, "html": html}
    assert kept_files(root) == [path.path]
    assert Descriptions.under(root).html(README, None) == html


def test_the_renderer_stamp_names_what_renders():
    """A kept rendering is used only by the renderer that made it: the stamp
    holds the layout's format and the versions of readme_renderer, docutils
    and the sanitizer."""
    stamp = descriptions.renderer()
    assert stamp.startswith(f"{descriptions.FORMAT};")
    assert "readme-renderer=" in stamp and "nh3=" in stamp and "docutils=" in stamp


def test_without_a_folder_descriptions_are_kept_in_memory_only(tmp_path):
    """Descriptions with no folder render once per process and write nothing."""
    memory = Descriptions(None)
    assert memory.html(README, None) == memory.html(README, None)
    assert memory.renders == 1 and memory.path("ab" * 32) is None


def test_a_listing_groups_once_as_the_json_api_does():
    """A Listing's versions are newest first, yanked when all their files
    are (with the first reason), and its default version is the JSON API's
    (the newest final with a file not yanked; the newest if there is none)."""
    files = [
        stored("p-2.0rc1-py3-none-any.whl", True),
        stored("p-1.5-py3-none-any.whl", True, yanked="broken"),
        stored("p-1.5.tar.gz", True, yanked=True),
        stored("p-1.2.tar.gz", True),
        stored("p-1.2.0-py3-none-any.whl", True),
        stored("p-1.0.tar.gz", True, yanked=True),
        stored("p-01.1.tar.gz", True),
        stored("p-1.1.0.tar.gz", True),
    ]
    releases = jsonapi.versions_of(files)
    # Versions shown as str() writes them, whichever name came first.
    shown = Listing.of_shown(files, [s.info for s in files])
    assert [r.version for r in shown.rows] == [
        str(v) for v in sorted(releases, reverse=True)
    ]
    assert [r.prerelease for r in shown.rows] == [
        v.is_prerelease for v in sorted(releases, reverse=True)
    ]
    del releases[Version("1.1")]
    listing = Listing.of(releases)
    assert listing.latest == jsonapi.latest(releases) == Version("1.2")
    assert len(releases[Version("1.2")]) == 2  # 1.2 and 1.2.0 are one version
    rows = listing.version_rows(Version("1.5"))
    assert [
        (r.version, r.prerelease, r.yanked, r.reason, r.selected) for r in rows
    ] == [
        ("2.0rc1", True, False, None, False),
        ("1.5", False, True, "broken", True),
        ("1.2", False, False, None, False),
        ("1.0", False, True, None, False),
    ]
    assert not any(r.selected for r in listing.rows)  # kept rows never change
    only_yanked = {v: releases[v] for v in (Version("1.0"), Version("1.5"))}
    assert Listing.of(only_yanked).latest == jsonapi.latest(only_yanked)
    with pytest.raises(KeyError):
        listing.pick("3.0")
    assert listing.pick(None) == Version("1.2") and listing.pick("1.5.0") == Version(
        "1.5"
    )


@pytest_twisted.async_yield_fixture()
async def world(tmp_path):
    """A daemon with an empty upstream, for uploads."""
    w = await start_world(tmp_path, [], metrics=Metrics())
    yield w
    await w.stop()


async def until(condition, seconds=20.0):
    """Wait (polling the reactor) until ``condition()`` holds."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError("timed out")


@pytest_twisted.ensureDeferred
async def test_an_upload_renders_its_description_before_its_first_page(world, tmp_path):
    """An upload's description is rendered in a thread once it is stored
    (the public index renders at upload time): the release's first page,
    and the page of a new process on the same cache (nothing in memory),
    render none; the same README in the next version renders none either."""
    dist = tmp_path / "dist"
    headers = [("Description-Content-Type", "text/x-rst")]
    wheels = [
        wheel_with_metadata(dist, "told", v, headers, README) for v in ("1.0", "2.0")
    ]
    app = world.daemon.app
    (await twine_upload(world.daemon.url, wheels[:1], tmp_path)).check()
    await until(lambda: app.ui.descriptions.renders == 1)
    response, page = await get(world, "+ui/projects/told/")
    assert response.code == 200 and "<em>rendered</em>" in page
    assert app.ui.descriptions.renders == 1
    root = app.store.root
    assert len(kept_files(root)) == 1
    # A new process on this cache: nothing in memory.
    app.ui.descriptions = Descriptions.under(root)
    release.described.cache_clear()
    response, page = await get(world, "+ui/projects/told/1.0/")
    assert response.code == 200 and "<em>rendered</em>" in page
    (await twine_upload(world.daemon.url, wheels[1:], tmp_path)).check()
    response, page = await get(world, "+ui/projects/told/2.0/")
    assert response.code == 200 and "<em>rendered</em>" in page
    assert app.ui.descriptions.renders == 0 and len(kept_files(root)) == 1


@pytest_twisted.ensureDeferred
async def test_descriptions_are_kept_per_daemon_with_the_s3_store(tmp_path, s3):
    """With ``--storage s3://...`` the descriptions are kept in the daemon's
    local working folder: an upload's is rendered there, its page shows it,
    and the daemon started again on that folder shows it from the kept file
    (not written again: the same file, the same inode)."""
    from tests.fakeindex import FakeIndex, start_fake_index
    from tests.test_s3_daemon import S3Daemon

    upstream = await start_fake_index(FakeIndex(tmp_path, "json"))
    daemon = S3Daemon(tmp_path, "a", s3, upstream.url)
    try:
        await daemon.start()
        headers = [("Description-Content-Type", "text/x-rst")]
        wheel = wheel_with_metadata(tmp_path / "dist", "told", "1.0", headers, README)
        (await twine_upload(daemon.url, [wheel], tmp_path)).check()
        root = FilePath(str(daemon.home / "cache"))
        await until(lambda: len(kept_files(root)) == 1)
        (kept,) = kept_files(root)
        before = os.stat(kept).st_ino
        code, page = await daemon.get("+ui/projects/told/")
        assert code == 200 and "<em>rendered</em>" in page
        await daemon.stop()
        await daemon.start()
        code, page = await daemon.get("+ui/projects/told/1.0/")
        assert code == 200 and "<em>rendered</em>" in page
        assert kept_files(root) == [kept] and os.stat(kept).st_ino == before
    finally:
        await daemon.stop()
        await upstream.stop()
