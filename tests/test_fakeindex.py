"""
Tests for the test-support modules: L{tests.packages} builds real distributions,
L{tests.fakeindex} serves them like the public index (with faults), and
L{tests.clients} runs real pip/uv/twine against it, hermetically.

Real reactor (pytest-twisted), servers on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import email.parser
import hashlib
import json
import shutil
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest
import pytest_twisted
import treq
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed, readBody
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.clients import (
    clean_env,
    pip_install,
    run,
    twine_upload,
    uv_pip_install,
    uv_publish,
)
from tests.fakeindex import JSON_TYPE, FakeIndex, start_fake_index
from tests.packages import build_sdist, build_wheel, sha256_of

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, "
    "application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
)


# -- fixtures -----------------------------------------------------------------


@pytest_twisted.async_yield_fixture()
async def http():
    """A treq client with its own non-persistent pool, closed afterwards."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    yield HTTPClient(Agent(reactor, pool=pool))
    await pool.closeCachedConnections()


@pytest.fixture
def dists(tmp_path: Path) -> Path:
    """
    A small dependency graph: foo (wheel, extra "fast" -> baz) needs bar (sdist
    only), and bar needs baz (wheel); plus an older foo sdist.
    """
    d = tmp_path / "dists"
    build_wheel(
        d,
        "foo",
        "1.0",
        requires=["bar>=1"],
        requires_python=">=3.8",
        extras={"fast": ["baz"]},
    )
    build_sdist(d, "foo", "0.9", requires=["bar>=1"])
    build_sdist(d, "bar", "1.5", requires=["baz"])
    build_wheel(d, "baz", "2.0")
    return d


def _make_index(dists: Path, mode: str) -> FakeIndex:
    index = FakeIndex(dists, mode)
    index.add("foo-1.0-py3-none-any.whl", requires_python=">=3.8")
    index.add("foo-0.9.tar.gz")
    index.add("bar-1.5.tar.gz")
    index.add("baz-2.0-py3-none-any.whl")
    return index


@pytest_twisted.async_yield_fixture(params=["html", "json"])
async def running(request, dists: Path):
    """A fake index over L{dists}, listening, in each mode; stopped afterwards."""
    running = await start_fake_index(_make_index(dists, request.param))
    yield running
    await running.stop()


@pytest_twisted.async_yield_fixture()
async def running_json(dists: Path):
    """A json-mode fake index over L{dists}."""
    running = await start_fake_index(_make_index(dists, "json"))
    yield running
    await running.stop()


# -- packages -----------------------------------------------------------------


def test_wheel_is_well_formed(tmp_path: Path) -> None:
    """
    A built wheel has the spec's file name, METADATA with extras markers and
    Requires-Python, and a RECORD whose hashes and sizes match every member.
    """
    path = build_wheel(
        tmp_path,
        "Foo.Bar",
        "1.0.0",
        requires=["bar>=1"],
        requires_python=">=3.8",
        extras={"Fast": ["baz"]},
        module_body="ANSWER = 42\n",
    )
    assert path.name == "foo_bar-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path) as zf:
        meta = email.parser.Parser().parsestr(
            zf.read("foo_bar-1.0.0.dist-info/METADATA").decode()
        )
        assert meta["Metadata-Version"] == "2.1"
        assert meta["Name"] == "Foo.Bar"
        assert meta["Requires-Python"] == ">=3.8"
        assert meta["Provides-Extra"] == "fast"
        assert meta.get_all("Requires-Dist") == ["bar>=1", 'baz; extra == "fast"']
        assert b"ANSWER = 42" in zf.read("foo_bar/__init__.py")
        record = zf.read("foo_bar-1.0.0.dist-info/RECORD").decode().splitlines()
        for line in record:
            name, digest, size = line.rsplit(",", 2)
            if name.endswith("RECORD"):
                assert (digest, size) == ("", "")
                continue
            data = zf.read(name)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest())
            assert digest == "sha256=" + expected.rstrip(b"=").decode()
            assert int(size) == len(data)
        assert len(record) == len(zf.namelist())


def test_builds_are_reproducible(tmp_path: Path) -> None:
    """The same arguments give byte-identical wheels and sdists."""
    a = build_wheel(tmp_path / "a", "x", "1")
    b = build_wheel(tmp_path / "b", "x", "1")
    assert sha256_of(a) == sha256_of(b)
    assert sha256_of(build_sdist(tmp_path / "a", "x", "1")) == sha256_of(
        build_sdist(tmp_path / "b", "x", "1")
    )


def test_sdist_is_well_formed(tmp_path: Path) -> None:
    """An sdist holds PKG-INFO 2.2, a pyproject naming its in-tree backend, a module."""
    path = build_sdist(tmp_path, "Foo-Bar", "2.0", requires=["baz"])
    assert path.name == "foo_bar-2.0.tar.gz"
    with tarfile.open(path) as tar:
        names = set(tar.getnames())
        assert {
            "foo_bar-2.0/PKG-INFO",
            "foo_bar-2.0/pyproject.toml",
            "foo_bar-2.0/tinybackend.py",
            "foo_bar-2.0/foo_bar/__init__.py",
        } <= names
        pkg_info = tar.extractfile("foo_bar-2.0/PKG-INFO").read().decode()
        pyproject = tar.extractfile("foo_bar-2.0/pyproject.toml").read().decode()
    assert "Metadata-Version: 2.2\n" in pkg_info
    assert "Requires-Dist: baz\n" in pkg_info
    assert "requires = []" in pyproject and 'backend-path = ["."]' in pyproject


def test_clean_env_scrubs_client_configuration(tmp_path: Path, monkeypatch) -> None:
    """clean_env drops inherited PIP_/UV_/TWINE_ variables and points HOME at tmp."""
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "http://127.0.0.1:9/simple/")
    monkeypatch.setenv("UV_INDEX_URL", "http://127.0.0.1:9/simple/")
    monkeypatch.setenv("TWINE_PASSWORD", "x")
    env = clean_env(tmp_path)
    assert "PIP_EXTRA_INDEX_URL" not in env and "UV_INDEX_URL" not in env
    assert "TWINE_PASSWORD" not in env
    assert env["HOME"] == str(tmp_path / "home")
    assert env["UV_CACHE_DIR"] == str(tmp_path / "uv-cache")


@pytest_twisted.ensureDeferred
async def test_pip_installs_built_dists_offline(tmp_path: Path, dists: Path) -> None:
    """
    Real pip installs a wheel and builds the sdists (in-tree backend, no network,
    no setuptools) from a --find-links directory with --no-index, extras included,
    and looks at no other source of packages.
    """
    target = tmp_path / "target"
    result = await pip_install(
        None, ["foo[fast]"], target, tmp_path, ["--find-links", str(dists), "-v"]
    )
    result.check()
    assert {"foo", "bar", "baz"} <= {p.name for p in target.iterdir()}
    assert (
        (target / "bar" / "__init__.py").read_text().startswith('__version__ = "1.5"')
    )
    # Only our directory was consulted: no configured find-links or extra index.
    assert f"Looking in links: {dists}\n" in result.out
    assert "extra-index" not in result.out.lower()
    assert "Building wheel for bar (pyproject.toml)" in result.out


@pytest_twisted.ensureDeferred
async def test_run_kills_on_timeout(tmp_path: Path) -> None:
    """run() kills a process that outlives its timeout and says so."""
    result = await run(
        [sys.executable, "-c", "import time; time.sleep(30)"],
        clean_env(tmp_path),
        timeout=0.5,
    )
    assert result.timed_out and not result.ok


# -- pages --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_html_mode_always_answers_html(http, dists: Path) -> None:
    """
    In html mode a page is PEP 503 HTML with relative file URLs, hashes,
    escaped requires-python and both metadata attributes, even to a JSON Accept.
    """
    running = await start_fake_index(_make_index(dists, "html"))
    try:
        response = await http.get(running.url + "foo/", headers={"Accept": PIP_ACCEPT})
        body = (await response.text()).strip()
    finally:
        await running.stop()
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["text/html"]
    assert '<meta name="pypi:repository-version" content="1.1">' in body
    wheel = dists / "foo-1.0-py3-none-any.whl"
    meta_sha = hashlib.sha256(
        zipfile.ZipFile(wheel).read("foo-1.0.dist-info/METADATA")
    ).hexdigest()
    assert (
        f'<a href="../../files/foo-1.0-py3-none-any.whl#sha256={sha256_of(wheel)}" '
        'data-requires-python="&gt;=3.8" '
        f'data-core-metadata="sha256={meta_sha}" '
        f'data-dist-info-metadata="sha256={meta_sha}">foo-1.0-py3-none-any.whl</a>'
    ) in body
    sdist_line = next(line for line in body.splitlines() if "foo-0.9.tar.gz" in line)
    assert "metadata" not in sdist_line  # metadata is advertised for wheels only


@pytest_twisted.ensureDeferred
async def test_json_mode_negotiates(http, running_json) -> None:
    """
    In json mode a page is PEP 691/700 JSON (absolute URLs, hashes, sizes,
    metadata hashes, versions) when Accept prefers it, HTML otherwise.
    """
    response = await http.get(running_json.url + "foo/", headers={"Accept": PIP_ACCEPT})
    assert response.headers.getRawHeaders("content-type") == [JSON_TYPE]
    page = json.loads(await response.text())
    assert page["meta"] == {"api-version": "1.1"}
    assert page["name"] == "foo" and page["versions"] == ["0.9", "1.0"]
    sdist, wheel = page["files"]
    assert wheel["url"] == f"{running_json.root}files/foo-1.0-py3-none-any.whl"
    assert wheel["requires-python"] == ">=3.8" and sdist["requires-python"] is None
    assert wheel["core-metadata"] == wheel["dist-info-metadata"] != False  # noqa: E712
    assert sdist["core-metadata"] is False
    assert wheel["size"] > 0 and wheel["yanked"] is False
    assert wheel["upload-time"] == "2024-01-02T03:04:05.123456Z"
    assert wheel["hashes"] == {"sha256": running_json.index.sha256(wheel["filename"])}

    metadata = await http.get(wheel["url"] + ".metadata")
    assert (
        hashlib.sha256(await metadata.content()).hexdigest()
        == wheel["core-metadata"]["sha256"]
    )

    for accept in (None, "text/html", f"{JSON_TYPE}; q=0.1, text/html"):
        headers = {"Accept": accept} if accept else {}
        response = await http.get(running_json.url + "foo/", headers=headers)
        assert response.headers.getRawHeaders("content-type") == ["text/html"], accept
        body = await response.text()
        assert f'href="{running_json.root}files/foo-0.9.tar.gz#sha256=' in body


@pytest_twisted.ensureDeferred
async def test_hosted_file_layout(http, running_json) -> None:
    """
    With file_layout "hosted", pages link files (and their .metadata) at
    /packages/<aa>/<bb>/<60 hex>/<filename>, the blake2b-256 of the bytes cut
    2/2/60 as the public file host does; another digest there 404s.
    """
    index, name = running_json.index, "foo-1.0-py3-none-any.whl"
    index.file_layout = "hosted"
    wheel = index.files_dir / name
    digest = hashlib.blake2b(wheel.read_bytes(), digest_size=32).hexdigest()
    path = f"{digest[:2]}/{digest[2:4]}/{digest[4:]}/{name}"
    assert index.hosted_path(name) == path
    response = await http.get(running_json.url + "foo/", headers={"Accept": JSON_TYPE})
    page = json.loads(await response.text())
    urls = {f["filename"]: f["url"] for f in page["files"]}
    assert urls[name] == f"{running_json.root}packages/{path}"
    html_page = await (await http.get(running_json.url + "foo/")).text()
    assert f'href="{running_json.root}packages/{path}#sha256=' in html_page
    answer = await http.get(urls[name])
    assert answer.code == 200 and await answer.content() == wheel.read_bytes()
    assert (await http.get(urls[name] + ".metadata")).code == 200
    assert index.downloads(name) == 1
    wrong = f"{running_json.root}packages/00/00/{'0' * 60}/{name}"
    answer = await http.get(wrong)
    assert answer.code == 404
    await answer.content()


@pytest_twisted.ensureDeferred
async def test_yanked_and_listing(http, dists: Path) -> None:
    """Yanked files carry data-yanked / "yanked"; /simple/ lists the projects."""
    index = _make_index(dists, "json")
    index.add("foo-0.9.tar.gz", yanked="broken <build>")
    index.add("baz-2.0-py3-none-any.whl", yanked=True)
    running = await start_fake_index(index)
    try:
        html_page = await (await http.get(running.url + "foo/")).text()
        baz = json.loads(
            await (
                await http.get(running.url + "baz/", headers={"Accept": JSON_TYPE})
            ).text()
        )
        root_html = await (await http.get(running.url)).text()
        root_json = json.loads(
            await (await http.get(running.url, headers={"Accept": JSON_TYPE})).text()
        )
    finally:
        await running.stop()
    assert 'data-yanked="broken &lt;build&gt;"' in html_page
    assert baz["files"][0]["yanked"] is True
    assert [p["name"] for p in root_json["projects"]] == ["bar", "baz", "foo"]
    assert '<a href="foo/">foo</a>' in root_html


@pytest_twisted.ensureDeferred
async def test_redirects_and_404(http, running) -> None:
    """Unnormalized or slash-less names get a 301 to the normal page; unknowns 404."""
    for path in ("Foo/", "foo"):
        response = await http.get(running.url + path, allow_redirects=False)
        assert response.code == 301
        assert response.headers.getRawHeaders("location") == ["/simple/foo/"]
    assert (await http.get(running.url + "nope/")).code == 404
    assert (await http.get(running.root + "files/nope-1.0.tar.gz")).code == 404


@pytest_twisted.ensureDeferred
async def test_conditional_get(http, running) -> None:
    """
    Pages answer 304 to a matching If-None-Match or If-Modified-Since, and get a
    new ETag (and a later Last-Modified) when a file is added.
    """
    page = running.url + "foo/"
    first = await http.get(page)
    await first.content()
    etag = first.headers.getRawHeaders("etag")[0]
    modified = first.headers.getRawHeaders("last-modified")[0]

    again = await http.get(page, headers={"If-None-Match": etag})
    assert again.code == 304 and await again.content() == b""
    again = await http.get(page, headers={"If-Modified-Since": modified})
    assert again.code == 304

    build_wheel(running.index.files_dir, "foo", "1.1")
    running.index.add("foo-1.1-py3-none-any.whl")
    changed = await http.get(page, headers={"If-None-Match": etag})
    assert changed.code == 200
    assert "foo-1.1-py3-none-any.whl" in await changed.text()
    assert changed.headers.getRawHeaders("etag")[0] != etag
    changed = await http.get(page, headers={"If-Modified-Since": modified})
    assert changed.code == 200
    await changed.content()


@pytest_twisted.ensureDeferred
async def test_forced_status_and_slow_page(http, running_json) -> None:
    """page_status forces an error code; slow_page delays the page on the clock."""
    index = running_json.index
    index.page_status("foo", 503)
    assert (await http.get(running_json.url + "foo/")).code == 503
    index.page_status("foo", None)
    index.slow_page("foo", 0.3)
    started = reactor.seconds()
    response = await http.get(running_json.url + "foo/")
    assert response.code == 200 and reactor.seconds() - started >= 0.3
    await response.content()


@pytest_twisted.ensureDeferred
async def test_recording_and_forbid(http, running) -> None:
    """
    Every request is recorded with its headers; after forbid() each one answers
    500 and is recorded as a violation.
    """
    await (await http.get(running.url + "foo/", headers={"X-Test": "1"})).content()
    method, path, headers = running.index.requests[-1]
    assert (method, path, headers["x-test"]) == ("GET", "/simple/foo/", "1")
    assert running.index.count("/simple/foo/") == 1
    assert running.index.violations == []

    running.index.forbid()
    response = await http.get(running.root + "files/baz-2.0-py3-none-any.whl")
    assert response.code == 500
    await response.content()
    assert [v.path for v in running.index.violations] == [
        "/files/baz-2.0-py3-none-any.whl"
    ]


@pytest_twisted.ensureDeferred
async def test_stop_refuses_connections(http, dists: Path) -> None:
    """After stop(), even a held request is dropped and new ones are refused."""
    index = _make_index(dists, "html")
    running = await start_fake_index(index)
    index.hold("baz-2.0-py3-none-any.whl")
    pending = http.get(running.root + "files/baz-2.0-py3-none-any.whl")
    await deferLater(reactor, 0.1, lambda: None)
    await running.stop()
    with pytest.raises(ResponseFailed):
        await pending
    with pytest.raises(ConnectionRefusedError):
        await http.get(running.url)


# -- files and faults ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_files_are_plain_octet_streams(http, running) -> None:
    """A file comes whole, with Content-Length, octet-stream and no Content-Encoding."""
    name = "bar-1.5.tar.gz"
    # A bare Agent: treq's ContentDecoderAgent would add "Content-Encoding: ''".
    # Twisted keeps Content-Length out of response.headers: it is response.length.
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
    url = (running.root + "files/" + name).encode()
    response = await agent.request(b"GET", url)
    body = await readBody(response)
    assert hashlib.sha256(body).hexdigest() == running.index.sha256(name)
    assert response.length == len(body)
    headers = response.headers
    assert headers.getRawHeaders("content-type") == ["application/octet-stream"]
    assert not headers.hasHeader("content-encoding")
    head = await agent.request(b"HEAD", url)
    assert head.code == 200
    assert head.headers.getRawHeaders("content-type") == ["application/octet-stream"]
    assert running.index.downloads(name) == 1


@pytest_twisted.ensureDeferred
async def test_large_file_streams(http, tmp_path: Path) -> None:
    """A multi-megabyte file streams through intact (many producer pauses)."""
    d = tmp_path / "big"
    path = build_wheel(d, "big", "1.0", module_body="# " + "x" * 10 + "\n")
    with open(path, "ab") as f:  # pad past several transport buffers
        f.write(bytes(range(256)) * (8 * 4096))
    index = FakeIndex(d, "html")
    index.add(path.name, metadata=False)
    running = await start_fake_index(index)
    try:
        response = await http.get(running.root + "files/" + path.name)
        digest = hashlib.sha256()
        await treq.collect(response, digest.update)
    finally:
        await running.stop()
    assert digest.hexdigest() == sha256_of(path)


@pytest_twisted.ensureDeferred
async def test_corrupt_serves_same_length_wrong_hash(http, running) -> None:
    """corrupt() keeps the length and changes the bytes (so the hash)."""
    name = "baz-2.0-py3-none-any.whl"
    running.index.corrupt(name)
    body = await (await http.get(running.root + "files/" + name)).content()
    assert len(body) == (running.index.files_dir / name).stat().st_size
    assert hashlib.sha256(body).hexdigest() != running.index.sha256(name)
    running.index.heal(name)
    body = await (await http.get(running.root + "files/" + name)).content()
    assert hashlib.sha256(body).hexdigest() == running.index.sha256(name)


@pytest.mark.parametrize("fault", ["truncate", "die_midway"])
@pytest_twisted.ensureDeferred
async def test_broken_bodies_fail_the_client(http, running, fault: str) -> None:
    """
    truncate() and die_midway() send the full Content-Length, then half the body
    and close: the client has the headers and some bytes, then a failed body.
    """
    name = "bar-1.5.tar.gz"
    size = (running.index.files_dir / name).stat().st_size
    getattr(running.index, fault)(name)
    response = await http.get(running.root + "files/" + name)
    assert response.code == 200 and response.length == size
    received = []
    with pytest.raises(ResponseFailed):
        await treq.collect(response, received.append)
    assert len(b"".join(received)) == size // 2


@pytest_twisted.ensureDeferred
async def test_hold_parks_requests_until_release(http, running) -> None:
    """
    hold() keeps every request for the file waiting; wait_for(n) fires when n have
    arrived; release() lets them all through.
    """
    name = "baz-2.0-py3-none-any.whl"
    hold = running.index.hold(name)
    first = http.get(running.root + "files/" + name)
    second = http.get(running.root + "files/" + name)
    answered = []
    for d in (first, second):
        d.addCallback(lambda r: answered.append(r) or r)
    await hold.wait_for(2)
    assert hold.arrived == 2 and hold.waiting == 2
    await deferLater(reactor, 0.1, lambda: None)
    assert answered == []
    hold.release()
    for d in (first, second):
        body = await (await d).content()
        assert hashlib.sha256(body).hexdigest() == running.index.sha256(name)
    # Released: later requests go straight through.
    assert (await http.get(running.root + "files/" + name)).code == 200


# -- real clients through the fake index --------------------------------------


@pytest_twisted.ensureDeferred
async def test_pip_installs_through_fake_index(tmp_path: Path, running) -> None:
    """
    pip --index-url <fake> resolves foo[fast] -> bar (sdist, built offline) -> baz
    in both modes, fetching only from the fake index.
    """
    target = tmp_path / "target"
    result = await pip_install(running.url, ["foo[fast]"], target, tmp_path)
    result.check()
    assert {"foo", "bar", "baz"} <= {p.name for p in target.iterdir()}
    index = running.index
    for name in (
        "foo-1.0-py3-none-any.whl",
        "bar-1.5.tar.gz",
        "baz-2.0-py3-none-any.whl",
    ):
        assert index.downloads(name) == 1, index.paths()
    assert all(p.startswith(("/simple/", "/files/")) for p in index.paths())
    accept = {h["accept"] for m, p, h in index.requests if p.startswith("/simple/")}
    assert any(JSON_TYPE in a for a in accept)


@pytest_twisted.ensureDeferred
async def test_uv_installs_through_fake_index(tmp_path: Path, running) -> None:
    """uv pip install --index-url <fake> resolves and builds the graph in both modes."""
    target = tmp_path / "target"
    result = await uv_pip_install(running.url, ["foo[fast]"], target, tmp_path)
    result.check()
    assert {"foo", "bar", "baz"} <= {p.name for p in target.iterdir()}
    index = running.index
    assert index.downloads("baz-2.0-py3-none-any.whl") == 1, index.paths()


@pytest_twisted.ensureDeferred
async def test_pip_rejects_corrupt_file(tmp_path: Path, running_json) -> None:
    """pip checks the page's #sha256 itself: a corrupt file fails the install."""
    running_json.index.corrupt("baz-2.0-py3-none-any.whl")
    result = await pip_install(running_json.url, ["baz"], tmp_path / "t", tmp_path)
    assert not result.ok
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in result.err


# -- upload wrappers ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_upload_wrappers_post_to_the_url(tmp_path: Path, dists: Path) -> None:
    """twine_upload and uv_publish POST a file_upload with basic auth to the URL."""
    posts = []

    class Receiver(Resource):
        isLeaf = True

        def render_POST(self, request):
            posts.append(
                (
                    request.getUser(),
                    request.getPassword(),
                    request.args.get(b":action"),
                    request.args.get(b"name"),
                )
            )
            return b"OK"

    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Site(Receiver())
    )
    url = f"http://127.0.0.1:{port.getHost().port}/legacy/"
    try:
        (
            await twine_upload(
                url,
                [dists / "baz-2.0-py3-none-any.whl"],
                tmp_path,
                username="alice",
                password="pw",
            )
        ).check()
        (
            await uv_publish(
                url,
                [dists / "bar-1.5.tar.gz"],
                tmp_path,
                username="bob",
                password="pw2",
            )
        ).check()
    finally:
        await port.stopListening()
    assert posts == [
        (b"alice", b"pw", [b"file_upload"], [b"baz"]),
        (b"bob", b"pw2", [b"file_upload"], [b"bar"]),
    ]


# -- in memory ------------------------------------------------------------------


class InMemoryTests(SynchronousTestCase):
    """FakeIndex under treq.testing.StubTreq: no reactor, no sockets, a fake clock."""

    def setUp(self) -> None:
        # Not self.mktemp(): under pytest that is relative to the working directory.
        self.dists = Path(tempfile.mkdtemp(prefix="fakeindex-"))
        self.addCleanup(shutil.rmtree, self.dists, True)
        build_wheel(self.dists, "baz", "2.0")
        build_sdist(self.dists, "bar", "1.5", requires=["baz"])
        self.clock = Clock()
        self.index = FakeIndex(self.dists, "json", clock=self.clock)
        self.index.add("baz-2.0-py3-none-any.whl")
        self.index.add("bar-1.5.tar.gz")
        self.stub = StubTreq(self.index)

    def get(self, url: str, **kwargs) -> Deferred:
        d = self.stub.get(url, **kwargs)
        self.stub.flush()
        return d

    def test_pages_and_files(self) -> None:
        """Pages and files come out the same as over TCP (host and port from iosim)."""
        response = self.successResultOf(
            self.get("http://127.0.0.1/simple/baz/", headers={"Accept": JSON_TYPE})
        )
        page = json.loads(self.successResultOf(self.stub.text_content(response)))
        url = page["files"][0]["url"]
        self.assertEqual(url, "http://127.0.0.1:80/files/baz-2.0-py3-none-any.whl")
        body = self.successResultOf(
            self.stub.content(self.successResultOf(self.get(url)))
        )
        self.assertEqual(
            hashlib.sha256(body).hexdigest(),
            self.index.sha256("baz-2.0-py3-none-any.whl"),
        )

    def test_slow_page_uses_the_clock(self) -> None:
        """slow_page waits on the injected clock, not on real time."""
        self.index.slow_page("bar", 5)
        d = self.get("http://127.0.0.1/simple/bar/")
        self.assertNoResult(d)
        self.clock.advance(5)
        self.stub.flush()
        self.assertEqual(self.successResultOf(d).code, 200)

    def test_hold_page(self) -> None:
        """hold_page parks page requests until release."""
        hold = self.index.hold_page("bar")
        d = self.get("http://127.0.0.1/simple/bar/")
        self.assertNoResult(d)
        self.assertEqual(hold.arrived, 1)
        hold.release()
        self.stub.flush()
        self.assertEqual(self.successResultOf(d).code, 200)

    def test_remove_and_no_metadata(self) -> None:
        """metadata=False advertises and serves no core metadata; remove() 404s."""
        self.index.add("baz-2.0-py3-none-any.whl", metadata=False)
        response = self.successResultOf(self.get("http://127.0.0.1/simple/baz/"))
        self.assertNotIn(
            "metadata", self.successResultOf(self.stub.text_content(response))
        )
        meta = self.get("http://127.0.0.1/files/baz-2.0-py3-none-any.whl.metadata")
        self.assertEqual(self.successResultOf(meta).code, 404)
        self.index.remove("baz-2.0-py3-none-any.whl")
        self.assertEqual(
            self.successResultOf(self.get("http://127.0.0.1/simple/baz/")).code, 404
        )
