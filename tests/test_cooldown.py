"""The cooldown (``min-age``): files younger than it are left out of pages and
refused (404 with a reason), for pip, uv and bulk caching alike; applied when
answering, never to what is stored (pypicache.proxy.cooldown)."""

import json
import time

import pytest
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher

from pypicache.proxy.cooldown import CooldownSettings, iso, parse_duration, parse_time
from pypicache.proxy.upstreams import UpstreamSpec
from pypicache.tap.options import Options
from pypicache.tap.reload import reload
from pypicache.web.metrics import Metrics
from tests.clients import clean_env, pip_install, uv_pip_install
from tests.daemon import LOCAL_JSON, spawn_twistd, start_daemon, start_world
from tests.fakeindex import FakeIndex, start_fake_index
from tests.packages import build_wheel
from tests.webclient import put

DAY = 86400.0
WEEK = CooldownSettings(min_age=7 * DAY)


def ago(days: float) -> str:
    return iso(time.time() - days * DAY)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    d = tmp_path_factory.mktemp("cool")
    return {v: build_wheel(d, "cool", v) for v in ("1.0", "2.0", "3.0")} | {
        "other": build_wheel(d, "other", "1.0"),
        "mine": build_wheel(d, "mine", "1.0"),
    }


def aged(wheels, new="3.0", days=1.0):
    """cool 1.0 (30 days old), 2.0 (10 days), ``new`` (``days``)."""
    return [
        (wheels["1.0"], {"upload_time": ago(30)}),
        (wheels["2.0"], {"upload_time": ago(10)}),
        (wheels[new], {"upload_time": ago(days)}),
    ]


async def installs(tool, index_url, tmp_path, name) -> str:
    """The version of cool that pip or uv (``tool``) installs from
    ``index_url`` (with a cache of its own: uv keeps pages)."""
    target = tmp_path / name
    (await tool(index_url, ["cool"], target, tmp_path / f"{name}-env")).check()
    return version_installed(target)


def version_installed(target) -> str:
    (info,) = target.glob("cool-*.dist-info")
    return info.name.split("-")[1].removesuffix(".dist")


async def page(daemon, path, json_form=False) -> str:
    headers = {"Accept": LOCAL_JSON} if json_form else {}
    answer = await daemon.get(path, headers=headers)
    assert answer.code == 200, path
    return await answer.text()


def held(metrics, kind, mode) -> float:
    labels = (("kind", kind), ("mode", mode))
    return metrics.values().get(("pypicache_cooldown_held_total", labels), 0)


def test_durations_and_times():
    """min-age durations take s, m, h, d, w; as-of times are RFC 3339 with a zone."""
    assert parse_duration("7d") == 7 * DAY
    assert parse_duration("36h") == 36 * 3600
    assert parse_duration("0") == 0
    assert parse_time("2026-11-01T00:00:00Z") == parse_time("2026-11-01T01:00:00+01:00")
    assert parse_time("2026-11-01") == parse_time("2026-11-01T00:00:00Z")
    for bad in ("7 days", "-1d", "d"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    for bad in ("2026-11-01T00:00:00", "yesterday"):
        with pytest.raises(ValueError):
            parse_time(bad)


async def test_pip_and_uv_get_the_newest_version_older_than_the_cooldown(
    tmp_path, wheels
):
    """With min-age 7d, pip and uv install 2.0 (10 days old), never 3.0 (1
    day): it is on no page (/simple/ and /local/, HTML and JSON, versions
    included), its URL and .metadata answer 404 with the reason, bulk caching
    skips it and the upstream is never asked for it. Removing the cooldown
    shows it at once; putting it back hides it again though it is stored."""
    metrics = Metrics()
    world = await start_world(tmp_path, aged(wheels), cooldown=WEEK, metrics=metrics)
    d = world.daemon
    try:
        for form in (False, True):
            for _ in range(2):  # the second from the fast lane
                text = await page(d, "simple/cool/", form)
                assert "cool-2.0-" in text and "cool-3.0-" not in text
        versions = json.loads(await page(d, "simple/cool/", True))["versions"]
        assert "3.0" not in versions and "2.0" in versions
        assert await installs(pip_install, d.url + "simple/", tmp_path, "p") == "2.0"
        assert await installs(uv_pip_install, d.url + "simple/", tmp_path, "u") == "2.0"
        new = wheels["3.0"].name
        answer = await d.get(f"packages/cool/{new}")
        assert answer.code == 404
        assert "held back by the cooldown (min-age 7d)" in await answer.text()
        assert (await d.get(f"packages/cool/{new}.metadata")).code == 404
        report = await d.client.post(
            d.url + "requirements.txt",
            data=b"cool\n",
            headers={"Content-Type": ["text/plain"]},
        )
        assert report.code == 200
        assert "cool-3.0" not in await report.text()
        assert not world.asked_about(new), "never fetched"
        assert held(metrics, "page", "enforce") > 0
        assert held(metrics, "file", "enforce") > 0

        # Applied when answering: without it, 3.0 shows at once...
        d.live.cooldown.change(min_age=None)
        assert "cool-3.0-" in await page(d, "simple/cool/")
        answer = await d.get(f"packages/cool/{new}")
        assert answer.code == 200
        await answer.content()
        await world.stored("cool", new)
        # ...and with it again, it is hidden though stored, and kept on disk.
        d.live.cooldown.change(min_age=7 * DAY)
        for area in ("simple", "local"):
            for form in (False, True):
                assert "cool-3.0-" not in await page(d, f"{area}/cool/", form)
        assert (await d.get(f"packages/cool/{new}")).code == 404
        assert new in world.mirror_files("cool")
    finally:
        await world.stop()


async def test_a_file_shows_when_it_comes_of_age(tmp_path, wheels):
    """The rule's version stays while the visible files stay (pages are not
    built again per request) and changes when the held-back file comes of
    age: the page shows it then, from the fast lane too."""
    files = aged(wheels, days=7 - 2 / DAY)  # of age in 2 seconds
    world = await start_world(tmp_path, files, cooldown=WEEK)
    d = world.daemon
    try:
        assert "cool-3.0-" not in await page(d, "simple/cool/")
        views = d.app.views
        key = views.simple_now("cool").key
        assert views.simple_now("cool").key == key
        assert "cool-3.0-" not in await page(d, "simple/cool/")
        await deferLater(reactor, 2.2, lambda: None)
        assert views.simple_now("cool").key != key
        for _ in range(2):
            assert "cool-3.0-" in await page(d, "simple/cool/")
        assert (await d.head(f"packages/cool/{wheels['3.0'].name}")).code == 200
    finally:
        await world.stop()


async def test_observe_mode_hides_nothing_and_logs_and_counts(tmp_path, wheels):
    """In observe mode pip installs 3.0, but each page and file request that
    the cooldown would have held back is logged and counted."""
    metrics = Metrics()
    events = []
    globalLogPublisher.addObserver(events.append)
    world = await start_world(
        tmp_path,
        aged(wheels),
        cooldown=CooldownSettings(min_age=7 * DAY, mode="observe"),
        metrics=metrics,
    )
    d = world.daemon
    try:
        for _ in range(3):
            assert "cool-3.0-" in await page(d, "simple/cool/")
        assert held(metrics, "page", "observe") == 3
        assert await installs(pip_install, d.url + "simple/", tmp_path, "p") == "3.0"
        assert held(metrics, "file", "observe") >= 1
        assert held(metrics, "page", "enforce") == 0
        logged = [e for e in events if "Cooldown (observe)" in e.get("log_format", "")]
        assert any(e["what"] == wheels["3.0"].name for e in logged)
        assert len(logged) >= 4
    finally:
        globalLogPublisher.removeObserver(events.append)
        await world.stop()


async def test_unknown_upload_times_are_included_or_excluded(tmp_path, wheels):
    """A file without upload-time is offered by default (min-age-unknown =
    include) and held back, with its reason, with exclude."""
    files = aged(wheels)[:2] + [(wheels["3.0"], {"upload_time": None})]
    world = await start_world(tmp_path, files, cooldown=WEEK)
    d = world.daemon
    try:
        assert "cool-3.0-" in await page(d, "simple/cool/")
        d.live.cooldown.change(unknown="exclude")
        assert "cool-3.0-" not in await page(d, "simple/cool/", True)
        answer = await d.get(f"packages/cool/{wheels['3.0'].name}")
        assert answer.code == 404
        assert "no known upload time" in await answer.text()
        assert await installs(uv_pip_install, d.url + "simple/", tmp_path, "u") == "2.0"
    finally:
        await world.stop()


async def test_first_seen_clock_is_recorded_and_survives_a_restart(tmp_path, wheels):
    """With min-age-clock = first-seen, files old upstream but new to this
    server are held back; the first-seen times are written to
    first-seen/<project>.json, and a daemon started on that folder later
    uses them (here made 8 days old): then pip gets 3.0. later-of-both
    takes the later time."""
    files = [(wheels[v], {"upload_time": ago(30)}) for v in ("1.0", "2.0", "3.0")]
    settings = CooldownSettings(min_age=7 * DAY, clock="first-seen")
    world = await start_world(tmp_path, files, cooldown=settings)
    d = world.daemon
    try:
        text = await page(d, "simple/cool/")
        assert "cool-1.0-" not in text and "cool-3.0-" not in text
        pip = await pip_install(d.url + "simple/", ["cool"], tmp_path / "p", tmp_path)
        assert not pip.ok
        record = tmp_path / "cache" / "first-seen" / "cool.json"
        for _ in range(100):
            if record.exists():
                break
            await deferLater(reactor, 0.05, lambda: None)
        seen = json.loads(record.read_text())
        assert set(seen) == {
            w.name for w in (wheels["1.0"], wheels["2.0"], wheels["3.0"])
        }
        assert all(abs(t - time.time()) < 60 for t in seen.values())
    finally:
        await d.stop()
    # Seen 8 days ago (3.0: 2 days ago), by an earlier run.
    seen = {name: time.time() - 8 * DAY for name in seen}
    seen[wheels["3.0"].name] = time.time() - 2 * DAY
    record.write_text(json.dumps(seen))
    d = await start_daemon(world.upstream.url, tmp_path / "cache", cooldown=settings)
    try:
        assert await installs(pip_install, d.url + "simple/", tmp_path, "p2") == "2.0"
        d.live.cooldown.change(clock="upstream")
        assert "cool-3.0-" in await page(d, "simple/cool/")
        d.live.cooldown.change(clock="later-of-both")
        assert "cool-3.0-" not in await page(d, "simple/cool/")
        assert "cool-1.0-" in await page(d, "simple/cool/")
    finally:
        await d.stop()
        await world.upstream.stop()


async def test_exemptions_and_private_uploads(tmp_path, wheels):
    """Projects matching min-age-exempt globs are never held back; private
    uploads are exempt unless min-age-private is set."""
    files = aged(wheels) + [(wheels["other"], {"upload_time": ago(1)})]
    settings = CooldownSettings(min_age=7 * DAY, exempt=("co*",))
    world = await start_world(tmp_path, files, cooldown=settings)
    d = world.daemon
    try:
        assert "cool-3.0-" in await page(d, "simple/cool/")
        assert "other-1.0-" not in await page(d, "simple/other/", True)
        assert (await put(d, wheels["mine"])).code == 201
        mine = wheels["mine"].name
        assert mine in await page(d, "simple/mine/")
        assert mine in await page(d, "local/mine/")
        d.live.cooldown.change(private=True)
        assert mine not in await page(d, "simple/mine/")
        assert mine not in await page(d, "local/mine/", True)
        assert (await d.get(f"packages/mine/{mine}")).code == 404
        d.live.cooldown.change(exempt=())
        assert "cool-3.0-" not in await page(d, "simple/cool/")
    finally:
        await world.stop()


async def test_a_named_upstream_has_its_own_min_age(tmp_path, wheels):
    """A project routed to a named upstream follows that upstream's min-age
    (1d here, against 7d for the default), on /simple/ and on
    /upstreams/<name>/simple/."""
    other = FakeIndex(tmp_path, "json")
    for path, options in aged(wheels, days=3):
        other.add(path, **options)
    other_running = await start_fake_index(other)
    settings = CooldownSettings(min_age=7 * DAY, upstream_ages=(("fast", DAY),))
    world = await start_world(
        tmp_path,
        [],
        cooldown=settings,
        upstreams=[UpstreamSpec("fast", other_running.url, min_age=DAY)],
        routes=[("cool", "fast")],
    )
    d = world.daemon
    try:
        for path in ("simple/cool/", "upstreams/fast/simple/cool/"):
            assert "cool-3.0-" in await page(d, path)
        d.live.cooldown.change(upstream_ages=())
        for path in ("simple/cool/", "upstreams/fast/simple/cool/"):
            assert "cool-3.0-" not in await page(d, path)
    finally:
        await world.stop()
        await other_running.stop()


async def test_sighup_reload_applies_cooldown_settings(tmp_path, wheels):
    """Changing min-age in the --config file and reloading shows the files
    the shorter cooldown lets through, at once; a bad value keeps the running
    cooldown."""
    world = await start_world(tmp_path, aged(wheels))
    config = tmp_path / "pypicache.toml"

    def configure(text: str) -> None:
        config.write_text(
            f'cache = "{tmp_path / "cache"}"\n'
            f'index-url = "{world.upstream.url}"\n' + text
        )

    configure('min-age = "7d"\nmin-age-exempt = ["nothing"]\n')
    options = Options()
    options.parseOptions(["--config", str(config)])
    d = world.daemon
    d.live.cooldown.change(**attrs_of(options.cooldown_settings()))
    try:
        assert "cool-3.0-" not in await page(d, "simple/cool/")
        configure('min-age = "12h"\nmin-age-exempt = ["nothing"]\n')
        reload(options, d.live, None)
        assert options["min-age"] == 12 * 3600
        assert "cool-3.0-" in await page(d, "simple/cool/")
        configure('min-age = "soon"\n')
        reload(options, d.live, None)
        assert "cool-3.0-" in await page(d, "simple/cool/")
        configure('min-age = "2d"\nmin-age-exempt = ["cool"]\n')
        reload(options, d.live, None)
        assert "cool-3.0-" in await page(d, "simple/cool/")
        configure('min-age = "2d"\n')
        reload(options, d.live, None)
        assert "cool-3.0-" not in await page(d, "simple/cool/")
    finally:
        await world.stop()


def attrs_of(settings: CooldownSettings) -> dict:
    import attrs

    return attrs.asdict(settings, recurse=False)


def test_options_and_config_keys(tmp_path):
    """--min-age and its companions parse into the cooldown's settings, from
    the command line and from the config file ([upstreams.NAME] min-age too);
    bad values are refused with the key named."""
    options = Options()
    options.parseOptions(
        [
            "--cache",
            str(tmp_path),
            "--index-url",
            "http://127.0.0.1:1/simple/",
            "--min-age",
            "7d",
            "--min-age-exempt",
            "Ruff",
            "--min-age-exempt",
            "my-company-*",
            "--min-age-clock",
            "later-of-both",
            "--min-age-mode",
            "observe",
            "--min-age-unknown",
            "exclude",
            "--min-age-private",
            "yes",
        ]
    )
    assert options.cooldown_settings() == CooldownSettings(
        min_age=7 * DAY,
        exempt=("ruff", "my-company-*"),
        unknown="exclude",
        clock="later-of-both",
        private=True,
        mode="observe",
    )
    config = tmp_path / "c.toml"
    config.write_text(
        f'cache = "{tmp_path}"\nindex-url = "http://127.0.0.1:1/simple/"\n'
        'min-age = "36h"\nmin-age-private = true\n'
        '[upstreams.torch]\nurl = "http://127.0.0.1:2/simple/"\nmin-age = "1d"\n'
    )
    options = Options()
    options.parseOptions(["--config", str(config)])
    settings = options.cooldown_settings()
    assert settings.min_age == 36 * 3600 and settings.private
    assert settings.upstream_ages == (("torch", DAY),)
    for bad, key in (
        ('min-age = "7 days"', "min-age"),
        ('min-age-clock = "sundial"', "min-age-clock"),
        ('[upstreams.torch]\nurl = "http://h/"\nmin-age = "x"', "upstreams.torch"),
    ):
        config.write_text(bad + "\n")
        with pytest.raises(Exception) as error:
            Options().parseOptions(["--config", str(config), "--cache", str(tmp_path)])
        assert key in str(error.value)


async def test_prefetch_picks_what_clients_are_offered(tmp_path, wheels):
    """Prefetch below a cold page picks among the files the cooldown lets
    through: it stores cool 2.0, and never asks the upstream for 3.0."""
    from tests.test_prefetch import never_shed, settled

    app = build_wheel(tmp_path, "app", "1.0", requires=["cool"])
    files = aged(wheels) + [(app, {"upload_time": ago(30)})]
    world = never_shed(
        await start_world(
            tmp_path,
            files,
            cooldown=WEEK,
            prefetch_depth=1,
            prefetch_max_file=10_000_000,
        )
    )
    try:
        assert "app-1.0-" in await page(world.daemon, "simple/app/")
        await settled(world)
        assert wheels["2.0"].name in world.mirror_files("cool")
        assert not world.asked_about("cool-3.0")
    finally:
        await world.stop()


async def test_a_file_asked_for_before_its_page_is_judged_by_the_page(tmp_path, wheels):
    """A held-back file asked for directly (a lock file's URL), before any
    page of its project was cached, is judged by the page fetched for it:
    404 with the reason, for the archive, its .metadata and a HEAD, and it is
    never fetched."""
    world = await start_world(tmp_path, aged(wheels), cooldown=WEEK)
    d = world.daemon
    new = wheels["3.0"].name
    try:
        answer = await d.get(f"packages/cool/{new}.metadata")
        assert answer.code == 404
        assert "held back by the cooldown" in await answer.text()
        await d.app.mirror.pages.forget("cool")
        answer = await d.get(f"packages/cool/{new}")
        assert answer.code == 404
        assert "held back by the cooldown" in await answer.text()
        await d.app.mirror.pages.forget("cool")
        assert (await d.head(f"packages/cool/{new}")).code == 404
        assert not world.asked_about(new)
        old = await d.get(f"packages/cool/{wheels['2.0'].name}")
        assert old.code == 200
        await old.content()
    finally:
        await world.stop()


async def test_sighup_to_twistd_applies_a_new_min_age(tmp_path, wheels):
    """A real twistd pypicache with min-age = "7d" in its config file: uv
    installs 2.0; after the file says "12h" and SIGHUP, uv installs 3.0."""
    from tests.test_config import hang_up, started

    index = FakeIndex(tmp_path, "json")
    for path, options in aged(wheels):
        index.add(path, **options)
    upstream = await start_fake_index(index)
    config = tmp_path / "pypicache.toml"
    config.write_text('min-age = "7d"\n')
    twistd = spawn_twistd(
        tmp_path, upstream.url, clean_env(tmp_path), "--config", str(config)
    )
    client = None
    try:
        client = await started(twistd)
        url = client.url + "simple/"
        assert await installs(uv_pip_install, url, tmp_path, "u1") == "2.0"
        config.write_text('min-age = "12h"\n')
        await hang_up(twistd, rb"Configuration reloaded: changed min-age;")
        assert await installs(uv_pip_install, url, tmp_path, "u2") == "3.0"
    finally:
        if client is not None:
            await client.close()
        await twistd.stop()
        await upstream.stop()


async def test_first_seen_clock_holds_a_file_asked_for_before_any_page(
    tmp_path, wheels
):
    """Under the first-seen clock, a file asked for directly (no page of its
    project built yet) is first seen then, and so held back."""
    files = [(wheels[v], {"upload_time": ago(30)}) for v in ("1.0", "2.0")]
    settings = CooldownSettings(min_age=7 * DAY, clock="first-seen")
    world = await start_world(tmp_path, files, cooldown=settings)
    d = world.daemon
    try:
        answer = await d.get(f"packages/cool/{wheels['1.0'].name}")
        assert answer.code == 404
        assert "held back by the cooldown" in await answer.text()
        assert not world.asked_about(wheels["1.0"].name)
    finally:
        await world.stop()
