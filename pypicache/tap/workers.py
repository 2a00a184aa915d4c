# -*- test-case-name: tests.test_workers -*-
"""``--workers N``: the twistd process holds the sockets, the pidfile and the log;
N worker processes serve.

Each worker (:mod:`pypicache.tap.worker`) is given the listening sockets as
descriptors 3, 4, ... and writes its log events to its standard output as
formatted records, which this process publishes into its own log tagged
``worker-<n>/<pid>``. A worker that ends is started again, after 0.5 s, then
twice as long after each quick failure, up to 30 s. On SIGTERM the workers
are sent SIGTERM and waited for (SIGKILL after 30 s), then twistd exits.
"""

import os
import shutil
import sys
from typing import Any

from twisted.application import service, strports
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessTerminated
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import InvalidLogLevelError, Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web import resource
from twisted.web.server import Site

import pypicache
from pypicache.tap.jsonlog import RELAYED, JsonLog
from pypicache.tap.listeners import HoldingReactor, worker_factory
from pypicache.tap.options import Options
from pypicache.tap.reload import Reloader

log = Logger()

#: What ends a log record a worker writes to its standard output.
RECORD_END = "\x1e"
#: The first descriptor of the listening sockets in a worker.
FIRST_FD = 3
#: Seconds before an ended worker is started again: the first time, and at most.
FIRST_RESTART = 0.5
LAST_RESTART = 30.0
#: A worker that ran this long before it ended is restarted after FIRST_RESTART.
STEADY = 10.0
#: Seconds the workers get to finish after SIGTERM, before SIGKILL.
GRACE = 30.0


def supervisor(options: Options, reactor: Any) -> service.MultiService:
    """The twistd process of ``--workers``: listeners that never accept, and the workers."""
    for description in options["listen"]:
        worker_factory(description, Site(resource.Resource()))  # shareable?
    top = service.MultiService()
    holding = HoldingReactor(reactor)
    never_used = Site(resource.Resource())
    for description in options["listen"]:
        strports.service(description, never_used, reactor=holding).setServiceParent(top)
    # The upstream as this process found it, in the environment rather than on
    # the command line, where any user could read credentials in its URL.
    env = {**os.environ, "PIP_INDEX_URL": options["index-url"]}
    env[METRICS_ENV] = metrics_folder(options["cache"])
    workers = Supervisor(reactor, holding.ports, options["workers"], options.argv, env)
    workers.setServiceParent(top)
    Reloader(reactor, workers.hang_up).setServiceParent(top)
    if options["json-log"] is not None:
        JsonLog(options["json-log"], reactor).setServiceParent(top)
    return top


#: Where prometheus-client's multiprocess mode keeps each process's figures.
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_folder(cache: str) -> str:
    """The workers' metrics folder under the cache, emptied: figures start at zero."""
    folder = os.path.join(os.path.abspath(cache), "metrics")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)
    return folder


def _why(reason: Failure) -> str:
    value = reason.value
    if isinstance(value, ProcessTerminated):
        if value.signal is not None:
            return f"killed by signal {value.signal}"
        return f"exit code {value.exitCode}"
    return "exit code 0"


class Supervisor(service.Service):
    """Runs ``count`` workers on the held ports; restarts the ones that end."""

    def __init__(
        self,
        reactor: Any,
        ports: list[Any],
        count: int,
        argv: list[str],
        env: dict[str, str],
    ):
        self._reactor = reactor
        self._ports = ports
        self._count = count
        self._argv = argv
        self._env = env
        self.workers: dict[int, _Worker] = {}
        self._restarts: dict[int, IDelayedCall] = {}
        self._failures: dict[int, int] = {}
        self._stopping = False
        self._all_ended: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._reactor.callWhenRunning(self._start_all)

    def _start_all(self) -> None:
        for index in range(1, self._count + 1):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        if self._stopping:
            return
        fds: dict[int, Any] = {1: "r", 2: "r"}
        for k, port in enumerate(self._ports):
            fds[FIRST_FD + k] = port.fileno()
        env = dict(self._env)
        # The workers run this very pypicache, wherever it was imported from.
        here = os.path.dirname(os.path.dirname(os.path.abspath(pypicache.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (here, env.get("PYTHONPATH")) if p
        )
        worker = _Worker(self, index, self._reactor.seconds())
        args = [sys.executable, "-m", "pypicache.tap.worker", str(index), *self._argv]
        self._reactor.spawnProcess(
            worker, sys.executable, args, env=env, path=os.getcwd(), childFDs=fds
        )
        self.workers[index] = worker
        log.info("Started worker {index} (pid {pid})", index=index, pid=worker.pid)

    def ended(self, worker: "_Worker", reason: Failure) -> None:
        """A worker process is gone: start it again, unless stopping."""
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        if worker.pid is not None and METRICS_ENV in self._env:
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(worker.pid, self._env[METRICS_ENV])
        if self._stopping:
            log.info(
                "Worker {index} (pid {pid}) stopped: {why}",
                index=worker.index,
                pid=worker.pid,
                why=_why(reason),
            )
            if not self.workers and self._all_ended is not None:
                done, self._all_ended = self._all_ended, None
                done.callback(None)
            return
        ran = self._reactor.seconds() - worker.started
        failures = 0 if ran >= STEADY else self._failures.get(worker.index, -1) + 1
        self._failures[worker.index] = failures
        delay = min(FIRST_RESTART * 2**failures, LAST_RESTART)
        log.error(
            "Worker {index} (pid {pid}) ended ({why}) after {ran:.1f} s; "
            "starting it again in {delay:.1f} s",
            index=worker.index,
            pid=worker.pid,
            why=_why(reason),
            ran=ran,
            delay=delay,
        )
        self._restarts[worker.index] = self._reactor.callLater(
            delay, self._spawn, worker.index
        )

    def stopService(self) -> "Deferred[None] | None":
        """Stop every worker (SIGTERM, SIGKILL after :data:`GRACE`) and wait for them."""
        super().stopService()
        self._stopping = True
        for call in self._restarts.values():
            call.cancel()
        self._restarts.clear()
        if not self.workers:
            return None
        done: Deferred[None] = Deferred()
        self._all_ended = done
        for worker in list(self.workers.values()):
            worker.signal("TERM")
        kill = self._reactor.callLater(GRACE, self._kill)

        def stopped(result: None) -> None:
            if kill.active():
                kill.cancel()
            return result

        return done.addBoth(stopped)

    def hang_up(self) -> None:
        """Forward ``SIGHUP`` to every worker: each reloads its configuration."""
        log.info("SIGHUP: the {count} workers reload", count=len(self.workers))
        for worker in list(self.workers.values()):
            worker.signal("HUP")

    def _kill(self) -> None:
        for worker in list(self.workers.values()):
            log.warn(
                "Worker {index} (pid {pid}) still runs after {grace} s: killing it",
                index=worker.index,
                pid=worker.pid,
                grace=GRACE,
            )
            worker.signal("KILL")


class _Worker(ProcessProtocol):
    """One worker process: its log relayed into this process's log."""

    def __init__(self, supervisor: Supervisor, index: int, started: float) -> None:
        self.supervisor = supervisor
        self.index = index
        self.started = started
        self.pid: int | None = None
        self.tag = f"worker-{index}"
        self._partial = {1: b"", 2: b""}

    def connectionMade(self) -> None:
        self.pid = self.transport.pid
        self.tag = f"worker-{self.index}/{self.pid}"

    def signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)
        except Exception:  # ended meanwhile
            pass

    def childDataReceived(self, fd: int, data: bytes) -> None:
        end = RECORD_END.encode() if fd == 1 else b"\n"
        *records, self._partial[fd] = (self._partial.get(fd, b"") + data).split(end)
        for record in records:
            self._relay(fd, record)

    def _relay(self, fd: int, record: bytes) -> None:
        text = record.decode("utf-8", "replace").strip("\r\n")
        if not text:
            return
        fields = text.split("\t", 3) if fd == 1 else []
        try:
            when, level = float(fields[0]), LogLevel.levelWithName(fields[1])
            namespace, body = fields[2], fields[3]
        except (IndexError, ValueError, InvalidLogLevelError):
            # What a worker wrote before its log began: a crash at start-up.
            log.warn("{line}", line=text, log_system=self.tag)
            return
        globalLogPublisher(
            {
                "log_format": "{log_text}",
                "log_text": body,
                "log_time": when,
                "log_level": level,
                "log_namespace": namespace,
                "log_system": self.tag,
                RELAYED: True,  # the worker wrote it to --json-log
            }
        )

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._partial.items():
            self._relay(fd, rest)
        self._partial = {1: b"", 2: b""}
        self.supervisor.ended(self, reason)
