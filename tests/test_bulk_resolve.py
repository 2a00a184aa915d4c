"""Bulk caching without a network: requirements files, parameters, targets, selection, resolution."""

import zipfile

import pytest
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag
from packaging.version import Version

from pypicache.bulk.candidates import choose_versions, split_page, usable_files
from pypicache.bulk.metadata import (
    DEFAULT_BUILD_REQUIRES,
    build_requirements,
    parse_core_metadata,
    sdist_metadata,
)
from pypicache.bulk.nodes import Abandoned, Wanted
from pypicache.bulk.platforms import expand_platform
from pypicache.bulk.requirements import parse_requirements
from pypicache.bulk.resolve import resolve
from pypicache.bulk.targets import (
    make_target,
    native_target,
    parse_bulk_params,
    parse_python_version,
)
from pypicache.errors import BadRequest, NotFound
from pypicache.index.model import DistFile, ProjectPage
from tests.packages import build_sdist, metadata_text, sdist_filename, wheel_filename

LINUX = make_target((3, 11), "manylinux_2_28_x86_64", "cp")
WINDOWS = make_target((3, 11), "win_amd64", "cp")


# -- requirements files ----------------------------------------------------------


def test_requirements_syntax():
    """Comments, continuations, markers, extras, specifiers and --hash are read; the line text is kept."""
    parsed = parse_requirements(
        "# a comment\n"
        "App[Fast, extra2] >= 1, != 1.5 \\\n"
        '    ; python_version >= "3.8"  # trailing comment\n'
        "\n"
        "pinned==2.0 --hash=sha256:AA11 \\\n"
        "    --hash=sha256:bb22\n"
        "tilde~=1.4\n"
        "arbitrary===1.0.0-weird\n"
        "--pre\n"
    )
    assert [(r.name, r.line_number) for r in parsed.requirements] == [
        ("app", 2),
        ("pinned", 5),
        ("tilde", 7),
        ("arbitrary", 8),
    ]
    app = parsed.requirements[0]
    assert app.extras == {"fast", "extra2"}
    assert app.requirement.specifier == SpecifierSet(">=1,!=1.5")
    assert str(app.requirement.marker) == 'python_version >= "3.8"'
    assert "App[Fast, extra2]" in app.line
    assert parsed.requirements[1].hashes == {"sha256": frozenset({"aa11", "bb22"})}
    assert parsed.pre
    assert parsed.unparsed == ()


def test_lines_not_acted_on_are_reported():
    """Includes, constraints, editables, VCS, URL and path requirements and index options come back with reasons."""
    parsed = parse_requirements(
        "-r other.txt\n"
        "-c constraints.txt\n"
        "-e git+https://example.com/x.git#egg=x\n"
        "git+https://example.com/y.git#egg=y\n"
        "z @ https://example.com/z-1.0.tar.gz\n"
        "https://example.com/w-1.0.tar.gz\n"
        "./local/path\n"
        "--index-url http://elsewhere/simple\n"
        "--extra-index-url http://more/simple\n"
        "--find-links /tmp\n"
        "ok\n"
    )
    assert [r.name for r in parsed.requirements] == ["ok"]
    reasons = {u.line_number: u.reason for u in parsed.unparsed}
    assert sorted(reasons) == list(range(1, 11))
    assert "not read" in reasons[1] and "constraints" in reasons[2]
    assert "editable" in reasons[3]
    assert "VCS" in reasons[4]
    assert "URL" in reasons[5] and "URL" in reasons[6]
    assert "path" in reasons[7]
    assert "--index-url is ignored" in reasons[8]
    assert "--extra-index-url" in reasons[9] and "--find-links" in reasons[10]
    assert parsed.unparsed[0].line == "-r other.txt"


@pytest.mark.parametrize(
    "line",
    ["--hash=md5:0123456789abcdef0123456789abcdef", "--hash=sha256:" + "0" * 64],
)
def test_hash_without_requirement_is_reported(line):
    """A line with only --hash (no requirement to apply it to) comes back with a reason."""
    parsed = parse_requirements(f"{line}\nok\n")
    assert [r.name for r in parsed.requirements] == ["ok"]
    assert [(u.line_number, u.line) for u in parsed.unparsed] == [(1, line)]
    assert "no requirement" in parsed.unparsed[0].reason


def test_nested_files_are_never_opened(tmp_path):
    """-r names a file on the server: it is reported, not read."""
    secret = tmp_path / "secret.txt"
    secret.write_text("leaked-project\n")
    parsed = parse_requirements(f"-r {secret}\n")
    assert parsed.requirements == ()
    assert parsed.unparsed[0].line == f"-r {secret}"


@pytest.mark.parametrize(
    "text, where",
    [
        ("good\n!!! broken\n", "line 2 ('!!! broken')"),
        ("good\nbad>=\n", "line 2 ('bad>=')"),
        ("x==1 --hash=sha256\n", "line 1"),
        ("x==1 --hash=md5:abcd\n", "unsupported --hash algorithm 'md5'"),
        ("x==1 --hash=sha256:xyz\n", "not hexadecimal"),
    ],
)
def test_unreadable_lines_are_bad_requests(text, where):
    """A line that is not requirements-file syntax makes the file unreadable: a 400 naming the line."""
    with pytest.raises(BadRequest) as e:
        parse_requirements(text)
    assert where in e.value.message


def test_non_ascii_comments():
    """Text is read as UTF-8 whatever the server's locale."""
    parsed = parse_requirements("# café ünïcode\nok  # ☕\n")
    assert [r.name for r in parsed.requirements] == ["ok"]


# -- parameters and targets ----------------------------------------------------------


def args(**values):
    return {
        k.replace("_", "-").encode(): [
            v.encode() for v in (vs if isinstance(vs, list) else [vs])
        ]
        for k, vs in values.items()
    }


def test_default_params():
    """Dependencies on, one file per version, the daemon's own target."""
    params = parse_bulk_params({})
    assert params.deps and not params.all_files
    assert [t.label for t in params.targets] == [native_target().label]


@pytest.mark.parametrize(
    "value, expected",
    [
        ("true", True),
        ("1", True),
        ("yes", True),
        ("false", False),
        ("0", False),
        ("off", False),
    ],
)
def test_booleans(value, expected):
    assert parse_bulk_params(args(deps=value)).deps is expected
    assert parse_bulk_params(args(all_files=value)).all_files is expected


@pytest.mark.parametrize(
    "query, message",
    [
        (args(deps="maybe"), "deps must be true or false"),
        (args(colour="blue"), "Unknown parameter 'colour'"),
        (args(python_version="three"), "Invalid python-version"),
        (args(python_version="4.0"), "Invalid python-version"),
        (args(platform="amiga_68k"), "Unknown platform"),
        (args(platform="win/amd64"), "Invalid platform"),
        (args(implementation="cpython"), "Invalid implementation"),
        (args(implementation=["cp", "pp"]), "more than once"),
        (args(abi="cp3$"), "Invalid abi"),
        (
            args(platform=[f"manylinux_2_{i}_x86_64" for i in range(17, 34)]),
            "Too many targets",
        ),
    ],
)
def test_bad_params(query, message):
    """Bad parameter values are 400s with a reason."""
    with pytest.raises(BadRequest) as e:
        parse_bulk_params(query)
    assert message in e.value.message


@pytest.mark.parametrize(
    "text, expected",
    [("3.9", (3, 9)), ("39", (3, 9)), ("311", (3, 11)), ("3.12.1", (3, 12, 1))],
)
def test_python_versions(text, expected):
    assert parse_python_version(text) == expected


def test_each_platform_and_version_is_a_target():
    """Repeated python-version and platform values multiply into targets; commas work like pip's."""
    params = parse_bulk_params(
        args(python_version=["3.9", "3.12"], platform="win_amd64,macosx_11_0_arm64")
    )
    assert [t.label for t in params.targets] == [
        "cp39-cp39-win_amd64",
        "cp39-cp39-macosx_11_0_arm64",
        "cp312-cp312-win_amd64",
        "cp312-cp312-macosx_11_0_arm64",
    ]


def test_windows_target():
    """A Windows target installs Windows and pure wheels, and its markers say Windows."""
    assert Tag("cp311", "cp311", "win_amd64") in WINDOWS.tags
    assert Tag("py3", "none", "any") in WINDOWS.tags
    assert not any("linux" in t.platform for t in WINDOWS.tags)
    env = WINDOWS.environment
    assert (
        env["sys_platform"],
        env["platform_system"],
        env["os_name"],
        env["platform_machine"],
    ) == ("win32", "Windows", "nt", "AMD64")
    assert env["python_version"] == "3.11" and env["python_full_version"] == "3.11.0"


def test_target_python_version_and_implementation():
    """python-version and implementation change tags, markers and Requires-Python checks."""
    target = make_target((3, 8), "macosx_11_0_arm64", "pp")
    assert target.environment["implementation_name"] == "pypy"
    assert (
        target.environment["sys_platform"] == "darwin"
        and target.environment["platform_machine"] == "arm64"
    )
    assert target.python_version == Version("3.8.0")
    assert target.allows_python(">=3.7") and not target.allows_python(">=3.9")
    assert target.wheel_rank("x-1.0-pp38-none-macosx_10_9_universal2.whl") is not None
    assert target.wheel_rank("x-1.0-cp38-cp38-macosx_11_0_arm64.whl") is None


def test_manylinux_expansion():
    """A manylinux platform installs older manylinux wheels and their legacy aliases."""
    platforms = expand_platform("manylinux_2_28_x86_64")
    assert platforms[0] == "manylinux_2_28_x86_64"
    assert {
        "manylinux2014_x86_64",
        "manylinux2010_x86_64",
        "manylinux1_x86_64",
        "linux_x86_64",
    } <= set(platforms)
    assert expand_platform("manylinux2014_aarch64")[:2] == [
        "manylinux_2_17_aarch64",
        "manylinux2014_aarch64",
    ]
    assert (
        LINUX.wheel_rank(
            "x-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
        )
        is not None
    )
    assert LINUX.wheel_rank("x-1.0-cp311-cp311-manylinux_2_34_x86_64.whl") is None


def test_markers_per_target():
    """Markers are evaluated in each target's environment, with extras."""
    from packaging.markers import Marker

    marker = Marker('sys_platform == "win32" and extra == "fast"')
    assert WINDOWS.evaluate(marker, ["fast"]) and not WINDOWS.evaluate(marker)
    assert not LINUX.evaluate(marker, ["fast"])
    assert LINUX.evaluate(None)


# -- selection ------------------------------------------------------------------------


def f(filename, **kwargs):
    return DistFile(
        filename=filename,
        url=f"http://upstream/{filename}",
        hashes={"sha256": kwargs.pop("sha256", "00")},
        **kwargs,
    )


def test_usable_files_prefer_the_most_specific_wheel():
    """The platform wheel beats the pure one, which beats the sdist; foreign wheels are left out."""
    files = [
        f("p-1.0.tar.gz"),
        f("p-1.0.zip"),
        f("p-1.0-py3-none-any.whl"),
        f("p-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"),
        f("p-1.0-cp311-cp311-win_amd64.whl"),
        f("p-1.0-cp311-cp311-manylinux_2_17_aarch64.whl"),
    ]
    assert [x.filename for x in usable_files(files, LINUX)] == [
        "p-1.0-cp311-cp311-manylinux_2_17_x86_64.whl",
        "p-1.0-py3-none-any.whl",
        "p-1.0.tar.gz",
        "p-1.0.zip",
    ]
    assert usable_files(files, WINDOWS)[0].filename == "p-1.0-cp311-cp311-win_amd64.whl"


def releases_of(*files):
    return split_page(ProjectPage("p", tuple(files)), "p")


def chosen(releases, target=LINUX, spec="", **kwargs):
    return [
        (str(v), [x.filename for x in files], yanked)
        for v, files, yanked in choose_versions(
            releases, target, SpecifierSet(spec), **kwargs
        )
    ]


def test_split_page_ignores_other_files():
    """Other projects' files, eggs and unparsable names are not versions of the project."""
    releases = releases_of(
        f("p-1.0.tar.gz"),
        f("other-1.0.tar.gz"),
        f("p-1.0-py2.7.egg"),
        f("p-2.0-py3-none-any.whl"),
    )
    assert sorted(map(str, releases)) == ["1.0", "2.0"]


def test_prereleases_only_when_asked():
    """Pre-releases need --pre, a specifier naming one, or no final release satisfying."""
    releases = releases_of(f("p-1.0.tar.gz"), f("p-2.0b1.tar.gz"))
    assert [v for v, *_ in chosen(releases)] == ["1.0"]
    assert [v for v, *_ in chosen(releases, pre=True)] == ["2.0b1", "1.0"]
    assert [v for v, *_ in chosen(releases, spec=">=2.0b1")] == ["2.0b1"]
    assert [v for v, *_ in chosen(releases, spec=">1.0")] == ["2.0b1"]


def test_yanked_only_when_pinned():
    """A yanked version is chosen only through an exact == pin; a yanked file of a live version is skipped."""
    releases = releases_of(
        f("p-1.0.tar.gz"),
        f("p-2.0.tar.gz", yanked="broken"),
        f("p-1.1.tar.gz", yanked=True),
        f("p-1.1-py3-none-any.whl"),
    )
    assert chosen(releases) == [
        ("1.1", ["p-1.1-py3-none-any.whl"], False),
        ("1.0", ["p-1.0.tar.gz"], False),
    ]
    assert chosen(releases, spec="==2.0") == [("2.0", ["p-2.0.tar.gz"], True)]
    assert chosen(releases, spec=">=2.0") == []


def test_requires_python_of_files():
    """A file whose Requires-Python excludes the target is not usable."""
    releases = releases_of(
        f("p-1.0.tar.gz"), f("p-2.0.tar.gz", requires_python=">=3.12")
    )
    assert [v for v, *_ in chosen(releases)] == ["1.0"]
    assert [v for v, *_ in chosen(releases, make_target((3, 12)))] == ["2.0", "1.0"]


def test_hashes_prefer_matching_files():
    """With --hash values, a file whose index hash matches is preferred over a better-tagged one."""
    releases = releases_of(
        f("p-1.0-py3-none-any.whl", sha256="aa"), f("p-1.0.tar.gz", sha256="bb")
    )
    assert chosen(releases)[0][1] == ["p-1.0-py3-none-any.whl", "p-1.0.tar.gz"]
    assert chosen(releases, hashes={"sha256": frozenset({"bb"})})[0][1] == [
        "p-1.0.tar.gz"
    ]
    assert chosen(releases, hashes={"sha256": frozenset({"cc"})})[0][1] == [
        "p-1.0-py3-none-any.whl",
        "p-1.0.tar.gz",
    ]


# -- metadata ---------------------------------------------------------------------------


def test_core_metadata():
    """Requires-Dist and Requires-Python come from METADATA; an sdist's only if static (2.2+)."""
    text = metadata_text(
        "x", "1.0", requires=["a>=1"], requires_python=">=3.8", extras={"fast": ["b"]}
    )
    meta = parse_core_metadata(text.encode())
    assert [str(r) for r in meta.requires_dist] == ["a>=1", 'b; extra == "fast"']
    assert meta.requires_python == ">=3.8" and meta.unknown is None
    assert "2.1" in parse_core_metadata(text.encode(), sdist=True).unknown
    static = metadata_text("x", "1.0", requires=["a"], metadata_version="2.2")
    assert parse_core_metadata(static.encode(), sdist=True).unknown is None
    dynamic = static.replace(
        "Requires-Dist", "Dynamic: Requires-Dist\nRequires-Dist", 1
    )
    assert "dynamic" in parse_core_metadata(dynamic.encode(), sdist=True).unknown


def test_sdist_metadata_and_build_requirements(tmp_path):
    """An sdist gives its PKG-INFO dependencies and [build-system].requires, read from the archive."""
    path = build_sdist(tmp_path, "src", "1.0", requires=["leaf>=2"])
    meta = sdist_metadata(str(path))
    assert [str(r) for r in meta.requires_dist] == ["leaf>=2"]
    assert meta.build_requires == ()
    assert build_requirements(None) == DEFAULT_BUILD_REQUIRES
    assert build_requirements(b"[project]\nname='x'\n") == DEFAULT_BUILD_REQUIRES
    assert build_requirements(
        b"[build-system]\nrequires = ['flit_core >=3.2,<4', '!bad']\n"
    ) == ("flit_core >=3.2,<4",)
    assert build_requirements(b"not toml [") == DEFAULT_BUILD_REQUIRES


def test_zip_sdist_without_pyproject(tmp_path):
    """A legacy zip sdist (no pyproject.toml) needs setuptools; a broken archive has unknown dependencies."""
    path = tmp_path / "old-1.0.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(
            "old-1.0/PKG-INFO",
            metadata_text("old", "1.0", requires=["x"], metadata_version="2.2"),
        )
        z.writestr("old-1.0/setup.py", "")
    meta = sdist_metadata(str(path))
    assert meta.build_requires == DEFAULT_BUILD_REQUIRES
    assert [str(r) for r in meta.requires_dist] == ["x"]
    broken = tmp_path / "broken-1.0.tar.gz"
    broken.write_bytes(b"not a tarball")
    assert "cannot read" in sdist_metadata(str(broken)).unknown


# -- resolution -------------------------------------------------------------------------


class FakeSource:
    """Pages and metadata from memory, for resolutions without a reactor."""

    def __init__(self):
        self.files = {}
        self.metadata_of = {}
        self.prefetched = []
        self.abandoned = False

    def add(
        self,
        name,
        version,
        requires=(),
        *,
        extras=None,
        requires_python=None,
        tag="py3-none-any",
        sdist=False,
        yanked=False,
        metadata_version="2.2",
        file_requires_python=None,
    ):
        filename = (
            sdist_filename(name, version)
            if sdist
            else wheel_filename(name, version, tag)
        )
        self.files.setdefault(name, []).append(
            f(filename, yanked=yanked, requires_python=file_requires_python)
        )
        text = metadata_text(
            name,
            version,
            requires=requires,
            extras=extras,
            requires_python=requires_python,
            metadata_version=metadata_version,
        )
        self.metadata_of[filename] = parse_core_metadata(text.encode(), sdist=sdist)
        return self

    def page(self, project):
        if project not in self.files:
            raise NotFound(f"No project {project!r} upstream")
        return ProjectPage(project, tuple(self.files[project]))

    def metadata(self, project, file):
        return self.metadata_of[file.filename]

    def prefetch(self, projects, target):
        self.prefetched.extend(projects)

    def check(self):
        if self.abandoned:
            raise Abandoned()


def top(*lines):
    return [
        Wanted.from_requirement(r.requirement, i, r.hashes)
        for i, r in enumerate(parse_requirements("\n".join(lines)).requirements)
    ]


def pins(resolution):
    return {name: str(c.version) for name, c in resolution.pins.items()}


@pytest.fixture
def graph():
    """app 2.0 cannot be installed (lib 2.0 needs tool>=2, app needs tool<2): the resolver must backtrack."""
    return (
        FakeSource()
        .add(
            "app",
            "1.0",
            ["lib>=1", "tool<2", 'winhelper; sys_platform == "win32"'],
            extras={"fast": ["speedup"]},
        )
        .add("app", "2.0", ["lib>=2", "tool<2"], extras={"fast": ["speedup"]})
        .add("lib", "1.0", ["yanky"])
        .add("lib", "2.0", ["tool>=2"])
        .add("tool", "1.0")
        .add("tool", "2.0")
        .add("speedup", "1.0")
        .add("speedup", "2.0b1")
        .add("yanky", "1.0")
        .add("yanky", "1.1", yanked=True)
        .add("winhelper", "1.0")
    )


def test_backtracking(graph):
    """resolvelib settles the conflict by backtracking to app 1.0 and lib 1.0."""
    resolution = resolve(graph, LINUX, top("app"))
    assert pins(resolution) == {
        "app": "1.0",
        "lib": "1.0",
        "tool": "1.0",
        "yanky": "1.0",
    }
    assert resolution.unresolved == {}


def test_extras_and_markers_per_target(graph):
    """Extras add their dependencies; markers are evaluated for each target."""
    assert pins(resolve(graph, LINUX, top("app[fast]")))["speedup"] == "1.0"
    windows = pins(resolve(graph, WINDOWS, top("app[fast]")))
    assert windows["winhelper"] == "1.0" and windows["speedup"] == "1.0"


def test_no_dependencies(graph):
    """deps=False resolves the listed requirements alone."""
    assert pins(resolve(graph, LINUX, top("app", "yanky==1.1"), deps=False)) == {
        "app": "2.0",
        "yanky": "1.1",
    }


def test_prereleases_with_pre(graph):
    """--pre lets dependencies take pre-releases too."""
    assert pins(resolve(graph, LINUX, top("speedup"), pre=True))["speedup"] == "2.0b1"


def test_requires_python_from_metadata():
    """A Requires-Python in core metadata (not on the page) makes the resolver take an older version."""
    source = FakeSource().add("p", "1.0").add("p", "2.0", requires_python=">=3.12")
    assert pins(resolve(source, LINUX, top("p"))) == {"p": "1.0"}
    assert pins(resolve(source, make_target((3, 12)), top("p"))) == {"p": "2.0"}


def test_unresolvable_lines_are_set_aside(graph):
    """A missing project and lines in conflict are set aside with reasons; the rest is still resolved."""
    resolution = resolve(
        graph, LINUX, top("app", "missing>=1", "tool>=2", "lib>=2", "speedup")
    )
    assert pins(resolution) == {"lib": "2.0", "tool": "2.0", "speedup": "1.0"}
    assert set(resolution.unresolved) == {0, 1, 2}
    assert (
        resolution.unresolved[1]
        == "no version satisfies missing>=1 (requested): No project 'missing' upstream"
    )
    assert (
        "tool>=2 (requested); tool<2 (required by app 2.0)" in resolution.unresolved[0]
    )
    assert resolution.unresolved[2] == resolution.unresolved[0]


def test_transitive_failure_blames_the_root():
    """A dependency that cannot be found sets aside the line that led to it."""
    source = FakeSource().add("a", "1.0", ["ghost"]).add("b", "1.0")
    resolution = resolve(source, LINUX, top("a", "b"))
    assert pins(resolution) == {"b": "1.0"}
    assert "ghost (required by a 1.0)" in resolution.unresolved[0]


def test_sdist_with_dynamic_dependencies():
    """An sdist whose PKG-INFO predates 2.2 is resolved with a note that its dependencies are unknown."""
    source = FakeSource().add(
        "old", "1.0", ["hidden"], sdist=True, metadata_version="2.1"
    )
    resolution = resolve(source, LINUX, top("old"))
    assert pins(resolution) == {"old": "1.0"}
    assert "dependencies unknown" in resolution.notes["old 1.0"]


def test_dependencies_are_prefetched(graph):
    """The pages of dependencies are hinted to the source before the resolver asks for them."""
    resolve(graph, LINUX, top("app"))
    assert {"lib", "tool"} <= set(graph.prefetched)


def test_abandoned_resolution_stops(graph):
    """A resolution whose request went away stops at its next question."""
    graph.abandoned = True
    with pytest.raises(Abandoned):
        resolve(graph, LINUX, top("app"))


def test_metadata_failure_leaves_dependencies_unknown(graph):
    """Metadata that cannot be had does not stop the resolution; it is noted."""

    def broken(project, file):
        raise NotFound("No core metadata")

    graph.metadata = broken
    resolution = resolve(graph, LINUX, top("app"))
    assert pins(resolution) == {"app": "2.0"}
    assert "No core metadata" in resolution.notes["app 2.0"]
