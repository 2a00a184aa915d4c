"""PEP 740 attestations: uploaded with twine and uv publish, and the upstream's
provenance objects, kept beside the files and served from pypicache's own
``provenance`` URLs (offline too). Malformed attestations are a 400.
"""

import base64
import hashlib
import json
from pathlib import Path

import pytest
import pytest_twisted

from pypicache.errors import BadRequest
from pypicache.index.provenance import check_provenance, provenance_of_upload
from tests.clients import twine_upload, uv_publish
from tests.daemon import start_world
from tests.fakeindex import JSON_TYPE
from tests.packages import build_wheel
from tests.test_uploads import legacy_fields, post_form, snapshot
from tests.webclient import send

PUBLISH = "https://docs.pypi.org/attestations/publish/v1"


def attestation(filename: str, sha256: str) -> dict:
    """An attestation in PEP 740's shape about ``filename`` (its certificate
    and signature are placeholders: pypicache checks shape and subject only)."""
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": filename, "digest": {"sha256": sha256}}],
        "predicateType": PUBLISH,
        "predicate": None,
    }
    return {
        "version": 1,
        "verification_material": {
            "certificate": base64.b64encode(b"a DER certificate").decode(),
            "transparency_entries": [{"logIndex": "1", "kindVersion": {}}],
        },
        "envelope": {
            "statement": base64.b64encode(json.dumps(statement).encode()).decode(),
            "signature": base64.b64encode(b"a signature").decode(),
        },
    }


def attest(wheel: Path) -> dict:
    """Write ``<wheel>.publish.attestation`` (as twine and uv look for it) beside it."""
    made = attestation(wheel.name, hashlib.sha256(wheel.read_bytes()).hexdigest())
    wheel.with_name(wheel.name + ".publish.attestation").write_text(json.dumps(made))
    return made


async def provenance_of(daemon, area: str, project: str, filename: str) -> dict:
    """The provenance a page gives for a file, fetched from the URL it names."""
    answer = await send(
        daemon, "GET", f"/{area}/{project}/", headers={"Accept": JSON_TYPE}
    )
    assert answer.code == 200, answer
    entry = {f["filename"]: f for f in answer.json()["files"]}[filename]
    url = entry["provenance"]
    assert url == f"../../packages/{project}/{filename}/provenance"
    fetched = await send(daemon, "GET", f"/packages/{project}/{filename}/provenance")
    assert fetched.code == 200, fetched
    assert fetched.header("content-type").startswith("application/vnd.pypi.integrity")
    return fetched.json()


@pytest_twisted.async_yield_fixture()
async def world(tmp_path):
    w = await start_world(tmp_path, [], timeout=5)
    yield w
    await w.stop()


@pytest_twisted.ensureDeferred
async def test_twine_upload_with_attestations(world, tmp_path):
    """`twine upload --attestations` sends a wheel's `.publish.attestation`; the
    pages' provenance URL (JSON and HTML, /simple/ and /local/) answers a PEP
    740 provenance object holding it, kept beside the file."""
    wheel = build_wheel(tmp_path / "dist", "attested", "1.0")
    made = attest(wheel)
    result = await twine_upload(
        world.daemon.url,
        [wheel, wheel.with_name(wheel.name + ".publish.attestation")],
        tmp_path,
        extra_args=["--attestations"],
    )
    result.check()
    for area in ("simple", "local"):
        provenance = await provenance_of(world.daemon, area, "attested", wheel.name)
        assert provenance["version"] == 1
        (bundle,) = provenance["attestation_bundles"]
        assert bundle["attestations"] == [made]
        assert bundle["publisher"]["kind"] == "pypicache-upload"
    kept = (
        world.cache / "private" / "releases" / "attested" / (wheel.name + ".provenance")
    )
    assert json.loads(kept.read_bytes())["attestation_bundles"][0]["attestations"] == [
        made
    ]
    html = await send(world.daemon, "GET", "/simple/attested/")
    assert (
        f'data-provenance="../../packages/attested/{wheel.name}/provenance"'
        in html.body.decode()
    )
    # Deleting the file takes its provenance with it.
    deleted = await send(world.daemon, "DELETE", f"/packages/attested/{wheel.name}")
    assert deleted.code == 204
    assert not kept.exists()


@pytest_twisted.ensureDeferred
async def test_uv_publish_with_attestation(world, tmp_path):
    """`uv publish` uploads the attestation it finds beside a wheel; pypicache
    serves it through the page's provenance URL."""
    wheel = build_wheel(tmp_path / "dist", "uvattested", "2.0")
    made = attest(wheel)
    result = await uv_publish(world.daemon.url, [str(wheel.parent / "*")], tmp_path)
    result.check()
    provenance = await provenance_of(world.daemon, "local", "uvattested", wheel.name)
    assert provenance["attestation_bundles"][0]["attestations"] == [made]


@pytest_twisted.ensureDeferred
async def test_no_attestations_no_provenance(world, tmp_path):
    """A file uploaded without attestations has no provenance: none in its
    page, and its provenance URL answers 404."""
    wheel = build_wheel(tmp_path / "dist", "plain", "1.0")
    (await twine_upload(world.daemon.url, [wheel], tmp_path)).check()
    answer = await send(
        world.daemon, "GET", "/simple/plain/", headers={"Accept": JSON_TYPE}
    )
    assert "provenance" not in answer.json()["files"][0]
    missing = await send(
        world.daemon, "GET", f"/packages/plain/{wheel.name}/provenance"
    )
    assert missing.code == 404


@pytest_twisted.ensureDeferred
async def test_identical_reupload_adds_attestations(world, tmp_path):
    """A file stored without attestations gets them when the same bytes are
    uploaded again with some (200), and its page then gives a provenance."""
    wheel = build_wheel(tmp_path / "dist", "later", "1.0")
    content = wheel.read_bytes()
    stored = await send(world.daemon, "PUT", f"/packages/later/{wheel.name}", content)
    assert stored.code == 201
    made = attestation(wheel.name, hashlib.sha256(content).hexdigest())
    again = await post_form(
        world.daemon,
        "/",
        [*legacy_fields(wheel.name, content), ("attestations", json.dumps([made]))],
        [("content", wheel.name.encode(), content)],
    )
    assert again.code == 200 and "identical" in again.body.decode()
    provenance = await provenance_of(world.daemon, "local", "later", wheel.name)
    assert provenance["attestation_bundles"][0]["attestations"] == [made]


def _malformed(filename: str, sha256: str) -> list[tuple[str, str]]:
    good = attestation(filename, sha256)
    other = attestation("other-1.0-py3-none-any.whl", sha256)
    wrong_digest = attestation(filename, "0" * 64)
    bad_base64 = json.loads(json.dumps(good))
    bad_base64["envelope"]["signature"] = "not base64!"
    no_entries = json.loads(json.dumps(good))
    no_entries["verification_material"]["transparency_entries"] = []
    return [
        ("[not json", "not valid JSON"),
        (json.dumps(good), "must be a non-empty JSON array"),
        ("[]", "must be a non-empty JSON array"),
        (json.dumps([other]), "is about 'other-1.0-py3-none-any.whl'"),
        (json.dumps([wrong_digest]), "sha256 is not that of"),
        (json.dumps([bad_base64]), "signature is not valid base64"),
        (json.dumps([no_entries]), "has no transparency_entries"),
        (json.dumps([{**good, "version": 2}]), "has version 2, not 1"),
    ]


@pytest_twisted.ensureDeferred
async def test_malformed_attestations_are_400(world, tmp_path):
    """An upload whose attestations field is malformed (not JSON, not an array,
    about another file or other bytes, bad base64...) is a 400 with the
    reason, and nothing is stored."""
    wheel = build_wheel(tmp_path / "dist", "badattest", "1.0")
    content = wheel.read_bytes()
    before = snapshot(world.cache)
    for field, reason in _malformed(wheel.name, hashlib.sha256(content).hexdigest()):
        answer = await post_form(
            world.daemon,
            "/",
            [*legacy_fields(wheel.name, content), ("attestations", field)],
            [("content", wheel.name.encode(), content)],
        )
        assert answer.code == 400, (field, answer)
        assert reason in answer.body.decode(), (field, answer)
    assert snapshot(world.cache) == before


@pytest_twisted.ensureDeferred
async def test_upstream_provenance_cached_and_served_offline(tmp_path):
    """The upstream's provenance object is relayed through pypicache's own URL,
    kept beside the file once the file is cached, and then served by /local/
    with the upstream gone."""
    wheel = build_wheel(tmp_path / "up", "provd", "1.0")
    sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
    upstream_provenance = json.dumps(
        {
            "version": 1,
            "attestation_bundles": [
                {
                    "publisher": {"kind": "GitHub", "repository": "o/provd"},
                    "attestations": [attestation(wheel.name, sha256)],
                }
            ],
        }
    ).encode()
    world = await start_world(
        tmp_path, [(wheel, {"provenance": upstream_provenance})], timeout=5
    )
    try:
        relayed = await provenance_of(world.daemon, "simple", "provd", wheel.name)
        assert json.dumps(relayed) == json.dumps(json.loads(upstream_provenance))
        assert not (
            world.cache / "mirror" / "provd" / (wheel.name + ".provenance")
        ).exists()
        got = await send(world.daemon, "GET", f"/packages/provd/{wheel.name}")
        assert got.code == 200 and got.body == wheel.read_bytes()
        await world.stored("provd", wheel.name)
        kept = world.cache / "mirror" / "provd" / (wheel.name + ".provenance")
        for _ in range(100):
            if kept.exists():
                break
            await _sleep(0.05)
        assert kept.read_bytes() == upstream_provenance
        world.index.forbid()
        offline = await provenance_of(world.daemon, "local", "provd", wheel.name)
        assert offline == json.loads(upstream_provenance)
        assert world.index.violations == []
    finally:
        await world.stop()


@pytest_twisted.ensureDeferred
async def test_malformed_upstream_provenance_is_502(tmp_path):
    """An upstream provenance object about other bytes is refused with a 502
    and not kept; the file itself is still served."""
    wheel = build_wheel(tmp_path / "up", "badprov", "1.0")
    bad = json.dumps(
        {
            "version": 1,
            "attestation_bundles": [
                {
                    "publisher": {"kind": "GitHub"},
                    "attestations": [attestation(wheel.name, "1" * 64)],
                }
            ],
        }
    ).encode()
    world = await start_world(tmp_path, [(wheel, {"provenance": bad})], timeout=5)
    try:
        answer = await send(
            world.daemon, "GET", f"/packages/badprov/{wheel.name}/provenance"
        )
        assert answer.code == 502 and "sha256 is not that of" in answer.body.decode()
        got = await send(world.daemon, "GET", f"/packages/badprov/{wheel.name}")
        assert got.code == 200
    finally:
        await world.stop()


async def _sleep(seconds: float) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


def test_checks_without_network():
    """The offline checks: an upload's attestations become a provenance object
    that passes the provenance check; a subject spelled unnormalized matches."""
    sha = "ab" * 32
    made = provenance_of_upload(
        json.dumps([attestation("Foo_Bar-1.0-py3-none-any.whl", sha)]),
        "foo_bar-1.0-py3-none-any.whl",
        sha,
    )
    check_provenance(made, "foo_bar-1.0-py3-none-any.whl", sha)
    with pytest.raises(BadRequest):
        check_provenance(made, "foo_bar-1.0-py3-none-any.whl", "cd" * 32)
    with pytest.raises(BadRequest):
        check_provenance(b'{"version": 1}', "foo_bar-1.0-py3-none-any.whl", sha)
