"""A fuzz pass with hypothesis over what clients and upstreams send: each parser
either answers or raises its one documented error, never anything else."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pypicache.bulk.requirements import parse_requirements
from pypicache.bulk.targets import parse_bulk_params
from pypicache.errors import BadRequest, NotAcceptable
from pypicache.index.model import ProjectPage
from pypicache.index.names import check_filename, normalize, parse_filename
from pypicache.index.simple import OFFERED, negotiate, parse_page
from pypicache.web.files import MAX_RANGES, byte_spans

FUZZ = settings(
    database=None,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Text biased towards what names, filenames and headers are made of.
PIECES = st.sampled_from(
    [
        "a",
        "Z",
        "0",
        "9",
        ".",
        "-",
        "_",
        "+",
        "/",
        "\\",
        "%",
        "%2e",
        "..",
        "\x00",
        " ",
        "\n",
        ".whl",
        ".tar.gz",
        ".zip",
        "-py3-none-any",
        "1.0",
        "é",
        "\udcff",
        "=",
        ",",
        ";",
        "q=",
        "*",
        "bytes",
        "[",
        "]",
        "==",
        ">=",
        "~=",
        "!",
        "@",
        "#",
        "--hash=sha256:",
        '"',
        "(",
        ")",
    ]
)
TEXT = st.one_of(st.text(max_size=80), st.lists(PIECES, max_size=25).map("".join))


@FUZZ
@given(TEXT)
def test_names_answer_or_bad_request(text):
    """normalize, check_filename and parse_filename raise nothing but BadRequest."""
    for function in (normalize, check_filename, parse_filename):
        try:
            function(text)
        except BadRequest:
            pass


@FUZZ
@given(TEXT)
def test_a_checked_filename_is_one_safe_segment(text):
    """A filename check_filename accepts is one path segment: no separator, no NUL, no leading dot."""
    try:
        name = check_filename(text)
    except BadRequest:
        return
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".") and name not in ("", ".", "..")


@FUZZ
@given(st.one_of(st.none(), TEXT), st.one_of(st.none(), TEXT))
def test_negotiation_answers_or_406(accept, format_param):
    """Any Accept header and ?format= give one of the offered types, or NotAcceptable."""
    try:
        assert negotiate(accept, format_param) in OFFERED
    except NotAcceptable:
        pass


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=60),
        st.lists(PIECES, max_size=30).map(
            lambda p: "".join(p).encode("utf-8", "replace")
        ),
        st.lists(
            st.tuples(
                st.one_of(st.none(), st.integers(-5, 10**30)),
                st.one_of(st.none(), st.integers(-5, 10**30)),
            ),
            max_size=40,
        ).map(
            lambda spans: b"bytes="
            + b",".join(
                f"{'' if a is None else a}-{'' if b is None else b}".encode()
                for a, b in spans
            )
        ),
    ),
    st.integers(0, 10**6),
)
def test_ranges_are_bounded(header, size):
    """Any Range header on a file of any size plans at most MAX_RANGES disjoint,
    ascending spans inside the file, or none (the whole file), or [] (a 416)."""
    spans = byte_spans(header, size)
    if spans is None:
        return
    assert len(spans) <= MAX_RANGES
    end = -1
    for offset, length in spans:
        assert length > 0 and offset > end and offset + length <= size
        end = offset + length


REQUIREMENT_LINES = st.lists(
    st.one_of(
        st.lists(PIECES, max_size=12).map("".join),
        st.sampled_from(
            [
                "real",
                "real>=1",
                "real[extra]==1.0 ; python_version > '3'",
                "-r other.txt",
                "--pre",
                "--hash=sha256:" + "0" * 64,
                "real \\",
                "-e .",
                "git+https://example.invalid/x.git#egg=x",
            ]
        ),
    ),
    max_size=12,
).map(lambda lines: "\n".join(lines).encode("utf-8", "replace").decode())
# (What reaches the parser was decoded as UTF-8: it holds no lone surrogates.)


@FUZZ
@given(REQUIREMENT_LINES)
def test_requirements_parse_or_bad_request(text):
    """Any requirements file parses, or is refused with BadRequest naming a line."""
    try:
        parsed = parse_requirements(text)
    except BadRequest as e:
        assert "line" in e.message or "requirements" in e.message
        return
    for line in parsed.requirements:
        assert line.name


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            [b"deps", b"all-files", b"python-version", b"platform", b"abi", b"evil"]
        ),
        st.lists(TEXT.map(lambda t: t.encode("utf-8", "replace")), max_size=3),
        max_size=4,
    )
)
def test_bulk_parameters_parse_or_bad_request(args):
    """Any query parameters of POST /requirements.txt give targets or BadRequest."""
    try:
        params = parse_bulk_params(args)
    except BadRequest:
        return
    assert 1 <= len(params.targets) <= 16


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "files",
                    "filename",
                    "url",
                    "hashes",
                    "sha256",
                    "requires-python",
                    "yanked",
                    "core-metadata",
                    "size",
                    "upload-time",
                    "versions",
                    "meta",
                ]
            ),
            children,
            max_size=6,
        ),
    ),
    max_leaves=30,
)


@FUZZ
@given(JSON)
def test_upstream_json_pages_parse_or_value_error(data):
    """Any JSON an upstream sends gives a page of well-typed files, or ValueError (an upstream error)."""
    body = json.dumps({"files": data} if isinstance(data, list) else data).encode()
    try:
        page = parse_page(
            body, "application/vnd.pypi.simple.v1+json", "http://up/simple/x/", "x"
        )
    except ValueError:
        return
    assert isinstance(page, ProjectPage)
    for f in page.files:
        assert isinstance(f.filename, str) and isinstance(f.url, str)
        assert all(
            isinstance(k, str) and isinstance(v, str) for k, v in f.hashes.items()
        )
        assert f.size is None or (
            isinstance(f.size, int) and not isinstance(f.size, bool)
        )
        assert f.requires_python is None or isinstance(f.requires_python, str)


@FUZZ
@given(st.text(max_size=300))
def test_upstream_html_pages_parse(text):
    """Any HTML an upstream sends parses to a page (malformed anchors are skipped)."""
    assert isinstance(
        parse_page(text.encode(), "text/html", "http://up/simple/x/", "x"), ProjectPage
    )
