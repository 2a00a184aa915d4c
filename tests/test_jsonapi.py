"""The JSON read API: /pypi/<project>/json, /pypi/<project>/<version>/json, /index.json."""

import json

import pytest_twisted

from tests.daemon import start_daemon
from tests.packages import build_sdist, build_wheel


@pytest_twisted.async_yield_fixture
async def daemon(tmp_path):
    d = await start_daemon("http://127.0.0.1:1/simple/", tmp_path / "cache")
    files = [
        build_wheel(
            tmp_path / "a",
            "Json.Pkg",
            "1.0",
            requires=["dep>=1"],
            requires_python=">=3.8",
        ),
        build_sdist(tmp_path / "a", "Json.Pkg", "1.0"),
        build_wheel(tmp_path / "a", "Json.Pkg", "2.0b1"),
    ]
    for path in files:
        response = await d.client.put(
            f"{d.url}packages/json-pkg/{path.name}", data=path.read_bytes()
        )
        assert response.code == 201, await response.content()
    yield d, files
    await d.stop()


@pytest_twisted.ensureDeferred
async def test_project_json(daemon):
    """/pypi/<p>/json describes the newest final release, with every release listed."""
    daemon, files = daemon
    response = await daemon.get("pypi/json-pkg/json")
    assert response.code == 200
    doc = json.loads(await response.content())
    assert doc["info"]["name"] == "Json.Pkg" and doc["info"]["version"] == "1.0"
    assert doc["info"]["requires_dist"] == ["dep>=1"]
    assert doc["info"]["requires_python"] == ">=3.8"
    assert sorted(doc["releases"]) == ["1.0", "2.0b1"]
    urls = {u["filename"]: u for u in doc["urls"]}
    wheel = urls["json_pkg-1.0-py3-none-any.whl"]
    assert wheel["packagetype"] == "bdist_wheel" and wheel["python_version"] == "py3"
    assert wheel["digests"]["sha256"] and wheel["size"] == files[0].stat().st_size
    assert wheel["upload_time_iso_8601"].endswith("Z")
    assert (
        wheel["url"] == f"{daemon.url}packages/json-pkg/json_pkg-1.0-py3-none-any.whl"
    )
    assert urls["json_pkg-1.0.tar.gz"]["packagetype"] == "sdist"
    response = await daemon.get(wheel["url"][len(daemon.url) :])
    assert await response.content() == files[0].read_bytes()


@pytest_twisted.ensureDeferred
async def test_version_json_and_errors(daemon):
    """/pypi/<p>/<v>/json describes that version; unknown ones are 404; other spellings redirect."""
    daemon, files = daemon
    doc = json.loads(await (await daemon.get("pypi/json-pkg/2.0b1/json")).content())
    assert doc["info"]["version"] == "2.0b1" and "releases" not in doc
    assert [u["filename"] for u in doc["urls"]] == ["json_pkg-2.0b1-py3-none-any.whl"]
    for path in ["pypi/json-pkg/9.9/json", "pypi/nothing/json"]:
        response = await daemon.get(path)
        assert response.code == 404
        await response.content()
    response = await daemon.get("pypi/Json.Pkg/json", allow_redirects=False)
    assert response.code == 301 and response.headers.getRawHeaders("location") == [
        "../json-pkg/json"
    ]
    await response.content()


@pytest_twisted.ensureDeferred
async def test_index_json(daemon):
    """/index.json lists every archive with name, version, sha256, size and when it was added."""
    daemon, files = daemon
    entries = json.loads(await (await daemon.get("index.json")).content())
    assert sorted(e["filename"] for e in entries) == sorted(p.name for p in files)
    for entry in entries:
        assert (
            entry["name"] == "json-pkg"
            and entry["sha256"]
            and entry["size"]
            and entry["added"].endswith("Z")
        )
