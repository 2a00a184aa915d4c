"""Tests for :mod:`pypicache.index.names`: project names and distribution filenames."""

import pytest
from packaging.version import Version

from pypicache.errors import BadRequest
from pypicache.index.names import (
    check_filename,
    is_distribution,
    normalize,
    parse_filename,
)

# -- normalize -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("foo", "foo"),
        ("Foo", "foo"),
        ("FOO", "foo"),
        ("foo-bar", "foo-bar"),
        ("foo_bar", "foo-bar"),
        ("foo.bar", "foo-bar"),
        ("Foo.Bar_Baz", "foo-bar-baz"),
        ("foo--bar", "foo-bar"),
        ("foo__-..bar", "foo-bar"),
        ("zope.interface", "zope-interface"),
        ("Django", "django"),
        ("a", "a"),
        ("0", "0"),
        ("1password", "1password"),
        ("typing_extensions", "typing-extensions"),
    ],
)
def test_normalize(name, expected):
    """Names are lower-cased and runs of ``-``, ``_``, ``.`` collapse to ``-`` (PEP 503)."""
    assert normalize(name) == expected


@pytest.mark.parametrize("name", ["foo", "foo-bar", "a.b_c"])
def test_normalize_idempotent(name):
    """Normalizing an already normalized name changes nothing."""
    assert normalize(normalize(name)) == normalize(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-foo",
        "foo-",
        "_foo",
        "foo_",
        ".foo",
        "foo.",
        "..",
        "../etc",
        "foo/bar",
        "foo\\bar",
        "foo bar",
        "foo\x00",
        "foo%2Fbar",
        "föö",
        "foo+bar",
        "foo!",
    ],
)
def test_normalize_invalid(name):
    """Names that are not valid PEP 508 project names raise BadRequest."""
    with pytest.raises(BadRequest):
        normalize(name)


@pytest.mark.parametrize("name", ["foo\n", "foo-bar\n", "foo\r\n"])
def test_normalize_trailing_newline(name):
    """A name with a trailing newline is invalid, not returned with the newline."""
    with pytest.raises(BadRequest):
        normalize(name)


def test_bad_request_code():
    """An invalid name answers with HTTP status 400."""
    with pytest.raises(BadRequest) as info:
        normalize("../x")
    assert info.value.code == 400


# -- check_filename ------------------------------------------------------------


@pytest.mark.parametrize(
    "filename",
    [
        "foo-1.0.tar.gz",
        "foo-1.0-py3-none-any.whl",
        "Foo_Bar-1.0+local.1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "foo-1!2.0.tar.gz",
        "foo-1.0.tar.gz.metadata",
        "_private-1.0.zip",
    ],
)
def test_check_filename_accepts(filename):
    """Ordinary distribution filenames pass through unchanged."""
    assert check_filename(filename) == filename


@pytest.mark.parametrize(
    "filename",
    [
        "",
        ".",
        "..",
        "../x.whl",
        "..\\x.whl",
        "foo/../x.whl",
        "x..whl",
        "a/b.whl",
        "a\\b.whl",
        "/etc/passwd",
        "/x.whl",
        "C:\\x.whl",
        "C:x.whl",
        "\\\\server\\share\\x.whl",
        "x.whl\x00",
        "x\x00.whl",
        "a%2Fb.whl",
        "a%2fb.whl",
        "%2e%2e%2Fx.whl",
        "a%00b.whl",
        ".x.whl",
        ".tmp-0123456789abcdef",
        ".foo-1.0.tar.gz.json",
        "-x.whl",
        "foo 1.0.tar.gz",
        "foo\t1.0.tar.gz",
        "foo\r1.0.tar.gz",
        "x?.whl",
        "x#.whl",
        "x*.whl",
        "~x.whl",
        "x" * 252 + ".whl",
    ],
)
def test_check_filename_rejects(filename):
    """Separators, ``..``, NUL, percent escapes, leading dots and odd characters raise BadRequest."""
    with pytest.raises(BadRequest):
        check_filename(filename)


def test_check_filename_max_length():
    """A 240-character filename is accepted; one more is not (its ``.metadata``
    sidecar must still fit the filesystem's 255-byte names)."""
    name = "x" * 236 + ".whl"
    assert check_filename(name) == name
    with pytest.raises(BadRequest):
        check_filename("x" + name)


@pytest.mark.parametrize("filename", ["x.whl\n", "foo-1.0.tar.gz\n"])
def test_check_filename_trailing_newline(filename):
    """A filename with a trailing newline is rejected."""
    with pytest.raises(BadRequest):
        check_filename(filename)


# -- parse_filename ------------------------------------------------------------


@pytest.mark.parametrize(
    "filename, name, version",
    [
        ("foo-1.0-py3-none-any.whl", "foo", "1.0"),
        ("Foo_Bar-2.3.4-py2.py3-none-any.whl", "foo-bar", "2.3.4"),
        (
            "zope.interface-6.0-cp311-cp311-manylinux_2_17_x86_64.whl",
            "zope-interface",
            "6.0",
        ),
        ("foo-1.0-1-py3-none-any.whl", "foo", "1.0"),
        ("foo-1.0+local.7-py3-none-any.whl", "foo", "1.0+local.7"),
        ("foo-1!2.0rc1-py3-none-any.whl", "foo", "1!2.0rc1"),
        ("numpy-1.26.4-cp312-cp312-win_amd64.whl", "numpy", "1.26.4"),
    ],
)
def test_parse_wheel(filename, name, version):
    """Wheel filenames give the normalized project name and the version."""
    assert parse_filename(filename) == (name, Version(version))


@pytest.mark.parametrize(
    "filename, name, version",
    [
        ("foo-1.0.tar.gz", "foo", "1.0"),
        ("foo_bar-1.0.tar.gz", "foo-bar", "1.0"),
        ("foo-bar-1.0.tar.gz", "foo-bar", "1.0"),
        ("Django-4.2.1.tar.gz", "django", "4.2.1"),
        ("foo-1.0.post1.tar.gz", "foo", "1.0.post1"),
        ("foo-1.0a1.zip", "foo", "1.0a1"),
        ("Foo.Bar-0.1.zip", "foo-bar", "0.1"),
    ],
)
def test_parse_sdist(filename, name, version):
    """Sdist filenames (``.tar.gz``, ``.zip``) give the normalized name and version."""
    assert parse_filename(filename) == (name, Version(version))


@pytest.mark.parametrize(
    "filename, name, version",
    [
        ("foo-1.0.tar.bz2", "foo", "1.0"),
        ("Foo_Bar-1.0.tar.bz2", "foo-bar", "1.0"),
        ("foo-1.0.tar.xz", "foo", "1.0"),
        ("foo-1.0.tgz", "foo", "1.0"),
        ("foo-1.0-py2.7.egg", "foo", "1.0"),
        ("Foo_Bar-0.3-py3.11.egg", "foo-bar", "0.3"),
        ("foo-bar-2.0-py2.7.egg", "foo-bar", "2.0"),
        ("foo-1.0.win32.exe", "foo", None),
        ("pywin32-227.win-amd64-py3.8.exe", "pywin32", None),
        ("foo-1.0.win-amd64-py3.8.msi", "foo", None),
    ],
)
def test_parse_legacy(filename, name, version):
    """Older formats give the name and the version, ``None`` when it does not parse."""
    expected = Version(version) if version is not None else None
    assert parse_filename(filename) == (name, expected)


@pytest.mark.parametrize(
    "filename",
    [
        "foo.whl",
        "foo-1.0.whl",
        "foo-notaversion-py3-none-any.whl",
        "foo-1.0-py3-none.whl",
        "foo.tar.gz",
        "foo-bar.tar.gz",
        "1.0.tar.bz2",
        "-1.0.tar.bz2",
        "foo-1.0.tar",
        "foo-1.0.txt",
        "foo-1.0",
        "README",
        "foo-1.0.tar.gz.json",
        "foo-1.0-py3-none-any.whl.metadata",
        "../foo-1.0.tar.gz",
        "a/foo-1.0.tar.gz",
        ".foo-1.0.tar.gz",
        "foo-1.0.tar.gz\x00",
        "foo%2F-1.0.tar.gz",
    ],
)
def test_parse_filename_rejects(filename):
    """Unsafe filenames and names that are no distribution raise BadRequest."""
    with pytest.raises(BadRequest):
        parse_filename(filename)


@pytest.mark.parametrize(
    "filename, expected",
    [
        ("foo-1.0-py3-none-any.whl", True),
        ("foo-1.0.tar.gz", True),
        ("foo-1.0-py2.7.egg", True),
        ("foo-1.0.tar.gz.json", False),
        ("foo-1.0.tar.gz.metadata", False),
        (".tmp-0123456789abcdef", False),
        ("../foo-1.0.tar.gz", False),
    ],
)
def test_is_distribution(filename, expected):
    """``is_distribution`` is True exactly when ``parse_filename`` succeeds."""
    assert is_distribution(filename) is expected
