"""The team's state shared by several daemons on one S3 bucket: a local yank,
a project status and an access token made through one daemon apply on
another within the documented delay, and survive a restart on a fresh local
folder (real daemons, real HTTP, moto's server as the bucket)."""

import io
import json
from pathlib import Path
from typing import Any

import bcrypt
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.web.client import HTTPConnectionPool

from pypicache.tap.admin import main as admin_main
from tests.clients import twine_upload
from tests.fakeindex import FakeIndex, start_fake_index
from tests.packages import build_wheel
from tests.s3server import S3Bucket
from tests.test_s3_daemon import VISIBLE_WITHIN, S3Daemon

JSON = "application/vnd.pypi.simple.v1+json"
ALICE = ("alice", "pw")
#: A token made with pypicache-admin is published by its host's daemon
#: within a second, then seen by the others within the delay.
TOKEN_WITHIN = VISIBLE_WITHIN + 1.0


async def call(
    daemon: S3Daemon, method: str, path: str, auth: Any = None, **kwargs: Any
) -> tuple[int, str]:
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        response = await treq.request(
            method, daemon.url + path, auth=auth, pool=pool, **kwargs
        )
        return response.code, (await response.content()).decode()
    finally:
        await pool.closeCachedConnections()


async def within(seconds: float, check: Any) -> float:
    """Seconds until ``await check()`` is true (failing after ``seconds``)."""
    started = reactor.seconds()
    while True:
        last = await check()
        if last is True:
            return reactor.seconds() - started
        assert reactor.seconds() - started < seconds, last
        await deferLater(reactor, 0.1)


async def page(daemon: S3Daemon, project: str) -> dict[str, Any]:
    code, text = await call(
        daemon, "GET", f"simple/{project}/", headers={"Accept": JSON}
    )
    assert code == 200, daemon.twistd.output.decode()[-3000:]
    return json.loads(text)


@pytest_twisted.async_yield_fixture()
async def team(tmp_path: Path, s3: S3Bucket) -> Any:
    """A fake upstream offering ``cold`` 1.0 and 2.0, and daemons A and B on
    one bucket, each on its own local folder, uploads by alice."""
    index = FakeIndex(tmp_path, "json")
    for version in ("1.0", "2.0"):
        index.add(build_wheel(tmp_path / "upstream", "cold", version))
    upstream = await start_fake_index(index)
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "htpasswd").write_text(f"alice:{hashed}\n")
    # Polling for a token not shared yet fails logins: no lock-out here.
    options = ("--auth-file", str(tmp_path / "htpasswd"), "--auth-failures", "1000")
    daemons = {name: S3Daemon(tmp_path, name, s3, upstream.url) for name in ("a", "b")}
    for daemon in daemons.values():
        await daemon.start(*options)
    state = {
        "daemons": daemons,
        "options": options,
        "upstream": upstream,
        "index": index,
    }
    yield state
    for daemon in state["daemons"].values():
        await daemon.stop()
    await upstream.stop()


@pytest_twisted.ensureDeferred
async def test_yank_status_and_token_shared_by_two_daemons(team, tmp_path):
    """Through daemon A: a local yank of an upstream file (the HTTP form), a
    status of a private project (POST /+status/), a token made with
    pypicache-admin on A's folder. Daemon B shows the yank and the status on
    its /simple/ pages within the documented delay, and takes the token (one
    revoked on A's folder then fails on B as soon). Both daemons stopped, a
    daemon on a fresh local folder still has all of it: it is in the bucket."""
    a, b = team["daemons"]["a"], team["daemons"]["b"]
    assert (await page(b, "cold"))["files"][0]["yanked"] is False  # B's view

    code, text = await call(
        a,
        "POST",
        "packages/cold/cold-2.0-py3-none-any.whl/yank",
        auth=ALICE,
        data={"reason": "breaks our build"},
    )
    assert code in (200, 204, 303), text

    async def yanked_on(daemon):
        files = {
            f["filename"]: f["yanked"] for f in (await page(daemon, "cold"))["files"]
        }
        return (
            files
            == {
                "cold-1.0-py3-none-any.whl": False,
                "cold-2.0-py3-none-any.whl": "breaks our build",
            }
            or files
        )

    assert await within(VISIBLE_WITHIN, lambda: yanked_on(b)) < VISIBLE_WITHIN

    async def status_on(daemon, wanted="archived"):
        shown = (await page(daemon, "secret-pkg")).get("project-status")
        status = (shown or {}).get("status")
        return (
            status == wanted or (wanted is None and status in (None, "active")) or shown
        )

    wheel = build_wheel(tmp_path / "dist", "secret-pkg", "1.0")
    (
        await twine_upload(a.url, [wheel], tmp_path, username="alice", password="pw")
    ).check()
    assert await within(VISIBLE_WITHIN, lambda: status_on(b, None))
    code, text = await call(
        a,
        "POST",
        "+status/secret-pkg",
        auth=ALICE,
        json={"status": "archived", "reason": "moved to new-pkg"},
    )
    assert code == 200, text

    assert await within(VISIBLE_WITHIN, lambda: status_on(b)) < VISIBLE_WITHIN

    def make_token() -> str:
        out, err = io.StringIO(), io.StringIO()
        create = ["token", "create", "--cache", str(a.home / "cache"), "--user", "ci"]
        assert admin_main(create, out, err) == 0, err.getvalue()
        return out.getvalue().strip()

    kept, revoked = make_token(), make_token()

    async def token_works_on(daemon, token, works=True):
        code, text = await call(
            daemon,
            "POST",
            "+status/secret-pkg",
            auth=("__token__", token),
            json={"status": "archived", "reason": "moved to new-pkg"},
        )
        return (code == 200) == works or (code, text)

    for token in (kept, revoked):
        took = await within(TOKEN_WITHIN, lambda: token_works_on(b, token))
        assert took < TOKEN_WITHIN
    assert not (b.home / "cache" / "tokens.json").exists(), "B's folder has none"
    revoke = ["token", "revoke", "--cache", str(a.home / "cache")]
    assert admin_main(revoke + [revoked.split("-")[1]], io.StringIO()) == 0
    took = await within(TOKEN_WITHIN, lambda: token_works_on(b, revoked, False))
    assert took < TOKEN_WITHIN

    for daemon in (a, b):
        await daemon.stop()
    fresh = S3Daemon(tmp_path, "c", a.s3, a.upstream)
    team["daemons"]["c"] = fresh
    await fresh.start(*team["options"])
    assert await yanked_on(fresh) is True
    assert await status_on(fresh) is True
    assert await token_works_on(fresh, kept) is True
    assert await token_works_on(fresh, revoked, False) is True


@pytest_twisted.ensureDeferred
async def test_refresh_through_one_daemon_applies_on_another(team, tmp_path):
    """POST /+refresh/<project> through daemon A makes daemon B drop the page
    it keeps in memory too (its time-to-live far from over): B lists a
    release the upstream added within the documented delay."""
    a, b = team["daemons"]["a"], team["daemons"]["b"]
    names = lambda p: {f["filename"] for f in p["files"]}  # noqa: E731
    assert "cold-3.0-py3-none-any.whl" not in names(await page(b, "cold"))
    team["index"].add(build_wheel(tmp_path / "upstream", "cold", "3.0"))
    assert "cold-3.0-py3-none-any.whl" not in names(await page(b, "cold"))
    code, text = await call(a, "POST", "+refresh/cold", auth=ALICE)
    assert code in (200, 204), text

    async def listed_on(daemon):
        return "cold-3.0-py3-none-any.whl" in names(await page(daemon, "cold"))

    assert await within(VISIBLE_WITHIN, lambda: listed_on(b)) < VISIBLE_WITHIN
