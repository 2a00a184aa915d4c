"""Reading lock files for ``POST /+warm`` (:mod:`pypicache.bulk.locks`), without a server."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pypicache.bulk.locks import parse_lock
from pypicache.errors import BadRequest, PypicacheError, UnprocessableEntity
from tests.test_fuzz import FUZZ, TEXT

A = "a" * 64
B = "b" * 64

UV_LOCK = f"""\
version = 1
revision = 3
requires-python = ">=3.9"

[[package]]
name = "Alpha"
version = "1.0"
source = {{ registry = "https://example.invalid/simple/" }}
sdist = {{ url = "https://files.example.invalid/packages/aa/bb/alpha-1.0.tar.gz", hash = "sha256:{A}", size = 10 }}
wheels = [
    {{ url = "https://files.example.invalid/packages/cc/dd/alpha-1.0-py3-none-any.whl", hash = "sha256:{B}", size = 9 }},
]

[[package]]
name = "fromgit"
version = "0.1"
source = {{ git = "https://example.invalid/x.git?rev=main#abc" }}
"""

POETRY_V1 = f"""\
[[package]]
name = "beta"
version = "2.0"
description = ""
category = "main"
optional = false
python-versions = "*"

[metadata]
lock-version = "1.1"
python-versions = "^3.9"
content-hash = "x"

[metadata.files]
beta = [
    {{file = "beta-2.0-py3-none-any.whl", hash = "sha256:{A}"}},
    {{file = "beta-2.0-py2.7.egg", hash = "sha256:{B}"}},
]
"""


def test_uv_lock_files_and_sources():
    """A uv.lock's registry packages become their sdist and wheels (named by
    their URL's last segment, with the lock's hashes), with the line of their
    ``[[package]]``; a git source is reported, not acted on, with its line."""
    lock = parse_lock(UV_LOCK)
    assert lock.format == "uv"
    (alpha,) = lock.requirements
    assert (alpha.name, alpha.version, alpha.line, alpha.line_number) == (
        "alpha",
        "1.0",
        "alpha==1.0",
        5,
    )
    assert [(f.filename, dict(f.hashes)) for f in alpha.files] == [
        ("alpha-1.0.tar.gz", {"sha256": frozenset([A])}),
        ("alpha-1.0-py3-none-any.whl", {"sha256": frozenset([B])}),
    ]
    assert [(u.line, u.line_number) for u in lock.unparsed] == [("fromgit", 14)]
    assert "git source" in lock.unparsed[0].reason


def test_poetry_lock_version_1_files_and_legacy_names():
    """A poetry.lock of lock version 1.1 keeps its files under
    ``[metadata.files]``; a file that is no wheel or sdist (an egg) is
    reported, not acted on."""
    lock = parse_lock(POETRY_V1)
    assert lock.format == "poetry"
    (beta,) = lock.requirements
    assert [f.filename for f in beta.files] == ["beta-2.0-py3-none-any.whl"]
    assert beta.files[0].url is None
    assert [u.line for u in lock.unparsed] == ["beta-2.0-py2.7.egg"]


def pylock_head(created_by: str) -> str:
    """The first four lines of a pylock.toml, up to its first ``[[packages]]``."""
    return f'lock-version = "1.0"\ncreated-by = "{created_by}"\n\n[[packages]]\n'


def test_pylock_names_paths_and_other_sources():
    """A pylock.toml's files may be named by ``name`` or ``path`` with no URL;
    ``vcs``, ``directory`` and ``archive`` entries are reported; algorithms
    pip does not take are left out."""
    lock = parse_lock(pylock_head("somebody") + f"""\
name = "gamma"
version = "3.0"
wheels = [
  {{ name = "gamma-3.0-py3-none-any.whl", hashes = {{ sha256 = "{A}", blake2b = "00" }} }},
  {{ path = "dist/gamma-3.0-cp312-cp312-win_amd64.whl", hashes = {{ sha256 = "{B}" }} }},
]

[[packages]]
name = "mine"
directory = {{ path = "." }}
""")
    assert lock.format == "pylock"
    (gamma,) = lock.requirements
    assert [f.filename for f in gamma.files] == [
        "gamma-3.0-py3-none-any.whl",
        "gamma-3.0-cp312-cp312-win_amd64.whl",
    ]
    assert dict(gamma.files[0].hashes) == {"sha256": frozenset([A])}
    assert [(u.line, u.line_number) for u in lock.unparsed] == [("mine", 12)]


def test_hashed_requirements_sniffed_and_told():
    """A requirements file with --hash values is told by its content; its
    pins keep their hashes and no files (the index page has them)."""
    text = f"alpha==1.0 \\\n    --hash=sha256:{A} \\\n    --hash=sha256:{B}\n"
    for fmt in (None, "requirements"):
        lock = parse_lock(text, fmt)
        assert lock.format == "requirements"
        (alpha,) = lock.requirements
        assert (alpha.name, alpha.version, alpha.files) == ("alpha", "1.0", ())
        assert dict(alpha.hashes) == {"sha256": frozenset([A, B])}


@pytest.mark.parametrize(
    "text, fmt, error, message",
    [
        ("", None, BadRequest, "Not a lock file"),
        (
            "[[package]]\nname = 1\n",
            "poetry",
            UnprocessableEntity,
            "line 1: [[package]] entry 1",
        ),
        (
            UV_LOCK.replace("alpha-1.0.tar.gz", "alpha-2.0.tar.gz"),
            None,
            UnprocessableEntity,
            "line 5: [[package]] entry 1 ('alpha'): file 'alpha-2.0.tar.gz' is not of version 1.0",
        ),
        (
            UV_LOCK.replace(f"sha256:{A}", "md5:00"),
            None,
            UnprocessableEntity,
            "unsupported --hash algorithm 'md5'",
        ),
        (
            UV_LOCK.replace('hash = "sha256:' + A + '", ', ""),
            None,
            UnprocessableEntity,
            "file 'alpha-1.0.tar.gz' has no hash",
        ),
        (
            'lock-version = "1.0"\npackages = 3\n',
            None,
            UnprocessableEntity,
            "array of tables",
        ),
        ("alpha==1.0 --hash=sha256:zz\n", None, BadRequest, "not hexadecimal"),
        (
            UV_LOCK.replace('version = "1.0"', f'version = "{"1" * 5000}"'),
            None,
            UnprocessableEntity,
            "version is longer than 255 characters",
        ),
        (
            UV_LOCK.replace("/alpha-1.0.tar.gz", "/..%2Falpha-1.0.tar.gz"),
            None,
            UnprocessableEntity,
            "a file has no usable name ('../alpha-1.0.tar.gz')",
        ),
        (
            UV_LOCK.replace("sdist = { url", "sdist = { filename = 3, url"),
            None,
            UnprocessableEntity,
            "filename must be a non-empty string",
        ),
    ],
)
def test_bad_locks(text, fmt, error, message):
    """What makes a lock unreadable (400) or not a lock (422), with the line or entry."""
    with pytest.raises(error) as caught:
        parse_lock(text, fmt)
    assert message in caught.value.message


def test_pylock_in_array_of_tables_form():
    """pip lock (pip 25.1 and later; this machine's pip has none) writes a
    pylock.toml's wheels as ``[[packages.wheels]]`` tables with their hashes
    in ``[packages.wheels.hashes]``: read alike, and those headers do not
    shift the line each package is reported at."""
    lock = parse_lock(pylock_head("pip") + f"""\
name = "alpha"
version = "1.0"
index = "https://example.invalid/simple"

[[packages.wheels]]
name = "alpha-1.0-py3-none-any.whl"
url = "https://files.example.invalid/packages/aa/bb/alpha-1.0-py3-none-any.whl"

[packages.wheels.hashes]
sha256 = "{A}"

[[packages]]
name = "beta"
version = "2.0"

[packages.sdist]
url = "https://files.example.invalid/packages/cc/dd/beta-2.0.tar.gz"

[packages.sdist.hashes]
sha256 = "{B}"
""")
    assert [
        (p.name, p.line_number, [f.filename for f in p.files])
        for p in lock.requirements
    ] == [
        ("alpha", 4, ["alpha-1.0-py3-none-any.whl"]),
        ("beta", 16, ["beta-2.0.tar.gz"]),
    ]


#: Lines of real locks and their pieces, shuffled into locks of every shape.
LOCK_LINES = st.lists(
    st.one_of(
        st.sampled_from(
            UV_LOCK.splitlines()
            + POETRY_V1.splitlines()
            + [
                'lock-version = "1.0"',
                "[[packages]]",
                "[[packages.wheels]]",
                "[packages.sdist]",
                f'hashes = {{ sha256 = "{A}" }}',
                'name = "alpha-1.0-py3-none-any.whl"',
                'url = "https://x.invalid/a/alpha-1.0.tar.gz"',
                'path = "../x/alpha-1.0.zip"',
                'vcs = { url = "https://x.invalid/x.git" }',
                "files = 3",
                "wheels = [1, 2]",
                'source = "x"',
                f"alpha==1.0 --hash=sha256:{A}",
            ]
        ),
        TEXT,
    ),
    max_size=20,
).map(lambda lines: "\n".join(lines).encode("utf-8", "replace").decode())
# (What reaches the parser was decoded as UTF-8: it holds no lone surrogates.)


@settings(FUZZ, max_examples=100)
@given(LOCK_LINES, st.sampled_from([None, "uv", "pylock", "poetry", "requirements"]))
def test_any_text_reads_or_is_refused(text, fmt):
    """Whatever is sent, parse_lock answers a lock or a 400/422, never another error."""
    try:
        lock = parse_lock(text, fmt)
    except PypicacheError as e:
        assert e.code in (400, 422)
        return
    for package in lock.requirements:
        assert package.name
        for f in package.files:
            assert "/" not in f.filename and f.hashes
