"""Prefetch: a cold page makes the daemon fetch what the client will ask next
(against a fake upstream on loopback, whose request log shows what was fetched)."""

import pytest
import pytest_twisted
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from twisted.internet import reactor, task, threads
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import formatEvent, globalLogPublisher

from pypicache.index.model import DistFile, ProjectPage
from pypicache.proxy.prefetch import dependencies, pick
from pypicache.proxy.walkloads import tag_ranks
from tests.clients import uv_pip_install
from tests.daemon import start_world
from tests.packages import build_wheel, metadata_text
from tests.webclient import put


def sleep(seconds: float):
    return task.deferLater(reactor, seconds, lambda: None)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """app 2.0 -> lib<2 (1.5 picked over 2.0), mid -> deep -> deeper; also a
    private name, a dependency for another platform, an extra, a prerelease."""
    d = tmp_path_factory.mktemp("tree")
    return {
        "app1": build_wheel(d, "app", "1.0", requires=["lib"]),
        "app2": build_wheel(
            d,
            "app",
            "2.0",
            requires=["lib<2", "mid", "secret", "winonly; sys_platform == 'nowhere'"],
            extras={"x": ["extradep"]},
        ),
        "app3": build_wheel(d, "app", "3.0rc1", requires=["lib"]),
        "lib10": build_wheel(d, "lib", "1.0"),
        "lib15": build_wheel(d, "lib", "1.5"),
        "lib20": build_wheel(d, "lib", "2.0"),
        "mid": build_wheel(d, "mid", "1.0", requires=["deep"]),
        "deep": build_wheel(d, "deep", "1.0", requires=["deeper"]),
        "deeper": build_wheel(d, "deeper", "1.0"),
        "secret": build_wheel(d, "secret", "1.0"),
        "winonly": build_wheel(d, "winonly", "1.0"),
        "extradep": build_wheel(d, "extradep", "1.0"),
    }


@pytest.fixture(scope="module")
def private_secret(tmp_path_factory):
    """The wheel uploaded as the private project ``secret``."""
    return build_wheel(tmp_path_factory.mktemp("private"), "secret", "9.0")


def never_shed(world):
    """Walks start however late (a loaded test machine must not shed them)."""
    if world.daemon.app.views.on_cold is not None:
        world.daemon.app.views.on_cold.max_lag = float("inf")
    return world


async def world_with(tmp_path, tree, private_secret, **options):
    world = never_shed(await start_world(tmp_path, tree.values(), timeout=5, **options))
    if private_secret is not None:
        assert (await put(world.daemon, private_secret)).code == 201
    return world


async def settled(world) -> None:
    """Wait until the daemon's prefetch walks have ended."""
    prefetcher = world.daemon.app.views.on_cold
    await sleep(0.05)  # a walk starts on the reactor's next turn
    for _ in range(500):
        if not prefetcher.walks:
            return
        await sleep(0.01)
    raise AssertionError("prefetch did not end")


def walk_events():
    """Start collecting the texts of prefetch's "Prefetch below" log events."""
    texts = []

    def observer(event):
        if event.get("log_namespace") == "pypicache.proxy.prefetch":
            text = formatEvent(event)
            if text.startswith("Prefetch below"):
                texts.append(text)

    globalLogPublisher.addObserver(observer)
    return texts, observer


def upstream_paths(world) -> list[str]:
    return [r.path for r in world.index.requests]


async def get_ok(world, path: str) -> bytes:
    response = await world.daemon.get(path)
    body = await response.content()
    assert response.code == 200, (path, body)
    return body


@pytest_twisted.ensureDeferred
async def test_prefetch_fetches_the_picked_metadata_and_dependency_pages(
    tmp_path, tree, private_secret
):
    """A cold page makes the daemon fetch the .metadata of the newest fitting
    wheel and, ``depth`` levels down, the pages and .metadata of its
    dependencies (within their specifiers, markers for this interpreter, no
    extras, never a private project); the client then finds them cached."""
    world = await world_with(tmp_path, tree, private_secret, prefetch_depth=2)
    texts, observer = walk_events()
    try:
        await get_ok(world, "/simple/app/")
        await settled(world)
        assert texts == []  # within its budget: no log event for the walk
        paths = upstream_paths(world)
        assert sorted(p for p in paths if p.startswith("/simple/")) == [
            "/simple/app/",
            "/simple/deep/",
            "/simple/lib/",
            "/simple/mid/",
        ]
        assert sorted(p for p in paths if p.startswith("/files/")) == [
            "/files/app-2.0-py3-none-any.whl.metadata",
            "/files/deep-1.0-py3-none-any.whl.metadata",
            "/files/lib-1.5-py3-none-any.whl.metadata",
            "/files/mid-1.0-py3-none-any.whl.metadata",
        ]
        before = len(world.index.requests)
        await get_ok(world, "/simple/lib/")
        await get_ok(world, "/simple/mid/")
        await get_ok(world, "/packages/lib/lib-1.5-py3-none-any.whl.metadata")
        await get_ok(world, "/simple/secret/")
        assert len(world.index.requests) == before
    finally:
        globalLogPublisher.removeObserver(observer)
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_prefetch_respects_its_bounds(tmp_path, tree, private_secret):
    """A walk makes at most ``requests`` upstream requests, at most
    ``concurrency`` at a time (and logs that it used them all); a project
    walked lately is not walked again, one the budget left out is, from a
    client's cold page."""
    world = await world_with(
        tmp_path,
        tree,
        private_secret,
        prefetch_depth=5,
        prefetch_requests=3,
        prefetch_concurrency=1,
    )
    try:
        texts, observer = walk_events()
        hold = world.index.hold_page("lib")
        await get_ok(world, "/simple/app/")
        await hold.wait_for(1)
        await sleep(0.1)
        # One at a time: the page of mid waits for that of lib.
        assert "/simple/mid/" not in upstream_paths(world)
        hold.release()
        await settled(world)
        assert upstream_paths(world) == [
            "/simple/app/",
            "/files/app-2.0-py3-none-any.whl.metadata",
            "/simple/lib/",
            "/simple/mid/",
        ]
        globalLogPublisher.removeObserver(observer)
        assert texts == ["Prefetch below app used all its 3 upstream requests"]
        # mid was planned by that walk: its page, now cold for nobody, is not
        # walked again when a client asks for it.
        await get_ok(world, "/simple/mid/")
        await settled(world)
        assert len(world.index.requests) == 4
        # deep, which the budget left out, is walked from a client's cold page.
        await get_ok(world, "/simple/deep/")
        await settled(world)
        assert upstream_paths(world)[4:] == [
            "/simple/deep/",
            "/files/deep-1.0-py3-none-any.whl.metadata",
            "/simple/deeper/",
            "/files/deeper-1.0-py3-none-any.whl.metadata",
        ]
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_prefetch_off(tmp_path, tree):
    """With ``--prefetch-depth 0`` a cold page fetches that page and nothing else."""
    world = await world_with(tmp_path, tree, None, prefetch_depth=0)
    try:
        assert world.daemon.app.views.on_cold is None
        await get_ok(world, "/simple/app/")
        await sleep(0.3)
        assert upstream_paths(world) == ["/simple/app/"]
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_failed_prefetch_has_no_effect_on_clients(tmp_path, tree):
    """A prefetch that fails (an upstream 500, a .metadata that does not match
    its hash) leaves nothing behind: the client's own requests, once the
    upstream is well, are answered as without prefetch."""
    world = await world_with(tmp_path, tree, None, prefetch_depth=2)
    try:
        world.index.page_status("lib", 500)
        world.index.corrupt("mid-1.0-py3-none-any.whl.metadata")
        await get_ok(world, "/simple/app/")
        await settled(world)
        assert "/simple/lib/" in upstream_paths(world)
        assert "/files/mid-1.0-py3-none-any.whl.metadata" in upstream_paths(world)
        world.index.heal_page("lib")
        world.index.heal("mid-1.0-py3-none-any.whl.metadata")
        assert b"lib-1.5-py3-none-any.whl" in await get_ok(world, "/simple/lib/")
        metadata = await get_ok(
            world, "/packages/mid/mid-1.0-py3-none-any.whl.metadata"
        )
        assert metadata == metadata_text("mid", "1.0", requires=["deep"]).encode()
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_prefetch_of_wheels_up_to_a_size(tmp_path, tree):
    """With ``--prefetch-max-file`` the picked wheels no larger than it are
    stored too; larger ones are not fetched."""
    world = await world_with(
        tmp_path, tree, None, prefetch_depth=1, prefetch_max_file=100_000
    )
    try:
        await get_ok(world, "/simple/app/")
        await settled(world)
        assert world.mirror_files("app") == [
            "app-2.0-py3-none-any.whl",
            "app-2.0-py3-none-any.whl.json",
            "app-2.0-py3-none-any.whl.metadata",
        ]
        assert "lib-1.5-py3-none-any.whl" in world.mirror_files("lib")
    finally:
        await world.stop()
    world = await world_with(
        tmp_path / "small", tree, None, prefetch_depth=1, prefetch_max_file=100
    )
    try:
        await get_ok(world, "/simple/app/")
        await settled(world)
        assert not [p for p in upstream_paths(world) if p.endswith(".whl")]
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_uv_installs_with_prefetch_on(tmp_path, tree, private_secret):
    """A real ``uv pip install`` through a daemon that prefetches: the right
    versions, every upstream file fetched at most once."""
    world = await world_with(
        tmp_path, tree, private_secret, prefetch_depth=3, prefetch_max_file=100_000
    )
    try:
        result = await uv_pip_install(
            world.daemon.url + "simple/", ["app"], tmp_path / "t", tmp_path
        )
        result.check()
        installed = sorted(p.name for p in (tmp_path / "t").glob("*.dist-info"))
        assert installed == [
            "app-2.0.dist-info",
            "deep-1.0.dist-info",
            "deeper-1.0.dist-info",
            "lib-1.5.dist-info",
            "mid-1.0.dist-info",
            "secret-9.0.dist-info",
        ]
        await settled(world)
        files = [p for p in upstream_paths(world) if p.startswith("/files/")]
        assert len(files) == len(set(files))
        assert not world.asked_about("secret")
    finally:
        await world.stop()


def page(*files: DistFile) -> ProjectPage:
    return ProjectPage("p", files)


def wheel(name: str, **kwargs) -> DistFile:
    return DistFile(name, url="http://upstream/" + name, **kwargs)


def test_pick_takes_what_a_resolver_would():
    """The pick is the newest final version within the specifier and
    Requires-Python, not yanked, with a wheel for these tags; ``None`` when
    that version has only an sdist without .metadata (a resolver builds it)."""
    ranks, python = tag_ranks(), Version("3.11")
    files = (
        wheel("p-1.0-py3-none-any.whl"),
        wheel("p-1.1-py3-none-any.whl", requires_python=">=4"),
        wheel("p-1.2-py3-none-any.whl", yanked=True),
        wheel("p-1.3-cp27-cp27m-win32.whl"),
        wheel("p-1.4-py2-none-any.whl"),
        wheel("p-2.0b1-py3-none-any.whl"),
    )
    assert pick(page(*files), None, ranks, python).filename == "p-1.0-py3-none-any.whl"
    with_sdist = files + (wheel("p-1.5.tar.gz"),)
    assert pick(page(*with_sdist), None, ranks, python) is None
    with_metadata = files + (wheel("p-1.5.tar.gz", core_metadata=True),)
    assert pick(page(*with_metadata), None, ranks, python).filename == "p-1.5.tar.gz"
    assert (
        pick(page(*with_sdist), SpecifierSet("<1.5"), ranks, python).filename
        == "p-1.0-py3-none-any.whl"
    )


def test_dependencies_apply_markers_and_drop_extras():
    """Requires-Dist with markers false here, or only for an extra, are not
    followed; malformed ones are skipped."""
    text = metadata_text(
        "p",
        "1.0",
        requires=["a>=1", "b; python_version < '3'", "c; python_version >= '3'"],
        extras={"x": ["d"]},
    )
    text += "Requires-Dist: not a requirement !!\n"
    assert [str(r) for r in dependencies(text.encode())] == [
        "a>=1",
        'c; python_version >= "3"',
    ]


@pytest_twisted.ensureDeferred
async def test_prefetch_never_holds_the_clients_answer(tmp_path, tree):
    """While the prefetch of a page hangs upstream, the client's page has
    been answered and its other requests are answered too."""
    world = await world_with(tmp_path, tree, None, prefetch_depth=2)
    try:
        hold = world.index.hold("app-2.0-py3-none-any.whl.metadata")
        assert b"app-2.0-py3-none-any.whl" in await get_ok(world, "/simple/app/")
        await hold.wait_for(1)
        assert b"lib-1.5-py3-none-any.whl" in await get_ok(world, "/simple/lib/")
        hold.release()
        await settled(world)
    finally:
        await world.stop()


def _page(name: str, count: int) -> ProjectPage:
    """``count`` versions of ``name``, a universal wheel each, oldest first."""
    return ProjectPage(
        name=name,
        files=tuple(
            DistFile(filename=f"{name}-{i}.0-py3-none-any.whl", url=f"u/{i}")
            for i in range(count)
        ),
    )


def test_pick_groups_versions_and_checks_newest_first():
    """pick takes the newest version the specifier allows; texts that are one
    version ("2.0", "2.0.0") are one group, whose best wheel wins."""
    ranks, python = tag_ranks(), Version("3.11")
    page = _page("many", 500)
    assert pick(page, None, ranks, python).filename == "many-499.0-py3-none-any.whl"
    assert (
        pick(page, SpecifierSet("<100"), ranks, python).filename
        == "many-99.0-py3-none-any.whl"
    )
    tagged = ProjectPage(
        name="two",
        files=(
            DistFile(filename="two-2.0-py2-none-any.whl", url="a"),
            DistFile(filename="two-2.0.0-py3-none-any.whl", url="b"),
            DistFile(filename="two-1.0-py3-none-any.whl", url="c"),
        ),
    )
    assert pick(tagged, None, ranks, python).filename == "two-2.0.0-py3-none-any.whl"


@pytest_twisted.ensureDeferred
async def test_large_pages_are_picked_from_in_a_thread():
    """A page of more than PICK_INLINE files is picked from through
    run_blocking (off the reactor); a small one on the reactor."""
    from pypicache.proxy.prefetch import PICK_INLINE, Prefetcher, _Walk

    calls = []

    def run_blocking(f, *args):
        calls.append(len(args[0].files))
        return task.deferLater(reactor, 0, f, *args)

    tag_ranks()  # what the first walk loads (below) is loaded
    prefetcher = Prefetcher(None, None, reactor, run_blocking=run_blocking)
    for count in (PICK_INLINE, PICK_INLINE + 1):
        # A walk with no budget stops right after the pick.
        await prefetcher._expand(_Walk(0), "many", _page("many", count), None, 0)
    assert calls == [PICK_INLINE + 1]


@pytest_twisted.ensureDeferred
async def test_the_first_walk_loads_what_walks_need_in_a_thread():
    """What a walk needs and start-up does not load (packaging's requirements,
    markers and specifiers; this interpreter's tags: 40 to 50 ms) is loaded
    through run_blocking (off the reactor) by the first walk, once: two walks
    starting together ask for one load; then nothing is loaded again."""
    from pypicache.proxy import walkloads
    from pypicache.proxy.prefetch import Prefetcher, _Walk

    calls = []

    def run_blocking(f, *args):
        calls.append(f)
        return threads.deferToThread(f, *args)

    walkloads.tag_ranks.cache_clear()
    assert not walkloads.loaded()
    prefetcher = Prefetcher(None, None, reactor, run_blocking=run_blocking)
    walks = [
        Deferred.fromCoroutine(
            prefetcher._expand(_Walk(0), "few", _page("few", 2), None, 0)
        )
        for _ in range(2)
    ]
    await DeferredList(walks, fireOnOneErrback=True)
    assert calls == [walkloads.load]
    assert walkloads.loaded()
    await prefetcher._expand(_Walk(0), "few", _page("few", 2), None, 0)
    assert calls == [walkloads.load]


@pytest_twisted.ensureDeferred
async def test_prefetch_follows_the_block_list_and_local_yanks(tmp_path, tree):
    """Prefetch picks from pages as the rules serve them: below app 2.0
    (lib<2, mid), neither the blocked lib 1.5 nor the locally yanked lib 1.0
    is picked, and nothing below the blocked project mid is fetched."""
    world = await world_with(
        tmp_path, tree, None, prefetch_depth=2, block=["lib==1.5", "mid"]
    )
    try:
        answer = await world.daemon.client.post(
            world.daemon.url + "packages/lib/1.0/yank"
        )
        assert answer.code == 204
        await get_ok(world, "/simple/app/")
        await settled(world)
        paths = upstream_paths(world)
        assert sorted(p for p in paths if p.startswith("/files/")) == [
            "/files/app-2.0-py3-none-any.whl.metadata",
            "/files/secret-1.0-py3-none-any.whl.metadata",  # not private here
        ]
        assert "/simple/deep/" not in paths
    finally:
        await world.stop()


def test_no_walk_when_the_reactor_is_behind():
    """A walk scheduled after a cold page is not made when it starts more than
    ``max_lag`` late (the reactor busy with clients' requests): it is counted
    as shed, and the project is not noted as walked, so a later cold page of
    it may walk; on time, the walk starts."""
    from pypicache.proxy.prefetch import Prefetcher

    started = []

    class Counted(Prefetcher):
        def _start(self, project, page):
            started.append(project)

    clock = task.Clock()
    prefetcher = Counted(None, None, clock, max_lag=0.05)
    page = _page("late", 1)
    prefetcher.page_fetched("late", page)
    clock.advance(0.06)
    assert (started, prefetcher.shed) == ([], 1)
    prefetcher.page_fetched("late", page)  # not "walked lately"
    clock.advance(0.05)
    assert (started, prefetcher.shed) == (["late"], 1)
    prefetcher.page_fetched("late", page)  # walked lately now
    clock.advance(0)
    assert started == ["late"]
