# -*- test-case-name: tests.test_attestations -*-
"""PEP 740 attestations and provenance objects: their shape, checked offline.

An attestation is a Sigstore-signed in-toto statement about one distribution
file. Verifying its signature means chaining its certificate to Sigstore's
trust root and checking its transparency log entry against the identity of a
Trusted Publisher; a private index knows no such identity, and doing it takes
``pypi-attestations`` and ``sigstore`` (a dozen packages). So pypicache keeps
attestations as given and checks what can be checked without them: the
JSON shape PEP 740 gives, base64 that decodes, and that the signed statement
names this very file (its filename and sha256). A client that wants the
signature verified does it against what pypicache serves (the bytes are kept
unchanged), e.g. with ``pypi-attestations verify``.
"""

import base64
import binascii
import json
from typing import Any

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)

from pypicache.errors import BadRequest

#: Beside an archive: its provenance object (``<filename>.provenance``).
PROVENANCE_SUFFIX = ".provenance"

#: What a stored file's record says of a provenance object kept beside it
#: (an upstream file's record keeps the upstream's URL instead).
PROVENANCE = "beside"

#: Largest provenance object kept or relayed (PyPI's are a few KiB).
MAX_PROVENANCE = 1024 * 1024

#: Most attestations taken with one upload.
MAX_ATTESTATIONS = 16

#: The publisher of uploaded attestations: pypicache has no Trusted Publishers.
UPLOAD_PUBLISHER = {"kind": "pypicache-upload", "claims": None}

_STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


def _same_distribution(a: str, b: str) -> bool:
    """Whether two filenames name the same distribution (as pypi-attestations
    compares them: parsed, so that an unnormalized spelling matches)."""
    if a == b:
        return True
    try:
        if a.endswith(".whl") and b.endswith(".whl"):
            return parse_wheel_filename(a) == parse_wheel_filename(b)
        if a.endswith(".tar.gz") and b.endswith(".tar.gz"):
            return parse_sdist_filename(a) == parse_sdist_filename(b)
    except (InvalidWheelFilename, InvalidSdistFilename):
        return False
    return False


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{what} must be a non-empty base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadRequest(f"{what} is not valid base64") from e


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


def check_attestation(
    value: Any, filename: str, sha256: str | None, where: str
) -> None:
    """Check one PEP 740 attestation object offline (see the module's docstring).

    :param sha256: the file's digest, checked if known.

    :raises BadRequest: naming what is wrong.
    """
    attestation = _object(value, where)
    if attestation.get("version") != 1:
        raise BadRequest(f"{where} has version {attestation.get('version')!r}, not 1")
    material = _object(
        attestation.get("verification_material"), f"{where}'s verification_material"
    )
    _b64(material.get("certificate"), f"{where}'s certificate")
    entries = material.get("transparency_entries")
    if not isinstance(entries, list) or not entries:
        raise BadRequest(f"{where} has no transparency_entries")
    envelope = _object(attestation.get("envelope"), f"{where}'s envelope")
    _b64(envelope.get("signature"), f"{where}'s signature")
    raw = _b64(envelope.get("statement"), f"{where}'s statement")
    try:
        statement = _object(json.loads(raw), f"{where}'s statement")
    except ValueError as e:
        raise BadRequest(f"{where}'s statement is not JSON") from e
    if statement.get("_type") != _STATEMENT_TYPE:
        raise BadRequest(f"{where}'s statement is not an in-toto v1 statement")
    if not isinstance(statement.get("predicateType"), str):
        raise BadRequest(f"{where}'s statement has no predicateType")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1:
        raise BadRequest(f"{where}'s statement must have exactly one subject")
    subject = _object(subjects[0], f"{where}'s subject")
    name = subject.get("name")
    if not isinstance(name, str) or not _same_distribution(name, filename):
        raise BadRequest(f"{where} is about {str(name)[:200]!r}, not {filename}")
    digest = _object(subject.get("digest"), f"{where}'s subject digest")
    if sha256 is not None and str(digest.get("sha256", "")).lower() != sha256.lower():
        raise BadRequest(f"{where}'s sha256 is not that of {filename}")


def provenance_of_upload(text: str, filename: str, sha256: str) -> bytes:
    """The provenance object to keep for the ``attestations`` field of an upload
    (a JSON array of attestation objects, as twine and uv publish send it).

    :raises BadRequest: malformed JSON, not an array, too many, or an
        attestation that fails :func:`check_attestation`.
    """
    try:
        attestations = json.loads(text)
    except ValueError as e:
        raise BadRequest("The attestations field is not valid JSON") from e
    if not isinstance(attestations, list) or not attestations:
        raise BadRequest("The attestations field must be a non-empty JSON array")
    if len(attestations) > MAX_ATTESTATIONS:
        raise BadRequest(f"At most {MAX_ATTESTATIONS} attestations per file")
    for i, attestation in enumerate(attestations):
        check_attestation(attestation, filename, sha256, f"Attestation {i}")
    provenance = {
        "version": 1,
        "attestation_bundles": [
            {"publisher": UPLOAD_PUBLISHER, "attestations": attestations}
        ],
    }
    return json.dumps(provenance, separators=(",", ":")).encode()


def check_provenance(content: bytes, filename: str, sha256: str | None) -> None:
    """Check a PEP 740 provenance object (an upstream's) for ``filename``.

    :raises BadRequest: not a provenance object, or an attestation in it that
        fails :func:`check_attestation`.
    """
    if len(content) > MAX_PROVENANCE:
        raise BadRequest(
            f"The provenance of {filename} is larger than {MAX_PROVENANCE} bytes"
        )
    try:
        provenance = _object(json.loads(content), "The provenance")
    except ValueError as e:
        raise BadRequest(f"The provenance of {filename} is not JSON") from e
    bundles = provenance.get("attestation_bundles")
    if provenance.get("version") != 1 or not isinstance(bundles, list) or not bundles:
        raise BadRequest(
            f"The provenance of {filename} is not a PEP 740 provenance object"
        )
    for i, value in enumerate(bundles):
        bundle = _object(value, f"Bundle {i} of the provenance")
        publisher = _object(bundle.get("publisher"), f"Bundle {i}'s publisher")
        if not isinstance(publisher.get("kind"), str):
            raise BadRequest(f"Bundle {i}'s publisher has no kind")
        attestations = bundle.get("attestations")
        if not isinstance(attestations, list) or not attestations:
            raise BadRequest(f"Bundle {i} of the provenance has no attestations")
        for j, attestation in enumerate(attestations):
            check_attestation(
                attestation, filename, sha256, f"Attestation {j} of bundle {i}"
            )
