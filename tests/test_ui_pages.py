"""The web interface's pages: releases of many files in groups, a whole
release deleted through its confirmation form, the project list and the
project pages kept while what they show is the same."""

import re

import pytest
import pytest_twisted
from packaging.version import Version

from pypicache.web.metrics import Metrics
from pypicache.web.ui import release
from pypicache.web.ui import render as ui_render
from pypicache.web.ui.filetable import GROUP_AT
from pypicache.web.ui.render import render
from tests.clients import twine_upload
from tests.daemon import start_world
from tests.packages import build_sdist, build_wheel
from tests.test_ui import assert_inert, get, post_form, stored


@pytest_twisted.async_yield_fixture()
async def world(tmp_path):
    """A daemon with an empty upstream, for uploads."""
    w = await start_world(tmp_path, [], metrics=Metrics())
    yield w
    await w.stop()


def test_a_release_of_many_files_lists_its_groups_each_a_page_of_its_files():
    """Up to GROUP_AT files: one table of them all. Above: no table but the
    groups (the source distributions, then each Python tag in natural order,
    cp38 before cp310) with their counts, each a link to ``?files=<group>``;
    a group's page has exactly that group's files, each with its download
    and action links once, and every field a package supplies escaped."""
    names = [
        f"evil-1.0-{n}-{tag}-{tag}-linux_x86_64.whl"
        for tag in ("cp310", "cp38", "cp39")
        for n in range(1, 21)
    ] + ["evil-1.0.tar.gz"]
    files = [
        stored(
            name,
            True,
            yanked="<b>old</b>" if name.startswith("evil-1.0-3-cp39") else False,
        )
        for name in names
    ]

    def page(group=None, count=len(files)):
        releases = {Version("1.0"): files[:count]}
        context = release.release_context(
            "evil", True, releases, Version("1.0"), None, group
        )
        return render(
            "project.html",
            root="../../../../",
            base="http://h",
            auth=False,
            pinned=True,
            **context,
        ).decode()

    few = page(count=GROUP_AT)
    assert few.count("<table") == 1 and "file-groups" not in few
    assert all(name in few for name in names[:GROUP_AT])
    listed = page()
    assert "<table" not in listed
    here = "../../../../+ui/projects/evil/1.0/"
    groups = re.findall(
        r'<a href="([^"]*)">([^<]*)</a> <span class="muted">\(([^)]*)\)', listed
    )
    assert groups == [
        (here + "?files=source", "Source distributions", "1 file"),
        (here + "?files=cp38", "Wheels for cp38", "20 files"),
        (here + "?files=cp39", "Wheels for cp39", "20 files"),
        (here + "?files=cp310", "Wheels for cp310", "20 files"),
    ]
    cp39 = page("cp39")
    assert_inert(cp39)
    assert cp39.count("<table") == 1 and "Files of 1.0: Wheels for cp39" in cp39
    for name in names:
        shown = 1 if "-cp39-" in name else 0
        assert cp39.count(f'href="../../../../packages/evil/{name}"') == shown
        assert cp39.count(f'href="{here}{name}/delete"') == shown
    assert cp39.count("/unyank") == 1 and cp39.count("/yank") == 19
    assert "yanked: &lt;b&gt;old&lt;/b&gt;" in cp39
    assert "&gt;=3&lt;script&gt;" in cp39 and "by user &lt;script&gt;" in cp39
    assert len(set(re.findall(r'id="(sha-\d+)"', cp39))) == 20


@pytest_twisted.ensureDeferred
async def test_a_release_is_deleted_through_its_confirmation_form(world, tmp_path):
    """A private release's page links to a confirmation page (a GET that
    changes nothing) listing its files, whose form posts ``_method=DELETE``
    to the API's route, ``/simple/<project>/<version>/``: refused cross-site
    (403) and without ``_method`` (400); then a 303 back to the project page,
    the release gone from /simple/ and the UI, the other release kept. No
    such page for an unknown action or version. (And ``?files=`` shows one
    group of a release's files, ``404`` for a group it lacks.)"""
    dist = tmp_path / "dist"
    old = [build_wheel(dist, "mine", "1.0"), build_sdist(dist, "mine", "1.0")]
    new = build_wheel(dist, "mine", "2.0")
    (await twine_upload(world.daemon.url, [*old, new], tmp_path)).check()
    _, page = await get(world, "+ui/projects/mine/1.0/")
    assert 'href="../../../../+ui/projects/mine/1.0/delete"' in page
    assert "Delete release 1.0…" in page
    response, confirm = await get(world, "+ui/projects/mine/1.0/delete")
    assert response.code == 200
    assert response.headers.getRawHeaders(b"x-content-type-options") == [b"nosniff"]
    assert_inert(confirm)
    assert all(f"<code>{p.name}</code>" in confirm for p in old)
    assert new.name not in confirm
    assert 'action="../../../../simple/mine/1.0/"' in confirm
    assert 'name="_method" value="DELETE"' in confirm
    _, simple = await get(world, "simple/mine/")
    assert all(p.name in simple for p in [*old, new])  # the GET changed nothing
    response, source = await get(world, "+ui/projects/mine/1.0/?files=source")
    assert response.code == 200 and "Files of 1.0: Source distributions" in source
    assert f">{old[1].name}</a>" in source and f">{old[0].name}</a>" not in source
    assert (await get(world, "+ui/projects/mine/1.0/?files=cp27"))[0].code == 404
    assert (await get(world, "+ui/projects/mine/1.0/wipe"))[0].code == 404
    assert (await get(world, "+ui/projects/mine/9.9/delete"))[0].code == 404
    assert (await get(world, "+ui/projects/absent/1.0/delete"))[0].code == 404
    target = "simple/mine/1.0/"
    back = "../../../+ui/projects/mine/"
    fields = {"_method": "DELETE", "next": back}
    response = await post_form(world, target, fields, {"Sec-Fetch-Site": "cross-site"})
    assert response.code == 403
    assert (await post_form(world, target, {"next": back})).code == 400
    response = await post_form(world, target, fields)
    assert response.code == 303
    assert response.headers.getRawHeaders(b"location") == [back.encode()]
    _, simple = await get(world, "simple/mine/")
    assert all(p.name not in simple for p in old) and new.name in simple
    _, page = await get(world, "+ui/projects/mine/")
    assert "mine/1.0/" not in page and "Delete release 2.0…" in page
    assert (await get(world, "+ui/projects/mine/1.0/delete"))[0].code == 404
    assert (await post_form(world, target, fields)).code == 404


@pytest_twisted.ensureDeferred
async def test_the_project_list_is_rendered_again_only_when_it_changes(
    world, tmp_path, monkeypatch
):
    """The list (and a search's page) is kept, gzipped or not: asked again
    while the projects and their newest versions and summaries are the same,
    it is not rendered again (same ETag); a new project renders it once more."""
    rendered = []
    real = ui_render.render

    def counting(template, **context):
        rendered.append(template)
        return real(template, **context)

    monkeypatch.setattr(ui_render, "render", counting)
    dist = tmp_path / "dist"
    one = build_wheel(dist, "one", "1.0")
    (await twine_upload(world.daemon.url, [one], tmp_path)).check()
    # A search waits for the search index: the rows stay as they are then.
    assert (await get(world, "+ui/projects/?q=one"))[0].code == 200
    rendered.clear()
    first, page = await get(world, "+ui/projects/")
    assert 'href="one/"' in page and '<span class="version">1.0</span>' in page
    for headers in ({"Accept-Encoding": "gzip"}, {}):
        again = await world.daemon.get("+ui/projects/", headers=headers)
        await again.content()
        assert again.code == 200
    assert again.headers.getRawHeaders(b"etag") == first.headers.getRawHeaders(b"etag")
    assert (await get(world, "+ui/projects/?q=one"))[0].code == 200
    assert rendered == ["projects.html"]
    two = build_wheel(dist, "two", "1.0")
    (await twine_upload(world.daemon.url, [two], tmp_path)).check()
    _, page = await get(world, "+ui/projects/")
    assert 'href="two/"' in page
    assert rendered == ["projects.html"] * 2


@pytest.mark.parametrize(
    "filename",
    [
        "demo-1.0-py3-none-any.whl",
        "demo-2.0rc1-7-cp312-cp312-manylinux_2_17_x86_64.whl",
        "demo-1.0.post1.tar.gz",
        "old-style-name-0.9.tar.gz",
        "demo-3.0.zip",
        "demo-1.0-py3.8.egg",
    ],
)
def test_versions_of_reads_versions_as_parse_filename_does(filename):
    """The JSON API's and the web interface's grouping by version reads a
    wheel's or an sdist's version from its name without parsing the whole
    name, and finds what parse_filename finds (files without one left out)."""
    from pypicache.index.names import parse_filename
    from pypicache.web.jsonapi import versions_of

    file = stored(filename, True)
    _, version = parse_filename(filename)
    assert versions_of([file, file]) == ({version: [file, file]} if version else {})


@pytest_twisted.ensureDeferred
async def test_a_kept_project_page_lists_nothing(world, tmp_path, monkeypatch):
    """A project page asked again, while the project is unchanged, is
    answered from what was kept without listing the project's files (its
    key is checked alone); an upload to the project shows at once."""
    dist = tmp_path / "dist"
    (
        await twine_upload(
            world.daemon.url, [build_wheel(dist, "kept", "1.0")], tmp_path
        )
    ).check()
    views = world.daemon.app.views
    assert (await views.local("kept")).key == views.local_key("kept")
    first, page = await get(world, "+ui/projects/kept/")
    assert first.code == 200 and "kept-1.0" in page
    listed = []
    real = world.daemon.app.store.files
    monkeypatch.setattr(
        world.daemon.app.store, "files", lambda p: listed.append(p) or real(p)
    )
    again, _ = await get(world, "+ui/projects/kept/")
    assert again.code == 200 and listed == []
    (
        await twine_upload(
            world.daemon.url, [build_wheel(dist, "kept", "2.0")], tmp_path
        )
    ).check()
    _, page = await get(world, "+ui/projects/kept/")
    assert "kept 2.0" in page.replace('<span class="version">', "").replace(
        "</span>", ""
    )
    assert "kept" in listed


@pytest_twisted.ensureDeferred
async def test_the_project_list_leaves_out_blocked_projects(tmp_path):
    """A project the block list hides whole is not in the web interface's
    project list (nor found by a search), as it is not in ``/simple/``;
    the others are."""
    w = await start_world(tmp_path, [], metrics=Metrics(), block=["hidden-one"])
    try:
        dist = tmp_path / "dist"
        wheels = [build_wheel(dist, "hidden-one", "1.0")]
        wheels.append(build_wheel(dist, "shown-one", "1.0"))
        (await twine_upload(w.daemon.url, wheels, tmp_path)).check()
        _, page = await get(w, "+ui/projects/")
        assert "shown-one" in page and "hidden-one" not in page
        _, found = await get(w, "+ui/projects/?q=one")
        assert "shown-one" in found and "hidden-one" not in found
    finally:
        await w.stop()
