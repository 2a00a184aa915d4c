# -*- test-case-name: tests.test_fakeindex -*-
"""
Build real, installable Python distributions for tests: no network, no setuptools.

Pure (no Twisted, no I/O besides the files it writes).  Every build is
byte-for-byte reproducible: the same arguments give the same file and so the
same sha256, whichever directory it is written to.

- L{build_wheel} writes a wheel with a correct C{RECORD}, installable by pip and uv.
- L{build_sdist} writes a C{.tar.gz} sdist whose C{pyproject.toml} names an in-tree
  PEP 517 backend (C{tinybackend.py}, stdlib only, C{requires = []}), so pip and uv
  build it offline.  Its C{PKG-INFO} is Metadata-Version 2.2 with no C{Dynamic}
  field, so uv may take the metadata from it without building; pip always calls
  the backend's C{prepare_metadata_for_build_wheel}.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import io
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import parse_tag
from packaging.utils import canonicalize_name
from packaging.version import Version

__all__ = [
    "build_wheel",
    "build_sdist",
    "sha256_of",
    "wheel_filename",
    "sdist_filename",
    "metadata_text",
]

# Every archive member gets one fixed timestamp (2024-01-02T03:04:06Z; the zip
# one is hard-coded in _write_wheel), so builds are reproducible.
_TAR_MTIME = 1704164646


def sha256_of(path: Path | str) -> str:
    """
    Return the hex sha256 of a file, read in chunks.

    :param path: the file.
    :returns: 64 lowercase hex digits.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _underscored(name: str) -> str:
    """The normalized name with C{_} for C{-}: the file-name and module form."""
    return canonicalize_name(name).replace("-", "_")


def wheel_filename(name: str, version: str, tag: str = "py3-none-any") -> str:
    """
    The wheel spec's file name: C{foo_bar-1.0-py3-none-any.whl}.

    :param name: project name, in any spelling.
    :param version: any PEP 440 version; written normalized.
    :param tag: the compressed tag triple.
    """
    return f"{_underscored(name)}-{Version(version)}-{tag}.whl"


def sdist_filename(name: str, version: str) -> str:
    """The sdist spec's file name: C{foo_bar-1.0.tar.gz}."""
    return f"{_underscored(name)}-{Version(version)}.tar.gz"


def _requires_dist(
    requires: Iterable[str], extras: Mapping[str, Sequence[str]] | None
) -> list[str]:
    """
    Requires-Dist values: C{requires} as given, then each extra's requirements
    with C{extra == "x"} and-ed to any marker they already have.
    """
    lines = [str(Requirement(r)) for r in requires]
    for extra, reqs in (extras or {}).items():
        for text in reqs:
            req = Requirement(text)
            marker = f'extra == "{canonicalize_name(extra)}"'
            if req.marker is not None:
                marker = f"({req.marker}) and {marker}"
            req.marker = None
            lines.append(f"{req}; {marker}")
    return lines


def metadata_text(
    name: str,
    version: str,
    *,
    requires: Iterable[str] = (),
    requires_python: str | None = None,
    extras: Mapping[str, Sequence[str]] | None = None,
    metadata_version: str = "2.1",
) -> str:
    """
    Core metadata (an email-header block) as written into C{METADATA}/C{PKG-INFO}.

    :param extras: extra name -> its requirements; each becomes a C{Provides-Extra}
        and C{Requires-Dist: req; extra == "name"} lines.
    """
    lines = [
        f"Metadata-Version: {metadata_version}",
        f"Name: {name}",
        f"Version: {Version(version)}",
        "Summary: A test distribution built by tests/packages.py",
    ]
    if requires_python is not None:
        lines.append(f"Requires-Python: {requires_python}")
    for extra in extras or {}:
        lines.append(f"Provides-Extra: {canonicalize_name(extra)}")
    lines.extend(f"Requires-Dist: {r}" for r in _requires_dist(requires, extras))
    return "\n".join(lines) + "\n\n"


def _module_source(version: str, module_body: str) -> bytes:
    return f'__version__ = "{Version(version)}"\n{module_body}'.encode()


# --- shared with the in-tree backend -----------------------------------------
# _write_wheel is copied verbatim (inspect.getsource) into every sdist's
# tinybackend.py, so it must use the standard library only.


def _write_wheel(path, files, dist_info, wheel_text):
    """
    Write a wheel at C{path} holding C{files} (archive name -> bytes), plus
    C{dist_info/WHEEL} and a C{dist_info/RECORD} with urlsafe-base64 sha256
    digests (no padding) and sizes.
    """
    import base64
    import hashlib
    import zipfile

    members = dict(files)
    members[dist_info + "/WHEEL"] = wheel_text.encode()
    record = []
    for arcname, data in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest())
        record.append(f"{arcname},sha256={digest.rstrip(b'=').decode()},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    members[dist_info + "/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(path, "w") as zf:
        for arcname, data in members.items():
            info = zipfile.ZipInfo(arcname, date_time=(2024, 1, 2, 3, 4, 6))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)


# -----------------------------------------------------------------------------


def _wheel_text(tag: str) -> str:
    tags = sorted(str(t) for t in parse_tag(tag))
    purelib = all(t.endswith("-none-any") for t in tags)
    lines = [
        "Wheel-Version: 1.0",
        "Generator: pypicache-tests",
        f"Root-Is-Purelib: {'true' if purelib else 'false'}",
    ]
    lines.extend(f"Tag: {t}" for t in tags)
    return "\n".join(lines) + "\n"


def build_wheel(
    directory: Path | str,
    name: str,
    version: str,
    *,
    requires: Iterable[str] = (),
    requires_python: str | None = None,
    extras: Mapping[str, Sequence[str]] | None = None,
    tag: str = "py3-none-any",
    module_body: str = "",
) -> Path:
    """
    Write a pip-installable wheel into C{directory} and return its path.

    It holds C{<mod>/__init__.py} (C{<mod>} = normalized name with C{_}; it sets
    C{__version__} and then runs C{module_body}) and a C{.dist-info} with
    C{METADATA} (2.1), C{WHEEL} and C{RECORD}.

    :param requires: Requirement strings, e.g. C{"bar>=1"}.
    :param requires_python: e.g. C{">=3.8"}.
    :param extras: extra -> requirements, e.g. C{{"x": ["baz"]}}.
    :param tag: compressed tag triple, also used in the file name.
    :param module_body: Python source appended to the module.
    :returns: the wheel's path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    mod = _underscored(name)
    dist_info = f"{mod}-{Version(version)}.dist-info"
    files = {
        f"{mod}/__init__.py": _module_source(version, module_body),
        f"{dist_info}/METADATA": metadata_text(
            name,
            version,
            requires=requires,
            requires_python=requires_python,
            extras=extras,
        ).encode(),
    }
    path = directory / wheel_filename(name, version, tag)
    _write_wheel(path, files, dist_info, _wheel_text(tag))
    return path


_BACKEND_HOOKS = '''

def _pkg_info():
    import email.parser

    with open("PKG-INFO", "rb") as f:
        raw = f.read()
    msg = email.parser.BytesParser().parsebytes(raw)
    under = re.sub(r"[-_.]+", "_", msg["Name"]).lower()
    return raw, under, msg["Version"]


def _modules():
    """The top-level packages of the source tree: archive name -> bytes."""
    files = {}
    for top in sorted(os.listdir(".")):
        if os.path.isfile(os.path.join(top, "__init__.py")):
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                for filename in sorted(filenames):
                    if filename.endswith(".py"):
                        full = os.path.join(dirpath, filename)
                        with open(full, "rb") as f:
                            files[full.replace(os.sep, "/")] = f.read()
    return files


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    raw, under, version = _pkg_info()
    dist_info = f"{under}-{version}.dist-info"
    os.makedirs(os.path.join(metadata_directory, dist_info), exist_ok=True)
    with open(os.path.join(metadata_directory, dist_info, "METADATA"), "wb") as f:
        f.write(raw)
    with open(os.path.join(metadata_directory, dist_info, "WHEEL"), "w") as f:
        f.write(WHEEL)
    return dist_info


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raw, under, version = _pkg_info()
    dist_info = f"{under}-{version}.dist-info"
    files = _modules()
    files[dist_info + "/METADATA"] = raw
    filename = f"{under}-{version}-py3-none-any.whl"
    _write_wheel(os.path.join(wheel_directory, filename), files, dist_info, WHEEL)
    return filename


def build_sdist(sdist_directory, config_settings=None):
    import tarfile

    raw, under, version = _pkg_info()
    base = f"{under}-{version}"
    filename = base + ".tar.gz"
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz") as tar:
        for name in ["PKG-INFO", "pyproject.toml", "tinybackend.py", *_modules()]:
            tar.add(name, arcname=f"{base}/{name}")
    return filename
'''


def _tinybackend_source() -> str:
    """The complete C{tinybackend.py} put into each sdist (stdlib only)."""
    return (
        '"""A minimal in-tree PEP 517 backend written by pypicache\'s tests."""\n'
        "import os\nimport re\n\n"
        f"WHEEL = {_wheel_text('py3-none-any')!r}\n\n\n"
        + inspect.getsource(_write_wheel)
        + _BACKEND_HOOKS
    )


_PYPROJECT = """\
[build-system]
requires = []
build-backend = "tinybackend"
backend-path = ["."]
"""


def build_sdist(
    directory: Path | str,
    name: str,
    version: str,
    *,
    requires: Iterable[str] = (),
    requires_python: str | None = None,
    extras: Mapping[str, Sequence[str]] | None = None,
    module_body: str = "",
) -> Path:
    """
    Write a C{.tar.gz} sdist into C{directory} and return its path.

    Members, under C{<name_>-<ver>/}: C{PKG-INFO} (Metadata-Version 2.2),
    C{pyproject.toml}, C{tinybackend.py} (the in-tree backend) and the module.
    The wheel it builds carries the same metadata (Requires-Dist, Requires-Python).

    :returns: the sdist's path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    mod = _underscored(name)
    base = f"{mod}-{Version(version)}"
    members = {
        "PKG-INFO": metadata_text(
            name,
            version,
            requires=requires,
            requires_python=requires_python,
            extras=extras,
            metadata_version="2.2",
        ).encode(),
        "pyproject.toml": _PYPROJECT.encode(),
        "tinybackend.py": _tinybackend_source().encode(),
        f"{mod}/__init__.py": _module_source(version, module_body),
    }
    path = directory / sdist_filename(name, version)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirname in (base, f"{base}/{mod}"):
            info = tarfile.TarInfo(dirname)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, _TAR_MTIME
            tar.addfile(info)
        for arcname, data in members.items():
            info = tarfile.TarInfo(f"{base}/{arcname}")
            info.size, info.mode, info.mtime = len(data), 0o644, _TAR_MTIME
            tar.addfile(info, io.BytesIO(data))
    with open(path, "wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, mtime=0
    ) as gz:
        gz.write(buffer.getvalue())
    return path
