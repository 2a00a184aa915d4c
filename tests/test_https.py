"""HTTPS end to end: twistd pypicache on an ``ssl:`` listener with a certificate
the test's own authority signed; real pip, uv and twine trust that authority
(``--cert``, ``SSL_CERT_FILE``) and install and upload through it. Also: TLS
1.2 at the least, ``--hsts`` on TLS answers only (fast lane and Klein), and
plain HTTP sent to the TLS port is refused at once."""

import http.client
import re
import socket
import ssl

import bcrypt
import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.clients import clean_env, pip_install, twine_upload, uv_pip_install
from tests.daemon import spawn_twistd
from tests.fakeindex import FakeIndex, start_fake_index
from tests.packages import build_wheel
from tests.test_crash import STARTUP, bounded
from tests.tunnel import make_authority

#: Variables this machine sets that override --cert in pip and twine.
TLS_VARIABLES = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")


def client_env(tmp_path, **variables):
    """A clean client environment without the machine's CA variables."""
    env = {k: v for k, v in clean_env(tmp_path).items() if k not in TLS_VARIABLES}
    return {**env, **variables}


def https_request(port, ca, path, method="GET", context=None):
    """Status, headers and body of a request over TLS, trusting ``ca`` (blocking)."""
    if context is None:
        context = ssl.create_default_context(cafile=str(ca))
    connection = http.client.HTTPSConnection(
        "localhost", port, context=context, timeout=20
    )
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    d = tmp_path_factory.mktemp("dists")
    return {
        "app": build_wheel(d, "app", "1.0", requires=["lib"]),
        "lib": build_wheel(d, "lib", "1.0"),
        "private": build_wheel(d, "inhouse", "1.0"),
    }


@pytest_twisted.async_yield_fixture()
async def tls(tmp_path, dists):
    """A daemon with a tcp: and an ssl: listener, --hsts 1d and users, in front
    of a fake upstream; yields (twistd, plain port, TLS port, CA file)."""
    authority = make_authority()
    ca = authority.write_ca(tmp_path / "ca.pem")
    pem = tmp_path / "server.pem"
    pem.write_bytes(authority.server_pem)
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "htpasswd").write_text(f"user:{hashed}\n")
    index = FakeIndex(tmp_path / "upstream", "json")
    index.add(dists["app"])
    index.add(dists["lib"])
    upstream = await bounded(start_fake_index(index))
    twistd = spawn_twistd(
        tmp_path,
        upstream.url,
        client_env(tmp_path),
        "--listen",
        f"ssl:0:privateKey={pem}:certKey={pem}:interface=127.0.0.1",
        "--hsts",
        "1d",
        "--auth-file",
        str(tmp_path / "htpasswd"),
    )
    try:
        plain = await bounded(twistd.port, STARTUP)
        first = re.search(rb"Site starting on \d+", twistd.output)
        second = await bounded(
            twistd.wait_for(rb"Site \(TLS\) starting on (\d+)", first.end()), STARTUP
        )
        secure = int(second.group(1))
        yield twistd, plain, secure, ca
    finally:
        await twistd.stop()
        await bounded(upstream.stop())


@pytest_twisted.ensureDeferred
async def test_pip_uv_and_twine_over_https(tmp_path, tls, dists):
    """pip (--cert), uv (SSL_CERT_FILE) install through the TLS listener and
    twine (--cert) uploads through it; pip then installs the upload."""
    _, _, port, ca = tls
    index = f"https://localhost:{port}/simple/"
    env = client_env(tmp_path)
    result = await pip_install(
        index, ["app"], tmp_path / "pip", tmp_path, ["--cert", str(ca)], env=env
    )
    result.check()
    assert {p.name for p in (tmp_path / "pip").glob("*.dist-info")} == {
        "app-1.0.dist-info",
        "lib-1.0.dist-info",
    }
    result = await uv_pip_install(
        index,
        ["app"],
        tmp_path / "uv",
        tmp_path,
        env=client_env(tmp_path, SSL_CERT_FILE=str(ca)),
    )
    result.check()
    assert (tmp_path / "uv" / "app-1.0.dist-info").is_dir()
    result = await twine_upload(
        f"https://localhost:{port}/",
        [dists["private"]],
        tmp_path,
        extra_args=["--cert", str(ca)],
        env=env,
    )
    result.check()
    result = await pip_install(
        index, ["inhouse"], tmp_path / "pip2", tmp_path, ["--cert", str(ca)], env=env
    )
    result.check()
    # Without the authority, the certificate is refused: nothing is installed.
    failed = await pip_install(index, ["app"], tmp_path / "pip3", tmp_path, env=env)
    assert not failed.ok and "CERTIFICATE_VERIFY_FAILED" in failed.out + failed.err


@pytest_twisted.ensureDeferred
async def test_hsts_on_tls_answers_only(tls):
    """--hsts: every answer over TLS carries Strict-Transport-Security (a page
    from Klein, then the same page from the fast lane, and /health); answers
    on the plain listener do not."""
    _, plain, port, ca = tls
    for path in ("/simple/lib/", "/simple/lib/", "/health"):
        status, headers, _ = await deferToThread(https_request, port, ca, path)
        assert status == 200
        assert headers.get("Strict-Transport-Security") == "max-age=86400", path
    connection = http.client.HTTPConnection("127.0.0.1", plain, timeout=20)
    try:
        for _ in range(2):
            connection.request("GET", "/simple/lib/")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            assert response.getheader("Strict-Transport-Security") is None
    finally:
        connection.close()


def _tls11_context(ca):
    context = ssl.create_default_context(cafile=str(ca))
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


def _plain_http_to_tls(port):
    """What a plain HTTP request to the TLS port gets back before the
    connection closes (blocking)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /simple/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        received = b""
        while True:
            data = sock.recv(4096)
            if not data:
                return received
            received += data


@pytest_twisted.ensureDeferred
async def test_old_tls_and_plain_http_refused(tls):
    """A client that offers at most TLS 1.1 fails its handshake; the daemon
    negotiates TLS 1.2 or newer; plain HTTP sent to the TLS port gets no
    HTTP answer and the connection is closed at once (no hang)."""
    _, _, port, ca = tls
    with pytest.raises(ssl.SSLError):
        await deferToThread(
            https_request, port, ca, "/health", "GET", _tls11_context(ca)
        )

    def negotiated():
        context = ssl.create_default_context(cafile=str(ca))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            with context.wrap_socket(sock, server_hostname="localhost") as tls_sock:
                return tls_sock.version()

    assert await deferToThread(negotiated) in ("TLSv1.2", "TLSv1.3")
    answer = await bounded(deferToThread(_plain_http_to_tls, port), 15)
    assert b"HTTP/1.1 200" not in answer
