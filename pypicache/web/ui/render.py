# -*- test-case-name: tests.test_ui -*-
"""Jinja2 templates (autoescaping on) rendered to bodies ready to send, with
the headers every page of the web interface carries, and its static files."""

import datetime
import functools
import re
from typing import Any

from pypicache import __version__
from pypicache.web.rendered import gzipped
from pypicache.web.routing import Body

#: Only our own stylesheet, script and icon; images of rendered descriptions
#: may come from https (README badges); forms post to this server alone.
CSP = (
    b"default-src 'none'; style-src 'self'; script-src 'self'; "
    b"img-src 'self' data: https:; connect-src 'self'; form-action 'self'; "
    b"base-uri 'none'; frame-ancestors 'none'"
)

#: The headers of every page and static file of the web interface.
SECURITY_HEADERS = (
    (b"content-security-policy", CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)

STATIC_TYPES = {
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
}


#: An ISO 8601 moment in UTC, as uploads and the public index record them.
_UTC_ISO = re.compile(
    r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d)(?::\d\d(?:\.\d+)?)?(?:Z|[+-]00:?00)"
)


@functools.lru_cache(maxsize=1)
def environment() -> Any:
    """The template environment (Jinja2 imported on first use: most daemons
    serve installers only)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pypicache.web.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["size"] = human_size
    env.filters["when"] = when
    env.globals["version"] = __version__
    return env


def render(template: str, **context: Any) -> bytes:
    """A template rendered with ``context`` (thread-safe: pages may render in a thread)."""
    return environment().get_template(template).render(**context).encode("utf-8")


def root_of(path: bytes) -> str:
    """The relative URL of the site's root from a request's path: links stay
    relative, so that the pages work behind a proxy under any prefix."""
    depth = path.split(b"?", 1)[0].count(b"/") - 1
    return "../" * depth if depth > 0 else "./"


def html_body(data: bytes, max_age: int | None = None) -> Body:
    """A page as sent, with :data:`SECURITY_HEADERS`; ``max_age=None``: ``no-cache``
    (revalidated with its ``ETag``)."""
    cache = b"no-cache" if max_age is None else b"max-age=%d" % max_age
    return Body.of(
        data,
        (
            (b"content-type", b"text/html; charset=utf-8"),
            (b"cache-control", cache),
            *SECURITY_HEADERS,
        ),
        b"Accept-Encoding",
    )


def both_forms(data: bytes) -> tuple[Body, Body]:
    """A page as sent plain and gzipped."""
    plain = html_body(data)
    return plain, gzipped(plain)


@functools.lru_cache(maxsize=16)
def static_file(name: str) -> Body | None:
    """One of the static files (read once), or ``None`` if there is no such file."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    if suffix not in STATIC_TYPES or "/" in name or name.startswith("."):
        return None
    import importlib.resources  # at the first static file, not at start-up

    try:
        data = (
            importlib.resources.files("pypicache.web.ui")
            .joinpath("static", name)
            .read_bytes()
        )
    except (FileNotFoundError, IsADirectoryError):
        return None
    return Body.of(
        data,
        (
            (b"content-type", STATIC_TYPES[suffix]),
            (b"cache-control", b"max-age=3600"),
            *SECURITY_HEADERS,
        ),
    )


def human_size(size: int | None) -> str:
    """``1.2 MB``, ``340 kB``, ``12 bytes`` (``–`` when unknown)."""
    if size is None:
        return "–"
    if size < 1000:
        return f"{size} bytes"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def when(value: float | str | None) -> str:
    """A moment as ``2026-12-02 21:15 UTC`` (epoch seconds or ISO 8601 text)."""
    if value is None or value == "":
        return "–"
    if isinstance(value, str):
        utc = _UTC_ISO.fullmatch(value)
        if utc is not None:  # as recorded here: no parsing (3,000 files a page)
            return f"{utc[1]} {utc[2]} UTC"
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
    else:
        moment = datetime.datetime.fromtimestamp(value, tz=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
