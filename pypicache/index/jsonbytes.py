# -*- test-case-name: tests.test_jsonbytes -*-
"""JSON text made by orjson where it gives the bytes :mod:`json` would.

A 3,000-file page's JSON (1.4 MB) takes :func:`json.dumps` 11 to 12 ms and
orjson 1.5 ms, holding the GIL either way: on a cold page that is the
first client's time, and the stored page file's. Where orjson's output
could differ from :mod:`json`'s (text outside ASCII, which :mod:`json`
escapes; ``DEL``, which it escapes too; an integer past 64 bits or a lone
surrogate, which orjson refuses) the text is made by :mod:`json`, so each
function gives one answer, with or without orjson installed.

Parsing stays :func:`json.loads`'s: orjson reads an integer past 64 bits as
a float, where :mod:`json` keeps it, and rejects what :mod:`json` takes.
"""

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - a speed-up only: the same bytes
    orjson = None


def compact(data: Any) -> bytes:
    """``json.dumps(data, separators=(",", ":")).encode()``, byte for byte.

    :param data: of ``str``, ``int``, ``bool``, ``None``, lists, tuples and
        dicts with ``str`` keys (no floats: orjson writes them otherwise).
    """
    if orjson is not None:
        try:
            text = orjson.dumps(data)
        except TypeError:  # orjson.JSONEncodeError included
            pass
        else:
            if text.isascii() and b"\x7f" not in text:
                return text
    return json.dumps(data, separators=(",", ":")).encode()


def stored(data: Any) -> bytes:
    """JSON text that :func:`json.loads` reads back as ``data`` (the store's
    own files, which no client reads; UTF-8).

    :param data: as for :func:`compact`, and finite floats (orjson writes
        the shortest text that reads back as the same float).
    """
    if orjson is not None:
        try:
            return orjson.dumps(data)  # type: ignore[no-any-return]
        except TypeError:
            pass
    return json.dumps(data).encode()
