"""Tests for :mod:`pypicache.index.simple`: parsing, rendering and negotiating simple API pages."""

import html
import json

import attrs
import pytest

from pypicache.errors import NotAcceptable
from pypicache.index.model import DistFile, ProjectPage
from pypicache.index.simple import (
    HTML_TYPE,
    JSON_TYPE,
    TEXT_HTML,
    UPSTREAM_ACCEPT,
    api_version,
    negotiate,
    parse_html_page,
    parse_json_page,
    parse_page,
    render_html_index,
    render_html_page,
    render_json_index,
    render_json_page,
    versions_of,
)

PAGE_URL = "https://pypi.org/simple/sampleproject/"
FILES = "https://files.pythonhosted.org/packages"
H1 = "3e3ca8bd8d8ee3d7a4bbc3af28e4ac5d06a7d3c5b5d8a3e45ee1f44f2e3d3f01"
H2 = "a8f9bbe3e1ae0a4c2d1f7f7d5e8a7a2b1c9d0e8f7a6b5c4d3e2f1a0b9c8d7e6f"
H3 = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
M3 = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"
H4 = "1111111111111111111111111111111111111111111111111111111111111111"

# Shaped like https://pypi.org/simple/sampleproject/ with
# Accept: application/vnd.pypi.simple.v1+json (PEP 691, 700, 714, 740).
PYPI_JSON = (
    '{"files":['
    '{"core-metadata":false,"data-dist-info-metadata":false,'
    '"filename":"sampleproject-1.2.0-py2.py3-none-any.whl",'
    f'"hashes":{{"sha256":"{H1}"}},"provenance":null,"requires-python":null,'
    '"size":3795,"upload-time":"2015-06-14T14:38:05.234526Z",'
    f'"url":"{FILES}/30/52/547e/sampleproject-1.2.0-py2.py3-none-any.whl","yanked":false}},'
    '{"core-metadata":false,"data-dist-info-metadata":false,'
    '"filename":"sampleproject-1.2.0.tar.gz",'
    f'"hashes":{{"sha256":"{H2}","md5":"0123456789abcdef0123456789abcdef"}},'
    '"provenance":null,"requires-python":null,"size":3148,'
    '"upload-time":"2015-06-14T14:37:56.383366Z",'
    f'"url":"{FILES}/eb/45/a5ec/sampleproject-1.2.0.tar.gz","yanked":"Broken metadata"}},'
    f'{{"core-metadata":{{"sha256":"{M3}"}},"data-dist-info-metadata":{{"sha256":"{M3}"}},'
    '"filename":"sampleproject-4.0.0-py3-none-any.whl",'
    f'"hashes":{{"sha256":"{H3}"}},'
    f'"provenance":"https://pypi.org/integrity/sampleproject/4.0.0/sampleproject-4.0.0-py3-none-any.whl/provenance",'
    '"requires-python":">=3.8","size":4662,"upload-time":"2024-05-05T12:00:00.000000Z",'
    f'"url":"{FILES}/ec/a8/5ec6/sampleproject-4.0.0-py3-none-any.whl","yanked":true}}'
    "],"
    '"meta":{"_last-serial":24907734,"api-version":"1.3"},'
    '"name":"sampleproject","versions":["1.2.0","4.0.0"]}'
)

# Shaped like https://pypi.org/simple/sampleproject/ as text/html (PEP 503, 592, 629, 658, 714).
PYPI_HTML = f"""<!DOCTYPE html>
<html>
  <head>
    <meta name="pypi:repository-version" content="1.3">
    <title>Links for sampleproject</title>
  </head>
  <body>
    <h1>Links for sampleproject</h1>
    <a href="{FILES}/30/52/547e/sampleproject-1.2.0-py2.py3-none-any.whl#sha256={H1}" >sampleproject-1.2.0-py2.py3-none-any.whl</a><br />
    <a href="{FILES}/eb/45/a5ec/sampleproject-1.2.0.tar.gz#sha256={H2}" data-yanked="Broken &lt;metadata&gt; &amp; &quot;stuff&quot;" >sampleproject-1.2.0.tar.gz</a><br />
    <a href="{FILES}/ec/a8/5ec6/sampleproject-4.0.0-py3-none-any.whl#sha256={H3}" data-requires-python="&gt;=3.8" data-dist-info-metadata="sha256={M3}" data-core-metadata="sha256={M3}" data-yanked="" >sampleproject-4.0.0-py3-none-any.whl</a><br />
    <a href="{FILES}/00/11/2233/sampleproject-4.0.1.tar.gz#sha256={H4}" data-requires-python="&lt;4,&gt;=3.8" data-dist-info-metadata="true" data-yanked>sampleproject-4.0.1.tar.gz</a><br />
    </body>
</html>
<!--SERIAL 24907734-->
"""


def url_for(f: DistFile) -> str:
    """Where our server serves a file: relative to the project page."""
    return f"../../files/{f.filename}"


# -- JSON parsing --------------------------------------------------------------


@pytest.fixture
def json_page() -> ProjectPage:
    return parse_json_page(PYPI_JSON.encode(), PAGE_URL, "sampleproject")


def test_json_files(json_page):
    """Every entry of a PEP 691 page becomes a DistFile in order, with its filename and URL."""
    assert json_page.name == "sampleproject"
    assert [f.filename for f in json_page.files] == [
        "sampleproject-1.2.0-py2.py3-none-any.whl",
        "sampleproject-1.2.0.tar.gz",
        "sampleproject-4.0.0-py3-none-any.whl",
    ]
    assert (
        json_page.files[0].url
        == f"{FILES}/30/52/547e/sampleproject-1.2.0-py2.py3-none-any.whl"
    )


def test_json_full_entry(json_page):
    """A JSON entry keeps hashes, requires-python, yanked, core-metadata, size, upload-time and provenance."""
    assert json_page.files[2] == DistFile(
        filename="sampleproject-4.0.0-py3-none-any.whl",
        url=f"{FILES}/ec/a8/5ec6/sampleproject-4.0.0-py3-none-any.whl",
        hashes={"sha256": H3},
        requires_python=">=3.8",
        yanked=True,
        core_metadata={"sha256": M3},
        size=4662,
        upload_time="2024-05-05T12:00:00.000000Z",
        provenance="https://pypi.org/integrity/sampleproject/4.0.0/"
        "sampleproject-4.0.0-py3-none-any.whl/provenance",
    )


def test_json_nulls_and_false(json_page):
    """JSON nulls and ``false`` give None / False (not yanked, no metadata, no provenance)."""
    f = json_page.files[0]
    assert f.requires_python is None
    assert f.yanked is False
    assert f.core_metadata is False
    assert f.provenance is None
    assert f.size == 3795
    assert f.upload_time == "2015-06-14T14:38:05.234526Z"


def test_json_multiple_hashes_and_yank_reason(json_page):
    """All hashes are kept and a string ``yanked`` is the reason."""
    f = json_page.files[1]
    assert f.hashes == {"sha256": H2, "md5": "0123456789abcdef0123456789abcdef"}
    assert f.yanked == "Broken metadata"


def test_json_versions(json_page):
    """The PEP 700 ``versions`` list is kept as a tuple."""
    assert json_page.versions == ("1.2.0", "4.0.0")


def _entry(**extra):
    entry = {"filename": "foo-1.0.tar.gz", "url": "foo-1.0.tar.gz", "hashes": {}}
    entry.update(extra)
    return entry


def _parse_one(page_url="https://example.org/simple/foo/", **extra) -> DistFile:
    body = json.dumps(
        {"meta": {"api-version": "1.0"}, "name": "foo", "files": [_entry(**extra)]}
    )
    return parse_json_page(body.encode(), page_url, "foo").files[0]


@pytest.mark.parametrize(
    "extra, expected",
    [
        ({}, False),
        ({"core-metadata": True}, True),
        ({"core-metadata": False}, False),
        ({"core-metadata": {"sha256": "ab"}}, {"sha256": "ab"}),
        ({"core-metadata": {"SHA256": "ab"}}, {"sha256": "ab"}),
        ({"core-metadata": {}}, True),
        ({"dist-info-metadata": True}, True),
        ({"dist-info-metadata": {"sha256": "cd"}}, {"sha256": "cd"}),
        (
            {"core-metadata": {"sha256": "ab"}, "dist-info-metadata": {"sha256": "cd"}},
            {"sha256": "ab"},
        ),
        ({"core-metadata": False, "dist-info-metadata": {"sha256": "cd"}}, False),
    ],
)
def test_json_core_metadata(extra, expected):
    """``core-metadata`` (PEP 714) wins when present, else the older ``dist-info-metadata`` key."""
    assert _parse_one(**extra).core_metadata == expected


@pytest.mark.parametrize(
    "yanked, expected",
    [
        (False, False),
        (True, True),
        ("", False),
        ("bad build", "bad build"),
        (None, False),
    ],
)
def test_json_yanked(yanked, expected):
    """``yanked`` is a bool, or a non-empty string reason (PEP 592 via PEP 691)."""
    assert _parse_one(yanked=yanked).yanked == expected


def test_json_missing_optional_keys():
    """An entry with only filename, url and hashes gives the defaults (version 1.0 pages)."""
    f = _parse_one()
    assert (
        f.requires_python,
        f.yanked,
        f.core_metadata,
        f.size,
        f.upload_time,
        f.provenance,
    ) == (
        None,
        False,
        False,
        None,
        None,
        None,
    )


def test_json_hash_names_lowercased():
    """Hash names are lower-cased."""
    assert _parse_one(hashes={"SHA256": "ab"}).hashes == {"sha256": "ab"}


@pytest.mark.parametrize(
    "page_url, url, expected",
    [
        (
            "https://example.org/simple/foo/",
            "foo-1.0.tar.gz",
            "https://example.org/simple/foo/foo-1.0.tar.gz",
        ),
        (
            "https://example.org/simple/foo/",
            "../../files/foo-1.0.tar.gz",
            "https://example.org/files/foo-1.0.tar.gz",
        ),
        (
            "https://example.org/simple/foo/",
            "/packages/foo-1.0.tar.gz",
            "https://example.org/packages/foo-1.0.tar.gz",
        ),
        (
            "https://example.org/simple/foo/",
            "//cdn.example/foo-1.0.tar.gz",
            "https://cdn.example/foo-1.0.tar.gz",
        ),
        (
            "https://example.org/simple/foo/",
            "https://other.example/foo-1.0.tar.gz",
            "https://other.example/foo-1.0.tar.gz",
        ),
        (
            "https://example.org/simple/foo/",
            "foo-1.0.tar.gz#sha256=ab",
            "https://example.org/simple/foo/foo-1.0.tar.gz",
        ),
    ],
)
def test_json_relative_urls(page_url, url, expected):
    """File URLs are resolved against the page URL, without a fragment."""
    assert _parse_one(page_url=page_url, url=url).url == expected


def test_json_without_versions():
    """A 1.0 page without ``versions`` gives ``versions=None``."""
    body = json.dumps({"meta": {"api-version": "1.0"}, "name": "foo", "files": []})
    assert (
        parse_json_page(
            body.encode(), "https://example.org/simple/foo/", "foo"
        ).versions
        is None
    )


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'{"name": "foo"}', b'{"files": {}}', b"\xff\xfe"],
)
def test_json_not_a_page(body):
    """Bodies that are not PEP 691 project pages raise ValueError."""
    with pytest.raises(ValueError):
        parse_json_page(body, PAGE_URL, "sampleproject")


# -- HTML parsing --------------------------------------------------------------


@pytest.fixture
def html_page() -> ProjectPage:
    return parse_html_page(PYPI_HTML, PAGE_URL, "sampleproject")


def test_html_files(html_page):
    """Every anchor of a PEP 503 page becomes a DistFile named by its URL, without fragment."""
    assert html_page.name == "sampleproject"
    assert html_page.versions is None
    assert [f.filename for f in html_page.files] == [
        "sampleproject-1.2.0-py2.py3-none-any.whl",
        "sampleproject-1.2.0.tar.gz",
        "sampleproject-4.0.0-py3-none-any.whl",
        "sampleproject-4.0.1.tar.gz",
    ]
    assert html_page.files[0] == DistFile(
        filename="sampleproject-1.2.0-py2.py3-none-any.whl",
        url=f"{FILES}/30/52/547e/sampleproject-1.2.0-py2.py3-none-any.whl",
        hashes={"sha256": H1},
    )


def test_html_escaped_attributes(html_page):
    """``data-requires-python`` and ``data-yanked`` are HTML-unescaped."""
    assert html_page.files[2].requires_python == ">=3.8"
    assert html_page.files[3].requires_python == "<4,>=3.8"
    assert html_page.files[1].yanked == 'Broken <metadata> & "stuff"'


def test_html_yanked_without_reason(html_page):
    """``data-yanked=""`` and a bare ``data-yanked`` mean yanked with no reason."""
    assert html_page.files[2].yanked is True
    assert html_page.files[3].yanked is True
    assert html_page.files[0].yanked is False


def test_html_core_metadata(html_page):
    """``data-core-metadata``/``data-dist-info-metadata`` give hashes, or True for ``true``."""
    assert html_page.files[0].core_metadata is False
    assert html_page.files[2].core_metadata == {"sha256": M3}
    assert html_page.files[3].core_metadata is True


def _anchor(attributes: str, href: str = "foo-1.0.tar.gz") -> DistFile:
    html = f'<html><body><a href="{href}" {attributes}>foo-1.0.tar.gz</a></body></html>'
    return parse_html_page(html, "https://example.org/simple/foo/", "foo").files[0]


@pytest.mark.parametrize(
    "attributes, expected",
    [
        ("", False),
        ('data-core-metadata="true"', True),
        ('data-core-metadata="false"', False),
        ('data-core-metadata="sha256=ab12"', {"sha256": "ab12"}),
        ('data-core-metadata="SHA256=ab12"', {"sha256": "ab12"}),
        ('data-dist-info-metadata="true"', True),
        ('data-dist-info-metadata="sha256=cd34"', {"sha256": "cd34"}),
        (
            'data-core-metadata="sha256=ab12" data-dist-info-metadata="sha256=cd34"',
            {"sha256": "ab12"},
        ),
        ('data-core-metadata=""', True),
        ("data-core-metadata", False),
    ],
)
def test_html_metadata_attribute(attributes, expected):
    """Both PEP 658 and PEP 714 attribute names are read, the newer one first."""
    assert _anchor(attributes).core_metadata == expected


@pytest.mark.parametrize(
    "attributes, expected",
    [
        ("", False),
        ("data-yanked", True),
        ('data-yanked=""', True),
        ('data-yanked="bad"', "bad"),
        ('data-yanked="a &amp; b"', "a & b"),
        ("data-yanked='it&#39;s broken'", "it's broken"),
    ],
)
def test_html_yanked_attribute(attributes, expected):
    """``data-yanked`` is True without a reason, else the unescaped reason (PEP 592)."""
    assert _anchor(attributes).yanked == expected


@pytest.mark.parametrize(
    "attributes, expected",
    [
        ("", None),
        ('data-requires-python=""', None),
        ('data-requires-python="&gt;=3.8"', ">=3.8"),
        ('data-requires-python="&gt;=2.7, !=3.0.*, &lt;4"', ">=2.7, !=3.0.*, <4"),
        ('data-requires-python=">=3.9"', ">=3.9"),
    ],
)
def test_html_requires_python(attributes, expected):
    """``data-requires-python`` is unescaped, and empty means none (PEP 503)."""
    assert _anchor(attributes).requires_python == expected


@pytest.mark.parametrize(
    "href, url, hashes",
    [
        ("foo-1.0.tar.gz", "https://example.org/simple/foo/foo-1.0.tar.gz", {}),
        (
            "foo-1.0.tar.gz#sha256=AB",
            "https://example.org/simple/foo/foo-1.0.tar.gz",
            {"sha256": "AB"},
        ),
        (
            "foo-1.0.tar.gz#SHA512=cd",
            "https://example.org/simple/foo/foo-1.0.tar.gz",
            {"sha512": "cd"},
        ),
        (
            "../../packages/foo-1.0.tar.gz#md5=ef",
            "https://example.org/packages/foo-1.0.tar.gz",
            {"md5": "ef"},
        ),
        (
            "/packages/ab/foo-1.0.tar.gz",
            "https://example.org/packages/ab/foo-1.0.tar.gz",
            {},
        ),
        (
            "https://files.example/x/foo-1.0.tar.gz",
            "https://files.example/x/foo-1.0.tar.gz",
            {},
        ),
        (
            "//files.example/x/foo-1.0.tar.gz",
            "https://files.example/x/foo-1.0.tar.gz",
            {},
        ),
        (
            "/p/foo-1.0.tar.gz?x=1&amp;y=2#sha256=ab",
            "https://example.org/p/foo-1.0.tar.gz?x=1&y=2",
            {"sha256": "ab"},
        ),
    ],
)
def test_html_hrefs(href, url, hashes):
    """Relative and absolute hrefs are resolved against the page URL and the fragment gives the hash."""
    f = _anchor("", href=href)
    assert (f.filename, f.url, f.hashes) == ("foo-1.0.tar.gz", url, hashes)


def test_html_percent_encoded_filename():
    """The filename is the URL's last path segment, percent-decoded."""
    assert _anchor("", href="foo-1.0%2Blocal.tar.gz").filename == "foo-1.0+local.tar.gz"


@pytest.mark.parametrize(
    "base, expected",
    [
        ("https://mirror.example/pkgs/", "https://mirror.example/pkgs/foo-1.0.tar.gz"),
        ("/other/", "https://example.org/other/foo-1.0.tar.gz"),
        ("../", "https://example.org/simple/foo-1.0.tar.gz"),
    ],
)
def test_html_base_href(base, expected):
    """A ``<base href>`` (itself resolved against the page URL) is the base of relative hrefs."""
    html = (
        f'<html><head><base href="{base}"></head>'
        '<body><a href="foo-1.0.tar.gz">foo-1.0.tar.gz</a></body></html>'
    )
    page = parse_html_page(html, "https://example.org/simple/foo/", "foo")
    assert page.files[0].url == expected


def test_html_anchor_without_href_or_filename():
    """Anchors without an href, or whose URL has no last segment, are skipped."""
    html = (
        '<a name="top">top</a><a href="">empty</a><a href="../">up</a>'
        '<a href="foo-1.0.tar.gz">foo-1.0.tar.gz</a>'
    )
    page = parse_html_page(html, "https://example.org/simple/foo/", "foo")
    assert [f.filename for f in page.files] == ["foo-1.0.tar.gz"]


def test_html_provenance():
    """``data-provenance`` (PEP 740) is kept."""
    assert (
        _anchor('data-provenance="https://p.example/prov"').provenance
        == "https://p.example/prov"
    )


def test_html_empty_page():
    """A page without anchors has no files."""
    assert parse_html_page("<html><body></body></html>", PAGE_URL, "x").files == ()


@pytest.mark.parametrize(
    "content_type",
    [
        "application/vnd.pypi.simple.v1+json",
        "application/vnd.pypi.simple.v1+json; charset=utf-8",
        "Application/Vnd.Pypi.Simple.V1+JSON",
        "application/vnd.pypi.simple.latest+json",
        "application/json",
    ],
)
def test_parse_page_json(content_type):
    """``parse_page`` parses JSON content types as PEP 691 JSON."""
    page = parse_page(PYPI_JSON.encode(), content_type, PAGE_URL, "sampleproject")
    assert page.versions == ("1.2.0", "4.0.0")


@pytest.mark.parametrize(
    "content_type",
    [
        "text/html",
        "text/html; charset=utf-8",
        "application/vnd.pypi.simple.v1+html",
        "",
    ],
)
def test_parse_page_html(content_type):
    """``parse_page`` parses everything else as PEP 503 HTML."""
    page = parse_page(PYPI_HTML.encode(), content_type, PAGE_URL, "sampleproject")
    assert len(page.files) == 4
    assert page.versions is None


# -- rendering -----------------------------------------------------------------


FULL = DistFile(
    filename="foo-1.0-py3-none-any.whl",
    url="https://files.example/foo-1.0-py3-none-any.whl",
    hashes={"sha256": "ab" * 32},
    requires_python="<4,>=3.8",
    yanked="bad \"quoted\" <b> & 'x'",
    core_metadata={"sha256": "cd" * 32},
    size=1234,
    upload_time="2024-01-02T03:04:05.000000Z",
    provenance="https://p.example/prov?a=1&b=2",
)
PLAIN = DistFile(
    filename="foo-0.9.tar.gz",
    url="https://files.example/foo-0.9.tar.gz",
    hashes={"sha256": "ef" * 32},
    size=99,
)
YANKED = DistFile(
    filename="foo-1.1.tar.gz",
    url="https://files.example/foo-1.1.tar.gz",
    hashes={"sha256": "01" * 32},
    yanked=True,
    core_metadata=True,
    size=10,
)
OUR_URL = "http://localhost:8080/simple/foo/"


def _served(f: DistFile) -> DistFile:
    """What a client should read back: the file at our URL."""
    return attrs.evolve(f, url=f"http://localhost:8080/files/{f.filename}")


@pytest.mark.parametrize(
    "files", [(FULL,), (PLAIN,), (YANKED,), (PLAIN, FULL, YANKED), ()]
)
def test_json_round_trip(files):
    """A page rendered as JSON parses back to the same files, at our URLs, with versions."""
    page = ProjectPage(name="foo", files=files)
    parsed = parse_json_page(render_json_page(page, url_for), OUR_URL, "foo")
    assert parsed.files == tuple(_served(f) for f in files)
    assert parsed.versions == tuple(versions_of(page))


@pytest.mark.parametrize(
    "files", [(FULL,), (PLAIN,), (YANKED,), (PLAIN, FULL, YANKED), ()]
)
def test_html_round_trip(files):
    """A page rendered as HTML parses back to the same files, less what HTML cannot carry."""
    page = ProjectPage(name="foo", files=files)
    parsed = parse_html_page(render_html_page(page, url_for).decode(), OUR_URL, "foo")
    assert parsed.files == tuple(
        attrs.evolve(_served(f), size=None, upload_time=None) for f in files
    )


@pytest.mark.parametrize(
    "value",
    ["<4,>=3.8", ">=3.8", '!=3.0.*,"quoted"', "a & b", "it's"],
)
def test_html_escapes_requires_python(value):
    """``<``, ``>``, ``&`` and quotes in requires-python are escaped and read back."""
    page = ProjectPage(
        name="foo", files=(DistFile(filename="foo-1.0.tar.gz", requires_python=value),)
    )
    body = render_html_page(page, url_for).decode()
    assert f'data-requires-python="{html.escape(value, quote=True)}"' in body
    assert parse_html_page(body, OUR_URL, "foo").files[0].requires_python == value


def test_html_escaping_literal():
    """requires-python and the yank reason are written HTML-escaped."""
    page = ProjectPage(name="foo", files=(FULL,))
    body = render_html_page(page, url_for).decode()
    assert 'data-requires-python="&lt;4,&gt;=3.8"' in body
    assert 'data-yanked="bad &quot;quoted&quot; &lt;b&gt; &amp; &#x27;x&#x27;"' in body
    assert f'href="../../files/foo-1.0-py3-none-any.whl#sha256={"ab" * 32}"' in body


def test_html_both_metadata_attributes():
    """Core metadata is announced under both the PEP 658 and the PEP 714 attribute."""
    body = render_html_page(
        ProjectPage(name="foo", files=(FULL, YANKED)), url_for
    ).decode()
    assert f'data-dist-info-metadata="sha256={"cd" * 32}"' in body
    assert f'data-core-metadata="sha256={"cd" * 32}"' in body
    assert 'data-dist-info-metadata="true"' in body
    assert 'data-core-metadata="true"' in body


def test_html_no_optional_attributes():
    """A plain file renders no requires-python, yanked, metadata or provenance attribute."""
    body = render_html_page(ProjectPage(name="foo", files=(PLAIN,)), url_for).decode()
    for attribute in (
        "data-requires-python",
        "data-yanked",
        "data-core-metadata",
        "data-dist-info-metadata",
        "data-provenance",
    ):
        assert attribute not in body


def test_json_core_metadata_key():
    """Core metadata is announced under ``core-metadata`` in JSON, and absent when unknown."""
    data = json.loads(
        render_json_page(ProjectPage(name="foo", files=(FULL, PLAIN, YANKED)), url_for)
    )
    full, plain, yanked = data["files"]
    assert full["core-metadata"] == {"sha256": "cd" * 32}
    assert yanked["core-metadata"] is True
    assert "core-metadata" not in plain and "dist-info-metadata" not in plain
    assert plain["yanked"] is False
    assert full["yanked"] == FULL.yanked
    assert full["url"] == "../../files/foo-1.0-py3-none-any.whl"


@pytest.mark.parametrize(
    "files, expected",
    [
        ((), "1.4"),
        ((PLAIN,), "1.4"),
        ((PLAIN, FULL), "1.4"),
        ((attrs.evolve(PLAIN, size=None),), "1.0"),
        ((FULL, attrs.evolve(PLAIN, size=None)), "1.0"),
        ((attrs.evolve(PLAIN, size=0),), "1.4"),
    ],
)
def test_api_version(files, expected):
    """The page declares api-version 1.4 (PEP 792, which carries the project
    status) only when every file has a size (mandatory from 1.1, PEP 700)."""
    page = ProjectPage(name="foo", files=files)
    assert api_version(files) == expected
    assert json.loads(render_json_page(page, url_for))["meta"] == {
        "api-version": expected
    }
    meta = f'<meta name="pypi:repository-version" content="{expected}">'
    assert meta in render_html_page(page, url_for).decode()


def test_json_missing_size_not_rendered():
    """A file without a size has no ``size`` key (1.0 pages may omit it)."""
    page = ProjectPage(name="foo", files=(attrs.evolve(PLAIN, size=None),))
    assert "size" not in json.loads(render_json_page(page, url_for))["files"][0]


@pytest.mark.parametrize(
    "filenames, expected",
    [
        (
            ["foo-1.0.tar.gz", "foo-1.0-py3-none-any.whl", "foo-0.9.tar.gz"],
            ["0.9", "1.0"],
        ),
        (
            ["foo-1.10.tar.gz", "foo-1.9.tar.gz", "foo-1.0rc1.tar.gz"],
            ["1.0rc1", "1.9", "1.10"],
        ),
        (["foo-1.0.tar.gz", "README", "foo-1.0.win32.exe"], ["1.0"]),
        ([], []),
    ],
)
def test_versions_of(filenames, expected):
    """``versions_of`` lists each parseable version once, oldest first."""
    page = ProjectPage(name="foo", files=tuple(DistFile(filename=n) for n in filenames))
    assert versions_of(page) == expected


@pytest.mark.parametrize(
    "versions, expected",
    [(None, ["0.9", "1.0"]), (("1.0", "0.9", "2.0"), ["1.0", "0.9", "2.0"]), ((), [])],
)
def test_json_versions_rendered(versions, expected):
    """``versions`` is the page's own list when it has one, else computed from the files."""
    page = ProjectPage(name="foo", files=(PLAIN, FULL), versions=versions)
    assert json.loads(render_json_page(page, url_for))["versions"] == expected


@pytest.mark.parametrize("f", [FULL, YANKED])
def test_json_no_legacy_metadata_key(f):
    """JSON pages never carry ``dist-info-metadata``: pip 22.3-23.1 crash on it (PEP 714)."""
    data = json.loads(render_json_page(ProjectPage(name="foo", files=(f,)), url_for))
    assert "dist-info-metadata" not in data["files"][0]


def test_json_page_shape():
    """The JSON page has ``meta``, ``name``, ``files`` and ``versions`` (PEP 691/700)."""
    data = json.loads(render_json_page(ProjectPage(name="foo", files=(FULL,)), url_for))
    assert set(data) == {"meta", "name", "files", "versions"}
    assert data["name"] == "foo"
    assert data["files"][0] == {
        "filename": "foo-1.0-py3-none-any.whl",
        "url": "../../files/foo-1.0-py3-none-any.whl",
        "hashes": {"sha256": "ab" * 32},
        "requires-python": "<4,>=3.8",
        "yanked": FULL.yanked,
        "core-metadata": {"sha256": "cd" * 32},
        "size": 1234,
        "upload-time": "2024-01-02T03:04:05.000000Z",
        "provenance": "https://p.example/prov?a=1&b=2",
    }


def test_html_page_head():
    """The HTML page has the repository-version meta and a title naming the project."""
    body = render_html_page(ProjectPage(name="foo", files=(PLAIN,)), url_for).decode()
    assert body.startswith("<!DOCTYPE html>")
    assert "<title>Links for foo</title>" in body
    assert '<meta name="pypi:repository-version" content="1.4">' in body
    assert ">foo-0.9.tar.gz</a>" in body


@pytest.mark.parametrize(
    "hashes, fragment",
    [
        ({"sha256": "aa", "md5": "bb"}, "#sha256=aa"),
        ({"md5": "bb", "sha512": "cc"}, "#sha512=cc"),
        ({"md5": "bb"}, "#md5=bb"),
        ({}, ""),
    ],
)
def test_html_hash_fragment(hashes, fragment):
    """The href carries the strongest known hash as its fragment (sha256 first)."""
    page = ProjectPage(
        name="foo", files=(DistFile(filename="foo-1.0.tar.gz", hashes=hashes),)
    )
    body = render_html_page(page, url_for).decode()
    assert f'href="../../files/foo-1.0.tar.gz{fragment}"' in body


NAMES = ["foo", "bar-baz", "zope-interface"]


def test_render_html_index():
    """The HTML index links each project to ``<name>/`` (PEP 503)."""
    body = render_html_index(NAMES).decode()
    assert '<meta name="pypi:repository-version" content="1.4">' in body
    for name in NAMES:
        assert f'<a href="{name}/">{name}</a>' in body
    assert body.count("<a ") == len(NAMES)


def test_render_html_index_escapes():
    """Project names are HTML-escaped in the index."""
    body = render_html_index(['a"<b>&']).decode()
    assert '<a href="a&quot;&lt;b&gt;&amp;/">a&quot;&lt;b&gt;&amp;</a>' in body


@pytest.mark.parametrize("names", [NAMES, []])
def test_render_json_index(names):
    """The JSON index lists ``{"name": …}`` for each project (PEP 691)."""
    data = json.loads(render_json_index(names))
    assert data == {
        "meta": {"api-version": "1.4"},
        "projects": [{"name": n} for n in names],
    }


def test_render_index_accepts_iterator():
    """Both index renderers accept any iterable of names."""
    assert json.loads(render_json_index(iter(NAMES)))["projects"][2] == {
        "name": "zope-interface"
    }
    assert b"zope-interface/" in render_html_index(iter(NAMES))


# -- negotiation ---------------------------------------------------------------

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
UV_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)


@pytest.mark.parametrize(
    "accept, expected",
    [
        (PIP_ACCEPT, JSON_TYPE),
        (UV_ACCEPT, JSON_TYPE),
        (UPSTREAM_ACCEPT, JSON_TYPE),
        (None, TEXT_HTML),
        ("", TEXT_HTML),
        ("   ", TEXT_HTML),
        ("*/*", TEXT_HTML),
        ("text/html", TEXT_HTML),
        ("text/*", TEXT_HTML),
        ("text/html, */*;q=0.8", TEXT_HTML),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", TEXT_HTML),
        ("application/vnd.pypi.simple.v1+json", JSON_TYPE),
        ("application/vnd.pypi.simple.latest+json", JSON_TYPE),
        ("Application/Vnd.Pypi.Simple.Latest+JSON", JSON_TYPE),
        ("application/vnd.pypi.simple.v1+html", HTML_TYPE),
        ("application/vnd.pypi.simple.latest+html", HTML_TYPE),
        ("application/*", HTML_TYPE),
        ("application/json, */*;q=0.5", TEXT_HTML),
        ("text/html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.6", JSON_TYPE),
        ("application/vnd.pypi.simple.v1+json;q=0.5, text/html;q=0.5", JSON_TYPE),
        ("text/html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.5", TEXT_HTML),
        ("text/html;charset=utf-8", TEXT_HTML),
    ],
)
def test_negotiate(accept, expected):
    """The Accept header picks JSON for pip and uv, HTML by default and for browsers."""
    assert negotiate(accept) == expected


@pytest.mark.parametrize(
    "accept, expected",
    [
        ("*/*, text/html;q=0", HTML_TYPE),
        ("*/*, text/html;q=0, application/vnd.pypi.simple.v1+html;q=0", JSON_TYPE),
        ("text/*;q=0, application/*", HTML_TYPE),
        ("application/vnd.pypi.simple.v1+json;q=0, */*", TEXT_HTML),
        ("application/vnd.pypi.simple.latest+json;q=0, application/*", HTML_TYPE),
        (PIP_ACCEPT.replace("v1+json", "v1+json;q=0"), HTML_TYPE),
        ("application/vnd.pypi.simple.v1+json;q=0.0, text/html;q=0.001", TEXT_HTML),
    ],
)
def test_negotiate_q_zero(accept, expected):
    """``q=0`` excludes a type even when a wildcard would allow it."""
    assert negotiate(accept) == expected


@pytest.mark.parametrize(
    "accept",
    [
        "application/json",
        "image/png",
        "application/vnd.pypi.simple.v2+json",
        "text/plain",
        "*/*;q=0",
        "text/html;q=0",
        "application/vnd.pypi.simple.v1+json;q=0, application/vnd.pypi.simple.v1+html;q=0, text/html;q=0",
    ],
)
def test_negotiate_not_acceptable(accept):
    """When nothing offered is acceptable, NotAcceptable (406) is raised."""
    with pytest.raises(NotAcceptable) as info:
        negotiate(accept)
    assert info.value.code == 406


@pytest.mark.parametrize(
    "accept, format_param, expected",
    [
        (PIP_ACCEPT, "text/html", TEXT_HTML),
        (None, "application/vnd.pypi.simple.v1+json", JSON_TYPE),
        ("text/html", "application/vnd.pypi.simple.latest+json", JSON_TYPE),
        ("application/json", "application/vnd.pypi.simple.v1+html", HTML_TYPE),
        ("*/*;q=0", "application/vnd.pypi.simple.latest+html", HTML_TYPE),
        (None, "Application/Vnd.Pypi.Simple.V1+JSON", JSON_TYPE),
        (PIP_ACCEPT, "", JSON_TYPE),
        (PIP_ACCEPT, None, JSON_TYPE),
    ],
)
def test_negotiate_format_param(accept, format_param, expected):
    """A ``?format=`` parameter wins over the Accept header (PEP 691)."""
    assert negotiate(accept, format_param) == expected


@pytest.mark.parametrize(
    "format_param", ["json", "html", "application/json", "text/plain"]
)
def test_negotiate_bad_format_param(format_param):
    """An unsupported ``?format=`` raises NotAcceptable even if the Accept header would match."""
    with pytest.raises(NotAcceptable):
        negotiate("*/*", format_param)
