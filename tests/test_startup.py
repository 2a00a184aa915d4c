"""What a fresh daemon loads: the modules only some requests need are imported
when such a request comes, not at start-up (they cost start-up time and memory;
see docs/benchmark.rst, "Footprint"); what it builds only when first used (the
routes' URL builders, ``web/routing.py``); and what waits for its first
answer: the walks of the cache folder (``tap/service.py``,
``AfterFirstAnswer``)."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest_twisted
import treq
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from werkzeug.routing import Rule

from pypicache.storage.capacity import Capacity
from pypicache.tap import Options
from pypicache.tap import service as service_module
from pypicache.tap.service import serving
from pypicache.web.routing import klein_app, register, route
from tests.packages import build_wheel

#: Builds the daemon's services as ``twistd pypicache`` does, listens on a free
#: port, asks for the paths given (a JSON list), stops, and prints the names of
#: every module imported.
SCRIPT = """
import json, sys
from twisted.internet import task
from twisted.internet.defer import ensureDeferred
from twisted.web.client import Agent, readBody
from pypicache.tap import Options
from pypicache.tap.service import serving

async def main(reactor):
    options = Options()
    options.parseOptions(["--cache", sys.argv[1], "--index-url", "http://127.0.0.1:9/simple/"] + sys.argv[3:])
    top, site = serving(options, reactor)
    top.startService()
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    agent = Agent(reactor)
    for path in json.loads(sys.argv[2]):
        url = f"http://127.0.0.1:{port.getHost().port}{path}"
        response = await agent.request(b"GET", url.encode())
        await readBody(response)
        assert response.code == 200, (path, response.code)
    await port.stopListening()
    await top.stopService()
    import gc
    assert gc.isenabled(), "importing pypicache.tap left the collector paused"
    print(json.dumps(sorted(sys.modules)))

task.react(lambda reactor: ensureDeferred(main(reactor)))
"""

#: Loaded only by what needs them: bulk caching (the resolver, the requirements
#: parser, packaging's markers and metadata), reading archives (pkginfo),
#: rendering descriptions (readme_renderer, docutils: project pages).
LAZY = [
    "resolvelib",
    "pip_requirements_parser",
    "pkginfo",
    "packaging.markers",
    "packaging.metadata",
    "pypicache.bulk.job",
    "pypicache.bulk.source",
    "pypicache.bulk.targets",
    "readme_renderer",
    "docutils",
    # The object store, only with --storage s3:// (botocore alone: 40 ms).
    "botocore",
    "pypicache.storage.s3.settings",
    "pypicache.storage.s3.store",
    # The prefetcher's pick and the block list's entries; --config's TOML.
    "packaging.specifiers",
    "tomllib",
    # The web interface's description stamp (installed versions) and the
    # metadata policies a catalog entry does not need.
    "importlib.metadata",
    "email.policy",
    # The multipart parser: the first upload or bulk form (web/forms.py).
    "multipart",
]


def test_fresh_daemon_has_not_loaded_what_it_does_not_need(tmp_path: Path) -> None:
    """A daemon on the filesystem (prefetch off: see the next test) that has
    started and answered the health check, both project lists and the home
    page has not imported the bulk resolver, the requirements parser,
    packaging's markers, metadata and specifiers, pkginfo, the description
    renderers, botocore and the object store, tomllib, ``importlib.metadata``,
    ``email.policy`` or the multipart parser; and importing ``pypicache.tap``
    (which pauses the garbage collector while it runs) left the collector
    running."""
    loaded = _loaded_by_fresh_daemon(tmp_path, "--prefetch-depth", "0")
    assert "pypicache.web.app" in loaded
    assert sorted(loaded.intersection(LAZY)) == []


#: What a daemon asks for in the tests below unless told.
PATHS = ("/health", "/simple/", "/local/", "/")


def _loaded_by_fresh_daemon(
    tmp_path: Path, *options: str, paths: tuple[str, ...] = PATHS
) -> set[str]:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(tmp_path / "cache"),
            json.dumps(paths),
            *options,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.splitlines()[-1]))


#: Loaded with the site's Klein app (``web/app.py``, ``KleinLater``), at the
#: first request the fast path and the fast lane leave to Klein: Klein and
#: werkzeug, and the route groups only Klein routes to (the web interface, the
#: JSON API, uploads, bulk caching, the home page, the admin routes but
#: ``/health``); the start-up scan's module waits for the first answer.
KLEIN_LAZY = [
    "klein",
    "werkzeug",
    "werkzeug.routing",
    "pypicache.web.kleinapp",
    "pypicache.web.routes.ui",
    "pypicache.web.ui",
    "pypicache.web.ui.catalog",
    "pypicache.web.ui.descriptions",
    "pypicache.web.ui.filetable",
    "pypicache.web.ui.listing",
    "pypicache.web.ui.release",
    "pypicache.web.ui.render",
    "pypicache.web.routes.jsonapi",
    "pypicache.web.jsonapi",
    "pypicache.web.routes.uploads",
    "pypicache.web.browserforms",
    "pypicache.web.routes.bulk",
    "pypicache.web.routes.pages",
    "pypicache.web.forms",
]


def test_health_alone_loads_neither_klein_nor_the_routes_it_serves(
    tmp_path: Path,
) -> None:
    """A daemon that has answered only ``/health`` (twice: its answer is the
    fast path's) has imported neither Klein nor werkzeug nor the modules of
    the route groups only Klein serves (:data:`KLEIN_LAZY`); one that has also
    answered the project list (routed by Klein) has imported them all."""
    loaded = _loaded_by_fresh_daemon(
        tmp_path, "--prefetch-depth", "0", paths=("/health", "/health")
    )
    assert "pypicache.web.app" in loaded
    assert sorted(loaded.intersection(KLEIN_LAZY + LAZY)) == []
    loaded = _loaded_by_fresh_daemon(
        tmp_path, "--prefetch-depth", "0", paths=("/health", "/simple/")
    )
    assert sorted(set(KLEIN_LAZY) - loaded) == []


def _klein_later(site):
    """The site's :class:`~pypicache.web.app.KleinLater` (below the guard
    and the fast path)."""
    return site.resource._inner._klein


def test_every_deferred_module_imports_and_the_site_is_made(tmp_path):
    """What a daemon imports only at first use fails here, not in production:
    every module of :data:`KLEIN_LAZY` and :data:`LAZY` imports, and the Klein
    app of a daemon built as ``twistd pypicache`` builds it (``serving``) is
    made with every route of the site (those of each route group, among them
    the web interface's, the JSON API's, the uploads', bulk caching's, the
    home page's and ``/health``)."""
    for name in KLEIN_LAZY + [m for m in LAZY if m.startswith("pypicache.")]:
        importlib.import_module(name)
    options = Options()
    options.parseOptions(
        ["--cache", str(tmp_path / "cache"), "--index-url", DEAD_UPSTREAM]
    )
    _, site = serving(options, reactor)
    later = _klein_later(site)
    resource = later.resource
    assert later.resource is resource  # made once
    rules = {rule.rule for rule in resource._app.url_map.iter_rules()}
    for url in (
        "/health",
        "/+ui/projects/",
        "/pypi/<project>/json",
        "/",
        "/+warm",
        "/simple/<project>/",
    ):
        assert url in rules, (url, sorted(rules))
    assert len(rules) > 40


#: What prefetch walks need (``proxy/walkloads.py``), loaded in a thread
#: after the first answer when prefetch is on (the default).
WALKS = {"packaging.markers", "packaging.specifiers", "packaging.requirements"}


def test_prefetching_daemon_loads_only_what_walks_need_after_its_first_answer(
    tmp_path: Path,
) -> None:
    """With prefetch on (the default), the modules a daemon loads past those
    of one that does not prefetch are what the walks need, loaded after its
    first answer (``walkloads.start_loading``): packaging's markers and
    specifiers may be among them, none of the other lazy modules."""
    loaded = _loaded_by_fresh_daemon(tmp_path)
    assert sorted(loaded.intersection(LAZY) - WALKS) == []


DEAD_UPSTREAM = "http://127.0.0.1:9/simple/"


def _count_builders(monkeypatch) -> list[str]:
    """Record the rule of every URL builder werkzeug compiles from now on."""
    compiled: list[str] = []
    original = Rule._compile_builder

    def compile_builder(rule, append_unknown=True):
        compiled.append(rule.rule)
        return original(rule, append_unknown)

    monkeypatch.setattr(Rule, "_compile_builder", compile_builder)
    return compiled


def test_making_the_site_compiles_no_url_builder(tmp_path, monkeypatch):
    """Making the daemon's site (``serving``: the main app's 49 routes, the
    named upstreams' apps) compiles none of werkzeug's URL builders, which it
    would compile as each rule is added (two per rule: most of the time of
    making the site at start-up)."""
    compiled = _count_builders(monkeypatch)
    options = Options()
    options.parseOptions(
        ["--cache", str(tmp_path / "cache"), "--index-url", DEAD_UPSTREAM]
    )
    _, site = serving(options, reactor)
    _klein_later(site).resource  # the Klein app, made at its first request
    assert compiled == []


class _Group:
    @route("/simple/<project>/", methods=["GET"], strict_slashes=False)
    def page(self, request, project):
        return project

    @route("/+ui/", defaults={"page": "1"})
    @route("/+ui/<page>")
    def listing(self, request, page):
        return page


def test_url_builders_are_compiled_when_first_used(monkeypatch):
    """A route of :func:`klein_app` builds its URL as werkzeug's own rules do
    (converters quoted, defaults resolved, unknown arguments in the query),
    compiling each of its two builders (with and without unknown arguments)
    at the first URL that needs it, once; and the rule keeps everything Klein gave it.
    """
    compiled = _count_builders(monkeypatch)
    app = klein_app()
    register(app, _Group())
    assert compiled == []
    rule = next(r for r in app.url_map.iter_rules() if r.endpoint == "_Group.page")
    assert (rule.strict_slashes, rule.methods) == (False, {"GET", "HEAD"})
    urls = app.url_map.bind("localhost")
    assert urls.build("_Group.page", {"project": "a b"}) == "/simple/a%20b/"
    assert urls.build("_Group.page", {"project": "c", "x": "1"}) == "/simple/c/?x=1"
    assert urls.build("_Group.listing", {"page": "1"}) == "/+ui/"
    assert urls.build("_Group.listing", {"page": "2"}) == "/+ui/2"
    assert compiled.count("/simple/<project>/") == 1  # with unknown arguments
    assert urls.build("_Group.page", {"project": "d"}, append_unknown=False) == (
        "/simple/d/"
    )
    assert compiled.count("/simple/<project>/") == 2  # and without
    urls.build("_Group.page", {"project": "e"}, append_unknown=False)
    urls.build("_Group.page", {"project": "f", "y": "2"})
    assert compiled.count("/simple/<project>/") == 2


def _walks_recorded(monkeypatch, events: list[str], scans: list[Deferred]) -> None:
    """Record when the start-up scan and the mirror's count begin."""

    def scan(app):
        events.append("scan")
        scans.append(Deferred.fromCoroutine(app.start_up()))

    original_start = Capacity.start

    def start(capacity):
        events.append("count")
        original_start(capacity)

    monkeypatch.setattr(service_module, "_start_up_scan", scan)
    monkeypatch.setattr(Capacity, "start", start)


async def _serve(tmp_path: Path):
    drop = tmp_path / "cache" / "private"
    build_wheel(drop, "dropped", "1.0")
    options = Options()
    options.parseOptions(
        ["--cache", str(tmp_path / "cache"), "--index-url", DEAD_UPSTREAM]
    )
    top, site = serving(options, reactor)
    top.startService()
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    return top, port


async def _walked(events: list[str], scans: list[Deferred], tries: int) -> None:
    """Wait (``tries`` times 10 ms at most) for the cache walks, then check
    that both ran and that the scan indexed the dropped archive."""
    for _ in range(tries):
        if scans:
            break
        await task.deferLater(reactor, 0.01, lambda: None)
    assert sorted(events) == ["count", "scan"]
    report = await scans[0]
    assert report.indexed == ["private/dropped-1.0-py3-none-any.whl"]


@pytest_twisted.ensureDeferred
async def test_cache_walks_wait_for_the_first_answer(tmp_path, monkeypatch):
    """Nothing walks the cache folder before the daemon has answered: the
    start-up scan of ``private/`` and the mirror's count begin once the first
    request is answered (here ``/health``, asked 0.3 s after start-up, with
    the fallback wait made longer than the test), and the scan then indexes
    the archive dropped into ``private/``."""
    monkeypatch.setattr(service_module, "FIRST_ANSWER_WAIT", 600.0)
    events: list[str] = []
    scans: list[Deferred] = []
    _walks_recorded(monkeypatch, events, scans)
    top, port = await _serve(tmp_path)
    try:
        await task.deferLater(reactor, 0.3, lambda: None)
        assert events == []  # listening for 0.3 s, nothing asked: no walk
        url = f"http://127.0.0.1:{port.getHost().port}/health"
        response = await treq.get(url)
        await response.content()
        assert response.code == 200
        await _walked(events, scans, tries=100)
    finally:
        await port.stopListening()
        await top.stopService()


@pytest_twisted.ensureDeferred
async def test_cache_walks_start_anyway_when_nobody_asks(tmp_path, monkeypatch):
    """A daemon nobody asks anything walks its cache all the same, once
    ``FIRST_ANSWER_WAIT`` has passed (the scan indexes the dropped archive)."""
    monkeypatch.setattr(service_module, "FIRST_ANSWER_WAIT", 0.2)
    events: list[str] = []
    scans: list[Deferred] = []
    _walks_recorded(monkeypatch, events, scans)
    top, port = await _serve(tmp_path)
    try:
        assert events == []
        await _walked(events, scans, tries=500)
    finally:
        await port.stopListening()
        await top.stopService()


#: Imports ``pypicache.tap`` in a fresh interpreter, counting the collector's
#: runs during the import and the objects each walked afterwards.
GC_SCRIPT = """
import gc, json, sys
import pypicache  # the package's own import (an editable install's finder) is not the daemon's
gc.collect()
runs = []
gc.callbacks.append(lambda phase, info: runs.append(info["generation"]) if phase == "stop" else None)
import pypicache.tap
during = len(runs)
frozen = gc.get_freeze_count()
garbage = [[] for _ in range(5000)]
print(json.dumps({"during": during, "frozen": frozen, "enabled": gc.isenabled(),
                  "after": len(runs) - during, "young": gc.get_count()[0]}))
"""


def test_start_up_objects_are_frozen_after_the_paused_imports(tmp_path: Path) -> None:
    """Importing ``pypicache.tap`` runs no collection, and what it made is
    frozen (``gc.freeze``) before the collector runs again: the first
    collection after the pause used to walk all of it (70,000 objects) and
    move it to the middle generation, whose next collection walked it again.
    The collector runs again afterwards (5,000 new lists set it off). The
    top-level package is imported and a collection run first, so that what
    the interpreter and the install's import hooks allocated before (which
    differs between a plain and an editable install) cannot set one off."""
    done = subprocess.run(
        [sys.executable, "-c", GC_SCRIPT],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["during"] == 0
    assert seen["frozen"] > 30_000
    assert seen["enabled"] is True
    assert seen["after"] >= 1
