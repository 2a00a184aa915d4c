"""
A pypicache cache folder with many files in it, for the start-up measure.

It follows ``pypicache/storage`` (``layout.py``, ``filesystem.py``): an archive
at ``<area>/<project>/<filename>`` with its sidecar ``<filename>.json``
(``{"file": DistFile.to_json(), "stored_at": ...}``).  Nine files in ten go to
``mirror/`` (fetched from an upstream) and one in ten to
``private/releases/`` (uploaded), ten files a project.  Every archive is a hard
link to one small wheel (a new copy every 50,000 links) (the sidecar records its size and sha256), so 100,000
files take seconds to make and little space.  Built once into the work folder
and reused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from tests.packages import build_wheel, sha256_of

FILES_PER_PROJECT = 10
PRIVATE_EVERY = 10
LINKS_PER_BLOB = 50_000


def project_name(i: int) -> str:
    return f"cachebench-{i:06d}"


#: A private project (project 0 is private): its page needs no upstream.
PRIVATE_PROJECT = project_name(0)


def complete(root: Path) -> bool:
    """Whether the folder at ``root`` was made whole; if not, it is removed."""
    if (root / ".bench-complete").exists():
        return True
    if root.exists():
        shutil.rmtree(root)
    return False


def build(root: Path, count: int) -> Path:
    """A cache folder at ``root`` with ``count`` archives (reused when complete)."""
    done = root / ".bench-complete"
    if complete(root):
        return root
    root.mkdir(parents=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        sample = build_wheel(Path(tmp), "cachebench-sample", "1.0")
        size, digest = sample.stat().st_size, sha256_of(sample)
        blob = root / ".bench-blob-0.whl"
        shutil.copyfile(sample, blob)
    projects = (count + FILES_PER_PROJECT - 1) // FILES_PER_PROJECT
    made = 0
    for p in range(projects):
        name = project_name(p)
        area = "private/releases" if p % PRIVATE_EVERY == 0 else "mirror"
        folder = root / area / name
        folder.mkdir(parents=True)
        for k in range(min(FILES_PER_PROJECT, count - made)):
            filename = f"{name.replace('-', '_')}-1.0.{k}-py3-none-any.whl"
            sidecar = {
                "file": {
                    "filename": filename,
                    "url": None,
                    "hashes": {"sha256": digest},
                    "requires_python": None,
                    "yanked": False,
                    "core_metadata": False,
                    "size": size,
                    "upload_time": None,
                    "provenance": None,
                },
                "stored_at": 1700000000.0,
            }
            (folder / (filename + ".json")).write_text(json.dumps(sidecar))
            if made and made % LINKS_PER_BLOB == 0:
                # ext4 allows 65,000 links to one file: start a new copy.
                previous, blob = (
                    blob,
                    root / f".bench-blob-{made // LINKS_PER_BLOB}.whl",
                )
                shutil.copyfile(previous, blob)
            os.link(blob, folder / filename)
            made += 1
    done.write_text(f"{count} files in {time.perf_counter() - started:.1f} s\n")
    print(
        f"  made a cache of {count:,} files in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return root
