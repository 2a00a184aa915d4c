"""The block list (pypicache.proxy.blocklist, ``block``/``--block``): a
blocked project's pages and files answer 404 with the reason; a blocked
version leaves every page (and the PEP 700 ``versions`` list), its files and
their .metadata answer 404, pip gets the next version; bulk caching never
fetches a blocked file; entries are checked; a reload replaces the list."""

import json

import pytest
import pytest_twisted
from twisted.python import usage

from pypicache.proxy.blocklist import BlockList, parse_entry, with_block_list
from pypicache.tap.options import Options
from tests.clients import pip_install
from tests.daemon import LOCAL_JSON, start_world
from tests.packages import build_sdist, build_wheel
from tests.webclient import send

NO_UPSTREAM = "http://127.0.0.1:9/simple/"


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    d = tmp_path_factory.mktemp("dists")
    return {
        "one": build_wheel(d, "goodpkg", "1.0"),
        "two": build_wheel(d, "goodpkg", "2.0"),
        "two_sdist": build_sdist(d, "goodpkg", "2.0"),
        "evil": build_wheel(d, "evil-pkg", "1.0"),
    }


@pytest.mark.parametrize(
    "entry, message",
    [
        ("requests; python_version < '3'", "no markers, extras or URLs"),
        ("requests[socks]", "no markers, extras or URLs"),
        ("requests @ https://example.invalid/r.whl", "no markers, extras or URLs"),
        ("==1.0", "is not a requirement"),
        ("", "is not a requirement"),
    ],
)
def test_bad_entries_are_usage_errors_naming_them(tmp_path, entry, message):
    """An entry with a marker, extras or a URL, or not a requirement, is a
    usage error naming the entry, on the command line and in the config file."""
    with pytest.raises(usage.UsageError, match=message) as raised:
        Options().parseOptions(
            ["--cache", str(tmp_path), "--index-url", NO_UPSTREAM, "--block", entry]
        )
    assert repr(entry) in str(raised.value)
    config = tmp_path / "pypicache.toml"
    config.write_text(
        f'cache = "{tmp_path}"\nindex-url = "{NO_UPSTREAM}"\n'
        f"block = [{json.dumps(entry)}]\n"
    )
    with pytest.raises(usage.UsageError, match=message):
        Options().parseOptions(["--config", str(config)])


def test_entries_from_config_and_command_line(tmp_path):
    """``block`` in the config file is read; repeated ``--block`` on the
    command line replaces it (as for every key); names are matched normalized
    and specifiers include pre-releases."""
    config = tmp_path / "pypicache.toml"
    config.write_text(
        f'cache = "{tmp_path}"\nindex-url = "{NO_UPSTREAM}"\n'
        'block = ["Evil_Pkg", "requests==2.99.0"]\n'
    )
    options = Options()
    options.parseOptions(["--config", str(config)])
    assert options["block"] == ["Evil_Pkg", "requests==2.99.0"]
    given = ["--config", str(config), "--block", "urllib3>=3.0", "--block", "a"]
    options = Options()
    options.parseOptions(given)
    assert options["block"] == ["urllib3>=3.0", "a"]
    block = BlockList.of(["Evil_Pkg", "requests==2.99.0", "urllib3>=3.0"])
    assert parse_entry(" Evil_Pkg ")[0] == "evil-pkg"
    assert block.refusal("evil-pkg", "evil_pkg-0.1.tar.gz", None) is not None
    assert block.refusal("requests", "requests-2.99-py3-none-any.whl", None) == (
        "requests-2.99-py3-none-any.whl is blocked on this server "
        "(block list: requests==2.99.0)"
    )
    assert block.refusal("requests", "requests-2.98.0.tar.gz", None) is None
    assert block.refusal("urllib3", "urllib3-3.1rc1-py3-none-any.whl", None)
    assert block.refusal("urllib3", "urllib3-2.9-py3-none-any.whl", None) is None


@pytest_twisted.ensureDeferred
async def test_blocked_project_and_version_are_hidden(tmp_path, dists):
    """A blocked project's /simple/ page and files answer 404 with the reason;
    a blocked version is on no page (nor in ``versions``), its files and
    .metadata answer 404 with the reason, and pip gets the next version."""
    world = await start_world(
        tmp_path, list(dists.values()), timeout=5, block=["evil-pkg", "goodpkg==2.0"]
    )
    try:
        d = world.daemon
        for _ in range(2):  # the second answer may come from the fast lane
            answer = await send(d, "GET", "/simple/evil-pkg/")
            assert answer.code == 404
            assert "evil-pkg is blocked on this server (block list: evil-pkg)" in (
                answer.body.decode()
            )
            answer = await send(
                d, "GET", "/simple/goodpkg/", headers={"Accept": LOCAL_JSON}
            )
            assert answer.code == 200
            page = answer.json()
            assert [f["filename"] for f in page["files"]] == [dists["one"].name]
            assert page["versions"] == ["1.0"]
            html = (await send(d, "GET", "/simple/goodpkg/")).body.decode()
            assert "goodpkg-2.0" not in html and dists["one"].name in html
        for path in (
            f"/packages/evil-pkg/{dists['evil'].name}",
            f"/packages/goodpkg/{dists['two'].name}",
            f"/packages/goodpkg/{dists['two'].name}.metadata",
            f"/packages/goodpkg/{dists['two_sdist'].name}",
        ):
            answer = await send(d, "GET", path)
            assert answer.code == 404, path
            assert "is blocked on this server (block list: " in answer.body.decode()

        result = await pip_install(
            d.url + "simple/", ["goodpkg"], tmp_path / "t1", tmp_path
        )
        result.check()
        assert {p.name for p in (tmp_path / "t1").glob("*.dist-info")} == {
            "goodpkg-1.0.dist-info"
        }
        result = await pip_install(
            d.url + "simple/", ["goodpkg==2.0"], tmp_path / "t2", tmp_path
        )
        assert result.code != 0
        result = await pip_install(
            d.url + "simple/", ["evil-pkg"], tmp_path / "t3", tmp_path
        )
        assert result.code != 0
        assert not [r for r in world.file_requests() if "2.0" in r or "evil" in r]
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_block_added_later_hides_stored_files_and_bulk_skips(tmp_path, dists):
    """A block list set while running (as a reload does) hides a version
    already cached from /simple/ and /local/ and refuses its stored file (kept
    on disk); bulk caching resolves to the next version and never fetches a
    blocked file; a project blocked whole leaves the project lists too."""
    world = await start_world(tmp_path, list(dists.values()), timeout=5)
    try:
        d = world.daemon
        two = dists["two"].name
        answer = await d.get(f"packages/goodpkg/{two}")
        assert answer.code == 200
        await answer.content()
        await world.stored("goodpkg", two)
        views = d.app.views
        views.rules = with_block_list(views.rules, ["goodpkg>=2.0"])
        for area in ("simple", "local"):
            answer = await send(d, "GET", f"/{area}/goodpkg/")
            assert answer.code == 200 and two not in answer.body.decode()
        answer = await send(d, "GET", f"/packages/goodpkg/{two}")
        assert answer.code == 404 and "goodpkg>=2.0" in answer.body.decode()
        assert two in world.mirror_files("goodpkg")

        views.rules = with_block_list(views.rules, ["goodpkg>=2.0", "evil-pkg"])
        body = b"goodpkg\n"
        answer = await send(
            d, "POST", "/requirements.txt", body, {"Content-Type": "text/plain"}
        )
        assert answer.code == 200, answer
        report = answer.json()
        assert [f["filename"] for f in report["files"]] == [dists["one"].name]
        assert not [r for r in world.file_requests() if dists["two_sdist"].name in r]

        # The whole project: out of the project lists too.
        for area in ("simple", "local"):
            assert "goodpkg" in (await send(d, "GET", f"/{area}/")).body.decode()
        views.rules = with_block_list(views.rules, ["goodpkg"])
        for area in ("simple", "local"):
            assert "goodpkg" not in (await send(d, "GET", f"/{area}/")).body.decode()
            answer = await send(d, "GET", f"/{area}/goodpkg/")
            assert (
                answer.code == 404 and "(block list: goodpkg)" in answer.body.decode()
            )

        # Cleared: the stored file is served again.
        views.rules = with_block_list(views.rules, [])
        assert (await send(d, "GET", f"/packages/goodpkg/{two}")).code == 200
        assert "goodpkg" in (await send(d, "GET", "/simple/")).body.decode()
    finally:
        await world.stop()


def test_reload_replaces_the_block_list(tmp_path):
    """SIGHUP: a changed ``block`` key replaces the block list in the views'
    rules (other rules kept); a bad entry keeps the running list."""
    from pypicache.proxy.yanks import LocalYanks
    from pypicache.tap.reload import reload
    from tests.test_config import live_from_config

    config = tmp_path / "pypicache.toml"
    head = f'cache = "{tmp_path / "cache"}"\nindex-url = "{NO_UPSTREAM}"\n'
    options, live, site = live_from_config(config, head + 'block = ["evil-pkg"]\n')

    def blocks() -> list[dict]:
        rules = live.app.views.rules.rules
        assert any(isinstance(r, LocalYanks) for r in rules)
        return [r.entries for r in rules if isinstance(r, BlockList)]

    assert list(blocks()[0]) == ["evil-pkg"]
    config.write_text(head + 'block = ["evil-pkg", "requests==2.99.0"]\n')
    reload(options, live, site)
    assert list(blocks()[0]) == ["evil-pkg", "requests"]
    config.write_text(head + "block = [\"requests; os_name == 'nt'\"]\n")
    reload(options, live, site)
    assert list(blocks()[0]) == ["evil-pkg", "requests"]
    config.write_text(head)
    reload(options, live, site)
    assert blocks() == []
