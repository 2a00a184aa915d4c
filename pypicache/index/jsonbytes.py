# -*- test-case-name: tests.test_jsonbytes -*-
"""JSON text made by orjson where it gives the bytes :mod:`json` would.

A 3,000-file page's JSON (1.4 MB) takes :func:`json.dumps` 11 to 12 ms and
orjson 1.5 ms, holding the GIL either way: on a cold page that is the
first client's time, and the stored page file's. Where orjson's output
could differ from :mod:`json`'s (text outside ASCII, which :mod:`json`
escapes; ``DEL``, which it escapes too; an integer past 64 bits or a lone
surrogate, which orjson refuses) the text is made by :mod:`json`, so each
function gives one answer, with or without orjson installed.

orjson is used for data of :data:`MANY` items or more, imported when first
so used (10 ms: it brings ``uuid``, ``zoneinfo``...), which is in the
thread that renders or stores a large page, not at start-up; small data
gains little from it.

Parsing stays :func:`json.loads`'s: orjson reads an integer past 64 bits as
a float, where :mod:`json` keeps it, and rejects what :mod:`json` takes.
"""

import json
from typing import Any

#: Data of at least this many items (a page's files) is written by orjson.
MANY = 200

#: The orjson module once imported, ``False`` where it is not installed.
_orjson: Any = None


def _fast() -> Any:
    """orjson, imported now if not yet; ``None`` where it is not installed."""
    global _orjson
    if _orjson is None:
        try:
            import orjson
        except ImportError:  # a speed-up only: the same bytes without it
            orjson = False
        _orjson = orjson
    return _orjson or None


def compact(data: Any, items: int = 0) -> bytes:
    """``json.dumps(data, separators=(",", ":")).encode()``, byte for byte.

    :param data: of ``str``, ``int``, ``bool``, ``None``, lists, tuples and
        dicts with ``str`` keys (no floats: orjson writes them otherwise).
    :param items: how many items ``data`` holds (orjson from :data:`MANY`).
    """
    orjson = _fast() if items >= MANY else None
    if orjson is not None:
        try:
            text = orjson.dumps(data)
        except TypeError:  # orjson.JSONEncodeError included
            pass
        else:
            if text.isascii() and b"\x7f" not in text:
                return text  # type: ignore[no-any-return]
    return json.dumps(data, separators=(",", ":")).encode()


def stored(data: Any, items: int = 0) -> bytes:
    """JSON text that :func:`json.loads` reads back as ``data`` (the store's
    own files, which no client reads; UTF-8).

    :param data: as for :func:`compact`, and finite floats (orjson writes
        the shortest text that reads back as the same float).
    :param items: as for :func:`compact`.
    """
    orjson = _fast() if items >= MANY else None
    if orjson is not None:
        try:
            return orjson.dumps(data)  # type: ignore[no-any-return]
        except TypeError:
            pass
    return json.dumps(data).encode()
