"""What a fresh daemon loads: the modules only some requests need are imported
when such a request comes, not at start-up (they cost start-up time and memory;
see docs/benchmark.rst, "Footprint")."""

import json
import subprocess
import sys
from pathlib import Path

#: Builds the daemon's services as ``twistd pypicache`` does, listens on a free
#: port, asks for the health check, the project lists and the home page, stops,
#: and prints the names of every module imported.
SCRIPT = """
import json, sys
from twisted.internet import task
from twisted.internet.defer import ensureDeferred
from twisted.web.client import Agent, readBody
from pypicache.tap import Options
from pypicache.tap.service import serving

async def main(reactor):
    options = Options()
    options.parseOptions(["--cache", sys.argv[1], "--index-url", "http://127.0.0.1:9/simple/"])
    top, site = serving(options, reactor)
    top.startService()
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    agent = Agent(reactor)
    for path in ("/health", "/simple/", "/local/", "/"):
        url = f"http://127.0.0.1:{port.getHost().port}{path}"
        response = await agent.request(b"GET", url.encode())
        await readBody(response)
        assert response.code == 200, (path, response.code)
    await port.stopListening()
    await top.stopService()
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
]


def test_fresh_daemon_has_not_loaded_what_it_does_not_need(tmp_path: Path) -> None:
    """A daemon that has started and answered the health check, both project
    lists and the home page has not imported the bulk resolver, the
    requirements parser, packaging's markers and metadata, or pkginfo."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "cache")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert "pypicache.web.app" in loaded
    assert sorted(loaded.intersection(LAZY)) == []
