"""Rules on what may be served (pypicache.proxy.rules) apply to every page and
file path: /simple/ and /local/ pages (HTML and JSON, fast lane or Klein),
archives and their .metadata, stored or not; never to what is stored."""

import attrs
import pytest

from pypicache.index.model import DistFile, ProjectPage
from pypicache.proxy.rules import Rules
from tests.daemon import LOCAL_JSON, start_world
from tests.packages import build_wheel


@attrs.define
class HideVersion:
    """A test rule: files of one version are hidden; ``turn`` changes the version."""

    version_text: str
    turn: int = 0
    on: bool = True

    def version(self, area, project):
        return self.turn

    def page(self, area, project, page: ProjectPage) -> ProjectPage:
        if not self.on:
            return page
        kept = tuple(f for f in page.files if self.version_text not in f.filename)
        return attrs.evolve(page, files=kept, versions=None)

    def refusal(self, project, filename, info: DistFile | None):
        if self.on and self.version_text in filename:
            known = "known" if info is not None else "unknown"
            return f"{filename} is held back by a test rule ({known})"
        return None


@pytest.fixture
def dists(tmp_path):
    d = tmp_path / "dists"
    d.mkdir()
    return [build_wheel(d, "ruled", v) for v in ("1.0", "2.0")]


async def test_rules_hide_files_from_pages_and_refuse_them(tmp_path, dists):
    """A rule's hidden file is on no page (nor in the JSON API), and its URL
    and .metadata answer 404 with the rule's reason, cached or not; turning the rule off (a new
    version) shows it again at once, and the stored file was kept."""
    rule = HideVersion("-2.0-")
    world = await start_world(tmp_path, dists, rules=Rules((rule,)))
    try:
        d = world.daemon
        for accept in ({}, {"Accept": LOCAL_JSON}):
            for _ in range(2):  # the second answer comes from the fast lane
                page = await (await d.get("simple/ruled/", headers=accept)).text()
                assert "ruled-1.0-" in page and "ruled-2.0-" not in page
        hidden = f"packages/ruled/{dists[1].name}"
        answer = await d.get(hidden)
        assert answer.code == 404
        assert "held back by a test rule (known)" in await answer.text()
        assert (await d.get(hidden + ".metadata")).code == 404
        shown = await d.get(f"packages/ruled/{dists[0].name}")
        assert shown.code == 200
        await shown.content()
        await world.stored("ruled", dists[0].name)

        # Turned off: the file is served and stored, then hidden again.
        rule.on, rule.turn = False, 1
        answer = await d.get(hidden)
        assert answer.code == 200
        await answer.content()
        await world.stored("ruled", dists[1].name)
        rule.on, rule.turn = True, 2
        for area in ("simple", "local"):
            for _ in range(2):
                page = await (await d.get(f"{area}/ruled/")).text()
                assert "ruled-1.0-" in page and "ruled-2.0-" not in page
        for _ in range(2):
            answer = await d.get(hidden)
            assert answer.code == 404, "a stored file is refused too"
            await answer.content()
        assert (await d.get(hidden + ".metadata")).code == 404
        assert dists[1].name in world.mirror_files("ruled"), "kept on disk"
        # The JSON API shows what /local/ offers.
        document = await (await d.get("pypi/ruled/json")).json()
        assert list(document["releases"]) == ["1.0"]
        assert (await d.get("pypi/ruled/2.0/json")).code == 404
        rule.turn = 3
        rule.on = False
        page = await (await d.get("local/ruled/")).text()
        assert "ruled-2.0-" in page
    finally:
        await world.stop()
