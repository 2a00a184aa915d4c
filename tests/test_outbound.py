"""Upstream traffic through an HTTP proxy (CONNECT) and TLS to an upstream whose
certificate authority is given with --upstream-ca, on loopback."""

import os
import re

import pytest
import pytest_twisted
import treq
from twisted.python import usage

from pypicache.proxy.outbound import Proxy, proxy_settings
from pypicache.tap.options import Options
from tests.clients import clean_env, pip_install
from tests.daemon import spawn_twistd, start_daemon, start_world
from tests.fakeindex import FakeIndex
from tests.packages import build_wheel
from tests.tunnel import ConnectProxy, make_authority, start_tls_index

TLS_VARIABLES = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")


def test_environment_lower_case_wins_and_option_wins_over_both():
    """*_PROXY are read in either case (lower case first, as urllib does); the
    option replaces both proxies but keeps NO_PROXY; "none" drops everything."""
    environ = {
        "HTTPS_PROXY": "http://upper:1",
        "https_proxy": "http://lower:1",
        "HTTP_PROXY": "http://plain:1",
        "NO_PROXY": "internal.example",
        "OTHER": "x",
    }
    assert proxy_settings(None, environ) == {
        "https": "http://lower:1",
        "http": "http://plain:1",
        "no": "internal.example",
    }
    assert proxy_settings("http://opt:3128", environ) == {
        "https": "http://opt:3128",
        "http": "http://opt:3128",
        "no": "internal.example",
    }
    assert proxy_settings("none", environ) == {}
    assert proxy_settings(None, {}) == {}


def test_proxy_url_credentials_masked_and_other_schemes_refused():
    """Credentials in the proxy URL become a Basic Proxy-Authorization and never
    show in its label; host:port alone means http; socks or https proxies are
    refused."""
    proxy = Proxy.from_url("http://al%40ice:s3cret@127.0.0.1:3128")
    assert proxy.authorization == b"Basic YWxAaWNlOnMzY3JldA=="
    assert "s3cret" not in proxy.label and proxy.label.endswith("@127.0.0.1:3128")
    assert Proxy.from_url("proxy.internal:8080").port == 8080
    for bad in ("socks5://127.0.0.1:1080", "https://127.0.0.1:3128"):
        with pytest.raises(ValueError):
            Proxy.from_url(bad)
        with pytest.raises(ValueError):
            proxy_settings(bad, {})


def test_options_checked_at_start(tmp_path, monkeypatch):
    """--upstream-proxy and *_PROXY must be http:// proxies, --upstream-ca a
    PEM file with a certificate: otherwise a usage error, before serving."""
    for name in [n for n in os.environ if n.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)
    base = ["--cache", str(tmp_path), "--index-url", "https://127.0.0.1:1/simple/"]
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    for extra, env, message in [
        (["--upstream-proxy", "socks5://127.0.0.1:1080"], None, "--upstream-proxy"),
        ([], "https://127.0.0.1:3128", "*_PROXY"),
        (["--upstream-ca", str(not_pem)], None, "no PEM certificate"),
        (["--upstream-ca", str(tmp_path / "missing.pem")], None, "--upstream-ca"),
    ]:
        if env is None:
            monkeypatch.delenv("HTTPS_PROXY", raising=False)
        else:
            monkeypatch.setenv("HTTPS_PROXY", env)
        with pytest.raises(usage.UsageError, match=re.escape(message)):
            Options().parseOptions(base + extra)
    options = Options()
    options.parseOptions(base + ["--upstream-proxy", "none"])
    assert options["upstream-proxy"] == "none"


@pytest_twisted.ensureDeferred
async def test_http_upstream_is_tunnelled_too(tmp_path, wheels):
    """An http upstream goes through HTTP_PROXY with CONNECT as well."""
    proxy = await ConnectProxy().start()
    world = await start_world(
        tmp_path, wheels, "html", proxy_environ={"http_proxy": proxy.url}
    )
    try:
        code, body = await _page(world.daemon)
        assert code == 200 and "app-1.0" in body
        assert proxy.connects() == [f"127.0.0.1:{world.upstream.port}"]
    finally:
        await world.stop()
        await proxy.stop()


@pytest.fixture(scope="module")
def authority():
    return make_authority()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    d = tmp_path_factory.mktemp("wheels")
    return [
        build_wheel(d, "app", "1.0", requires=["lib"]),
        build_wheel(d, "lib", "1.0"),
    ]


async def _page(daemon, project="app"):
    response = await daemon.get(f"simple/{project}/")
    return response.code, (await treq.content(response)).decode()


async def _world(tmp_path, authority, wheels, ca=True, **options):
    index = FakeIndex(tmp_path, "html")
    for wheel in wheels:
        index.add(wheel)
    upstream = await start_tls_index(index, authority)
    if ca:
        options["upstream_ca"] = str(authority.write_ca(tmp_path / "ca.pem"))
    daemon = await start_daemon(upstream.url, tmp_path / "cache", timeout=10, **options)
    return upstream, daemon


@pytest_twisted.ensureDeferred
async def test_tunnel_with_credentials_and_tls_verified(tmp_path, authority, wheels):
    """Through a proxy that wants Basic auth: without credentials its 407 is an
    upstream error (502) that names it; with them in the URL, the page comes
    through a CONNECT to the upstream, whose certificate is checked against
    --upstream-ca. The password shows in no answer."""
    proxy = await ConnectProxy(credentials="alice:s3cret").start()
    upstream, daemon = await _world(
        tmp_path, authority, wheels, upstream_proxy=proxy.url
    )
    try:
        code, body = await _page(daemon)
        assert code == 502 and "407" in body and proxy.url in body, body
        await daemon.stop()
        daemon = await start_daemon(
            upstream.url,
            tmp_path / "cache2",
            timeout=10,
            upstream_proxy=proxy.url.replace("//", "//alice:s3cret@"),
            upstream_ca=str(tmp_path / "ca.pem"),
        )
        code, body = await _page(daemon)
        assert code == 200 and "app-1.0-py3-none-any.whl" in body
        assert proxy.connects()[-1] == f"localhost:{upstream.port}"
        assert proxy.log[-1][2] == "Basic YWxpY2U6czNjcmV0"
        assert upstream.index.count("/simple/app/") == 1
    finally:
        await daemon.stop()
        await upstream.stop()
        await proxy.stop()


@pytest.mark.parametrize("status", [403, 502])
@pytest_twisted.ensureDeferred
async def test_proxy_refusal_is_an_upstream_error(tmp_path, authority, wheels, status):
    """A proxy that refuses the CONNECT makes a 502 that says what it answered."""
    proxy = await ConnectProxy(refuse=status).start()
    upstream, daemon = await _world(
        tmp_path, authority, wheels, upstream_proxy=proxy.url
    )
    try:
        code, body = await _page(daemon)
        assert code == 502 and f"answered {status}" in body, body
        assert upstream.index.requests == []
    finally:
        await daemon.stop()
        await upstream.stop()
        await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_unreachable_proxy_is_an_upstream_error(tmp_path, authority, wheels):
    """A proxy that does not listen makes a 502 saying it cannot be reached."""
    proxy = await ConnectProxy().start()
    url = proxy.url
    await proxy.stop()
    upstream, daemon = await _world(tmp_path, authority, wheels, upstream_proxy=url)
    try:
        code, body = await _page(daemon)
        assert code == 502 and f"cannot reach the proxy {url}" in body, body
    finally:
        await daemon.stop()
        await upstream.stop()


@pytest_twisted.ensureDeferred
async def test_option_environment_and_no_proxy(tmp_path, authority, wheels):
    """--upstream-proxy wins over HTTPS_PROXY; "none" ignores it; NO_PROXY
    naming the upstream host sends it direct; otherwise HTTPS_PROXY is used."""
    good = await ConnectProxy().start()
    refusing = await ConnectProxy(refuse=403).start()
    environ = {"HTTPS_PROXY": refusing.url}
    upstream, daemon = await _world(
        tmp_path, authority, wheels, upstream_proxy=good.url, proxy_environ=environ
    )
    ca = str(tmp_path / "ca.pem")
    try:
        assert (await _page(daemon))[0] == 200
        assert len(good.connects()) == 1 and refusing.log == []
        for n, (option, env) in enumerate(
            [
                ("none", environ),
                (None, {**environ, "no_proxy": "example.org,localhost"}),
                (None, environ),
            ]
        ):
            await daemon.stop()
            daemon = await start_daemon(
                upstream.url,
                tmp_path / f"cache{n}",
                timeout=10,
                upstream_proxy=option,
                upstream_ca=ca,
                proxy_environ=env,
            )
            code, body = await _page(daemon)
            if n < 2:
                assert code == 200 and refusing.log == [], (n, body)
            else:
                assert code == 502 and "answered 403" in body, body
        assert len(good.connects()) == 1 and len(refusing.connects()) == 1
    finally:
        await daemon.stop()
        await upstream.stop()
        await good.stop()
        await refusing.stop()


@pytest_twisted.ensureDeferred
async def test_untrusted_upstream_certificate(tmp_path, authority, wheels):
    """Without --upstream-ca the test authority is not trusted: a 502 naming
    TLS, through the proxy and directly alike; with it, the page comes."""
    proxy = await ConnectProxy().start()
    upstream, daemon = await _world(
        tmp_path, authority, wheels, ca=False, upstream_proxy="none"
    )
    try:
        code, body = await _page(daemon)
        assert code == 502 and "TLS failed" in body, body
        await daemon.stop()
        daemon = await start_daemon(
            upstream.url, tmp_path / "cache1", timeout=10, upstream_proxy=proxy.url
        )
        code, body = await _page(daemon)
        assert code == 502 and "TLS failed" in body, body
        assert len(proxy.connects()) == 1
        await daemon.stop()
        other = make_authority("another CA").write_ca(tmp_path / "other.pem")
        daemon = await start_daemon(
            upstream.url,
            tmp_path / "cache2",
            timeout=10,
            upstream_proxy=proxy.url,
            upstream_ca=str(other),
        )
        assert (await _page(daemon))[0] == 502
        await daemon.stop()
        ca = authority.write_ca(tmp_path / "ca.pem")
        daemon = await start_daemon(
            upstream.url,
            tmp_path / "cache3",
            timeout=10,
            upstream_proxy=proxy.url,
            upstream_ca=str(ca),
        )
        assert (await _page(daemon))[0] == 200
    finally:
        await daemon.stop()
        await upstream.stop()
        await proxy.stop()


def daemon_env(tmp_path, **variables):
    """The daemon's environment: no proxy or CA variables but ``variables``."""
    env = {
        k: v
        for k, v in clean_env(tmp_path).items()
        if not k.lower().endswith("_proxy") and k not in TLS_VARIABLES
    }
    return {**env, **variables}


@pytest_twisted.ensureDeferred
async def test_pip_install_through_connect_proxy(tmp_path, authority, wheels):
    """twistd with HTTPS_PROXY (password in it) and --upstream-ca: pip installs
    from a TLS upstream reachable only through the proxy, whose log shows the
    CONNECT; with the proxy stopped, an install of something not cached fails
    cleanly (the daemon answers 502). The password is never logged."""
    proxy = await ConnectProxy(credentials="bob:pa55word").start()
    index = FakeIndex(tmp_path, "html")
    for wheel in wheels:
        index.add(wheel)
    index.add(build_wheel(tmp_path / "more", "other", "1.0"))
    upstream = await start_tls_index(index, authority)
    ca = authority.write_ca(tmp_path / "ca.pem")
    env = daemon_env(tmp_path, HTTPS_PROXY=proxy.url.replace("//", "//bob:pa55word@"))
    twistd = spawn_twistd(tmp_path, upstream.url, env, "--upstream-ca", str(ca))
    try:
        port = await twistd.port
        url = f"http://127.0.0.1:{port}/simple/"
        result = await pip_install(url, ["app"], tmp_path / "t1", tmp_path)
        result.check()
        assert {p.name for p in (tmp_path / "t1").glob("*.dist-info")} == {
            "app-1.0.dist-info",
            "lib-1.0.dist-info",
        }
        assert f"localhost:{upstream.port}" in proxy.connects()
        await proxy.stop()
        failed = await pip_install(url, ["other"], tmp_path / "t2", tmp_path)
        assert not failed.ok and "Traceback" not in failed.err
        response = await treq.get(url + "other/", persistent=False)
        body = (await treq.content(response)).decode()
        assert response.code == 502 and "cannot reach the proxy" in body, body
    finally:
        await twistd.stop()
        await upstream.stop()
        await proxy.stop()
    assert b"pa55word" not in twistd.output and b"bob:***@" in twistd.output
