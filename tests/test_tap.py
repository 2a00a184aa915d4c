"""The twistd plugin: options, the default upstream, and the service it builds."""

import os
import threading

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from pypicache.tap import DEFAULT_LISTEN, Options, makeService, pip_index_url
from pypicache.tap.service import SYNC_THREADS


def parse(*args):
    options = Options()
    options.parseOptions(list(args))
    return options


def test_cache_is_required():
    """Without --cache the options are refused."""
    with pytest.raises(usage.UsageError, match="--cache"):
        parse("--index-url", "http://127.0.0.1:1/simple/")


def test_defaults():
    """--listen defaults to loopback port 8080, --page-ttl to 600 s."""
    options = parse("--cache", "/tmp/x", "--index-url", "http://127.0.0.1:1/simple/")
    assert options["listen"] == [DEFAULT_LISTEN]
    assert options["page-ttl"] == 600
    assert options["index-url"] == "http://127.0.0.1:1/simple/"


def test_listen_is_repeatable():
    """--listen may be given several times."""
    options = parse(
        "--cache",
        "/tmp/x",
        "--index-url",
        "http://h.invalid/simple/",
        "--listen",
        "tcp:1",
        "--listen",
        "tcp:2",
    )
    assert options["listen"] == ["tcp:1", "tcp:2"]


@pytest.mark.parametrize(
    "url", ["file:///opt/simple", "ftp://h.invalid/simple", "not a url"]
)
def test_index_url_must_be_http(url):
    """Only http(s) upstreams are accepted."""
    with pytest.raises(usage.UsageError, match="http"):
        parse("--cache", "/tmp/x", "--index-url", url)


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_page_ttl_must_be_a_non_negative_number(value):
    """A negative or non-numeric --page-ttl is a usage error."""
    with pytest.raises(usage.UsageError):
        parse(
            "--cache", "/tmp/x", "--index-url", "http://h.invalid/", "--page-ttl", value
        )


def test_default_upstream_from_environment(monkeypatch):
    """PIP_INDEX_URL wins."""
    monkeypatch.setenv("PIP_INDEX_URL", "http://mirror.invalid/simple/")
    assert pip_index_url() == "http://mirror.invalid/simple/"


def test_default_upstream_from_pip_config(monkeypatch, tmp_path):
    """pip's install.index-url wins over global.index-url; extra-index-url is never used."""
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    config = tmp_path / "pip.conf"
    config.write_text(
        "[global]\nindex-url = http://global.invalid/simple/\nextra-index-url = http://extra.invalid/\n"
        "[install]\nindex-url = http://install.invalid/simple/\n"
    )
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    assert pip_index_url() == "http://install.invalid/simple/"
    config.write_text(
        "[global]\nindex-url = http://global.invalid/simple/\nextra-index-url = http://extra.invalid/\n"
    )
    assert pip_index_url() == "http://global.invalid/simple/"


def test_default_upstream_is_pips_builtin(monkeypatch):
    """With nothing configured, the default is pip's own built-in index."""
    from pip._internal.models.index import PyPI

    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    assert pip_index_url() == PyPI.simple_url


def loopback_options(tmp_path, port: int):
    """Options for a cache in ``tmp_path`` listening on loopback ``port``."""
    return parse(
        "--cache",
        str(tmp_path / "c"),
        "--index-url",
        "http://127.0.0.1:1/simple/",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
    )


def test_make_service_listens_on_loopback(tmp_path):
    """makeService listens where --listen says, on the reactor it is given."""
    reactor = MemoryReactorClock()
    service = makeService(loopback_options(tmp_path, 8123), reactor=reactor)
    service.startService()
    try:
        assert [(port, interface) for port, _, _, interface in reactor.tcpServers] == [
            (8123, "127.0.0.1")
        ]
        assert (tmp_path / "c" / "mirror").is_dir()
    finally:
        service.stopService()


def test_sync_threads_are_started_with_the_service(tmp_path):
    """The threads that store downloads and pages are running once the service
    starts (a burst of cold files never waits for threads to start), and stop
    with it."""

    def sync_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if "pypicache-sync" in t.name]

    service = makeService(
        loopback_options(tmp_path, 8124), reactor=MemoryReactorClock()
    )
    service.startService()
    try:
        assert len(sync_threads()) == SYNC_THREADS
    finally:
        service.stopService()
    assert sync_threads() == []


@pytest.mark.parametrize("value", ["0", "-2", "65"])
def test_workers_must_be_in_range(value):
    """--workers below 1 or above 64 is a usage error."""
    with pytest.raises(usage.UsageError, match="--workers"):
        parse(
            "--cache",
            "/tmp/x",
            "--index-url",
            "http://h.invalid/simple/",
            "--workers",
            value,
        )


def test_options_keep_their_arguments_for_workers():
    """The parsed arguments are kept: the workers are started with them."""
    args = [
        "--cache",
        "/tmp/x",
        "--index-url",
        "http://h.invalid/simple/",
        "--workers",
        "2",
    ]
    assert parse(*args).argv == args


def self_signed(tmp_path):
    """A key and a self-signed certificate for 127.0.0.1, as PEM files."""
    from OpenSSL.crypto import FILETYPE_PEM
    from twisted.internet import ssl

    key = ssl.KeyPair.generate(size=2048)
    cert = key.selfSignedCert(1, CN="127.0.0.1")
    (tmp_path / "key.pem").write_bytes(key.dump(FILETYPE_PEM))
    (tmp_path / "cert.pem").write_bytes(cert.dumpPEM())
    return tmp_path / "key.pem", tmp_path / "cert.pem"


def test_workers_serve_tcp_and_unix_with_the_site_and_ssl_with_tls(tmp_path):
    """A worker serves an adopted tcp: or unix: socket with the site itself and an
    ssl: socket with the site behind TLS, as the endpoint would have."""
    from twisted.protocols.tls import TLSMemoryBIOFactory
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from pypicache.tap.listeners import worker_factory

    site = Site(Resource())
    assert worker_factory("tcp:0:interface=127.0.0.1", site) is site
    assert worker_factory(f"unix:{tmp_path}/sock", site) is site
    key, cert = self_signed(tmp_path)
    tls = worker_factory(f"ssl:0:privateKey={key}:certKey={cert}", site)
    assert isinstance(tls, TLSMemoryBIOFactory) and tls.wrappedFactory is site


def test_workers_refuse_endpoints_they_cannot_share():
    """An endpoint other than tcp:, ssl: or unix: is refused with --workers, by name."""
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from pypicache.tap.listeners import worker_factory

    with pytest.raises(usage.UsageError, match="tcp:, ssl: and unix:"):
        worker_factory("systemd:domain=INET:index=0", Site(Resource()))


def test_start_up_objects_are_frozen_out_of_the_collector():
    """Once the daemon runs, what start-up made is moved out of the garbage
    collector's view (``gc.freeze``), so full collections skip it."""
    import gc

    from pypicache.tap.service import freeze_start_up_objects

    try:
        freeze_start_up_objects()
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
