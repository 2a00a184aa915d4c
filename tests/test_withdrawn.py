"""Files the upstream withdrew (pypicache.proxy.withdrawals): a refreshed
upstream page that no longer lists a cached file takes it off /simple/, and
off /local/ with ``withdrawn = "hide"`` (kept with ``"keep"``); the file stays
on disk, and /+stats and ``pypicache-admin withdrawn`` list it. A stale page,
an older page or another upstream's file proves nothing."""

import io
import json

import attrs
import pytest
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.python.filepath import FilePath

from pypicache.index.model import DistFile, ProjectPage
from pypicache.proxy.merging import merged
from pypicache.storage.records import MIRROR, RELEASES, StoredFile
from pypicache.tap.admin import main as admin
from pypicache.web.metrics import Metrics
from tests.clients import pip_install
from tests.daemon import LOCAL_JSON, start_world
from tests.packages import build_wheel

# -- merged(): which stored files are withdrawn ------------------------------

UPSTREAM = "https://files.example"


def _page(*names: str, status: str | None = None) -> ProjectPage:
    return ProjectPage(
        name="lib",
        files=tuple(DistFile(n, url=f"{UPSTREAM}/{n}", size=1) for n in names),
        status=status,
    )


def _stored(
    name: str, at: float | None = 50.0, area: str = MIRROR, origin: str | None = None
) -> StoredFile:
    return StoredFile(
        path=FilePath("/nowhere").child(name),
        info=DistFile(name, size=1),
        area=area,
        stored_at=at,
        project="lib",
        origin=origin,
    )


A, B, C = "lib-1.0-py3-none-any.whl", "lib-2.0-py3-none-any.whl", "lib-3.0.tar.gz"


def test_a_stored_file_the_fresh_page_dropped_is_withdrawn():
    """A mirrored file stored before the page was fetched, from the page's
    host (or of unknown origin), and not on it, is left out and reported;
    listed stored files are reported as listed."""
    for origin in (None, UPSTREAM):
        page, withdrawn, listed = merged(
            _page(A), [_stored(A), _stored(B, origin=origin)], confirmed_at=100.0
        )
        assert [f.filename for f in page.files] == [A]
        assert withdrawn == {B: "no longer on the upstream's page"}
        assert listed == [A]


@pytest.mark.parametrize(
    "stored, why",
    [
        (_stored(B, at=150.0), "stored after the page was fetched (a stale page)"),
        (_stored(B, at=None), "no time of storing"),
        (_stored(B, origin="https://other.example"), "another upstream's file"),
        (_stored(B, area=RELEASES), "a private file"),
    ],
)
def test_files_a_page_cannot_speak_for_stay(stored, why):
    """A file the page cannot be said to have dropped is added as before."""
    page, withdrawn, _ = merged(_page(A), [stored], confirmed_at=100.0)
    assert B in [f.filename for f in page.files], why
    assert withdrawn == {}
    page, withdrawn, _ = merged(_page(A), [_stored(B)], confirmed_at=None)
    assert B in [f.filename for f in page.files] and withdrawn == {}


def test_a_quarantined_page_offers_no_mirrored_file():
    """A quarantined upstream page (PEP 792) offers none of the project's
    mirrored files, whenever they were stored; its status passes through and
    private files stay."""
    quarantined = attrs.evolve(_page(A), status="quarantined", status_reason="malware")
    page, withdrawn, _ = merged(
        quarantined,
        [_stored(A, at=500.0), _stored(B), _stored(C, area=RELEASES)],
        confirmed_at=100.0,
    )
    assert [f.filename for f in page.files] == [C]
    assert page.status == "quarantined" and page.status_reason == "malware"
    why = "the project is quarantined upstream: malware"
    assert withdrawn == {A: why, B: why}


# -- through the daemon --------------------------------------------------------


@pytest.fixture
def dists(tmp_path):
    d = tmp_path / "dists"
    d.mkdir()
    return [build_wheel(d, "lib", v) for v in ("1.0", "2.0")]


async def _names(daemon, path: str) -> list[str]:
    answer = await daemon.get(path, headers={"Accept": LOCAL_JSON})
    assert answer.code == 200, path
    return [f["filename"] for f in json.loads(await answer.content())["files"]]


def _refresh(daemon, project: str = "lib"):
    """POST /+refresh/<project>: the next request fetches the page again."""
    return daemon.client.post(daemon.url + f"+refresh/{project}")


async def _record(cache, seconds: float = 10.0) -> dict:
    """The withdrawn record of ``lib`` once it is written (in a thread)."""
    path = cache / "withdrawn" / "lib.json"
    for _ in range(int(seconds / 0.02)):
        if path.exists():
            return json.loads(path.read_text())
        await deferLater(reactor, 0.02, lambda: None)
    raise AssertionError("the withdrawn record was never written")


async def test_a_dropped_file_leaves_simple_and_local(tmp_path, dists):
    """Once the upstream's refreshed page no longer lists a cached file:
    /simple/ (JSON and HTML) leaves it out and pip does not install it;
    /local/ leaves it out too and its URL answers 404 with the reason
    (withdrawn = hide); it stays on disk; /+stats and pypicache-admin
    withdrawn list it. Listed again upstream, it is back everywhere."""
    old, new = dists
    world = await start_world(tmp_path, dists, metrics=Metrics())
    try:
        d = world.daemon
        for dist in dists:
            answer = await d.get(f"packages/lib/{dist.name}")
            assert answer.code == 200
            await answer.content()
            await world.stored("lib", dist.name)
        assert await _names(d, "simple/lib/") == [old.name, new.name]

        world.index.remove(new.name)
        assert (await _refresh(d)).code == 200
        for _ in range(2):  # the second answer comes from the fast lane
            assert await _names(d, "simple/lib/") == [old.name]
            html = await (await d.get("simple/lib/")).text()
            assert old.name in html and new.name not in html
        assert (await _record(world.cache))["files"][new.name]["reason"] == (
            "no longer on the upstream's page"
        )
        for _ in range(2):
            assert await _names(d, "local/lib/") == [old.name]
        for _ in range(2):  # stored and small: the fast lane could answer it
            answer = await d.get(f"packages/lib/{new.name}")
            assert answer.code == 404
            assert "withdrawn by the upstream index" in await answer.text()
        assert (await d.get(f"packages/lib/{new.name}.metadata")).code == 404
        assert new.name in world.mirror_files("lib"), "kept on disk"

        stats = json.loads(await (await d.get("+stats")).content())
        assert [(w["project"], w["filename"]) for w in stats["withdrawn"]] == [
            ("lib", new.name)
        ]
        out = io.StringIO()
        assert admin(["withdrawn", "--cache", str(world.cache)], out=out) == 0
        assert f"lib {new.name} withdrawn since " in out.getvalue()
        assert "1 withdrawn files kept on disk." in out.getvalue()

        target = tmp_path / "target"
        result = await pip_install(
            world.daemon.url + "simple/", ["lib"], target, tmp_path
        )
        assert result.code == 0, result.err
        assert (target / "lib-1.0.dist-info").is_dir()
        assert not (target / "lib-2.0.dist-info").exists()
        result = await pip_install(
            world.daemon.url + "simple/", ["lib==2.0"], tmp_path / "t2", tmp_path
        )
        assert result.code != 0

        world.index.add(new)  # listed again (a quarantine lifted)
        assert (await _refresh(d)).code == 200
        assert await _names(d, "simple/lib/") == [old.name, new.name]
        assert await _names(d, "local/lib/") == [old.name, new.name]
        for _ in range(500):
            if not (world.cache / "withdrawn" / "lib.json").exists():
                break
            await deferLater(reactor, 0.02, lambda: None)
        assert not (world.cache / "withdrawn" / "lib.json").exists()
        assert (await d.get(f"packages/lib/{new.name}")).code == 200
    finally:
        await world.stop()


async def test_keep_leaves_withdrawn_files_in_local(tmp_path, dists):
    """With withdrawn = keep, a withdrawn file leaves /simple/ but stays in
    /local/, and its URL still serves it; /simple/ served from the disk
    while the upstream fails leaves it out too."""
    old, new = dists
    world = await start_world(tmp_path, dists, withdrawn="keep")
    try:
        d = world.daemon
        answer = await d.get(f"packages/lib/{new.name}")
        await answer.content()
        await world.stored("lib", new.name)
        world.index.remove(new.name)
        assert (await _refresh(d)).code == 200
        assert await _names(d, "simple/lib/") == [old.name]
        await _record(world.cache)
        assert await _names(d, "local/lib/") == [new.name]
        answer = await d.get(f"packages/lib/{new.name}")
        assert answer.code == 200
        assert await answer.content() == new.read_bytes()

        # The upstream fails with no page cached: /simple/ is served from
        # the disk, still without the withdrawn file.
        world.index.page_status("lib", 503)
        assert (await _refresh(d)).code == 200
        assert await _names(d, "simple/lib/") == []  # only the withdrawn one is cached
        assert await _names(d, "local/lib/") == [new.name]
    finally:
        await world.stop()


async def test_a_stale_page_withdraws_nothing_and_yanks_show(tmp_path, dists):
    """An upstream yank of a cached file shows on /simple/ at the next
    refresh; while the upstream fails, the stale page is served and the
    file it no longer lists is not withdrawn; once it answers, it is."""
    old, new = dists
    world = await start_world(tmp_path, dists, page_ttl=0.5)
    try:
        d = world.daemon
        for dist in dists:
            answer = await d.get(f"packages/lib/{dist.name}")
            await answer.content()
            await world.stored("lib", dist.name)
        world.index.add(new, yanked="broken build")
        await deferLater(reactor, 0.6, lambda: None)
        answer = await d.get("simple/lib/", headers={"Accept": LOCAL_JSON})
        files = {f["filename"]: f for f in json.loads(await answer.content())["files"]}
        assert files[new.name]["yanked"] == "broken build"
        assert files[old.name]["yanked"] is False

        world.index.remove(new.name)
        world.index.page_status("lib", 503)
        await deferLater(reactor, 0.6, lambda: None)
        assert await _names(d, "simple/lib/") == [old.name, new.name]
        assert await _names(d, "local/lib/") == [old.name, new.name]
        assert not (world.cache / "withdrawn").exists()

        world.index.page_status("lib", None)
        assert (await _refresh(d)).code == 200  # no wait for the retry
        assert await _names(d, "simple/lib/") == [old.name]
        await _record(world.cache)
    finally:
        await world.stop()


def test_merged_pages_speak_for_every_upstream_merged():
    """With the origins of every merged page given, a file from an upstream
    whose files the merged page shadows is still known as that upstream's."""
    other = "https://other.example"
    stored = [_stored(B, origin=other)]
    _, withdrawn, _ = merged(_page(A), stored, 100.0)
    assert withdrawn == {}
    _, withdrawn, _ = merged(_page(A), stored, 100.0, frozenset({UPSTREAM, other}))
    assert withdrawn == {B: "no longer on the upstream's page"}


async def test_other_upstreams_files_are_not_withdrawn(tmp_path):
    """A file cached from the default upstream stays on /simple/ once its
    project is routed to a named upstream that never listed it (another
    upstream's file: nothing withdrawn); a merged project's file that the
    default upstream drops is withdrawn, though the routed upstream's file
    of the same name shadows all the default's others; a named upstream's
    own view records and hides what its upstream drops, and
    pypicache-admin withdrawn names that upstream."""
    from pypicache.proxy.upstreams import UpstreamSpec
    from tests.daemon import start_daemon
    from tests.fakeindex import FakeIndex, start_fake_index

    d = tmp_path / "dists"
    (d / "default").mkdir(parents=True)
    (d / "named").mkdir()
    solo_old = build_wheel(d / "default", "solo", "1.0")
    solo_new = build_wheel(d / "named", "solo", "2.0")
    nv_only = build_wheel(d / "default", "nvx", "0.9")
    nv_public = build_wheel(d / "default", "nvx", "1.0", module_body="X = 'public'")
    nv_routed = build_wheel(d / "named", "nvx", "1.0", module_body="X = 'routed'")
    nv_newer = build_wheel(d / "named", "nvx", "1.1")
    default, named = FakeIndex(tmp_path, "json"), FakeIndex(tmp_path, "json")
    for dist in (solo_old, nv_only, nv_public):
        default.add(dist)
    for dist in (solo_new, nv_routed, nv_newer):
        named.add(dist)
    default_running = await start_fake_index(default)
    named_running = await start_fake_index(named)
    cache = tmp_path / "cache"
    daemons = []
    try:
        first = await start_daemon(default_running.url, cache)
        daemons.append(first)
        answer = await first.get(f"packages/solo/{solo_old.name}")
        assert answer.code == 200
        await answer.content()
        await first.stop()
        daemons.remove(first)

        second = await start_daemon(
            default_running.url,
            cache,
            upstreams=[UpstreamSpec("named", named_running.url)],
            routes=[("solo", "named"), ("nvx", "named")],
            merge=["nvx"],
        )
        daemons.append(second)
        assert sorted(await _names(second, "simple/solo/")) == sorted(
            [solo_new.name, solo_old.name]
        )
        assert not (cache / "withdrawn").exists()

        answer = await second.get(f"packages/nvx/{nv_only.name}")
        assert answer.code == 200
        await answer.content()
        for _ in range(500):
            if (cache / "mirror" / "nvx" / nv_only.name).exists():
                break
            await deferLater(reactor, 0.02, lambda: None)
        default.remove(nv_only.name)
        assert (await _refresh(second, "nvx")).code == 200
        assert await _names(second, "simple/nvx/") == [nv_routed.name, nv_newer.name]
        path = cache / "withdrawn" / "nvx.json"
        for _ in range(500):
            if path.exists():
                break
            await deferLater(reactor, 0.02, lambda: None)
        assert list(json.loads(path.read_text())["files"]) == [nv_only.name]

        # A named upstream's own view (/upstreams/named/) keeps its own record.
        answer = await second.get(f"upstreams/named/packages/nvx/{nv_newer.name}")
        assert answer.code == 200
        await answer.content()
        mirrored = cache / "upstreams" / "named" / "mirror" / "nvx" / nv_newer.name
        for _ in range(500):
            if mirrored.exists():
                break
            await deferLater(reactor, 0.02, lambda: None)
        named.remove(nv_newer.name)
        assert (await _refresh(second, "nvx")).code == 200
        assert await _names(second, "upstreams/named/simple/nvx/") == [nv_routed.name]
        record = cache / "upstreams" / "named" / "withdrawn" / "nvx.json"
        for _ in range(500):
            if record.exists():
                break
            await deferLater(reactor, 0.02, lambda: None)
        assert await _names(second, "upstreams/named/local/nvx/") == []
        assert mirrored.exists()
        out = io.StringIO()
        assert admin(["withdrawn", "--cache", str(cache), "--json"], out=out) == 0
        listed = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [(e["upstream"], e["filename"]) for e in listed] == [
            (None, nv_only.name),
            ("named", nv_newer.name),
        ]
    finally:
        for daemon in daemons:
            await daemon.stop()
        await default_running.stop()
        await named_running.stop()


def test_withdrawn_option_config_and_reload(tmp_path):
    """``withdrawn`` is a flag and a config key (hide or keep; anything else
    is a usage error naming both), and a SIGHUP reload switches /local/'s
    rule, and each named upstream's, between them."""
    from twisted.python import usage

    from pypicache.tap.options import Options
    from pypicache.tap.reload import reload
    from tests.test_config import live_from_config

    base = ["--cache", str(tmp_path / "c"), "--index-url", "http://127.0.0.1:9/simple/"]
    options = Options()
    options.parseOptions(base)
    assert options["withdrawn"] == "hide"
    options = Options()
    options.parseOptions(base + ["--withdrawn", "KEEP"])
    assert options["withdrawn"] == "keep"
    with pytest.raises(usage.UsageError, match="hide or keep"):
        Options().parseOptions(base + ["--withdrawn", "drop"])

    config = tmp_path / "pypicache.toml"
    text = (
        f'cache = "{tmp_path / "cache"}"\nindex-url = "http://127.0.0.1:9/simple/"\n'
        '[upstreams.other]\nurl = "http://127.0.0.1:9/other/"\n'
    )
    options, live, site = live_from_config(config, text)
    assert live.withdrawn.mode == "hide"
    assert live.named["other"].withdrawn.mode == "hide"
    config.write_text(text.replace("[upstreams", 'withdrawn = "keep"\n[upstreams'))
    reload(options, live, site)
    assert live.withdrawn.mode == "keep"
    assert live.named["other"].withdrawn.mode == "keep"
    with pytest.raises(usage.UsageError, match="hide or keep"):
        config.write_text(text.replace("[upstreams", 'withdrawn = "no"\n[upstreams'))
        Options().parseOptions(["--config", str(config)])


def test_shared_docs_show_at_once_and_follow_another_process(tmp_path):
    """A record put through the store's state is seen at once in this
    process (while it is written in a thread), ends on disk as the last put
    (an empty record removes the file); another process's write shows at
    the next check (the store's ``state_max_age``)."""
    import time

    from twisted.internet.defer import Deferred
    from twisted.internet.task import Clock

    from pypicache.storage.filesystem import FilesystemStore
    from pypicache.storage.shared import SharedDocs

    pending: list[tuple[Deferred, object]] = []

    def run_blocking(f, *args):
        d: Deferred = Deferred()
        pending.append((d, lambda: f(*args)))
        return d

    def finish_one() -> None:
        d, call = pending.pop(0)
        d.callback(call())

    store = FilesystemStore(FilePath(str(tmp_path)), run_blocking=run_blocking)
    records = SharedDocs(store, "records", Clock())
    folder = FilePath(str(tmp_path)).child("records")
    first = records.put("lib", {"n": 1})
    assert records.get("lib") == {"n": 1}
    finish_one()
    assert first.called
    assert json.loads(folder.child("lib.json").getContent()) == {"n": 1}
    second = records.put("lib", {"n": 2})
    assert records.get("lib") == {"n": 2}
    finish_one()
    assert second.called
    assert json.loads(folder.child("lib.json").getContent()) == {"n": 2}

    version = records.version("lib")
    folder.child("lib.json").setContent(b'{"n": 3}')  # another process
    time.sleep(store.state_max_age)
    assert records.get("lib") == {"n": 3} and records.version("lib") != version

    records.put("lib", {})
    finish_one()
    assert not folder.child("lib.json").exists()
    assert records.get("lib") == {}
