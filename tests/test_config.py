"""``--config FILE``, ``SIGHUP`` and ``--json-log``, on real ``twistd pypicache`` processes."""

import base64
import json
import re
import signal
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.logger import eventsFromJSONLogFile, formatEvent
from twisted.web.client import Agent, HTTPConnectionPool

from pypicache.tap.config import option_kinds
from pypicache.tap.options import Options
from tests.clients import clean_env, run
from tests.daemon import Twistd, spawn_twistd, twistd_command
from tests.test_crash import STARTUP, bounded
from tests.tunnel import make_authority

DOCS = Path(__file__).parent.parent / "docs" / "configuration.rst"

#: An upstream nothing here asks (project lists and /health need none).
NO_UPSTREAM = "http://127.0.0.1:9/simple/"


def documented_example() -> str:
    """The TOML of the ``code-block:: toml`` in docs/configuration.rst."""
    text = DOCS.read_text()
    block = text.split(".. code-block:: toml\n", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines)


def htpasswd(path: Path, user: str, password: str) -> Path:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"{user}:{hashed}\n")
    return path


def basic(user: str, password: str) -> dict[str, list[str]]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": [f"Basic {token}"]}


class Client:
    """Fresh connections for each request (so each can reach another worker)."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.client = treq.client.HTTPClient(Agent(reactor, pool=self.pool))

    async def get(self, path: str, **kwargs: Any) -> Any:
        response = await bounded(self.client.get(self.url + path, **kwargs))
        await treq.content(response)
        return response

    async def status(self, path: str, **kwargs: Any) -> int:
        return int((await self.get(path, **kwargs)).code)

    async def close(self) -> None:
        await self.pool.closeCachedConnections()


async def started(twistd: Twistd) -> Client:
    return Client(await bounded(twistd.port, STARTUP))


async def hang_up(twistd: Twistd, pattern: bytes, count: int = 1) -> None:
    """Send SIGHUP and wait for ``count`` more log lines matching ``pattern``."""
    start = len(twistd.output)
    twistd.process.signalProcess(signal.SIGHUP)
    for _ in range(count):
        match = await bounded(twistd.wait_for(pattern, start))
        start = match.end()


def test_documented_example_sets_every_option():
    """The example of docs/configuration.rst names every option of the command line,
    and parses (its paths aside) as the daemon would."""
    import tomllib

    table = tomllib.loads(documented_example())
    assert sorted(table) == sorted(option_kinds(Options()))


@pytest_twisted.ensureDeferred
async def test_documented_example_runs(tmp_path):
    """A daemon starts with the documented example; the command line overrides its
    machine-specific paths, and --json-log gets an access event per request; the
    proxy's password is masked in the log."""
    config = tmp_path / "pypicache.toml"
    config.write_text(documented_example())
    users = htpasswd(tmp_path / "users", "alice", "wonderland")
    events = tmp_path / "events.json"
    twistd = spawn_twistd(
        tmp_path,
        NO_UPSTREAM,
        clean_env(tmp_path),
        "--config",
        str(config),
        "--auth-file",
        str(users),
        "--access-log",
        str(tmp_path / "access.log"),
        "--json-log",
        str(events),
        "--upstream-ca",
        str(make_authority().write_ca(tmp_path / "ca.pem")),
    )
    client = None
    try:
        client = await started(twistd)
        response = await client.get("simple/", headers={"User-Agent": "probe"})
        assert response.code == 200
        assert response.headers.getRawHeaders("cache-control") == ["max-age=600"]
    finally:
        if client is not None:
            await client.close()
        await twistd.stop()
    records = [json.loads(line) for line in events.read_text().splitlines()]
    with events.open() as f:
        texts = [formatEvent(e) for e in eventsFromJSONLogFile(f)]
    access = [r for r in records if r.get("access")]
    assert [(a["method"], a["uri"], a["status"]) for a in access] == [
        ("GET", "/simple/", 200)
    ]
    assert access[0]["bytes"] > 0 and access[0]["duration"] >= 0
    assert access[0]["user_agent"] == "probe" and access[0]["cache_hit"] is None
    assert '"GET /simple/ HTTP/1.1" 200' in (tmp_path / "access.log").read_text()
    assert len([t for t in texts if t.startswith("Loaded 1 users from")]) == 1, texts
    assert any(re.match(r"\w*Site starting on \d+", t) for t in texts), texts
    logged = " ".join(texts)
    assert "user:***@proxy.example.com" in logged and "secret" not in logged


@pytest_twisted.ensureDeferred
async def test_config_sets_options_and_the_command_line_wins(tmp_path):
    """Options come from the file; those given on the command line win, a
    repeatable one's values replacing the file's."""
    config = tmp_path / "pypicache.toml"
    config.write_text(
        'listen = ["tcp:1:interface=127.0.0.1"]\n'  # a port it cannot take
        "page-max-age = 42\n"
        'allow-from = ["10.0.0.0/8"]\n'
    )
    twistd = spawn_twistd(
        tmp_path,
        NO_UPSTREAM,
        clean_env(tmp_path),
        "--config",
        str(config),
        "--allow-from",
        "127.0.0.1",
    )
    client = None
    try:
        client = await started(twistd)
        response = await client.get("simple/")
        assert response.code == 200
        assert response.headers.getRawHeaders("cache-control") == ["max-age=42"]
    finally:
        if client is not None:
            await client.close()
        await twistd.stop()


@pytest.mark.parametrize(
    "text, message",
    [
        ("page-tll = 5\n", "unknown key 'page-tll'"),
        ("page-ttl = -1\n", "page-ttl: must not be negative"),
        ('page-ttl = "soon"\n', "page-ttl:"),
        ("read-auth = 1\n", "read-auth: must be true or false"),
        ('allow-from = "10.0.0.0/8"\n', "allow-from: must be an array"),
        ('allow-from = ["10.0.0.1/8"]\n', "allow-from: '10.0.0.1/8' has host bits"),
        ("workers = 2.5\n", "workers:"),
        (
            '[upstreams.pytorch]\nurl = "ftp://u:pw@127.0.0.1:9/"\n',
            "upstreams.pytorch: must be an http(s) URL, not 'ftp://u:***@127.0.0.1:9/'",
        ),
        (
            '[upstreams.pytorch]\nurl = "http://127.0.0.1:9/"\nttl = 5\n',
            "upstreams.pytorch: unknown keys ['ttl']",
        ),
        ("[upstreams.pytorch]\ntimeout = 5\n", "upstreams.pytorch: needs url"),
        (
            '[upstreams.PyTorch]\nurl = "http://127.0.0.1:9/"\n',
            "upstreams.PyTorch: 'PyTorch' cannot name",
        ),
        (
            '[upstreams.pytorch]\nurl = "http://127.0.0.1:9/"\ntimeout = "x"\n',
            "upstreams.pytorch: timeout must be a number",
        ),
        (
            'route = { "torch*" = "pytroch" }\n[upstreams.pytorch]\nurl = "http://127.0.0.1:9/"\n',
            "route: 'torch*' names no upstream 'pytroch' (the upstreams are: pytorch)",
        ),
        ('route = ["torch*=pytorch"]\n', "route: must be a table"),
        ('merge = ["torch"]\n', "merge: 'torch' is not routed to a named upstream"),
        ("page-ttl = \n", "is not valid TOML"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_config_errors_name_the_key(tmp_path, text, message):
    """A bad key, type or value stops twistd at start-up, with a message naming it."""
    config = tmp_path / "pypicache.toml"
    config.write_text(text)
    result = await run(
        [
            *twistd_command(),
            "-n",
            "--pidfile=",
            "pypicache",
            "--cache",
            str(tmp_path / "cache"),
            "--index-url",
            NO_UPSTREAM,
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--config",
            str(config),
        ],
        clean_env(tmp_path),
        cwd=tmp_path,
        timeout=60,
    )
    assert result.code != 0, result
    assert message in result.out + result.err, result
    assert "Traceback" not in result.out + result.err, result
    assert ":pw@" not in result.out + result.err, result  # credentials masked


@pytest_twisted.ensureDeferred
async def test_sighup_reloads_users_and_allow_list(tmp_path):
    """SIGHUP applies a new users file and allow-list, logs what changed and what
    needs a restart; a broken file on reload is logged and the old settings stay."""
    alice = htpasswd(tmp_path / "alice", "alice", "wonderland")
    bob = htpasswd(tmp_path / "bob", "bob", "builder")
    config = tmp_path / "pypicache.toml"
    config.write_text(
        f'auth-file = "{alice}"\nread-auth = true\nallow-from = ["127.0.0.1"]\n'
    )
    twistd = spawn_twistd(
        tmp_path, NO_UPSTREAM, clean_env(tmp_path), "--config", str(config)
    )
    client = None
    try:
        client = await started(twistd)
        assert (
            await client.status("simple/", headers=basic("alice", "wonderland")) == 200
        )
        assert await client.status("simple/", headers=basic("bob", "builder")) == 401

        config.write_text(
            f'auth-file = "{bob}"\nread-auth = true\nallow-from = ["127.0.0.1"]\n'
            "page-ttl = 5\n"
            'mirror-private = ["somelib"]\n'
        )
        await hang_up(
            twistd,
            rb"Configuration reloaded: changed auth-file, page-ttl; "
            rb"needs a restart: mirror-private",
        )
        assert await client.status("simple/", headers=basic("bob", "builder")) == 200
        assert (
            await client.status("simple/", headers=basic("alice", "wonderland")) == 401
        )

        config.write_text(
            f'auth-file = "{bob}"\nread-auth = true\nallow-from = ["10.0.0.0/8"]\n'
        )
        await hang_up(twistd, rb"Configuration reloaded: changed allow-from")
        assert await client.status("simple/", headers=basic("bob", "builder")) == 403

        config.write_text('allow-from = ["127.0.0.1"\n')  # broken
        await hang_up(
            twistd,
            rb"Reloading the configuration failed; the running one stays: "
            rb".*is not valid TOML",
        )
        config.write_text('allow-from = ["nonsense"]\n')  # a bad value
        await hang_up(twistd, rb"the running one stays: .*allow-from: 'nonsense'")
        assert await client.status("simple/", headers=basic("bob", "builder")) == 403
        assert twistd.process.pid is not None  # still running
    finally:
        if client is not None:
            await client.close()
        await twistd.stop()


@pytest_twisted.ensureDeferred
async def test_sighup_reaches_every_worker(tmp_path):
    """With --workers 2, SIGHUP to the twistd process makes each worker reload:
    the new allow-list holds whichever worker answers. Each worker writes its
    own events to --json-log, the twistd process its own: each event once."""
    config = tmp_path / "pypicache.toml"
    config.write_text('allow-from = ["127.0.0.1"]\n')
    events = tmp_path / "events.json"
    twistd = spawn_twistd(
        tmp_path,
        NO_UPSTREAM,
        clean_env(tmp_path),
        "--workers",
        "2",
        "--config",
        str(config),
        "--json-log",
        str(events),
    )
    client = None
    try:
        client = await started(twistd)
        for n in (1, 2):
            await bounded(twistd.wait_for(b"Worker %d ready" % n), STARTUP)
        assert await client.status("simple/") == 200
        config.write_text('allow-from = ["10.0.0.0/8"]\n')
        await hang_up(
            twistd, rb"\[worker-\d/\d+\] Configuration reloaded: changed allow-from", 2
        )
        tags = re.findall(rb"\[(worker-\d)/\d+\] Configuration reloaded", twistd.output)
        assert sorted(tags) == [b"worker-1", b"worker-2"]
        assert {await client.status("simple/") for _ in range(8)} == {403}
    finally:
        if client is not None:
            await client.close()
        await twistd.stop()
    with events.open() as f:
        texts = [formatEvent(e) for e in eventsFromJSONLogFile(f)]
    assert len([t for t in texts if t.startswith("Configuration reloaded")]) == 2
    assert len([t for t in texts if t.startswith("Started worker")]) == 2
    access = [
        t.rsplit(" ", 1)[0] for t in texts if t.startswith('127.0.0.1 "GET /simple/"')
    ]
    assert (
        sorted(access)
        == ['127.0.0.1 "GET /simple/" 200'] + ['127.0.0.1 "GET /simple/" 403'] * 8
    ), texts


def live_from_config(config, text):
    """Options read from a config file of ``text``, and the live objects and
    site built from them in memory (for reloads without a daemon)."""
    from twisted.internet.defer import succeed
    from twisted.internet.testing import MemoryReactorClock
    from twisted.web.client import HTTPConnectionPool

    from pypicache.tap.build import build_live
    from pypicache.web.accesslog import make_site
    from pypicache.web.limits import limited_request_factory

    config.write_text(text)
    options = Options()
    options.parseOptions(["--config", str(config)])
    clock = MemoryReactorClock()
    live = build_live(
        cache=options["cache"],
        index_url=options["index-url"],
        reactor=clock,
        pool=HTTPConnectionPool(clock, False),
        run_blocking=lambda f, *a, **k: succeed(f(*a, **k)),
        upstreams=options["upstream"],
        routes=options["route"],
        merge=options["merge"],
        block=options["block"],
    )
    site = make_site(live.app.resource(), limited_request_factory(1024), clock)
    return options, live, site


def test_reload_applies_runtime_values_in_place(tmp_path):
    """A reload changes the upstream's credentials (not its URL: that needs a
    restart), page TTL and max-age, upstream and upload limits, on the live
    objects; the values in force are kept for the next reload's comparison."""
    from twisted.logger import capturedLogs

    from pypicache.tap.reload import reload

    config = tmp_path / "pypicache.toml"
    options, live, site = live_from_config(
        config,
        f'cache = "{tmp_path / "cache"}"\nindex-url = "http://127.0.0.1:9/simple/"\n',
    )
    page = "http://127.0.0.1:9/simple/app/"
    assert "Authorization" not in live.upstream._headers(page, {})

    config.write_text(
        f'cache = "{tmp_path / "cache"}"\n'
        'index-url = "http://ann:secret@127.0.0.1:9/simple/"\n'
        "page-ttl = 5\npage-max-age = 0\ntimeout = 3\nmin-rate = 0\n"
        'max-upload-size = "2M"\nbulk-max-lines = 10\n'
    )
    with capturedLogs() as events:
        reload(options, live, site)
    expected = "index-url, max-upload-size, min-rate, page-max-age, page-ttl, timeout"
    assert [e["changed"] for e in events] == ["bulk-max-lines, " + expected]
    assert live.upstream._headers(page, {})["Authorization"] == "Basic YW5uOnNlY3JldA=="
    assert (live.pages.ttl, live.app.installer.page_max_age) == (5.0, 0)
    assert (live.upstream.timeout, live.upstream.min_rate) == (3.0, 0)
    assert site.requestFactory.max_body_size == 2 * 1024**2
    assert live.app.bulk.max_lines == 10

    config.write_text(
        f'cache = "{tmp_path / "cache"}"\n'
        'index-url = "http://ann:secret@127.0.0.2:9/simple/"\n'
    )
    with capturedLogs() as events:
        reload(options, live, site)
    assert [e["changed"] for e in events] == [
        "bulk-max-lines, max-upload-size, min-rate, page-max-age, page-ttl, timeout"
    ]
    assert [e["restart_keys"] for e in events] == [["index-url"]]
    assert live.upstream.page_url("app") == page


def test_options_added_later_are_keys_too(tmp_path):
    """Keys come from the options themselves: a parameter, a flag and a repeatable
    option added to Options are configuration keys with no other change."""
    from twisted.python import usage

    class More(Options):
        optFlags = Options.optFlags + [["shiny", None, "A flag."]]
        optParameters = Options.optParameters + [
            ["max-things", None, 3, "A number.", int]
        ]

        def __init__(self) -> None:
            super().__init__()
            self["tags"] = []

        def opt_tag(self, value: str) -> None:
            """A repeatable one."""
            self["tags"].append(value.upper())

    config = tmp_path / "more.toml"
    config.write_text(
        f'cache = "{tmp_path}"\nindex-url = "{NO_UPSTREAM}"\n'
        'shiny = true\nmax-things = 7\ntag = ["a", "b"]\n'
    )
    options = More()
    options.parseOptions(["--config", str(config), "--tag", "c"])
    assert (options["shiny"], options["max-things"], options["tags"]) == (1, 7, ["C"])
    config.write_text(f'cache = "{tmp_path}"\nmax-things = "many"\n')
    with pytest.raises(usage.UsageError, match="max-things: invalid literal"):
        More().parseOptions(["--config", str(config), "--index-url", NO_UPSTREAM])


def test_every_reloadable_option_is_documented():
    """docs/configuration.rst's SIGHUP section names every option a reload applies."""
    from pypicache.tap.reload import APPLY

    section = DOCS.read_text().split("Reloading with SIGHUP", 1)[1]
    assert {key for key in APPLY if f"``{key}``" not in section} == set()


def test_reload_sets_disk_limits_and_starts_eviction(tmp_path):
    """A reload that sets ``max-cache-size`` and ``evict-unused-after`` where
    there were none changes the live limits and starts the periodic eviction
    passes, which were not running without limits."""

    from pypicache.tap.reload import reload

    config = tmp_path / "pypicache.toml"
    base = f'cache = "{tmp_path / "cache"}"\nindex-url = "http://127.0.0.1:9/simple/"\n'
    options, live, site = live_from_config(config, base)
    capacity = live.app.capacity
    capacity.start()
    assert capacity._passes is None
    config.write_text(base + 'max-cache-size = "1G"\nevict-unused-after = "2d"\n')
    reload(options, live, site)
    assert (capacity.max_size, capacity.unused_after) == (1024**3, 2 * 86400.0)
    assert capacity._passes is not None and capacity._passes.running
    capacity.stop()
