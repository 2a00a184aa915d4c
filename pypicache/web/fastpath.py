# -*- test-case-name: tests.test_fastpath -*-
"""The hot reads, answered without Klein's routing and Deferreds.

A ``GET`` or ``HEAD`` of ``/health``, of a project page (``/simple/<project>/``,
``/local/<project>/``) or of a stored file (``/packages/<project>/<filename>``,
or ``/packages/<2>/<2>/<60>/<filename>`` in the file-host layout)
calls its route's method directly, when the answer needs no waiting: a fresh
or private page, a file on disk. Everything else, and every request Klein
would route differently or refuse (a path or ``Host`` it cannot decode), goes
to the Klein resource as before. The answer is the route's own, delivered and
turned into a status on errors as Klein does, so both ways answer alike.
"""

import functools
from typing import Any, Callable

from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET

from pypicache.web.routes.admin import health
from pypicache.web.routes.filehost import FileHostRoutes
from pypicache.web.routes.installer import NOT_READY, InstallerRoutes

#: The first segments of routes that take the whole path.
_WHOLE = (b"packages", b"health")


@functools.lru_cache(maxsize=256)
def routable_host(host: bytes) -> bool:
    """Whether Klein accepts this ``Host`` name: UTF-8, and encodable as IDNA
    (werkzeug's ``Map.bind`` raises ``BadHost`` otherwise)."""
    try:
        host.decode("utf-8").lower().partition(":")[0].encode("idna")
    except UnicodeError:
        return False
    return True


class FastReads(Resource):
    """The hot reads straight to their routes; the rest to ``klein``.

    :param klein: the Klein app's resource, which answers everything else.
    :param installer: the routes of the installer API.
    :param on_error: turns an exception raised by a route into the response
        body, as the Klein app's error handlers do.
    :param filehost: the routes of the file-host layout, if served.
    """

    isLeaf = True

    def __init__(
        self,
        klein: Resource,
        installer: InstallerRoutes,
        on_error: Callable[[IRequest, Failure], bytes],
        filehost: FileHostRoutes | None = None,
    ) -> None:
        super().__init__()
        self._klein = klein
        self._installer = installer
        self._on_error = on_error
        self._filehost = filehost

    def render(self, request: Any) -> Any:
        method = request.method
        call = self._route(request) if method == b"GET" or method == b"HEAD" else None
        if call is None:
            return self._klein.render(request)
        try:
            answer = call()
        except Exception:
            answer = self._on_error(request, Failure())
        if answer is NOT_READY:
            return self._klein.render(request)
        # As Klein does: the route's segments move to prepath.
        taken = len(request.postpath) if request.postpath[0] in _WHOLE else 2
        request.prepath = request.postpath[:taken]
        request.postpath = request.postpath[taken:]
        try:
            return _deliver(request, answer)
        except Exception:
            if request.startedWriting or request.finished:
                raise  # the guard cuts the connection
            return _deliver(request, self._on_error(request, Failure()))

    def _route(self, request: Any) -> Callable[[], Any] | None:
        """The route method for this path, bound to its arguments; ``None`` for
        any path the fast path leaves to Klein."""
        segments = request.postpath
        if segments == [b"health"] and not request.prepath:
            if not routable_host(request.getRequestHostname()):
                return None
            return functools.partial(health, request)
        if len(segments) == 5 and self._filehost is not None:
            return self._hosted(request, segments)
        if request.prepath or len(segments) != 3 or not segments[1]:
            return None
        area = segments[0]
        try:
            if area == b"simple" or area == b"local":
                if segments[2]:
                    return None
                project = segments[1].decode("utf-8")
                method = (
                    self._installer.simple_page_now
                    if area == b"simple"
                    else self._installer.local_page_now
                )
                call = functools.partial(method, request, project)
            elif area == b"packages" and segments[2]:
                project = segments[1].decode("utf-8")
                filename = segments[2].decode("utf-8")
                call = functools.partial(
                    self._installer.package_now, request, project, filename
                )
            else:
                return None
        except UnicodeDecodeError:
            return None
        if not routable_host(request.getRequestHostname()):
            return None
        return call

    def _hosted(self, request: Any, segments: list[bytes]) -> Callable[[], Any] | None:
        """:meth:`_route` for ``/packages/<2>/<2>/<60>/<filename>``: the
        lengths Klein's route takes, else ``None``."""
        if request.prepath or segments[0] != b"packages" or not segments[4]:
            return None
        try:
            first, second, rest, filename = (s.decode("utf-8") for s in segments[1:])
        except UnicodeDecodeError:
            return None
        if (
            len(first) != 2
            or len(second) != 2
            or len(rest) != 60
            or not routable_host(request.getRequestHostname())
        ):
            return None
        assert self._filehost is not None
        return functools.partial(
            self._filehost.file_now, request, first, second, rest, filename
        )


def _deliver(request: Any, answer: Any) -> Any:
    """Send a route's answer as Klein does: a resource renders, bytes are written."""
    if IResource.providedBy(answer):
        request.render(answer)
        return NOT_DONE_YET
    if isinstance(answer, str):
        answer = answer.encode("utf-8")
    if isinstance(answer, bytes):
        request.write(answer)
    request.finish()
    return NOT_DONE_YET
