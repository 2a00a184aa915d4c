# -*- test-case-name: tests.test_simple -*-
"""The media types of the simple repository API, and choosing one for a
request (PEP 691 content negotiation). Pure: no I/O, no reactor."""

from pypicache.errors import NotAcceptable

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
_LATEST = {
    "application/vnd.pypi.simple.latest+json": JSON_TYPE,
    "application/vnd.pypi.simple.latest+html": HTML_TYPE,
}
#: What we offer, in the order ties are broken (HTML is the default).
OFFERED = (TEXT_HTML, HTML_TYPE, JSON_TYPE)

#: The ``Accept`` header we send upstream: JSON first, HTML as the fallback.
UPSTREAM_ACCEPT = f"{JSON_TYPE}, {HTML_TYPE};q=0.2, {TEXT_HTML};q=0.01"


# -- content negotiation -----------------------------------------------------


def _parse_accept(header: str) -> list[tuple[str, float, int]]:
    """Return ``(media range, q, position)`` for each entry of an Accept header."""
    ranges = []
    for position, item in enumerate(header.split(",")):
        media, *params = (p.strip() for p in item.split(";"))
        if not media:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((_LATEST.get(media.lower(), media.lower()), q, position))
    return ranges


def negotiate(accept: str | None, format_param: str | None = None) -> str:
    """Choose the media type of a simple API response.

    :param accept: the request's ``Accept`` header (``None``: HTML).
    :param format_param: the ``?format=`` query parameter, which wins if given.
    :returns: one of :data:`OFFERED`.
    :raises NotAcceptable: if nothing we offer is acceptable.
    """
    if format_param:
        # ``?format=application/vnd.pypi.simple.v1+json`` unquoted: ``+`` became a space.
        format_param = format_param.strip().replace(" ", "+")
        chosen = _LATEST.get(format_param.lower(), format_param.lower())
        if chosen in OFFERED:
            return chosen
        raise NotAcceptable(
            f"Unsupported format {format_param!r}; offered: {', '.join(OFFERED)}"
        )
    if not accept or not accept.strip():
        return TEXT_HTML
    ranges = _parse_accept(accept)
    best: tuple[float, int, int, int] | None = None
    chosen = None
    for preference, offered in enumerate(OFFERED):
        major = offered.split("/", 1)[0]
        match = None  # (specificity, q, position) of the most specific range
        for media, q, position in ranges:
            if media == offered:
                specificity = 2
            elif media == f"{major}/*":
                specificity = 1
            elif media == "*/*":
                specificity = 0
            else:
                continue
            if match is None or specificity > match[0]:
                match = (specificity, q, position)
        if match is None or match[1] <= 0:
            continue
        key = (match[1], match[0], -match[2], -preference)
        if best is None or key > best:
            best, chosen = key, offered
    if chosen is None:
        raise NotAcceptable(f"None of {', '.join(OFFERED)} is acceptable")
    return chosen
