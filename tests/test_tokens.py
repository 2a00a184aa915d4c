"""Access tokens: pypicache-admin token create/list/revoke, and real twine, uv
publish and pip using them as the password of ``__token__``, within their
scope (projects, read-only), refused once revoked or expired; uploads record
who made them."""

import io
import json
import time

import bcrypt
import pytest
import treq
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.task import Clock

from pypicache.errors import Forbidden
from pypicache.tap.admin import main as admin_main
from pypicache.web.tokens import (
    Identity,
    TokenChecker,
    create_token,
    revoke_token,
    tokens_path,
)
from tests.clients import pip_install, twine_upload, uv_pip_install, uv_publish
from tests.daemon import start_world
from tests.packages import build_wheel


def test_tokens_checked_by_id_and_hash_and_revoked_at_once(tmp_path):
    """A token is good until it expires or is revoked (seen at the next check,
    without a restart); a wrong secret or unknown id fails; the file keeps only
    the secret's sha256."""
    from twisted.internet.defer import succeed
    from twisted.python.filepath import FilePath

    from pypicache.storage.filesystem import FilesystemStore

    path = tokens_path(str(tmp_path))
    clock = Clock()
    clock.advance(1000)
    store = FilesystemStore(
        FilePath(str(tmp_path)), run_blocking=lambda f, *a: succeed(f(*a))
    )
    checker = TokenChecker(store, clock, path)

    def check(token: str):
        assert checker.ready() is None  # on disk: read at once
        return checker.check(token.encode())

    token, record = create_token(path, "ci", 1000, expires=2000)
    assert check(token).id == record.id
    secret = token.split("-", 2)[2]  # the secret may hold dashes itself
    assert secret not in (tmp_path / "tokens.json").read_text()
    wrong = token[:-1] + ("y" if token.endswith("x") else "x")
    for bad in (wrong, "pypicache-000000000000-abc", "not-a-token"):
        with pytest.raises(UnauthorizedLogin):
            check(bad)
    clock.advance(1000)
    with pytest.raises(UnauthorizedLogin, match="expired"):
        check(token)
    other, _ = create_token(path, "ci", 2000)
    time.sleep(store.state_max_age)
    assert check(other).user == "ci"
    revoke_token(path, other.split("-")[1], 2001)
    time.sleep(store.state_max_age)
    with pytest.raises(UnauthorizedLogin, match="revoked"):
        check(other)


def test_scopes():
    """A project token changes only its projects; a read-only one nothing; a
    user's password (no token) anything."""
    scoped = Identity("ci", read_tokens_record(projects=("app",)))
    scoped.check_change("app")
    with pytest.raises(Forbidden, match="may change only app"):
        scoped.check_change("other")
    with pytest.raises(Forbidden):
        scoped.check_change(None)
    with pytest.raises(Forbidden, match="read-only"):
        Identity("ci", read_tokens_record(read_only=True)).check_change("app")
    Identity("alice").check_change("anything")


def read_tokens_record(**fields):
    from pypicache.web.tokens import TokenRecord

    return TokenRecord(id="abc", user="ci", sha256="0", created=0, **fields)


def test_admin_token_commands(tmp_path):
    """token create prints the token once (stdout) and its id (stderr); list
    shows scope and state, never the secret; revoke marks it; bad uses are
    usage errors."""
    out, err = io.StringIO(), io.StringIO()
    code = admin_main(
        ["token", "create", "--cache", str(tmp_path), "--user", "ci"]
        + ["--project", "My_App", "--expires", "90d", "--description", "CI"],
        out,
        err,
    )
    assert code == 0
    token = out.getvalue().strip()
    token_id = token.split("-")[1]
    assert token.startswith("pypicache-") and token_id in err.getvalue()
    listing = io.StringIO()
    assert admin_main(["token", "list", "--cache", str(tmp_path)], listing) == 0
    line = listing.getvalue()
    assert token_id in line and "my-app" in line and "active" in line and "CI" in line
    assert token.split("-", 2)[2] not in line
    assert admin_main(["token", "revoke", "--cache", str(tmp_path), token_id], out) == 0
    listing = io.StringIO()
    admin_main(["token", "list", "--cache", str(tmp_path)], listing)
    assert "revoked" in listing.getvalue()
    assert (
        admin_main(["token", "revoke", "--cache", str(tmp_path), "nope"], out, err) == 1
    )
    for bad in (
        ["token", "create", "--cache", str(tmp_path)],
        ["token", "create", "--cache", str(tmp_path), "--user", "__token__"],
        [
            "token",
            "create",
            "--cache",
            str(tmp_path),
            "--user",
            "a",
            "--read-only",
            "--project",
            "x",
        ],
        ["token"],
    ):
        assert admin_main(bad, io.StringIO(), io.StringIO()) == 2


@pytest.fixture
def dists(tmp_path):
    d = tmp_path / "dists"
    d.mkdir()
    return {
        "app": build_wheel(d, "app", "1.0"),
        "app2": build_wheel(d, "app", "2.0"),
        "app3": build_wheel(d, "app", "3.0"),
        "other": build_wheel(d, "other", "1.0"),
    }


async def _world(tmp_path, **options):
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "htpasswd").write_text(f"alice:{hashed}\n")
    return await start_world(tmp_path, auth_file=str(tmp_path / "htpasswd"), **options)


async def test_twine_and_uv_publish_with_scoped_tokens(tmp_path, dists):
    """A token for 'app': twine and uv publish upload app, not other (403,
    with the reason); a read-only token uploads nothing; a revoked or expired
    one is a 401; the JSON API says who uploaded, with the token id."""
    world = await _world(tmp_path)
    try:
        url = world.daemon.url
        path = tokens_path(str(world.daemon.cache))
        token, record = create_token(path, "ci", time.time(), projects=("app",))
        result = await twine_upload(
            url, [dists["app"]], tmp_path, username="__token__", password=token
        )
        result.check()
        refused = await twine_upload(
            url, [dists["other"]], tmp_path, username="__token__", password=token
        )
        assert not refused.ok and "403" in refused.out + refused.err
        result = await uv_publish(
            url, [dists["app2"]], tmp_path, username="__token__", password=token
        )
        result.check()
        refused = await uv_publish(
            url, [dists["other"]], tmp_path, username="__token__", password=token
        )
        assert not refused.ok and "may change only app" in refused.out + refused.err
        read_only, _ = create_token(path, "reader", time.time(), read_only=True)
        refused = await twine_upload(
            url, [dists["app3"]], tmp_path, username="__token__", password=read_only
        )
        assert not refused.ok and "403" in refused.out + refused.err
        expired, _ = create_token(path, "ci", time.time() - 10, expires=time.time() - 1)
        revoke_token(path, record.id, time.time())
        for gone in (token, expired):
            refused = await twine_upload(
                url, [dists["app3"]], tmp_path, username="__token__", password=gone
            )
            assert not refused.ok and "401" in refused.out + refused.err
        response = await world.daemon.get("pypi/app/json")
        files = (json.loads(await response.text()))["urls"]
        assert files[0]["uploaded_by"] == f"ci (token {record.id})"
        assert not list(world.daemon.cache.glob("private/*/other/*")), "refused"
    finally:
        await world.stop()


async def test_pip_reads_with_a_token_in_the_index_url(tmp_path, dists):
    """With --read-auth, pip and uv install with __token__:<token> in the index URL
    (a read-only token is enough); without it, 401; a wrong token counts as a
    failed login (429 after the limit)."""
    world = await _world(tmp_path, read_auth=True, auth_failures=3)
    try:
        path = tokens_path(str(world.daemon.cache))
        reader, _ = create_token(path, "reader", time.time(), read_only=True)
        admin, _ = create_token(path, "ci", time.time())
        base = world.daemon.url
        result = await twine_upload(
            base, [dists["app"]], tmp_path, username="__token__", password=admin
        )
        result.check()
        index = base.replace("http://", f"http://__token__:{reader}@") + "simple/"
        result = await pip_install(index, ["app"], tmp_path / "t", tmp_path)
        result.check()
        assert (tmp_path / "t" / "app-1.0.dist-info").is_dir()
        result = await uv_pip_install(index, ["app"], tmp_path / "uv", tmp_path)
        result.check()
        assert (tmp_path / "uv" / "app-1.0.dist-info").is_dir()
        failed = await pip_install(base + "simple/", ["app"], tmp_path / "u", tmp_path)
        assert not failed.ok
        codes = []
        for _ in range(4):
            response = await treq.get(
                base + "simple/app/",
                auth=("__token__", "pypicache-000000000000-x"),
                persistent=False,
            )
            codes.append(response.code)
            await response.content()
        assert codes == [401, 401, 401, 429]
    finally:
        await world.stop()
