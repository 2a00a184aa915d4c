"""The index filtered for one client, with no server configuration:
``/+min-age/<duration>/...`` and ``/+as-of/<time>/...`` (pypicache.web.routes.asof)."""

import json

from pypicache.proxy.cooldown import CooldownSettings
from tests.clients import pip_install, uv_pip_install
from tests.daemon import LOCAL_JSON, start_world
from tests.test_cooldown import DAY, aged, ago, installs, page, wheels

__all__ = ["wheels"]  # the module fixture


async def test_min_age_and_as_of_prefixes_filter_for_one_client(tmp_path, wheels):
    """Under /+min-age/7d/ pip gets 2.0 and under /+as-of/<20 days ago>/ uv
    gets 1.0, while /simple/ still offers 3.0; the pages' relative file URLs
    stay under the prefix, where a held-back file (and its .metadata)
    answers 404; /local/ is filtered too; bad prefixes answer 400."""
    world = await start_world(tmp_path, aged(wheels))
    d = world.daemon
    week = d.url + "+min-age/7d/"
    then = d.url + f"+as-of/{ago(20)}/"
    try:
        assert "cool-3.0-" in await page(d, "simple/cool/")
        text = await page(d, "+min-age/7d/simple/cool/")
        assert "cool-2.0-" in text and "cool-3.0-" not in text
        assert 'href="../../packages/cool/cool-2.0-' in text
        listed = json.loads(await page(d, f"+as-of/{ago(20)}/simple/cool/", True))
        assert [f["filename"] for f in listed["files"]] == [wheels["1.0"].name]
        assert listed["versions"] == ["1.0"]

        assert await installs(pip_install, week + "simple/", tmp_path, "p") == "2.0"
        assert await installs(uv_pip_install, then + "simple/", tmp_path, "u") == "1.0"

        new = wheels["3.0"].name
        answer = await d.get(f"+min-age/7d/packages/cool/{new}")
        assert answer.code == 404
        assert "held back by the cooldown (min-age 7d)" in await answer.text()
        assert (await d.get(f"+min-age/7d/packages/cool/{new}.metadata")).code == 404
        answer = await d.get(f"+as-of/{ago(20)}/packages/cool/{wheels['2.0'].name}")
        assert answer.code == 404
        assert "was uploaded at" in await answer.text()
        ok = await d.get(f"+min-age/7d/packages/cool/{wheels['2.0'].name}")
        assert ok.code == 200
        await ok.content()
        answer = await d.get(f"packages/cool/{new}")
        assert answer.code == 200
        await answer.content()

        await world.stored("cool", wheels["2.0"].name)
        local = await page(d, f"+as-of/{ago(20)}/local/cool/", True)
        assert wheels["2.0"].name not in local
        assert wheels["2.0"].name in await page(d, "+min-age/7d/local/cool/")

        moved = await d.get("+min-age/7d/simple/Cool/", allow_redirects=False)
        assert moved.code == 301
        assert moved.headers.getRawHeaders("location") == ["../cool/"]
        for bad in ("+min-age/soon/simple/cool/", "+as-of/yesterday/simple/cool/"):
            answer = await d.get(bad)
            assert answer.code == 400
            assert "not" in await answer.text()
    finally:
        await world.stop()


async def test_a_client_prefix_adds_to_the_server_cooldown(tmp_path, wheels):
    """A client's filter comes after the server's cooldown: a shorter one
    under /+min-age/ cannot show what the server holds back."""
    world = await start_world(
        tmp_path, aged(wheels), cooldown=CooldownSettings(min_age=15 * DAY)
    )
    d = world.daemon
    try:
        assert "cool-2.0-" not in await page(d, "simple/cool/")
        text = await page(d, "+min-age/1h/simple/cool/")
        assert "cool-1.0-" in text and "cool-2.0-" not in text
        answer = await d.get(
            f"+min-age/1h/packages/cool/{wheels['2.0'].name}",
            headers={"Accept": LOCAL_JSON},
        )
        assert answer.code == 404
    finally:
        await world.stop()
