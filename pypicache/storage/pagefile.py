"""A cached upstream page as a file: ``pages/<project>.json`` of the
filesystem store (blocking reads and writes; the store picks the thread)."""

import json

from twisted.python.filepath import FilePath

from pypicache.index.jsonbytes import stored
from pypicache.storage.atomic import write_atomically
from pypicache.storage.records import CachedPage


def read_page_file(path: FilePath) -> CachedPage | None:
    """The page kept at ``path``; ``None`` when there is none or it is unreadable."""
    try:
        return CachedPage.from_json(json.loads(path.getContent()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_page_file(path: FilePath, cached: CachedPage) -> None:
    """Keep ``cached`` at ``path`` atomically (serialized here, in the caller's
    thread: a 3,000-file page's rows take orjson 2 to 3 ms, :mod:`json` 15)."""
    write_atomically(path, stored(cached.to_json(), len(cached.page.files)))
