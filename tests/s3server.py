"""moto's standalone S3 server (``python -m moto.server``) as a subprocess on
127.0.0.1, for tests that speak the real S3 protocol without the internet.

The server answers one request at a time (:data:`SERVER`): moto checks
``If-Match``/``If-None-Match`` and then stores the object without a lock, so
two requests in its threads could both pass the check, which S3 never lets
happen. One at a time, a conditional write is atomic as on S3, and tests of
concurrent writers test pypicache, not moto's race. (Read-modify-write
sequences from several clients still interleave request by request.)

What moto 5.2 does of the S3 features pypicache relies on (probed against
this server): ``If-None-Match: *`` on ``PutObject`` and on
``CompleteMultipartUpload`` (``412``; the failed upload stays open until
aborted, as on S3), ``If-Match`` on ``PutObject`` (``412``; ``404
NoSuchKey`` when the key is gone, as on S3), conditional ``GET`` (``304``),
ranges (``206``; ``416`` past the end), parts of at least 5 MiB (``400
EntityTooSmall`` below, but the last), CRC32 part checksums, presigned
``GET``. Not done: ``If-Match`` on ``CompleteMultipartUpload`` (ignored),
``409 ConditionalRequestConflict`` (never sent), the expiry of presigned
URLs (not checked), and a non-``*`` ``If-None-Match`` on ``PutObject`` is
ignored (S3 refuses it).

A pytest plugin (``tests/conftest.py`` loads it) with three fixtures:
``s3server`` (one server per test module), ``s3`` (a fresh bucket per test,
the environment set to dummy credentials: :class:`S3Bucket`) and
``threads`` (a started :class:`BucketThreads`, stopped after the test).
"""

import http.client
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import attrs
import pytest

from pypicache.storage.s3.threads import BucketThreads

#: Seconds moto has to start answering (it imports every service first).
STARTUP = 60.0

#: The dummy credentials the tests put in the environment (moto checks none).
ACCESS_KEY_ID = "pypicache-test-key"
SECRET_ACCESS_KEY = "pypicache-test-secret"
REGION = "us-east-1"


#: ``python -c`` code that runs ``moto.server``'s own ``main`` with its
#: werkzeug server made single-threaded (``threaded=False``; werkzeug then
#: speaks HTTP/1.0 and closes each connection, so no client waits on an idle
#: keep-alive connection of another).
SERVER = """
import sys
import moto.server
from werkzeug.serving import run_simple

def serial(*args, **kwargs):
    kwargs["threaded"] = False
    return run_simple(*args, **kwargs)

moto.server.run_simple = serial
moto.server.main(sys.argv[1:])
"""


def aws_environment() -> dict[str, str]:
    """What a test's environment holds of AWS: dummy credentials and region,
    no shared config or credentials file, no instance metadata lookups (no
    network), and no proxy for loopback."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def _scrubbed(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` without AWS, moto or proxy settings."""
    return {
        k: v
        for k, v in environ.items()
        if not k.upper().startswith(("AWS_", "MOTO_", "BOTO_"))
        and k.upper() not in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/")
        connection.getresponse().read()
        connection.close()
        return True
    except OSError:
        return False


@attrs.define
class S3Server:
    """A running moto server."""

    endpoint: str
    process: "subprocess.Popen[bytes]"
    log: Path

    def client(self) -> Any:
        """A botocore client of the server with the dummy credentials."""
        import botocore.session
        from botocore.config import Config

        return botocore.session.Session().create_client(
            "s3",
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            config=Config(s3={"addressing_style": "path"}),
        )

    def new_bucket(self, monkeypatch: Any) -> "S3Bucket":
        """Create a bucket of its own for one test, and set the environment
        (:func:`aws_environment`) through ``monkeypatch``."""
        kept = _scrubbed(dict(os.environ))
        for name in list(os.environ):
            if name not in kept:
                monkeypatch.delenv(name, raising=False)
        for name, value in aws_environment().items():
            monkeypatch.setenv(name, value)
        name = f"test-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return S3Bucket(endpoint=self.endpoint, bucket=name, env=aws_environment())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@attrs.frozen
class S3Bucket:
    """One test's bucket: the server's endpoint, the bucket's name and the
    environment the test runs with (already set)."""

    endpoint: str
    bucket: str
    env: dict[str, str]

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"


def start_server(directory: Path) -> S3Server:
    """Start moto's server (:data:`SERVER`) on a free loopback port and wait until
    it answers (its log goes to ``directory/moto.log``).

    :raises RuntimeError: it did not start (the log's end is in the message).
    """
    log = directory / "moto.log"
    for _ in range(3):
        port = _free_port()
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-c", SERVER, "-H", "127.0.0.1", "-p", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_scrubbed(dict(os.environ)),
            )
        deadline = time.monotonic() + STARTUP
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(port):
                return S3Server(f"http://127.0.0.1:{port}", process, log)
            time.sleep(0.1)
        if process.poll() is None:
            process.kill()
        process.wait()
    raise RuntimeError(
        f"moto's S3 server did not start: {log.read_text(errors='replace')[-2000:]}"
    )


def serve(directory: Path) -> Iterator[S3Server]:
    """Run a server for as long as the generator is open (a fixture's body)."""
    server = start_server(directory)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3server(tmp_path_factory: Any) -> Iterator[S3Server]:
    """moto's S3 server for the tests of one module."""
    yield from serve(tmp_path_factory.mktemp("moto"))


@pytest.fixture
def s3(s3server: S3Server, monkeypatch: Any) -> S3Bucket:
    """A bucket of the test's own, and the environment's dummy credentials."""
    return s3server.new_bucket(monkeypatch)


@pytest.fixture
def threads() -> Iterator[BucketThreads]:
    """The bucket's threads, started for one test."""
    # Imported here: this plugin loads before pytest-twisted installs its reactor.
    from twisted.internet import reactor

    pool = BucketThreads(reactor, size=4)
    pool.startService()
    yield pool
    pool.stopService()
