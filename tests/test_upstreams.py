"""Named upstreams: routing by project name, merge, ``/upstreams/<name>/simple/``,
per-project refresh and purge, against two fake upstreams on loopback."""

import base64
import hashlib
import json
from pathlib import Path

import bcrypt
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, task
from twisted.internet.task import deferLater

from pypicache.index.model import DistFile, ProjectPage
from pypicache.proxy.upstreams import Router, UpstreamSpec, merge_pages
from tests.clients import pip_install
from tests.daemon import start_daemon
from tests.fakeindex import FakeIndex, start_fake_index
from tests.packages import build_wheel

JSON = "application/vnd.pypi.simple.v1+json"


def sleep(seconds: float):
    return task.deferLater(reactor, seconds, lambda: None)


def basic(user: str, password: str) -> dict[str, list[str]]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": [f"Basic {token}"]}


class Two:
    """A default fake upstream, a ``pytorch`` one (with credentials) and a daemon."""

    def __init__(self, default, pytorch, daemon) -> None:
        self.default, self.pytorch, self.daemon = default, pytorch, daemon

    def asked(self, index: FakeIndex, name: str) -> list[str]:
        return [r.path for r in index.requests if name in r.path]

    async def page(self, path: str) -> dict:
        response = await self.daemon.get(path, headers={"Accept": JSON})
        assert response.code == 200, (path, response.code)
        return json.loads(await treq.content(response))

    async def stop(self) -> None:
        await self.daemon.stop()
        await self.default_running.stop()
        await self.pytorch_running.stop()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """Wheels of the two upstreams: ``torch`` on both (a public impostor on the
    default one), the same file name with other bytes on each for ``nvidia-x``."""
    d = tmp_path_factory.mktemp("wheels")
    (d / "default").mkdir()
    (d / "pytorch").mkdir()
    return {
        "impostor": build_wheel(d / "default", "torch", "99.0"),
        "torch": build_wheel(d / "pytorch", "torch", "2.0"),
        "lib": build_wheel(d / "default", "lib", "1.0"),
        "nv_public": build_wheel(
            d / "default", "nvidia-x", "1.0", module_body="SOURCE = 'public'"
        ),
        "nv_public_only": build_wheel(d / "default", "nvidia-x", "0.9"),
        "nv_routed": build_wheel(
            d / "pytorch", "nvidia-x", "1.0", module_body="SOURCE = 'routed'"
        ),
    }


@pytest_twisted.async_yield_fixture
async def two(tmp_path, wheels):
    default = FakeIndex(tmp_path, "json")
    for key in ("impostor", "lib", "nv_public", "nv_public_only"):
        default.add(wheels[key])
    pytorch = FakeIndex(tmp_path, "json")
    for key in ("torch", "nv_routed"):
        pytorch.add(wheels[key])
    default_running = await start_fake_index(default)
    pytorch_running = await start_fake_index(pytorch)
    url = pytorch_running.url.replace("http://", "http://robot:s3cret@")
    users = tmp_path / "users"
    hashed = bcrypt.hashpw(b"wonderland", bcrypt.gensalt(rounds=4)).decode()
    users.write_text(f"alice:{hashed}\n")
    daemon = await start_daemon(
        default_running.url,
        tmp_path / "cache",
        auth_file=str(users),
        upstreams=[UpstreamSpec("pytorch", url)],
        routes=[("torch*", "pytorch"), ("nvidia-*", "pytorch")],
        merge=["nvidia-x"],
    )
    world = Two(default, pytorch, daemon)
    world.default_running, world.pytorch_running = default_running, pytorch_running
    yield world
    await world.stop()


def test_router_first_match_and_merge():
    """The first matching glob routes a normalized name; merge adds the default after it."""
    router = Router((("torch*", "a"), ("t*", "b")), frozenset({"tx"}))
    assert router.sources("torchvision") == ("a",)
    assert router.sources("tx") == ("b", None)
    assert router.sources("lib") == (None,)


def test_merge_pages_keeps_the_first_of_a_filename():
    """Merged pages list the first upstream's file of a name, and the second's others."""
    first = ProjectPage("p", (DistFile("p-1.whl", "u1", {"sha256": "a"}),))
    second = ProjectPage(
        "p",
        (
            DistFile("p-1.whl", "u2", {"sha256": "b"}),
            DistFile("p-0.whl", "u3", {"sha256": "c"}),
        ),
    )
    merged = merge_pages(first, second)
    assert [(f.filename, f.url) for f in merged.files] == [
        ("p-1.whl", "u1"),
        ("p-0.whl", "u3"),
    ]


@pytest_twisted.ensureDeferred
async def test_routed_project_is_never_asked_of_the_default_upstream(two, wheels):
    """A routed project's page and files come from its upstream only (with that
    upstream's credentials): the default upstream's request log never names it,
    and an unrouted project is not asked of the named upstream."""
    page = await two.page("simple/torch/")
    assert [f["filename"] for f in page["files"]] == [wheels["torch"].name]
    response = await two.daemon.get(f"packages/torch/{wheels['torch'].name}")
    assert response.code == 200
    body = await treq.content(response)
    assert hashlib.sha256(body).hexdigest() == two.pytorch.sha256(wheels["torch"].name)
    lib = await two.page("simple/lib/")
    assert [f["filename"] for f in lib["files"]] == [wheels["lib"].name]
    assert two.asked(two.default, "torch") == []
    assert two.asked(two.pytorch, "lib") == []
    auth = [r.headers.get("authorization") for r in two.pytorch.requests]
    expected = "Basic " + base64.b64encode(b"robot:s3cret").decode()
    assert auth and set(auth) == {expected}
    assert all("authorization" not in r.headers for r in two.default.requests)


@pytest_twisted.ensureDeferred
async def test_merged_project_lists_both_the_routed_file_first(two, wheels):
    """A merged project is asked of both; for a file name on both, the routed
    upstream's file is listed, downloaded and verified against its hash."""
    page = await two.page("simple/nvidia-x/")
    name = wheels["nv_routed"].name
    files = {f["filename"]: f["hashes"]["sha256"] for f in page["files"]}
    assert files == {
        name: two.pytorch.sha256(name),
        wheels["nv_public_only"].name: two.default.sha256(
            wheels["nv_public_only"].name
        ),
    }
    response = await two.daemon.get(f"packages/nvidia-x/{name}")
    assert response.code == 200
    body = await treq.content(response)
    assert hashlib.sha256(body).hexdigest() == two.pytorch.sha256(name)
    assert f"/files/{name}" not in two.default.paths()


@pytest_twisted.ensureDeferred
async def test_routed_upstream_failing_or_lacking_never_falls_back(two, wheels):
    """A routed project its upstream lacks is 404 though the default upstream
    has it; a merged one whose routed upstream fails is 502, never the default
    upstream's files alone."""
    two.pytorch.page_status("nvidia-x", 503)
    failed = await two.daemon.get("simple/nvidia-x/", headers={"Accept": JSON})
    assert failed.code == 502
    await treq.content(failed)
    two.default.add(build_wheel(wheels["lib"].parent, "nvidia-y", "1.0"))
    missing = await two.daemon.get("simple/nvidia-y/", headers={"Accept": JSON})
    assert missing.code == 404
    await treq.content(missing)
    assert two.asked(two.default, "nvidia-y") == []


@pytest_twisted.ensureDeferred
async def test_pip_installs_from_a_named_upstream_on_its_own(two, wheels, tmp_path):
    """pip installs from ``/upstreams/pytorch/simple/``; the files are kept in
    that upstream's own store (a purge removes them there), and the default
    upstream is never asked."""
    target = tmp_path / "target"
    result = await pip_install(
        two.daemon.url + "upstreams/pytorch/simple/", ["torch"], target, tmp_path
    )
    assert result.code == 0, result
    assert (target / "torch" / "__init__.py").exists()
    assert two.asked(two.default, "torch") == []
    stored = two.daemon.cache / "upstreams" / "pytorch" / "mirror" / "torch"
    assert wheels["torch"].name in [p.name for p in stored.iterdir()]
    missing = await two.daemon.get("upstreams/nope/simple/")
    assert missing.code == 404
    done = await two.daemon.client.delete(
        two.daemon.url + "+cache/torch", headers=basic("alice", "wonderland")
    )
    assert json.loads(await treq.content(done)) == {
        "project": "torch",
        "removed": [],
        "upstreams": {"pytorch": [wheels["torch"].name]},
    }
    assert not (stored / wheels["torch"].name).exists()


@pytest_twisted.ensureDeferred
async def test_refresh_needs_credentials_and_refetches(two):
    """``POST /+refresh/<project>`` is refused without credentials; with them,
    the next request fetches the page again although it was fresh."""
    await two.page("simple/lib/")
    asked = len(two.asked(two.default, "/simple/lib/"))
    refused = await two.daemon.client.post(two.daemon.url + "+refresh/lib")
    assert refused.code == 401
    await two.page("simple/lib/")
    assert len(two.asked(two.default, "/simple/lib/")) == asked
    done = await two.daemon.client.post(
        two.daemon.url + "+refresh/Lib", headers=basic("alice", "wonderland")
    )
    assert done.code == 200
    assert json.loads(await treq.content(done)) == {"project": "lib", "refreshed": True}
    await two.page("simple/lib/")
    assert len(two.asked(two.default, "/simple/lib/")) == asked + 1


@pytest_twisted.ensureDeferred
async def test_purge_removes_mirrored_files_never_private_ones(two, wheels, tmp_path):
    """``DELETE /+cache/<project>`` removes its mirrored files from the listings
    and the disk (authenticated); a private project's files stay."""
    name = wheels["lib"].name
    response = await two.daemon.get(f"packages/lib/{name}")
    await treq.content(response)
    # A cold file's client completes once it is verified; it is listed once stored.
    for _ in range(500):
        listed = await two.daemon.get("local/lib/")
        if listed.code == 200 and name in await listed.text():
            break
        await deferLater(reactor, 0.02, lambda: None)
    assert (await two.daemon.get("local/lib/")).code == 200
    refused = await two.daemon.client.delete(two.daemon.url + "+cache/lib")
    assert refused.code == 401
    auth = basic("alice", "wonderland")
    done = await two.daemon.client.delete(two.daemon.url + "+cache/lib", headers=auth)
    assert done.code == 200
    assert json.loads(await treq.content(done)) == {
        "project": "lib",
        "removed": [name],
        "upstreams": {},
    }
    assert (await two.daemon.get("local/lib/")).code == 404
    assert not (two.daemon.cache / "mirror" / "lib" / name).exists()
    mine = build_wheel(tmp_path / "own", "mine", "1.0")
    put = await two.daemon.client.put(
        two.daemon.url + f"packages/mine/{mine.name}", mine.read_bytes(), headers=auth
    )
    assert put.code in (200, 201), put.code
    kept = await two.daemon.client.delete(two.daemon.url + "+cache/mine", headers=auth)
    assert json.loads(await treq.content(kept))["removed"] == []
    assert (await two.daemon.get(f"packages/mine/{mine.name}")).code == 200
    again = await two.daemon.get(f"packages/lib/{name}")
    assert again.code == 200  # fetched again on demand
    await treq.content(again)


def test_reload_changes_named_upstreams_credentials_and_ttl(tmp_path):
    """SIGHUP changes a named upstream's credentials, timeout and page TTL in
    place; a new URL, a new upstream or new routes need a restart."""
    from twisted.logger import capturedLogs

    from pypicache.tap.reload import reload
    from tests.test_config import live_from_config

    head = f'cache = "{tmp_path / "cache"}"\nindex-url = "http://127.0.0.1:9/simple/"\n'
    config = tmp_path / "pypicache.toml"
    options, live, site = live_from_config(
        config,
        head + 'route = { "torch*" = "pt" }\n'
        '[upstreams.pt]\nurl = "http://127.0.0.1:8/whl/"\n',
    )
    named = live.named["pt"]
    page = "http://127.0.0.1:8/whl/torch/"
    assert "Authorization" not in named.upstream._headers(page, {})
    assert (named.upstream.timeout, named.pages.ttl) == (30.0, 600.0)

    config.write_text(
        head + 'route = { "torch*" = "pt" }\npage-ttl = 7\n'
        '[upstreams.pt]\nurl = "http://ann:secret@127.0.0.1:8/whl/"\ntimeout = 4\n'
    )
    with capturedLogs() as events:
        reload(options, live, site)
    assert [e["changed"] for e in events] == ["page-ttl, upstream"]
    assert (
        named.upstream._headers(page, {})["Authorization"] == "Basic YW5uOnNlY3JldA=="
    )
    assert (named.upstream.timeout, named.pages.ttl, live.pages.ttl) == (4.0, 7, 7)

    config.write_text(
        head + 'route = { "nvidia-*" = "pt" }\npage-ttl = 7\n'
        '[upstreams.pt]\nurl = "http://ann:secret@127.0.0.1:7/whl/"\ntimeout = 4\n'
    )
    with capturedLogs() as events:
        reload(options, live, site)
    assert [e["restart"] for e in events] == ["route, upstream"]
    assert named.upstream.index_url == "http://127.0.0.1:8/whl/"


NO_UPSTREAM = "http://127.0.0.1:9/simple/"


def parse(tmp_path: Path, *argv: str):
    from pypicache.tap.options import Options

    options = Options()
    options.parseOptions(
        ["--cache", str(tmp_path / "cache"), "--index-url", NO_UPSTREAM, *argv]
    )
    return options


def test_command_line_upstreams_routes_and_merge(tmp_path):
    """``--upstream NAME=URL``, ``--route GLOB=NAME`` and ``--merge`` repeat;
    routes are lowercased globs; the command line's replace the file's tables."""
    options = parse(
        tmp_path,
        "--upstream",
        "pytorch=http://u:pw@127.0.0.1:8/whl/",
        "--route",
        "Torch*=pytorch",
        "--route",
        "nvidia-*=pytorch",
        "--merge",
        "Torch_Vision",
    )
    assert options["upstream"] == [
        UpstreamSpec("pytorch", "http://u:pw@127.0.0.1:8/whl/")
    ]
    assert "pw" not in repr(options["upstream"])
    assert options["route"] == [("torch*", "pytorch"), ("nvidia-*", "pytorch")]
    assert options["merge"] == ["torch-vision"]
    config = tmp_path / "pypicache.toml"
    config.write_text(
        'route = { "x*" = "other" }\n[upstreams.other]\nurl = "http://127.0.0.1:7/"\n'
    )
    options = parse(
        tmp_path,
        "--config",
        str(config),
        "--upstream",
        "pt=http://127.0.0.1:8/",
        "--route",
        "x*=pt",
    )
    assert [s.name for s in options["upstream"]] == ["pt"]
    assert options["route"] == [("x*", "pt")]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--upstream", "pytorch"], "must be NAME=URL"),
        (["--upstream", "Py=http://127.0.0.1:8/"], "'Py' cannot name an upstream"),
        (
            ["--upstream", "p=ftp://u:pw@h/"],
            "must be an http(s) URL, not 'ftp://u:***@h/'",
        ),
        (["--upstream", "p=http://h/", "--upstream", "p=http://i/"], "given twice"),
        (["--route", "torch*"], "must be GLOB=NAME"),
        (["--route", "torch*=nope"], "route: 'torch*' names no upstream 'nope'"),
        (
            ["--upstream", "p=http://h/", "--route", "t*=p", "--merge", "lib"],
            "merge: 'lib' is not routed",
        ),
    ],
)
def test_command_line_errors_name_the_option(tmp_path, argv, message):
    """Bad upstreams, routes and merges are usage errors that say what is wrong."""
    from twisted.python import usage

    with pytest.raises(usage.UsageError) as caught:
        parse(tmp_path, *argv)
    assert message in str(caught.value)


@pytest_twisted.ensureDeferred
async def test_twistd_routes_with_command_line_upstreams(tmp_path, wheels):
    """``twistd pypicache --upstream NAME=URL --route GLOB=NAME`` routes as the
    built app does, and cleans what a crash left in the upstream's own store."""
    from tests.clients import clean_env
    from tests.daemon import spawn_twistd
    from tests.test_config import started
    from tests.test_crash import bounded

    default = FakeIndex(tmp_path, "json")
    default.add(wheels["impostor"])
    pytorch = FakeIndex(tmp_path, "json")
    pytorch.add(wheels["torch"])
    default_running = await start_fake_index(default)
    pytorch_running = await start_fake_index(pytorch)
    stale = tmp_path / "cache" / "upstreams" / "pytorch" / "mirror" / "torch"
    stale.mkdir(parents=True)
    (stale / ".tmp-crashed").write_bytes(b"half a wheel")
    twistd = spawn_twistd(
        tmp_path,
        default_running.url,
        clean_env(tmp_path),
        "--upstream",
        f"pytorch={pytorch_running.url}",
        "--route",
        "torch*=pytorch",
    )
    client = None
    try:
        client = await started(twistd)
        response = await client.get("simple/torch/", headers={"Accept": [JSON]})
        assert response.code == 200
        own = await client.get("upstreams/pytorch/simple/torch/")
        assert own.code == 200
        await bounded(twistd.wait_for(b"Site starting"))
        for _ in range(100):
            if not (stale / ".tmp-crashed").exists():
                break
            await bounded(sleep(0.05))
        assert not (stale / ".tmp-crashed").exists()
    finally:
        if client is not None:
            await client.close()
        await twistd.stop()
        await default_running.stop()
        await pytorch_running.stop()
    # The page once, and what prefetch fetched below it: all from the routed
    # upstream, nothing from the default one.
    pages = [r.path for r in pytorch.requests if r.path.startswith("/simple/")]
    assert pages == ["/simple/torch/"]
    assert [r.path for r in default.requests if "torch" in r.path] == []
    page = tmp_path / "cache" / "upstreams" / "pytorch" / "pages" / "torch.json"
    assert page.exists()


@pytest_twisted.ensureDeferred
async def test_named_upstream_follows_the_block_list(tmp_path, wheels):
    """The block list applies under /upstreams/<name>/ too: a blocked version
    is on no page there and its file answers 404 with the reason."""
    pytorch = FakeIndex(tmp_path, "json")
    pytorch.add(wheels["torch"])
    running = await start_fake_index(pytorch)
    daemon = await start_daemon(
        running.url,
        tmp_path / "cache",
        upstreams=[UpstreamSpec("pytorch", running.url)],
        block=["torch==2.0"],
    )
    try:
        name = wheels["torch"].name
        for base in ("", "upstreams/pytorch/"):
            page = await daemon.get(f"{base}simple/torch/")
            assert page.code == 200 and name not in await page.text()
            answer = await daemon.get(f"{base}packages/torch/{name}")
            assert answer.code == 404
            assert "(block list: torch==2.0)" in await answer.text()
    finally:
        await daemon.stop()
        await running.stop()
