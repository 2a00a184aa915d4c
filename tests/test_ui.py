"""The web interface: its pages' escaping, descriptions rendered and
sanitized, the search index, and the forms' routes, on a real daemon."""

import json
import re
from pathlib import Path

import pytest
import pytest_twisted
from packaging.version import Version
from twisted.python.filepath import FilePath

from pypicache.index.model import DistFile
from pypicache.storage.records import MIRROR, RELEASES, StoredFile
from pypicache.web.metrics import Metrics
from pypicache.web.ui import catalog, release
from pypicache.web.ui.render import render, root_of
from tests.clients import twine_upload
from tests.daemon import start_world
from tests.packages import build_wheel
from tests.uiwheels import HOSTILE, wheel_with_metadata


def assert_inert(page: str) -> None:
    """No markup from a package survives: no script, no event handler, no
    ``javascript:`` link."""
    assert "<script>" not in page and "<script " not in page.replace(
        '<script src="', ""
    )
    assert not re.search(r"<[^>]+\son\w+\s*=", page), "an event handler attribute"
    assert not re.search(r"(?i)(href|src)\s*=\s*[\"']?\s*javascript:", page)


def hostile_metadata() -> bytes:
    fields = [
        ("Summary", HOSTILE),
        ("License", HOSTILE),
        ("Author", HOSTILE),
        ("Author-email", HOSTILE),
        ("Maintainer", HOSTILE),
        ("Keywords", HOSTILE),
        ("Requires-Python", ">=3.8" + HOSTILE),
        ("Classifier", "Topic :: " + HOSTILE),
        ("Project-URL", "Home, javascript:alert(1)"),
        ("Project-URL", 'Docs" onclick="x, https://example.invalid/"onmouseover="x'),
        ("Home-page", "javascript:alert(2)"),
        ("Requires-Dist", "evil" + HOSTILE),
        ("Description-Content-Type", "text/markdown"),
    ]
    lines = ["Metadata-Version: 2.1", "Name: evil", "Version: 1.0"]
    lines += [f"{k}: {v}" for k, v in fields]
    body = f"# Title\n\n{HOSTILE}\n\n[click](javascript:alert(3))\n"
    return ("\n".join(lines) + "\n\n" + body).encode()


def stored(filename: str, private: bool, yanked: bool | str = False) -> StoredFile:
    return StoredFile(
        path=FilePath("/nonexistent").child(filename),
        info=DistFile(
            filename=filename,
            hashes={"sha256": "ab" * 32},
            size=1234,
            requires_python=">=3" + HOSTILE,
            yanked=yanked,
            uploaded_by="user " + HOSTILE,
        ),
        area=RELEASES if private else MIRROR,
        stored_at=1_700_000_000.0,
        project="evil",
    )


def test_every_package_field_is_escaped_on_the_project_page():
    """Summary, license, author, maintainer, keywords, Requires-Python,
    classifiers, project URLs, requirements, the description, yank reasons,
    the uploader:
    none of the markup a package supplies reaches the page as markup, and
    only http(s) URLs become links."""
    releases = {
        Version("1.0"): [
            stored("evil-1.0-py3-none-any.whl", True, yanked=HOSTILE),
            stored("evil-1.0.tar.gz", True),
        ]
    }
    context = release.release_context(
        "evil", True, releases, Version("1.0"), hostile_metadata()
    )
    page = render(
        "project.html",
        root="../../../",
        base="http://h",
        auth=False,
        pinned=False,
        **context,
    ).decode()
    assert_inert(page)
    assert "&lt;script&gt;" in page  # shown as text, not dropped silently
    assert "private upload by user &lt;script&gt;" in page
    assert 'href="javascript' not in page
    assert '<a href="../../../+ui/projects/evil/">' in page  # the requirement


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/x-rst",
        "text/markdown",
        "text/markdown; variant=CommonMark",
        "text/plain",
        "application/unknown",
    ],
)
def test_hostile_descriptions_never_inject_markup(content_type):
    """A README with script tags, event handlers, raw HTML directives and
    javascript: links renders (as its content type says) without any of them."""
    text = (
        f"Title\n=====\n\n{HOSTILE}\n\n.. raw:: html\n\n   <script>x()</script>\n\n"
        "`a <javascript:alert(1)>`_ [b](javascript:alert(2))\n"
    )
    html = release.describe(text, content_type)
    assert html is not None
    assert_inert(html)


def test_descriptions_render_as_the_public_index_renders_them():
    """reStructuredText by default, Markdown for text/markdown, plain text in
    <pre> for text/plain and for what does not render."""
    assert "<h1" in release.describe("# Hello\n\ntext", "text/markdown")
    rst = release.describe("Hello\n=====\n\n*em*", None)
    assert "<em>em</em>" in rst
    plain = release.describe("*not em*\n  kept", "text/plain")
    assert plain.startswith("<pre>") and "<em>" not in plain


def test_links_stay_relative_for_any_prefix():
    """The root of a page is reached by relative links from any depth."""
    assert root_of(b"/") == "./"
    assert root_of(b"/+ui/projects/") == "../../"
    assert root_of(b"/+ui/projects/a/1.0/") == "../../../../"


def test_search_matches_names_summaries_and_keywords_best_first(tmp_path):
    """An entry is read from the newest archive's metadata beside it; the
    search ranks the exact name, then name prefixes, then names containing
    the words, then summaries and keywords; unknown names match by name."""
    folder = tmp_path / "mirror" / "alpha"
    folder.mkdir(parents=True)
    for version in ("1.0", "2.0", "3.0rc1"):
        path = wheel_with_metadata(
            folder,
            "alpha",
            version,
            [("Summary", f"Parser number {version}"), ("Keywords", "yaml,toml")],
        )
        (folder / (path.name + ".metadata")).write_bytes(
            f"Metadata-Version: 2.1\nName: alpha\nVersion: {version}\n"
            f"Summary: Parser number {version}\nKeywords: yaml,toml\n\n".encode()
        )
    entry = catalog.read_entry("alpha", (str(folder),), private_from=1)
    assert (entry.version, entry.summary, entry.private) == (
        "2.0",
        "Parser number 2.0",
        False,
    )
    entries = {"alpha": entry}
    names = ["alpha", "alphabet", "beta-alpha", "gamma"]
    assert catalog.matches(entries, names, "alpha") == [
        "alpha",
        "alphabet",
        "beta-alpha",
    ]
    assert catalog.matches(entries, names, "TOML parser") == ["alpha"]
    assert catalog.matches(entries, names, "gam") == ["gamma"]


def test_the_base_url_believes_forwarded_headers_only_from_a_trusted_proxy():
    """Behind a proxy trusted with --trust-proxy, X-Forwarded-Proto, -Host and
    -Prefix make the URL the set-up shows; otherwise Host alone does."""
    from twisted.web.test.requesthelper import DummyRequest

    from pypicache.web.routes.ui import client_base

    request = DummyRequest([b""])
    request.isSecure = lambda: False
    request.requestHeaders.setRawHeaders(b"host", [b"10.0.0.5:8080"])
    for name, value in (
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"packages.example.org"),
        (b"x-forwarded-prefix", b"/pypi/"),
    ):
        request.requestHeaders.setRawHeaders(name, [value])
    assert client_base(request, trust_proxy=False) == "http://10.0.0.5:8080"
    assert client_base(request, trust_proxy=True) == "https://packages.example.org/pypi"


def test_the_upstreams_health_is_its_last_answer_and_last_failure():
    """/+stats has when the upstream last answered (ok, 304, 404) and when and
    how it last failed (error, timeout), the latest of each."""
    metrics = Metrics()
    assert metrics.stats(10.0, 0.0)["upstream_last_success"] is None
    for moment, code, timed_out in (
        (100.0, 200, False),
        (200.0, None, True),
        (300.0, 304, False),
        (250.0, 503, False),
    ):
        metrics.wall_clock = lambda moment=moment: moment
        metrics.count_upstream(code, timed_out)
    stats = metrics.stats(400.0, 0.0)
    assert stats["upstream_last_success"] == 300.0
    assert stats["upstream_last_error"] == 250.0
    assert stats["upstream_last_error_kind"] == "error"


# -- on a daemon ---------------------------------------------------------------


@pytest_twisted.async_yield_fixture()
async def world(tmp_path):
    lib = build_wheel(tmp_path / "up", "lib", "1.0")
    w = await start_world(tmp_path, [lib], metrics=Metrics())
    yield w
    await w.stop()


async def get(world, path, **kwargs):
    response = await world.daemon.get(path, **kwargs)
    return response, (await response.content()).decode()


async def post_form(world, path, fields, headers=None):
    from urllib.parse import urlencode

    response = await world.daemon.client.post(
        world.daemon.url + path,
        data=urlencode(fields).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            **(headers or {}),
        },
        allow_redirects=False,
    )
    await response.content()
    return response


@pytest_twisted.ensureDeferred
async def test_pages_of_a_daemon_with_a_hostile_upload(world, tmp_path):
    """After a twine upload of a wheel whose metadata is hostile: the home
    page, the list, the search (by summary), the project page and its
    confirmation page answer 200 with CSP and nosniff, show the fields as
    text, and the project page is kept (an ETag, then 304)."""
    wheel = wheel_with_metadata(
        tmp_path / "dist",
        "evil",
        "1.0",
        [
            ("Summary", "Quite unique summary " + HOSTILE),
            ("Description-Content-Type", "text/markdown"),
        ],
        description=f"# Readme\n\n{HOSTILE}\n",
    )
    (await twine_upload(world.daemon.url, [wheel], tmp_path)).check()
    response, home = await get(world, "")
    assert response.code == 200
    assert "PIP_INDEX_URL" in home and "UV_DEFAULT_INDEX" in home
    assert world.daemon.url.rstrip("/") + "/simple/" in home.replace(
        '<span class="base-url">', ""
    ).replace("</span>", "")
    for path in (
        "+ui/projects/",
        "+ui/projects/?q=quite+unique",
        "+ui/projects/evil/",
        "+ui/projects/evil/1.0/",
        "+ui/projects/evil/1.0/evil-1.0-py3-none-any.whl/yank",
    ):
        response, page = await get(world, path)
        assert response.code == 200, (path, page)
        headers = response.headers
        assert headers.getRawHeaders(b"x-content-type-options") == [b"nosniff"]
        assert (
            b"script-src 'self'" in headers.getRawHeaders(b"content-security-policy")[0]
        )
        assert_inert(page)
    _, simple = await get(world, "simple/evil/")
    assert "data-yanked" not in simple  # the confirmation page changed nothing
    assert (await get(world, "+ui/projects/?page=2"))[0].code == 404
    assert (await get(world, "+ui/projects/?page=x"))[0].code == 400
    assert (await get(world, "+ui/projects/evil/9.9/"))[0].code == 404
    response, page = await get(world, "+ui/projects/absent/")
    assert response.code == 404 and "No files of <strong>absent</strong>" in page
    assert (await get(world, "+ui/projects/evil/1.0/evil-1.0.tar.gz/yank"))[
        0
    ].code == 404
    assert (await get(world, "+ui/static/ui.css"))[0].code == 200
    assert (await get(world, "+ui/static/nope.css"))[0].code == 404
    _, found = await get(world, "+ui/projects/?q=quite+unique")
    assert 'href="evil/"' in found and "lib/" not in found
    response, page = await get(world, "+ui/projects/evil/")
    assert "<h1" in page and "private" in page
    etag = response.headers.getRawHeaders(b"etag")[0].decode()
    again, _ = await get(world, "+ui/projects/evil/", headers={"If-None-Match": etag})
    assert again.code == 304
    response = await world.daemon.raw_get("+ui/projects/Evil/", {})
    assert response.code == 301
    assert response.headers.getRawHeaders(b"location") == [b"../evil/"]


@pytest_twisted.ensureDeferred
async def test_yank_unyank_and_delete_through_the_forms_routes(world, tmp_path):
    """The forms post to the API's routes: yank with a reason answers 303 to
    the page named by ``next`` and /simple/ marks the file yanked; unyank is
    a POST with _method=DELETE; a cross-site post (Sec-Fetch-Site, or an
    Origin of another host) is refused (403); a
    ``next`` leaving the interface is ignored (204); delete removes it."""
    wheel = build_wheel(tmp_path / "dist", "mine", "1.0")
    (await twine_upload(world.daemon.url, [wheel], tmp_path)).check()
    target = f"packages/mine/{wheel.name}/yank"
    back = "../../../+ui/projects/mine/1.0/"
    response = await post_form(world, target, {"reason": "broken", "next": back})
    assert response.code == 303
    assert response.headers.getRawHeaders(b"location") == [back.encode()]
    _, page = await get(world, "simple/mine/")
    assert 'data-yanked="broken"' in page
    _, ui_page = await get(world, "+ui/projects/mine/1.0/")
    assert "yanked: broken" in ui_page
    response = await post_form(
        world, target, {"_method": "DELETE"}, {"Sec-Fetch-Site": "cross-site"}
    )
    assert response.code == 403
    response = await post_form(
        world, target, {"_method": "DELETE"}, {"Origin": "https://elsewhere.example"}
    )
    assert response.code == 403
    response = await post_form(
        world,
        target,
        {"_method": "DELETE", "next": "https://elsewhere/"},
        {"Origin": world.daemon.url.rstrip("/")},
    )
    assert response.code == 204
    _, page = await get(world, "simple/mine/")
    assert "data-yanked" not in page
    response = await post_form(world, f"packages/mine/{wheel.name}", {"x": "1"})
    assert response.code == 400
    response = await post_form(
        world,
        f"packages/mine/{wheel.name}",
        {"_method": "DELETE", "next": "../../+ui/projects/mine/"},
    )
    assert response.code == 303
    _, page = await get(world, "simple/mine/")
    assert wheel.name not in page


@pytest_twisted.ensureDeferred
async def test_home_page_shows_the_cache_and_the_upstreams_health(world, tmp_path):
    """After a page fetched from upstream, the home page counts the projects
    and says when the upstream last answered; /+stats has the time too."""
    response, _ = await get(world, "simple/lib/")
    assert response.code == 200
    _, stats = await get(world, "+stats")
    figures = json.loads(stats)
    assert figures["upstream_last_success"] is not None
    assert figures["upstream_last_error"] is None
    _, home = await get(world, "")
    assert "Upstream last answered" in home and "Hit ratio since start" in home
    assert "Upstream last failed</th><td>never" in home


def test_templates_are_package_data():
    """setup.py ships the templates and the static files (a regular,
    non-editable install has them)."""
    setup = (Path(__file__).parent.parent / "setup.py").read_text()
    assert '"pypicache.web.ui": ["templates/*.html", "static/*"]' in setup


def test_a_search_is_kept_for_its_next_pages():
    """The same query over the same project list and index is searched once
    (in a thread); a new list of names searches again."""
    from twisted.internet.defer import Deferred, succeed

    from pypicache.web.routes.ui import UiRoutes
    from pypicache.web.ui.catalog import Catalog

    searched = []

    def run_blocking(f, *args):
        searched.append(args[-1])
        return succeed(f(*args))

    routes = UiRoutes(None, None, None, run_blocking, Catalog(None, None, None))
    names = ["alpha", "beta"]

    def search(names, query):
        d = Deferred.fromCoroutine(routes._search(names, query))
        return [] if d.result is None else d.result

    assert search(names, "alp") == ["alpha"]
    assert search(names, "alp") == ["alpha"]
    assert searched == ["alp"]
    assert search(list(names), "alp") == ["alpha"]
    assert searched == ["alp", "alp"]
