# -*- test-case-name: tests.test_withdrawn -*-
"""Small per-project records read straight from their folder (one JSON
file per project), for ``pypicache-admin``.

The daemon reads and changes them through the store's state
(:class:`pypicache.storage.shared.SharedDocs`), so that every process on the
cache folder, or every daemon on one bucket, shares them.
"""

import json
import os
from typing import Any

Record = dict[str, Any]


def read_record(path: str) -> Record:
    """The JSON object in ``path`` (``{}`` if it is not there or is damaged)."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_folder(folder: str) -> dict[str, Record]:
    """Every project's record in ``folder``, by project (blocking)."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return {}
    found = {}
    for name in names:
        if name.endswith(".json") and not name.startswith("."):
            record = read_record(os.path.join(folder, name))
            if record:
                found[name.removesuffix(".json")] = record
    return found
