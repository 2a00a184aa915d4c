# -*- test-case-name: tests.test_lazywheel -*-
"""A wheel's ``METADATA`` read from the upstream with ``Range`` requests, as pip's lazy wheel does.

First the tail of the file (the zip's end records, and for most wheels the
central directory and the ``.dist-info`` members too), then whatever else the
reader finds missing: the rest of the central directory, a zip64 record, the
member's local header and data. The reader is the one that reads whole
wheels (:func:`pypicache.index.archives.wheel_metadata` over ``zipfile``, in a
thread), run over the bytes fetched so far (:class:`~pypicache.proxy.ranges.SparseFile`)
and run again once what it lacked has arrived: the bytes it returns are the
member's own, CRC-checked, within ``MAX_METADATA``, from a wheel that passes
the same checks as a downloaded one.

Every answer is checked: a ``206`` must carry the ``Content-Range`` asked
for, of a file of the size the page gives, and exactly that many bytes. An
upstream that ignores ``Range`` (``200``), an answer that does not fit, a zip
that cannot be read this way, or more reads or bytes than the limits allow
raise :class:`CannotRange`: the caller downloads the whole wheel instead.
Transport failures are upstream errors (``502``/``504``), as for any file.
"""

import re
from typing import Any

from twisted.logger import Logger

from pypicache.concurrency import RunBlocking
from pypicache.errors import BadRequest
from pypicache.index.archives import wheel_metadata
from pypicache.index.model import DistFile
from pypicache.proxy.bodies import abort, discard
from pypicache.proxy.ranges import Missing, Pieces, SparseFile
from pypicache.proxy.upstream import Upstream, mask_url

log = Logger()

#: Bytes asked for first, from the end of the file (most wheels' whole
#: central directory and ``.dist-info`` members).
TAIL = 64 * 1024

#: Bytes asked for at least when the reader misses some (doubling each round).
READAHEAD = 64 * 1024

#: Range requests per wheel, the tail included.
MAX_REQUESTS = 8

#: Bytes fetched by ranges per wheel in all (a central directory of
#: ``MAX_MEMBERS`` entries fits); past it, the whole wheel is cheaper.
MAX_FETCHED = 16 * 1024 * 1024

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+)\s*$", re.IGNORECASE)


class CannotRange(Exception):
    """The metadata cannot be read by ranges: read the whole wheel instead."""


def metadata_from(pieces: Pieces, filename: str) -> bytes:
    """The wheel's ``METADATA`` from the bytes held (blocking: run it in a thread).

    :raises Missing: the reader needs bytes not fetched yet.
    :raises BadRequest: not a wheel the whole-file reader would accept.
    """
    return wheel_metadata(SparseFile(pieces, filename), filename)


def _content_range(response: Any) -> tuple[int, int, int]:
    values = response.headers.getRawHeaders(b"content-range") or []
    match = _CONTENT_RANGE.match(values[-1].decode("latin-1")) if values else None
    if match is None:
        raise CannotRange(f"a 206 with Content-Range {values!r}")
    first, last, total = (int(g) for g in match.groups())
    if last < first or last >= total:
        raise CannotRange(f"a 206 with Content-Range {values[-1]!r}")
    return first, last, total


async def fetch_range(
    upstream: Upstream, url: str, first: int | None, last: int, size: int | None
) -> tuple[int, bytes, int]:
    """Bytes ``first``-``last`` of the file at ``url`` (``first=None``: the last
    ``last + 1`` bytes), as ``(start, data, file size)``.

    :raises CannotRange: the upstream ignored the range, or its answer does not
        fit what was asked (another range, another size, another length).
    """
    spec = f"{first}-{last}" if first is not None else f"-{last + 1}"
    response = await upstream.open_range(url, spec)
    if response.code != 206:
        upstream.drop_body(response, abort() if response.code == 200 else discard())
        raise CannotRange(f"upstream answered {response.code} to Range: bytes={spec}")
    try:
        got_first, got_last, total = _content_range(response)
    except CannotRange:
        upstream.drop_body(response, abort())
        raise
    want_first = first if first is not None else max(0, total - last - 1)
    want_last = min(last, total - 1) if first is not None else total - 1
    if (got_first, got_last) != (want_first, want_last) or (
        size is not None and total != size
    ):
        upstream.drop_body(response, abort())
        raise CannotRange(
            f"asked for bytes={spec} of {size} bytes, "
            f"got {got_first}-{got_last}/{total}"
        )
    expected = got_last - got_first + 1
    chunks: list[bytes] = []
    received = 0

    def collect(chunk: bytes) -> None:
        nonlocal received
        received += len(chunk)
        if received > expected:
            raise CannotRange(f"more than the {expected} bytes of bytes={spec}")
        chunks.append(chunk)

    await upstream.read_body(response, expected, collect)
    if received != expected:
        raise CannotRange(f"{received} of the {expected} bytes of bytes={spec}")
    return got_first, b"".join(chunks), total


async def read_metadata(
    upstream: Upstream, run_blocking: RunBlocking, info: DistFile
) -> bytes:
    """The ``METADATA`` of the wheel ``info`` from the upstream, by ranges.

    :raises CannotRange: read the whole wheel instead (see the module).
    :raises UpstreamError: the upstream failed (or :class:`UpstreamTimeout`).
    :raises NotFound: the upstream has no such file.
    """
    assert info.url is not None
    url, filename = info.url, info.filename
    if info.size is not None and info.size > TAIL:
        start, data, total = await fetch_range(
            upstream, url, info.size - TAIL, info.size - 1, info.size
        )
    else:
        start, data, total = await fetch_range(upstream, url, None, TAIL - 1, info.size)
    pieces = Pieces(total)
    pieces.add(start, data)
    for round in range(MAX_REQUESTS):
        try:
            content: bytes = await run_blocking(metadata_from, pieces, filename)
        except Missing as missing:
            if round == MAX_REQUESTS - 1:
                break
            first = missing.start
            end = max(missing.end, first + (READAHEAD << round))
            end = min(end, pieces.next_start(first), total)
            if pieces.held + end - first > MAX_FETCHED:
                raise CannotRange(
                    f"more than {MAX_FETCHED} bytes of {filename} needed"
                ) from None
            got, data, _ = await fetch_range(upstream, url, first, end - 1, total)
            pieces.add(got, data)
        except BadRequest as e:
            raise CannotRange(e.message) from None
        except Exception as e:
            # The whole-file path is the safe one for anything unforeseen.
            raise CannotRange(f"{e.__class__.__name__}: {str(e)[:200]}") from None
        else:
            log.info(
                "Read the METADATA of {filename} with {requests} range requests "
                "({fetched} of {size} bytes) from {url}",
                filename=filename,
                requests=round + 1,
                fetched=pieces.held,
                size=total,
                url=mask_url(url),
            )
            return content
    raise CannotRange(f"more than {MAX_REQUESTS} range requests for {filename}")
