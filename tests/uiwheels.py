"""Wheels with chosen core metadata, for the web interface's tests (hostile
fields, descriptions of each content type)."""

from pathlib import Path

from tests.packages import _underscored, _wheel_text, _write_wheel, wheel_filename

#: Markup that must never reach a page as markup.
HOSTILE = '<script>alert("x")</script><img src=x onerror="alert(1)">'


def wheel_with_metadata(
    directory: Path,
    name: str,
    version: str,
    headers: list[tuple[str, str]],
    description: str = "",
) -> Path:
    """A wheel of ``name`` ``version`` whose METADATA has ``headers`` (after
    Metadata-Version, Name and Version) and ``description`` as its body."""
    directory.mkdir(parents=True, exist_ok=True)
    mod = _underscored(name)
    dist_info = f"{mod}-{version}.dist-info"
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"{k}: {v}" for k, v in headers]
    metadata = "\n".join(lines) + "\n\n" + description
    path = directory / wheel_filename(name, version)
    files = {
        f"{mod}/__init__.py": b"",
        f"{dist_info}/METADATA": metadata.encode(),
    }
    _write_wheel(path, files, dist_info, _wheel_text("py3-none-any"))
    return path
