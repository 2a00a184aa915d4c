"""Archives read one at a time are remembered while unchanged
(``pypicache.storage.singles``)."""

import os

from pypicache.storage.singles import SingleReads


class Reads:
    """A stand-in for the layout's reader: counts reads, gives the sidecar's text."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path):
        self.calls += 1
        sidecar = path.path + ".json"
        return open(sidecar).read() if os.path.exists(sidecar) else None


def write(path, text):
    """Replace a file by rename, as the store writes sidecars."""
    temp = str(path) + ".tmp"
    with open(temp, "w") as f:
        f.write(text)
    os.replace(temp, path)


def test_unchanged_archive_is_not_read_again(tmp_path):
    """A second look-up of an unchanged archive costs no read."""
    archive = tmp_path / "a-1.0-py3-none-any.whl"
    archive.write_bytes(b"wheel")
    write(tmp_path / (archive.name + ".json"), "one")
    reads = Reads()
    singles = SingleReads(reads)
    assert singles.get(str(archive)) == "one"
    assert singles.get(str(archive)) == "one"
    assert reads.calls == 1


def test_rewritten_sidecar_is_read_again(tmp_path):
    """A sidecar replaced (a yank by another process) is seen at once."""
    archive = tmp_path / "a-1.0-py3-none-any.whl"
    archive.write_bytes(b"wheel")
    sidecar = tmp_path / (archive.name + ".json")
    write(sidecar, "one")
    reads = Reads()
    singles = SingleReads(reads)
    assert singles.get(str(archive)) == "one"
    write(sidecar, "two")
    assert singles.get(str(archive)) == "two"
    assert reads.calls == 2


def test_removed_archive_is_forgotten(tmp_path):
    """An archive that is gone is ``None``, whatever was remembered; one with
    no valid sidecar is ``None`` and not remembered."""
    archive = tmp_path / "a-1.0-py3-none-any.whl"
    archive.write_bytes(b"wheel")
    write(tmp_path / (archive.name + ".json"), "one")
    reads = Reads()
    singles = SingleReads(reads)
    assert singles.get(str(archive)) == "one"
    archive.unlink()
    assert singles.get(str(archive)) is None
    bare = tmp_path / "b-1.0-py3-none-any.whl"
    bare.write_bytes(b"wheel")
    assert singles.get(str(bare)) is None
    assert singles.get(str(bare)) is None
    assert reads.calls == 3


def test_remembers_a_bounded_number(tmp_path):
    """Past its size, the least recently asked for archive is read again."""
    reads = Reads()
    singles = SingleReads(reads, size=2)
    paths = []
    for name in "abc":
        archive = tmp_path / f"{name}-1.0-py3-none-any.whl"
        archive.write_bytes(b"wheel")
        write(tmp_path / (archive.name + ".json"), name)
        paths.append(str(archive))
    for path in paths:
        singles.get(path)
    assert reads.calls == 3
    singles.get(paths[2])
    assert reads.calls == 3
    singles.get(paths[0])
    assert reads.calls == 4
