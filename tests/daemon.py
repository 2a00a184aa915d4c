"""Start the pypicache web app on 127.0.0.1 for a test, with a real reactor."""

import re
import sys
from functools import partial
from pathlib import Path
from typing import Any

import attrs
from treq.client import HTTPClient
from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from pypicache.tap import build_app
from pypicache.web.accesslog import make_site
from pypicache.web.app import PypicacheApp
from pypicache.web.limits import DEFAULT_MAX_BODY, limited_request_factory

LOCAL_JSON = "application/vnd.pypi.simple.v1+json"


@attrs.define
class RunningDaemon:
    """A daemon listening on loopback, and a treq client for it."""

    url: str
    app: PypicacheApp
    cache: Path
    port: Any
    pool: HTTPConnectionPool
    client: HTTPClient
    client_pool: HTTPConnectionPool
    threads: ThreadPool | None = None

    async def stop(self) -> None:
        """Stop listening, close the connections, and let the daemon's threads finish
        what it gave them (writes that go on after an answer), as twistd does."""
        await self.port.stopListening()
        await self.pool.closeCachedConnections()
        await self.client_pool.closeCachedConnections()
        if self.threads is not None:
            self.threads.stop()

    def get(self, path: str, **kwargs: Any) -> Any:
        """GET ``path`` (relative to the daemon's root) with the test client."""
        return self.client.get(self.url + path.lstrip("/"), **kwargs)

    async def raw_get(self, path: str, headers: dict[str, str]) -> Any:
        """GET with a bare Agent: no gzip decoding, no redirects (to see the wire)."""
        raw = Headers({k.encode(): [v.encode()] for k, v in headers.items()})
        return await Agent(reactor, pool=self.client_pool).request(
            b"GET", (self.url + path.lstrip("/")).encode(), raw
        )

    def head(self, path: str, **kwargs: Any) -> Any:
        return self.client.head(self.url + path.lstrip("/"), **kwargs)


def client(pool: HTTPConnectionPool) -> HTTPClient:
    """A treq client that does no content decoding and keeps no connections."""
    return HTTPClient(Agent(reactor, pool=pool))


async def start_daemon(
    index_url: str, cache: Path, max_upload_size: int = DEFAULT_MAX_BODY, **options: Any
) -> RunningDaemon:
    """Build the app as ``twistd pypicache`` does and listen on a free loopback port.

    ``options`` go to :func:`pypicache.tap.build_app` (``page_ttl``, ``timeout``,
    ``page_clock``).
    """
    pool = HTTPConnectionPool(reactor, persistent=False)
    # Its own threads, as in twistd: work left behind by a test must not
    # queue behind another test's, and stop() waits for it.
    threads = ThreadPool(minthreads=0, maxthreads=4, name="pypicache-test")
    threads.start()
    app = build_app(
        cache=str(cache),
        index_url=index_url,
        reactor=reactor,
        pool=pool,
        run_blocking=partial(deferToThreadPool, reactor, threads),
        **options,
    )
    site = make_site(
        app.resource(),
        limited_request_factory(max_upload_size),
        reactor,
        ready=app.ready_answers(),
    )
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    client_pool = HTTPConnectionPool(reactor, persistent=False)
    return RunningDaemon(
        url=f"http://127.0.0.1:{port.getHost().port}/",
        app=app,
        cache=cache,
        port=port,
        pool=pool,
        client=client(client_pool),
        client_pool=client_pool,
        threads=threads,
    )


class World:
    """A fake upstream index and a daemon in front of it, for one test."""

    def __init__(
        self, index: Any, upstream: Any, daemon: RunningDaemon, tmp_path: Path
    ) -> None:
        self.index, self.upstream, self.daemon, self.tmp_path = (
            index,
            upstream,
            daemon,
            tmp_path,
        )
        self.cache = daemon.cache

    async def stop(self) -> None:
        await self.daemon.stop()
        await self.upstream.stop()

    def mirror_files(self, project: str) -> list[str]:
        """Every name in the daemon's mirror folder of ``project``."""
        folder = self.cache / "mirror" / project
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    async def stored(
        self,
        project: str,
        name: str,
        seconds: float = 10,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Wait until ``name`` is on disk and listed (a cold file's clients
        complete once it is verified, before it is synced and renamed);
        ``headers`` go with the listing request (credentials)."""
        deadline = reactor.seconds() + seconds
        while True:
            if name in self.mirror_files(project):
                response = await self.daemon.get(
                    f"local/{project}/",
                    headers={"Accept": LOCAL_JSON, **(headers or {})},
                )
                if name in (await response.text()):
                    return
            if reactor.seconds() > deadline:
                raise AssertionError(f"{name} was never stored and listed")
            await deferLater(reactor, 0.02, lambda: None)

    def asked_about(self, name: str) -> list[str]:
        """The paths of every upstream request that mentions ``name``."""
        return [r.path for r in self.index.requests if name in r.path]

    def file_requests(self) -> list[str]:
        """The paths of every upstream request for a file."""
        return [
            r.path
            for r in self.index.requests
            if r.path.startswith(("/files/", "/packages/"))
        ]


async def start_world(
    tmp_path: Path, files: Any = (), mode: str = "json", **options: Any
) -> World:
    """Serve ``files`` (paths, or ``(path, add-options)`` pairs) from a fake upstream
    and start a daemon in front of it with ``options`` for :func:`start_daemon`."""
    from tests.fakeindex import FakeIndex, start_fake_index

    index = FakeIndex(tmp_path, mode)
    for entry in files:
        path, add_options = entry if isinstance(entry, tuple) else (entry, {})
        index.add(path, **add_options)
    upstream = await start_fake_index(index)
    daemon = await start_daemon(upstream.url, tmp_path / "cache", **options)
    return World(index, upstream, daemon, tmp_path)


def twistd_command() -> list[str]:
    """The ``twistd`` of this interpreter."""
    script = Path(sys.executable).parent / "twistd"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class Twistd(protocol.ProcessProtocol):
    """A ``twistd -n pypicache`` subprocess; :attr:`port` fires once it listens."""

    def __init__(self) -> None:
        self.output = b""
        self.port: Deferred[int] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.process: Any = None
        self._patterns: list[tuple[bytes, int, Deferred[re.Match[bytes]]]] = []

    def wait_for(self, pattern: bytes, start: int = 0) -> "Deferred[re.Match[bytes]]":
        """A Deferred that fires with the first match of ``pattern`` in the
        output from offset ``start`` on (now, or once it is printed)."""
        d: Deferred[re.Match[bytes]] = Deferred()
        self._patterns.append((pattern, start, d))
        self._match()
        return d

    def _match(self) -> None:
        for entry in list(self._patterns):
            pattern, start, d = entry
            match = re.compile(pattern).search(self.output, start)
            if match:
                self._patterns.remove(entry)
                d.callback(match)

    def outReceived(self, data: bytes) -> None:
        self.output += data
        match = re.search(rb"Site starting on (\d+)", self.output)
        if match and not self.port.called:
            self.port.callback(int(match.group(1)))
        self._match()

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        if not self.port.called:
            self.port.errback(RuntimeError(self.output.decode(errors="replace")))
        self.ended.callback(None)

    async def stop(self) -> None:
        """Stop it with SIGTERM and wait for it to end."""
        if self.process is not None and self.process.pid is not None:
            self.process.signalProcess("TERM")
        await self.ended


def spawn_twistd(
    tmp_path: Path,
    index_url: str,
    env: dict[str, str],
    *options: str,
    pidfile: str = "",
) -> Twistd:
    """Run ``twistd -n pypicache`` on ``tmp_path/cache``, on a free loopback port,
    with more pypicache ``options`` (and a pidfile, if given)."""
    twistd = Twistd()
    command = twistd_command()
    args = [
        *command,
        "-n",
        f"--pidfile={pidfile}",
        "pypicache",
        "--cache",
        str(tmp_path / "cache"),
    ]
    args += ["--index-url", index_url, "--listen", "tcp:0:interface=127.0.0.1"]
    args += options
    twistd.process = reactor.spawnProcess(
        twistd, command[0], args, env=env, path=str(tmp_path)
    )
    return twistd
