# -*- test-case-name: tests.test_fakeindex -*-
"""
Run real pip, uv and twine as subprocesses, hermetically, from pytest-twisted tests.

This machine's pip reads config files (extra-index-url, find-links) and C{PIP_*}
variables; uv reads C{uv.toml}/C{UV_*}; twine reads C{~/.pypirc}, C{TWINE_*} and
keyring.  L{clean_env} scrubs all of that, so a client started here can only
reach the index URL it is given.  Processes run on the reactor (never a blocking
C{subprocess.run}), since the servers under test share it.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

__all__ = [
    "Result",
    "clean_env",
    "run",
    "pip_install",
    "uv_pip_install",
    "twine_upload",
    "uv_publish",
    "uv_binary",
]

_SCRUBBED_PREFIXES = ("PIP_", "UV_", "TWINE_")


def clean_env(tmp: Path | str) -> dict[str, str]:
    """
    A copy of C{os.environ} for client subprocesses, with nothing that could
    point them at another index or cache.

    Drops every C{PIP_*}, C{UV_*} and C{TWINE_*} variable, then sets:
    C{PIP_CONFIG_FILE=os.devnull} (pip then skips its global, user and site config
    files, which C{--isolated} alone does not), C{HOME} and C{XDG_*} under
    C{tmp/home} (no C{~/.pypirc}, C{~/.netrc}, user config), C{UV_NO_CONFIG=1},
    C{UV_CACHE_DIR=tmp/uv-cache} (a fresh cache per C{tmp}: nothing is served from a
    cache that another test filled), C{UV_PYTHON_DOWNLOADS=never}, a null keyring
    backend, C{NO_PROXY} for loopback, C{PYTHONDONTWRITEBYTECODE=1}.

    :param tmp: a per-test directory (created if missing).
    """
    tmp = Path(tmp)
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(_SCRUBBED_PREFIXES)
    }
    loopback = "127.0.0.1,localhost,::1"
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONNOUSERSITE": "1",
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_NO_INPUT": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "UV_NO_CONFIG": "1",
            "UV_CACHE_DIR": str(tmp / "uv-cache"),
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_LINK_MODE": "copy",
            "UV_NO_PROGRESS": "1",
            "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
            "NO_PROXY": loopback,
            "no_proxy": loopback,
        }
    )
    return env


@attrs.frozen
class Result:
    """
    What a finished subprocess left.

    :ivar code: exit status; minus the signal number if it was killed.
    :ivar timed_out: True if L{run} killed it for running too long.
    """

    args: tuple[str, ...]
    out: str
    err: str
    code: int
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.code == 0

    def __str__(self) -> str:
        state = " (timed out)" if self.timed_out else ""
        return (
            f"$ {' '.join(self.args)}\n-> exit {self.code}{state}\n"
            f"--- stdout ---\n{self.out}\n--- stderr ---\n{self.err}"
        )

    def check(self) -> Result:
        """Return self, or raise C{AssertionError} showing the output if it failed."""
        if not self.ok:
            raise AssertionError(f"command failed:\n{self}")
        return self


class _Collector(protocol.ProcessProtocol):
    def __init__(self, done: Deferred[tuple[bytes, bytes, int]]) -> None:
        self._out: list[bytes] = []
        self._err: list[bytes] = []
        self._done = done

    def outReceived(self, data: bytes) -> None:
        self._out.append(data)

    def errReceived(self, data: bytes) -> None:
        self._err.append(data)

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        code = value.exitCode
        if code is None:
            code = -(value.signal or 0)
        self._done.callback((b"".join(self._out), b"".join(self._err), code))


async def run(
    args: Sequence[str],
    env: dict[str, str],
    cwd: Path | str | None = None,
    *,
    timeout: float = 120.0,
    reactor: object = None,
) -> Result:
    """
    Run a command on the reactor and collect its output.

    Like C{twisted.internet.utils.getProcessOutputAndValue} (stdin closed, the
    environment exactly C{env}), but with a timeout after which the process is
    killed (a test waiting on a hung pip would otherwise never end), and
    cancelling the await kills it too.

    :param args: the command; C{args[0]} is looked up on C{env["PATH"]}.
    :param env: the complete environment (see L{clean_env}).
    :param timeout: seconds before C{SIGKILL}; the Result then has C{timed_out}.
    :param reactor: defaults to the global reactor.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    args = tuple(str(a) for a in args)
    done: Deferred[tuple[bytes, bytes, int]] = Deferred()
    process = reactor.spawnProcess(  # type: ignore[attr-defined]
        _Collector(done),
        args[0],
        args,
        env=env,
        path=str(cwd) if cwd is not None else None,
    )
    process.closeStdin()
    killed = []

    def kill() -> None:
        killed.append(True)
        try:
            process.signalProcess("KILL")
        except Exception:  # already gone
            pass

    timer = reactor.callLater(timeout, kill)  # type: ignore[attr-defined]
    try:
        out, err, code = await done
    except BaseException:  # cancelled: don't leave the child behind
        kill()
        raise
    finally:
        if timer.active():
            timer.cancel()
    return Result(
        args,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
        code if not killed else -signal.SIGKILL,
        timed_out=bool(killed),
    )


def uv_binary() -> str:
    """The uv executable: the uv package's, beside C{sys.executable}, or on PATH."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        pass
    beside = Path(sys.executable).with_name("uv")
    if beside.exists():
        return str(beside)
    found = shutil.which("uv")
    if found is None:
        raise RuntimeError("uv not found (pip install uv)")
    return found


def _index_args(index_url: str | None) -> list[str]:
    return ["--no-index"] if index_url is None else ["--index-url", index_url]


def pip_install_args(
    index_url: str | None,
    requirements: Iterable[str],
    target: Path | str,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line of a hermetic ``pip install --target`` with this interpreter
    (run it in :func:`clean_env`)."""
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--isolated",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--no-input",
        "--keyring-provider",
        "disabled",
        "--root-user-action",
        "ignore",
        "--progress-bar",
        "off",
        *_index_args(index_url),
        "--target",
        str(target),
        *extra_args,
        *requirements,
    ]


async def pip_install(
    index_url: str | None,
    requirements: Iterable[str],
    target: Path | str,
    tmp: Path | str,
    extra_args: Sequence[str] = (),
    *,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> Result:
    """
    C{python -m pip install --isolated --no-cache-dir ... --index-url URL --target
    TARGET REQS} with this interpreter, in L{clean_env}C{(tmp)}.

    :param index_url: the index, or None for C{--no-index} (give C{--find-links}
        in C{extra_args}).
    """
    args = pip_install_args(index_url, requirements, target, extra_args)
    return await run(args, env or clean_env(tmp), cwd=tmp, timeout=timeout)


async def uv_pip_install(
    index_url: str | None,
    requirements: Iterable[str],
    target: Path | str,
    tmp: Path | str,
    extra_args: Sequence[str] = (),
    *,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> Result:
    """
    C{uv pip install --no-config --index-url URL --target TARGET --python
    sys.executable REQS} in L{clean_env}C{(tmp)} (so a fresh C{tmp/uv-cache}).

    :param index_url: the index, or None for C{--no-index}.
    """
    args = [
        uv_binary(),
        "pip",
        "install",
        "--no-config",
        *_index_args(index_url),
        "--target",
        str(target),
        "--python",
        sys.executable,
        *extra_args,
        *requirements,
    ]
    return await run(args, env or clean_env(tmp), cwd=tmp, timeout=timeout)


async def twine_upload(
    repository_url: str,
    files: Iterable[Path | str],
    tmp: Path | str,
    *,
    username: str = "user",
    password: str = "secret",
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> Result:
    """
    C{python -m twine upload --repository-url URL -u U -p P --non-interactive FILES}.
    """
    command = [
        sys.executable,
        "-m",
        "twine",
        "upload",
        "--repository-url",
        repository_url,
        "-u",
        username,
        "-p",
        password,
        "--non-interactive",
        "--disable-progress-bar",
    ]
    return await _publish(command, files, tmp, extra_args, env, timeout)


async def uv_publish(
    publish_url: str,
    files: Iterable[Path | str],
    tmp: Path | str,
    *,
    username: str = "user",
    password: str = "secret",
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> Result:
    """
    C{uv publish --publish-url URL --username U --password P FILES}, with
    trusted publishing off.
    """
    command = [
        uv_binary(),
        "publish",
        "--no-config",
        "--publish-url",
        publish_url,
        "--username",
        username,
        "--password",
        password,
        "--trusted-publishing",
        "never",
    ]
    return await _publish(command, files, tmp, extra_args, env, timeout)


async def _publish(
    command: Sequence[str],
    files: Iterable[Path | str],
    tmp: Path | str,
    extra_args: Sequence[str],
    env: dict[str, str] | None,
    timeout: float,
) -> Result:
    """
    Run an upload C{command}, then C{extra_args}, then the C{files}, in
    L{clean_env}C{(tmp)} unless C{env} is given.
    """
    args = [*command, *extra_args, *(str(f) for f in files)]
    return await run(args, env or clean_env(tmp), cwd=tmp, timeout=timeout)
