"""PEP 792 project status: the upstream's passes through /simple/ (JSON and
HTML, API version 1.4); a quarantined upstream project offers no file; a
private project's status is set through POST /+status/<project> (a user
needed, as for uploads) and a quarantined one is hidden from installers."""

import base64
import json

import pytest

from pypicache.index.model import ProjectPage
from pypicache.index.simple import (
    parse_html_page,
    parse_json_page,
    render_html_page,
    render_json_page,
)
from tests.clients import pip_install, uv_pip_install
from tests.daemon import LOCAL_JSON, start_world
from tests.fakeindex import FakeIndex, start_fake_index
from tests.packages import build_wheel
from tests.test_uploads_auth import PASSWORDS, write_htpasswd

JSON_TYPE = "application/vnd.pypi.simple.v1+json"

# -- parsing and rendering ---------------------------------------------------


def test_status_parsed_and_rendered_both_ways():
    """project-status (JSON) and the pypi:project-status meta tags (HTML) are
    read into the page and written back as PEP 792 says; an unknown status
    is left out; the page keeps them through its own storage form."""
    body = json.dumps(
        {
            "meta": {"api-version": "1.4"},
            "name": "foo",
            "files": [],
            "project-status": {"status": "Archived", "reason": "moved to bar"},
        }
    ).encode()
    page = parse_json_page(body, "https://i.example/simple/foo/", "foo")
    assert (page.status, page.status_reason) == ("archived", "moved to bar")
    assert ProjectPage.from_json(json.loads(json.dumps(page.to_json()))) == page

    html = (
        '<html><head><meta name="pypi:repository-version" content="1.4">'
        '<meta name="pypi:project-status" content="quarantined">'
        '<meta name="pypi:project-status-reason" content="the project is haunted">'
        "</head><body></body></html>"
    )
    page = parse_html_page(html, "https://i.example/simple/foo/", "foo")
    assert (page.status, page.status_reason) == (
        "quarantined",
        "the project is haunted",
    )
    rendered = render_html_page(page, lambda f: f.filename).decode()
    assert '<meta name="pypi:project-status" content="quarantined">' in rendered
    assert (
        '<meta name="pypi:project-status-reason" content="the project is haunted">'
        in rendered
    )
    data = json.loads(render_json_page(page, lambda f: f.filename))
    assert data["project-status"] == {
        "status": "quarantined",
        "reason": "the project is haunted",
    }
    assert data["meta"]["api-version"] == "1.4"

    plain = ProjectPage(name="foo")
    assert "project-status" not in json.loads(render_json_page(plain, str))
    assert "pypi:project-status" not in render_html_page(plain, str).decode()
    odd = body.replace(b"Archived", b"sleeping")
    assert parse_json_page(odd, "https://i.example/simple/foo/", "foo").status is None


# -- an upstream's status ----------------------------------------------------


@pytest.fixture
def dists(tmp_path):
    d = tmp_path / "dists"
    d.mkdir()
    return [build_wheel(d, "lib", "1.0")]


def _upstream_page(world, dists, status: dict | None, listed: bool = True) -> None:
    """The fake upstream answers lib's page with this status and these files."""
    files = [
        {
            "filename": dist.name,
            "url": world.upstream.root + "files/" + dist.name,
            "hashes": {"sha256": world.index.sha256(dist.name)},
            "size": dist.stat().st_size,
        }
        for dist in (dists if listed else [])
    ]
    page = {"meta": {"api-version": "1.4"}, "name": "lib", "files": files}
    if status is not None:
        page["project-status"] = status
    world.index.page_body(
        "lib", json.dumps(page).encode(), headers={"Content-Type": JSON_TYPE}
    )


def _refresh(daemon, project: str = "lib"):
    return daemon.client.post(daemon.url + f"+refresh/{project}")


async def test_upstream_status_passes_through(tmp_path, dists):
    """An archived upstream project's status and reason show on /simple/ in
    JSON (project-status) and HTML (meta tags), with API version 1.4."""
    world = await start_world(tmp_path, dists)
    try:
        _upstream_page(world, dists, {"status": "archived", "reason": "see lib2"})
        d = world.daemon
        page = json.loads(
            await (await d.get("simple/lib/", headers={"Accept": LOCAL_JSON})).content()
        )
        assert page["project-status"] == {"status": "archived", "reason": "see lib2"}
        assert page["meta"]["api-version"] == "1.4"
        assert [f["filename"] for f in page["files"]] == [dists[0].name]
        html = await (await d.get("simple/lib/")).text()
        assert '<meta name="pypi:project-status" content="archived">' in html
        assert '<meta name="pypi:project-status-reason" content="see lib2">' in html
        assert '<meta name="pypi:repository-version" content="1.4">' in html
    finally:
        await world.stop()


async def test_quarantined_upstream_project_is_hidden(tmp_path, dists):
    """Once the upstream quarantines a project (an empty page that says so),
    /simple/ answers 200 with no file and the status (as the public index
    does, so that uv stops at this index), its cached file is withdrawn
    (404 with the reason, gone from /local/, kept on disk), and pip finds
    nothing to install; uv, asking this server first, stops there and does
    not take the name from its other index (as it would after a 404)."""
    world = await start_world(tmp_path, dists)
    try:
        d = world.daemon
        name = dists[0].name
        answer = await d.get(f"packages/lib/{name}")
        await answer.content()
        await world.stored("lib", name)
        _upstream_page(
            world, dists, {"status": "quarantined", "reason": "malware"}, False
        )
        assert (await _refresh(d)).code == 200
        for _ in range(2):
            answer = await d.get("simple/lib/", headers={"Accept": LOCAL_JSON})
            assert answer.code == 200
            page = json.loads(await answer.content())
            assert page["files"] == []
            assert page["project-status"] == {
                "status": "quarantined",
                "reason": "malware",
            }
        answer = await d.get(f"packages/lib/{name}")
        assert answer.code == 404
        assert "quarantined upstream: malware" in await answer.text()
        answer = await d.get("local/lib/", headers={"Accept": LOCAL_JSON})
        assert json.loads(await answer.content())["files"] == []
        assert name in world.mirror_files("lib")
        result = await pip_install(
            d.url + "simple/", ["lib"], tmp_path / "target", tmp_path
        )
        assert result.code != 0
        assert "from versions: none" in result.err

        # uv asks this server first (--extra-index-url comes first in uv) and
        # stops at the empty page: the other index's lib is never taken.
        other = FakeIndex(tmp_path, "json")
        other.add(dists[0])
        running = await start_fake_index(other)
        try:
            result = await uv_pip_install(
                running.url,
                ["lib"],
                tmp_path / "uv-target",
                tmp_path,
                ["--extra-index-url", d.url + "simple/"],
            )
        finally:
            await running.stop()
        assert result.code != 0, result.out
        assert not (tmp_path / "uv-target" / "lib-1.0.dist-info").exists()
        assert other.count("/files/") == 0
    finally:
        await world.stop()


# -- private projects ----------------------------------------------------------


def _basic(user: str = "alice") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_private_status_api(tmp_path):
    """POST /+status/<project> needs a user (401 without), refuses an
    unknown status (400) and a project that is not private (404); a set
    status shows on /simple/ and /local/ and at GET /+status/, and an
    archived project takes no upload (403); quarantined,
    the project lists no file anywhere and its files answer 404 (pip
    installs nothing); back to active, all is offered again."""
    d = tmp_path / "dists"
    d.mkdir()
    wheel = build_wheel(d, "inhouse", "1.0")
    users = write_htpasswd(tmp_path / "htpasswd")
    world = await start_world(tmp_path, (), auth_file=str(users))
    try:
        daemon = world.daemon
        url = daemon.url + "+status/inhouse"
        put = await daemon.client.put(
            daemon.url + f"packages/inhouse/{wheel.name}",
            data=wheel.read_bytes(),
            headers=_basic(),
        )
        assert put.code == 201, await put.text()

        def post(body, headers=None, target=url):
            data = body.encode() if isinstance(body, str) else body
            return daemon.client.post(target, data=data, headers=headers or {})

        archived = json.dumps({"status": "archived", "reason": "use inhouse2"})
        answer = await post(archived)
        assert answer.code == 401, await answer.text()
        answer = await post(json.dumps({"status": "gone"}), _basic())
        assert answer.code == 400
        assert "Unknown project status 'gone'" in await answer.text()
        assert (await post(b"not json", _basic())).code == 400
        answer = await post(archived, _basic(), daemon.url + "+status/elsewhere")
        assert answer.code == 404
        answer = await post(archived, _basic())
        assert answer.code == 200
        assert json.loads(await answer.content()) == {
            "project": "inhouse",
            "status": "archived",
            "reason": "use inhouse2",
        }
        for area in ("simple", "local"):
            page = json.loads(
                await (
                    await daemon.get(f"{area}/inhouse/", headers={"Accept": LOCAL_JSON})
                ).content()
            )
            assert page["project-status"] == {
                "status": "archived",
                "reason": "use inhouse2",
            }
            assert [f["filename"] for f in page["files"]] == [wheel.name]
        shown = json.loads(await (await daemon.get("+status/inhouse")).content())
        assert shown["status"] == "archived"
        newer = build_wheel(d, "inhouse", "2.0")
        put = await daemon.client.put(
            daemon.url + f"packages/inhouse/{newer.name}",
            data=newer.read_bytes(),
            headers=_basic(),
        )
        assert put.code == 403, "an archived project takes no uploads (PEP 792)"
        assert "is archived and takes no uploads: use inhouse2" in await put.text()
        record = tmp_path / "cache" / "private" / "status" / "inhouse.json"
        assert json.loads(record.read_text())["status"] == "archived"

        form = {"Content-Type": "application/x-www-form-urlencoded", **_basic()}
        answer = await post(b"status=quarantined&reason=leaked+key", form)
        assert answer.code == 200
        for area in ("simple", "local"):
            for _ in range(2):
                page = json.loads(
                    await (
                        await daemon.get(
                            f"{area}/inhouse/", headers={"Accept": LOCAL_JSON}
                        )
                    ).content()
                )
                assert page["files"] == []
                assert page["project-status"]["status"] == "quarantined"
        answer = await daemon.get(f"packages/inhouse/{wheel.name}")
        assert answer.code == 404
        assert "quarantined: leaked key" in await answer.text()
        result = await pip_install(
            daemon.url + "simple/", ["inhouse"], tmp_path / "target", tmp_path
        )
        assert result.code != 0

        answer = await post(json.dumps({"status": "active"}), _basic())
        assert answer.code == 200
        assert not record.exists()
        page = json.loads(
            await (
                await daemon.get("simple/inhouse/", headers={"Accept": LOCAL_JSON})
            ).content()
        )
        assert "project-status" not in page
        assert [f["filename"] for f in page["files"]] == [wheel.name]
        answer = await daemon.get(f"packages/inhouse/{wheel.name}")
        assert answer.code == 200
        await answer.content()
    finally:
        await world.stop()
