"""Local yanks (pypicache.proxy.yanks): the team yanks an upstream file or
release through ``POST /packages/<project>/<file or version>/yank``; pip
honours it; it shows in /simple/ and /local/ (HTML and JSON) until
``DELETE``d, whatever the upstream says, across page refreshes and restarts.
"""

import base64
import json
import re
from urllib.parse import urlencode

import pytest
import pytest_twisted

from tests.clients import pip_install
from tests.daemon import LOCAL_JSON, start_daemon, start_world
from tests.packages import build_sdist, build_wheel
from tests.test_uploads_auth import PASSWORDS, write_htpasswd
from tests.webclient import multipart, put, send


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    d = tmp_path_factory.mktemp("dists")
    return {
        "one": build_wheel(d, "lyank", "1.0"),
        "two": build_wheel(d, "lyank", "2.0"),
        "two_sdist": build_sdist(d, "lyank", "2.0"),
    }


async def files_of(daemon, path: str) -> dict[str, dict]:
    answer = await send(daemon, "GET", path, headers={"Accept": LOCAL_JSON})
    assert answer.code == 200, answer
    return {f["filename"]: f for f in answer.json()["files"]}


def yanked(files: dict[str, dict]) -> dict[str, object]:
    return {name: f["yanked"] for name, f in files.items()}


async def wheel_installed(daemon, requirement: str, tmp_path, name: str):
    """What pip installs (wheels only) of ``requirement`` through /simple/
    into a fresh target, and pip's output."""
    result = await pip_install(
        daemon.url + "simple/",
        [requirement, "--only-binary", ":all:"],
        tmp_path / name,
        tmp_path,
    )
    result.check()
    (found,) = (tmp_path / name).glob("*.dist-info")
    return found.name[: -len(".dist-info")], result.out + result.err


async def yank(
    daemon, target, reason=None, headers=None, urlencoded=False, project="lyank"
):
    """POST a yank of ``target`` of ``project``, the reason in a multipart form (as
    ``curl -F``) or urlencoded (as ``curl -d``)."""
    body, kind = None, {}
    if reason is not None and urlencoded:
        body = urlencode({"reason": reason}).encode()
        kind = {"Content-Type": "application/x-www-form-urlencoded"}
    elif reason is not None:
        content_type, body = multipart([("reason", reason)], [])
        kind = {"Content-Type": content_type}
    return await send(
        daemon,
        "POST",
        f"/packages/{project}/{target}/yank",
        body,
        {**kind, **(headers or {})},
    )


@pytest_twisted.ensureDeferred
async def test_local_yank_of_an_uncached_file_is_honoured_by_pip(tmp_path, dists):
    """A local yank of an upstream file not cached yet shows as yanked with its
    reason in /simple/ (JSON ``yanked``, HTML ``data-yanked``) and /local/;
    pip skips it unless pinned with ==; DELETE unyanks, and pip gets it."""
    world = await start_world(tmp_path, list(dists.values()), timeout=5)
    try:
        d = world.daemon
        two = dists["two"].name
        answer = await yank(d, two, "breaks our build")
        assert answer.code == 204, answer
        assert world.file_requests() == [], "nothing fetched to yank it"
        for _ in range(2):  # the second answer comes from the fast lane
            files = yanked(await files_of(d, "/simple/lyank/"))
            assert files == {
                dists["one"].name: False,
                two: "breaks our build",
                dists["two_sdist"].name: False,
            }
            html = (await send(d, "GET", "/simple/lyank/")).body.decode()
            assert re.search(
                f'{re.escape(two)}#sha256=[0-9a-f]+" data-yanked="breaks our build"',
                html,
            )
            assert html.count("data-yanked") == 1

        assert (await wheel_installed(d, "lyank", tmp_path, "t1"))[0] == "lyank-1.0"
        got, output = await wheel_installed(d, "lyank==2.0", tmp_path, "t2")
        assert got == "lyank-2.0"
        assert "breaks our build" in output  # pip's warning
        await world.stored("lyank", two)
        assert yanked(await files_of(d, "/local/lyank/"))[two] == "breaks our build"

        answer = await send(d, "DELETE", f"/packages/lyank/{two}/yank")
        assert answer.code == 204, answer
        for area in ("simple", "local"):
            assert yanked(await files_of(d, f"/{area}/lyank/"))[two] is False
        assert (await wheel_installed(d, "lyank", tmp_path, "t3"))[0] == "lyank-2.0"
        # Unyanking what is not yanked is no error.
        assert (await send(d, "DELETE", f"/packages/lyank/{two}/yank")).code == 204
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_release_yank_survives_refresh_upstream_and_restart(tmp_path, dists):
    """A release-level yank (``/packages/<p>/<version>/yank``) covers each of
    its files; it outlives a page refresh, an upstream that yanks and
    unyanks, and a restart (kept in DIR/local-yanks.json); after it is
    unyanked, the upstream's own yank shows again."""
    world = await start_world(tmp_path, list(dists.values()), timeout=5, page_ttl=0)
    try:
        d = world.daemon
        answer = await yank(d, "2.0.0", "do not use", urlencoded=True, project="LYank")
        assert answer.code == 204, answer
        expected = {
            dists["one"].name: False,
            dists["two"].name: "do not use",
            dists["two_sdist"].name: "do not use",
        }
        assert yanked(await files_of(d, "/simple/lyank/")) == expected
        record = json.loads((world.cache / "local-yanks.json").read_text())
        assert record["yanks"]["lyank"]["releases"]["2.0.0"]["reason"] == "do not use"

        # The upstream yanks 1.0 and 2.0, then unyanks 2.0: ours stays.
        world.index.add(dists["one"], yanked="upstream says no")
        world.index.add(dists["two"], yanked=True)
        answer = await send(d, "POST", "/+refresh/lyank")
        assert answer.code == 200, answer
        files = yanked(await files_of(d, "/simple/lyank/"))
        assert files[dists["one"].name] == "upstream says no"
        assert files[dists["two"].name] == "do not use"
        world.index.add(dists["two"], yanked=None)
        assert (await send(d, "POST", "/+refresh/lyank")).code == 200
        assert yanked(await files_of(d, "/simple/lyank/"))[dists["two"].name] == (
            "do not use"
        )
        # A file yank (without a reason) and the release yank together.
        assert (await yank(d, dists["two_sdist"].name)).code == 204
        await d.stop()

        # A new daemon on the same cache folder.
        d = world.daemon = await start_daemon(world.upstream.url, world.cache)
        files = yanked(await files_of(d, "/simple/lyank/"))
        assert files[dists["two"].name] == "do not use"
        assert files[dists["two_sdist"].name] is True  # no reason: data-yanked=""
        html = (await send(d, "GET", "/simple/lyank/")).body.decode()
        assert re.search(r'lyank-2\.0\.tar\.gz#sha256=[0-9a-f]+" data-yanked=""', html)
        # 2.0 is the release yanked as 2.0.0.
        assert (await send(d, "DELETE", "/packages/lyank/2.0/yank")).code == 204
        files = yanked(await files_of(d, "/simple/lyank/"))
        assert files[dists["two"].name] is False
        assert files[dists["two_sdist"].name] is True
        assert files[dists["one"].name] == "upstream says no"
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_local_yank_needs_a_user_and_good_input(tmp_path, dists):
    """With users, a yank or unyank without (or with wrong) credentials is
    401 and changes nothing; bad input is 400 with a reason: not a file nor a
    version, another project's file, a reason with a line break or too long,
    a form with other fields, a body that is not a form."""
    world = await start_world(
        tmp_path,
        list(dists.values()),
        timeout=5,
        auth_file=str(write_htpasswd(tmp_path / "htpasswd")),
    )
    try:
        d = world.daemon
        two = dists["two"].name
        assert (await yank(d, two, "no")).code == 401
        wrong = base64.b64encode(b"alice:wrong").decode()
        answer = await yank(d, two, "no", {"Authorization": f"Basic {wrong}"})
        assert answer.code == 401
        assert (await send(d, "DELETE", f"/packages/lyank/{two}/yank")).code == 401
        assert not (world.cache / "local-yanks.json").exists()
        assert yanked(await files_of(d, "/simple/lyank/"))[two] is False

        good = base64.b64encode(f"alice:{PASSWORDS['alice']}".encode()).decode()
        auth = {"Authorization": f"Basic {good}"}
        for target, reason, message in [
            ("not-a-version!", None, "neither a file name nor a version"),
            ("other-1.0-py3-none-any.whl", None, "not a file of project"),
            (two, "two\nlines", "control characters"),
            (two, "x" * 1001, "longer than 1000"),
        ]:
            answer = await yank(d, target, reason, auth)
            assert answer.code == 400, (target, answer)
            assert message in answer.body.decode()
        for body, content_type, message in [
            (
                b"reason=a&action=b",
                "application/x-www-form-urlencoded",
                "not ['action']",
            ),
            (b'{"reason": "a"}', "application/json", "body is a form"),
        ]:
            answer = await send(
                d,
                "POST",
                f"/packages/lyank/{two}/yank",
                body,
                {"Content-Type": content_type, **auth},
            )
            assert answer.code == 400 and message in answer.body.decode(), answer
        assert not (world.cache / "local-yanks.json").exists()
        assert (await yank(d, two, "no", auth)).code == 204
        assert yanked(await files_of(d, "/simple/lyank/"))[two] == "no"
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_release_yank_of_a_private_project_flags_its_files(tmp_path, dists):
    """On a private project the release form yanks each private file of the
    release in its own record (no local yank is kept); DELETE unyanks them; a
    release without private files is 404."""
    world = await start_world(tmp_path, (), timeout=5)
    try:
        d = world.daemon
        for key in ("one", "two", "two_sdist"):
            assert (await put(d, dists[key])).code == 201
        answer = await yank(d, "2.0", "withdrawn", urlencoded=True)
        assert answer.code == 204, answer
        assert yanked(await files_of(d, "/simple/lyank/")) == {
            dists["one"].name: False,
            dists["two"].name: "withdrawn",
            dists["two_sdist"].name: "withdrawn",
        }
        sidecar = world.cache / "private/releases/lyank" / f"{dists['two'].name}.json"
        assert json.loads(sidecar.read_text())["file"]["yanked"] == "withdrawn"
        assert not (world.cache / "local-yanks.json").exists()
        assert (await send(d, "DELETE", "/packages/lyank/2.0/yank")).code == 204
        assert set(yanked(await files_of(d, "/simple/lyank/")).values()) == {False}
        answer = await send(d, "POST", "/packages/lyank/3.0/yank")
        assert answer.code == 404 and "No private files" in answer.body.decode()
        assert world.asked_about("lyank") == []
    finally:
        await world.stop()


def test_records_follow_another_process(tmp_path):
    """A yank written by another process (another worker, an import) is seen
    at the next check of the file; each change gives the project's yanks a
    new value (the view key). A broken file keeps the last good record in
    memory, and a change then fails naming the file, overwriting nothing."""
    import time

    from twisted.internet.defer import Deferred, succeed
    from twisted.python.filepath import FilePath

    from pypicache.errors import PypicacheError
    from pypicache.storage.filesystem import FilesystemStore
    from pypicache.storage.listings import RECHECK_NS
    from pypicache.storage.yanks import YANKS_FILE, YankRecords

    def store():
        run = lambda f, *a: succeed(f(*a))  # noqa: E731
        return FilesystemStore(FilePath(str(tmp_path)), run_blocking=run)

    here, there = YankRecords(store()), YankRecords(store())
    assert here.of("lyank") is None

    def change(*args):
        done = Deferred.fromCoroutine(there.change("lyank", *args))
        time.sleep(RECHECK_NS / 1e9)
        return done

    change("files", "lyank-2.0.tar.gz", "bad")
    first = here.of("lyank")
    assert first.files == (("lyank-2.0.tar.gz", "bad"),)
    change("releases", "1.0", "")
    second = here.of("lyank")
    assert second != first and second.releases == (("1.0", ""),)
    (tmp_path / YANKS_FILE).write_text("not json")
    time.sleep(RECHECK_NS / 1e9)
    assert here.of("lyank") == second
    failed = change("files", "lyank-2.0.tar.gz", None)
    assert "local-yanks.json cannot be read" in str(failed.result.value)
    assert isinstance(failed.result.value, PypicacheError)
    failed.addErrback(lambda f: None)
    assert (tmp_path / YANKS_FILE).read_text() == "not json"
    (tmp_path / YANKS_FILE).unlink()
    change("files", "lyank-2.0.tar.gz", None)
    assert here.of("lyank") is None
