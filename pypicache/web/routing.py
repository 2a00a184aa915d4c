# -*- test-case-name: tests.test_proxy -*-
"""Route groups on one Klein app, and the small request helpers the groups share.

A route group is an object whose methods are marked with :func:`route`;
:func:`register` adds every marked method of a group to a Klein app, bound to
that group. So each group holds only the collaborators it needs, and every
route still lives in one URL map (one group may answer ``GET`` and another
``PUT`` for the same path).
"""

from typing import Any, Callable, TypeVar
from urllib.parse import quote

from klein import Klein
from twisted.web.iweb import IRequest

from pypicache.errors import NotFound
from pypicache.index.names import normalize, parse_filename

F = TypeVar("F", bound=Callable[..., Any])

_ROUTES = "_pypicache_routes"


def route(url: str, **options: Any) -> Callable[[F], F]:
    """Mark a method as the handler of ``url`` (``options`` as for ``Klein.route``)."""

    def mark(method: F) -> F:
        method.__dict__.setdefault(_ROUTES, []).append((url, options))
        return method

    return mark


def _bound(method: Callable[..., Any]) -> Callable[..., Any]:
    def handle(request: IRequest, **url_vars: Any) -> Any:
        return method(request, **url_vars)

    handle.__name__ = method.__name__
    return handle


def register(app: Klein, group: object) -> None:
    """Add every method of ``group`` marked with :func:`route` to ``app``."""
    kind = type(group)
    for name in dir(kind):
        for url, options in getattr(getattr(kind, name), _ROUTES, ()):
            endpoint = f"{kind.__name__}.{name}"
            app.route(url, endpoint=endpoint, **options)(_bound(getattr(group, name)))


def query_arg(request: IRequest, name: bytes) -> str | None:
    """The first value of a query argument, as text."""
    values = request.args.get(name)
    return values[0].decode("utf-8", "replace") if values else None


def header(request: IRequest, name: bytes) -> str | None:
    """A request header as text, or ``None``."""
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


def redirect(request: IRequest, location: str) -> bytes:
    """Answer ``301`` with a relative ``Location`` (works behind any proxy prefix)."""
    request.setResponseCode(301)
    request.setHeader(b"location", location.encode("utf-8"))
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return f"Moved to {location}\n".encode()


def base_url(request: IRequest) -> str:
    """This server's URL as the client addressed it (scheme and ``Host``)."""
    host = (header(request, b"host") or "localhost").split(",")[0].strip()
    return f"{'https' if request.isSecure() else 'http'}://{host}/"


def project_of(project: str, filename: str) -> str:
    """The normalized project of ``filename``, which must be ``project``'s.

    :raises BadRequest: for unsafe names; :raises NotFound: for another project's file.
    """
    name, _ = parse_filename(filename)
    if normalize(project) != name:
        raise NotFound(f"{filename!r} is not a file of project {project!r}")
    return name


def file_url(project: str, filename: str) -> str:
    """The URL of a file relative to a project page (``/simple/<p>/``, ``/local/<p>/``)."""
    return f"../../packages/{quote(project)}/{quote(filename)}"
