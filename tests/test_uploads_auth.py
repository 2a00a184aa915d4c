"""Who may upload and read, on loopback: --auth-file, --read-auth, --allow-from, --trust-proxy.

The htpasswd files are written here with bcrypt (cheap rounds), one entry with
the ``$2y$`` prefix that ``htpasswd -B`` writes. twine, uv and pip are the real
clients; the 401/403 details are checked with a bare HTTP client.
"""

from pathlib import Path

import bcrypt
import pytest
import pytest_twisted

from pypicache.web.access import parse_cidr
from tests.clients import pip_install, twine_upload, uv_pip_install, uv_publish
from tests.daemon import World as BaseWorld
from tests.daemon import start_world
from tests.packages import build_sdist, build_wheel
from tests.webclient import multipart, put, send

PASSWORDS = {"alice": "correct-horse", "bob": "battery:staple"}
ALICE = ("alice", PASSWORDS["alice"])
BOB = ("bob", PASSWORDS["bob"])
#: What a proxy adds for a client inside 10.0.0.0/8.
PROXIED_FROM_10 = {"X-Forwarded-For": "10.1.2.3"}


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    d = tmp_path_factory.mktemp("dists")
    return {
        "wheel": build_wheel(d, "secret-thing", "1.0"),
        "sdist": build_sdist(d, "secret-thing", "1.0"),
        "other": build_wheel(d, "other", "2.0"),
    }


def write_htpasswd(path: Path) -> Path:
    """alice with a ``$2b$`` hash (Python's bcrypt), bob with ``$2y$`` (as htpasswd -B writes)."""
    lines = ["# users of the test daemon"]
    for user, password in PASSWORDS.items():
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        if user == "bob":
            hashed = "$2y$" + hashed[4:]
        lines.append(f"{user}:{hashed}")
    path.write_text("\n".join(lines) + "\n")
    return path


def upload_form(archive: Path) -> tuple[str, bytes]:
    """A minimal upload-API body (twine's shape) for ``archive``."""
    name, version = archive.name.split("-")[:2]
    fields = [
        (":action", "file_upload"),
        ("protocol_version", "1"),
        ("name", name),
        ("version", version),
    ]
    return multipart(fields, [("content", archive.name.encode(), archive.read_bytes())])


class World(BaseWorld):
    """A fake upstream and a daemon in front of it, with a look at the private store."""

    def stored(self) -> list[str]:
        """The names of the private archives and their sidecars."""
        return sorted(
            p.name
            for p in (self.cache / "private").glob("*releases/*/*")
            if p.is_file()
        )


async def make_world(tmp_path: Path, **options) -> World:
    """An empty fake upstream and a daemon started with ``options``."""
    base = await start_world(tmp_path, (), timeout=5, **options)
    return World(base.index, base.upstream, base.daemon, tmp_path)


@pytest_twisted.async_yield_fixture()
async def users(tmp_path):
    """A daemon with --auth-file (writes need users; reads are open)."""
    w = await make_world(tmp_path, auth_file=str(write_htpasswd(tmp_path / "htpasswd")))
    yield w
    await w.stop()


@pytest_twisted.async_yield_fixture()
async def readers(tmp_path):
    """A daemon with --auth-file and --read-auth."""
    w = await make_world(
        tmp_path, auth_file=str(write_htpasswd(tmp_path / "htpasswd")), read_auth=True
    )
    yield w
    await w.stop()


@pytest_twisted.async_yield_fixture()
async def open_daemon(tmp_path):
    """A daemon without --auth-file: uploads only from loopback, not through a proxy."""
    w = await make_world(tmp_path)
    yield w
    await w.stop()


def writes(dists) -> list[tuple[str, str, bytes | None, dict[str, str]]]:
    """Every kind of write, as (method, path, body, headers)."""
    wheel = dists["wheel"]
    content_type, form = upload_form(wheel)
    return [
        ("POST", "/", form, {"Content-Type": content_type}),
        ("POST", "/legacy/", form, {"Content-Type": content_type}),
        (
            "POST",
            "/uploadpackage/",
            form.replace(b'name="content"', b'name="sdist"'),
            {"Content-Type": content_type},
        ),
        ("PUT", f"/packages/secret-thing/{wheel.name}", wheel.read_bytes(), {}),
        (
            "PUT",
            f"/packages/source/s/secret-thing/{wheel.name}",
            wheel.read_bytes(),
            {},
        ),
        ("DELETE", f"/packages/secret-thing/{wheel.name}", None, {}),
        ("DELETE", "/simple/secret-thing/1.0/", None, {}),
        ("POST", f"/packages/secret-thing/{wheel.name}/yank", None, {}),
        ("DELETE", f"/packages/secret-thing/{wheel.name}/yank", None, {}),
    ]


# -- --auth-file ------------------------------------------------------------------


@pytest.mark.parametrize(
    "credentials",
    [
        None,
        ("alice", "wrong"),
        ("mallory", "correct-horse"),
        ("alice", ""),
        ("bob", "correct-horse"),
    ],
    ids=[
        "none",
        "wrong-password",
        "unknown-user",
        "empty-password",
        "other-users-password",
    ],
)
@pytest_twisted.ensureDeferred
async def test_writes_need_good_credentials(users, dists, credentials):
    """Every write without good credentials is a 401 asking for Basic auth, and changes nothing."""
    wheel = dists["wheel"]
    assert (
        await put(users.daemon, wheel, "secret-thing", credentials=ALICE)
    ).code == 201
    for method, path, body, headers in writes(dists):
        answer = await send(
            users.daemon, method, path, body, headers, credentials=credentials
        )
        assert answer.code == 401, (method, path, answer)
        assert answer.header("www-authenticate").startswith("Basic ")
        assert b"password" in answer.body
    assert users.stored() == [
        wheel.name,
        wheel.name + ".json",
        wheel.name + ".metadata",
    ]
    # Reads stay open without --read-auth.
    assert (await send(users.daemon, "GET", "/simple/secret-thing/")).code == 200
    assert (
        await send(users.daemon, "GET", f"/packages/secret-thing/{wheel.name}")
    ).code == 200


@pytest_twisted.ensureDeferred
async def test_every_write_works_with_good_credentials(users, dists):
    """With a user's name and password, each kind of write goes through (both hash prefixes)."""
    # Stored, then identical (200), deleted, then nothing left to delete or yank (404).
    expected = [200, 200, 200, 200, 200, 204, 404, 404, 404]
    for (method, path, body, headers), code in zip(writes(dists), expected):
        answer = await send(users.daemon, method, path, body, headers, credentials=BOB)
        assert answer.code == code, (method, path, answer)
    wheel = dists["wheel"]
    assert (
        await put(users.daemon, wheel, "secret-thing", credentials=ALICE)
    ).code == 201
    for method, path in [
        ("POST", f"/packages/secret-thing/{wheel.name}/yank"),
        ("DELETE", f"/packages/secret-thing/{wheel.name}/yank"),
        ("DELETE", "/simple/secret-thing/1.0/"),
    ]:
        answer = await send(users.daemon, method, path, credentials=ALICE)
        assert answer.code == 204, (method, path, answer)


@pytest_twisted.ensureDeferred
async def test_twine_and_uv_with_users(users, dists):
    """twine with a wrong password fails with 401; twine and uv publish with a user from the file succeed."""
    daemon, tmp = users.daemon, users.tmp_path
    result = await twine_upload(
        daemon.url, [dists["wheel"]], tmp, username="alice", password="wrong"
    )
    assert result.code != 0 and "401" in result.out + result.err, result
    assert users.stored() == []
    result = await twine_upload(
        daemon.url, [dists["wheel"]], tmp, username="alice", password=PASSWORDS["alice"]
    )
    result.check()
    result = await uv_publish(
        daemon.url, [dists["sdist"]], tmp, username="bob", password=PASSWORDS["bob"]
    )
    result.check()
    assert set(users.stored()) >= {dists["wheel"].name, dists["sdist"].name}


# -- --read-auth ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_read_auth(readers, dists):
    """With --read-auth, pip and uv need credentials (in the URL, or netrc); /health stays open."""
    daemon, tmp = readers.daemon, readers.tmp_path
    wheel = dists["wheel"]
    assert (await put(daemon, wheel, "secret-thing", credentials=ALICE)).code == 201
    for path in (
        "/",
        "/simple/",
        "/simple/secret-thing/",
        "/local/secret-thing/",
        f"/packages/secret-thing/{wheel.name}",
        f"/packages/secret-thing/{wheel.name}.metadata",
    ):
        answer = await send(daemon, "GET", path)
        assert answer.code == 401 and answer.header("www-authenticate").startswith(
            "Basic "
        ), (
            path,
            answer,
        )
        answer = await send(daemon, "GET", path, credentials=("alice", "wrong"))
        assert answer.code == 401, (path, answer)
        assert (await send(daemon, "GET", path, credentials=ALICE)).code == 200, path
    health = await send(daemon, "GET", "/health")
    assert health.code == 200 and b'"ok"' in health.body

    result = await pip_install(
        daemon.url + "simple/", ["secret-thing"], tmp / "t0", tmp
    )
    assert result.code != 0 and "No matching distribution" in result.err, result
    port = daemon.port.getHost().port
    with_user = f"http://alice:{PASSWORDS['alice']}@127.0.0.1:{port}/simple/"
    result = await pip_install(with_user, ["secret-thing"], tmp / "t1", tmp)
    result.check()
    assert (tmp / "t1" / "secret_thing-1.0.dist-info").is_dir()
    # uv reads ~/.netrc (HOME is tmp/home in clean_env).
    netrc = tmp / "home" / ".netrc"
    netrc.write_text(f"machine 127.0.0.1\nlogin bob\npassword {PASSWORDS['bob']}\n")
    netrc.chmod(0o600)
    result = await uv_pip_install(
        daemon.url + "simple/", ["secret-thing"], tmp / "t3", tmp
    )
    result.check()
    assert (tmp / "t3" / "secret_thing-1.0.dist-info").is_dir()


# -- no --auth-file: loopback only, no proxies ---------------------------------------


@pytest.mark.parametrize(
    "header, value",
    [
        ("X_Forwarded_For", "203.0.113.9"),
        ("X_Forwarded_For", "127.0.0.1"),
        ("Forwarded", "for=203.0.113.9"),
        ("X_Real_IP", "203.0.113.9"),
        ("True_Client_IP", "127.0.0.1"),
        ("X_Client_IP", "127.0.0.1"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_proxied_write_without_users_is_403(open_daemon, dists, header, value):
    """Without --auth-file, a write that came through a proxy is a 403 that says to configure --auth-file."""
    # The table writes "-" as "_" (as keyword arguments once did; the test ids keep it).
    proxied = {header.replace("_", "-"): value}
    for method, path, body, headers in writes(dists):
        answer = await send(open_daemon.daemon, method, path, body, headers | proxied)
        assert answer.code == 403, (method, path, answer)
        assert b"--auth-file" in answer.body and b"htpasswd -B" in answer.body
    assert open_daemon.stored() == []
    # Reads through a proxy are fine; writes straight from loopback too (credentials ignored).
    assert (
        await send(open_daemon.daemon, "GET", "/simple/", headers=proxied)
    ).code == 200
    wheel = dists["wheel"]
    answer = await put(
        open_daemon.daemon, wheel, "secret-thing", credentials=("anyone", "anything")
    )
    assert answer.code == 201, answer


# -- --allow-from, --trust-proxy ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_allow_from_refuses_other_networks(tmp_path, dists):
    """With --allow-from 10.0.0.0/8, a 127.0.0.1 client is refused (403) for reads and writes,
    and a forged X-Forwarded-For is not believed without --trust-proxy."""
    w = await make_world(tmp_path, allow_from=[parse_cidr("10.0.0.0/8")])
    try:
        for method, path, body, headers in [
            ("GET", "/simple/", None, {}),
            ("GET", "/", None, {}),
            *writes(dists),
        ]:
            answer = await send(w.daemon, method, path, body, headers)
            assert answer.code == 403, (method, path, answer)
            assert b"127.0.0.1 is not allowed" in answer.body
        answer = await send(w.daemon, "GET", "/simple/", headers=PROXIED_FROM_10)
        assert answer.code == 403
        assert w.stored() == []
    finally:
        await w.stop()


@pytest_twisted.ensureDeferred
async def test_allow_from_covers_health(tmp_path):
    """--allow-from serves no one else "at all": /health is refused too (--read-auth is what leaves it open)."""
    w = await make_world(tmp_path, allow_from=[parse_cidr("10.0.0.0/8")])
    try:
        assert (await send(w.daemon, "GET", "/health")).code == 403
        assert (
            await send(w.daemon, "GET", "/health", headers=PROXIED_FROM_10)
        ).code == 403
    finally:
        await w.stop()


@pytest_twisted.ensureDeferred
async def test_trust_proxy(tmp_path, dists):
    """With --trust-proxy, --allow-from judges the address the proxy reports (its right-most entry);
    without users, writes through the proxy are still refused."""
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    w = await make_world(
        tmp_path, allow_from=[parse_cidr("10.0.0.0/8")], trust_proxy=True
    )
    forwarded = {"Forwarded": 'for="10.1.2.3:5000"'}
    right_most_outside = {"X-Forwarded-For": "10.1.2.3, 192.0.2.1"}
    try:
        assert (
            await send(w.daemon, "GET", "/simple/", headers=PROXIED_FROM_10)
        ).code == 200
        assert (await send(w.daemon, "GET", "/simple/", headers=forwarded)).code == 200
        assert (
            await send(w.daemon, "GET", "/simple/", headers=right_most_outside)
        ).code == 403
        assert (await send(w.daemon, "GET", "/simple/")).code == 403
        wheel = dists["wheel"]
        answer = await put(w.daemon, wheel, "secret-thing", headers=PROXIED_FROM_10)
        assert answer.code == 403 and b"--auth-file" in answer.body
    finally:
        await w.stop()
    w = await make_world(
        tmp_path / "2",
        allow_from=[parse_cidr("10.0.0.0/8")],
        trust_proxy=True,
        auth_file=str(htpasswd),
    )
    try:
        wheel = dists["wheel"]
        answer = await put(
            w.daemon,
            wheel,
            "secret-thing",
            headers=PROXIED_FROM_10,
            credentials=ALICE,
        )
        assert answer.code == 201, answer
    finally:
        await w.stop()
