# -*- test-case-name: tests.test_coldlane -*-
"""Cold reads below Klein: the installer's reads the fast lane cannot answer
at once, handed straight to their route.

A ``GET`` or ``HEAD`` of ``/simple/<name>/`` or ``/local/<name>/`` (``name``
normalized) or of ``/packages/<project>/<filename>`` (a file or its
``.metadata``) that :class:`~pypicache.web.ready.ReadyAnswers` cannot answer
now (a page to fetch from the upstream, a file to download, a large file
sent from the disk) still goes through ``HTTPChannel`` and a twisted.web
``Request``, which read the head and write the answer as they always have;
but the site gives the request a :class:`ColdCall` as its resource, not the
guard, the fast path's second look and Klein's routing (werkzeug's match,
its ``Deferred`` wrappers): the call checks the access policy as
:class:`~pypicache.web.guard.Guarded` does, moves the route's segments to
``prepath`` and calls the route Klein would call, and delivers its answer,
its error (through the Klein app's error handlers) or its cancellation when
the client goes away, as Klein's resource does. So both ways answer alike,
byte for byte (``tests/test_coldlane.py``).

Only requests whose route is certain go this way: no query, no ``.`` or
``..`` segment, a plain ``Host``, no body, ``Expect`` or ``Upgrade``, no
credentials needed for reads; the rest goes to the guard and Klein as before.
"""

from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.python import log as legacy_log
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, getChildForRequest
from twisted.web.server import NOT_DONE_YET

from pypicache.web.access import AccessPolicy
from pypicache.web.guard import answer_failure
from pypicache.web.heads import RequestHead
from pypicache.web.ready import FILE, PAGE, plain_host
from pypicache.web.routes.installer import InstallerRoutes

#: Segments the guard refuses (``Invalid path``): never taken here.
_DOTS = (b".", b"..")


class ColdRoutes:
    """Which requests go straight to their installer route.

    :param installer: the routes Klein would call.
    :param policy: the access policy (as the guard checks it).
    :param on_error: an exception's answer, as the Klein app's error
        handlers give it (:func:`~pypicache.web.app.answer_error`).
    """

    def __init__(
        self,
        installer: InstallerRoutes,
        policy: AccessPolicy,
        on_error: Callable[[IRequest, Failure], bytes],
    ) -> None:
        self._installer = installer
        self._policy = policy
        self._on_error = on_error

    def call_for(self, head: RequestHead) -> "ColdCall | None":
        """The route call for ``head``, or ``None`` to leave it to Klein."""
        headers = head.headers
        host = headers.get(b"host")
        if (
            host is None
            or b"content-length" in headers
            or b"transfer-encoding" in headers
            or b"expect" in headers
            or b"upgrade" in headers
            or self._policy.reads_need_credentials
            or not plain_host(host)
        ):
            return None
        target = head.uri
        page = PAGE.fullmatch(target)
        if page is not None:
            installer = self._installer
            route = (
                installer.simple_page
                if page.group(1) == b"simple"
                else installer.local_page
            )
            return ColdCall(self, route, (page.group(2).decode(),), 2)
        file = FILE.fullmatch(target)
        if file is None:
            return None
        project, filename = file.groups()
        if project in _DOTS or filename in _DOTS:
            return None
        return ColdCall(
            self, self._installer.package, (project.decode(), filename.decode()), 3
        )


class ColdCall:
    """A request's resource (``render`` is all twisted.web asks of it): its
    route called as the guard and Klein would call it.

    :param segments: how many of the path's segments the route takes (Klein's
        ``segment_count``).
    """

    __slots__ = ("_routes", "_route", "_args", "_segments")

    def __init__(
        self,
        routes: ColdRoutes,
        route: Callable[..., Any],
        args: tuple[str, ...],
        segments: int,
    ) -> None:
        self._routes = routes
        self._route = route
        self._args = args
        self._segments = segments

    def render(self, request: Any) -> Any:
        try:
            self._routes._policy.check_address(request)
        except Exception:
            answer_failure(request, Failure())
            return NOT_DONE_YET
        # As Klein does: the route's segments move to prepath.
        taken = self._segments
        request.prepath.extend(request.postpath[:taken])
        request.postpath = request.postpath[taken:]
        _execute(request, self._route, self._args, self._routes._on_error)
        return NOT_DONE_YET


class _StandIn:
    """What Klein's ``process`` returns once a resource has rendered."""


_STAND_IN = _StandIn()


def _execute(
    request: Any,
    route: Callable[..., Any],
    args: tuple[str, ...],
    on_error: Callable[[IRequest, Failure], bytes],
) -> None:
    """Klein's ``KleinResource.render`` after its match: the route's answer
    rendered or written, its error answered by ``on_error``, the route
    cancelled when the request ends first (the client gone)."""
    finished = [False]

    def ended(_: object) -> None:
        finished[0] = True

    request.notifyFinish().addBoth(ended)
    d = Deferred.fromCoroutine(route(request, *args))
    request.notifyFinish().addErrback(lambda _: d.cancel())

    def process(result: Any) -> Any:
        if IResource.providedBy(result):
            request.render(getChildForRequest(result, request))
            return _STAND_IN
        return result

    def failed(failure: Failure) -> Any:
        if finished[0]:
            if not failure.check(CancelledError):
                legacy_log.err(failure, "Unhandled Error Processing Request.")
            return None
        return process(on_error(request, failure))

    def write_response(result: Any) -> None:
        if result is _STAND_IN:
            return
        if isinstance(result, str):
            result = result.encode("utf-8")
        if isinstance(result, bytes):
            request.write(result)
        if not finished[0]:
            request.finish()

    d.addCallback(process)
    d.addErrback(failed)
    d.addCallback(write_response)
    d.addErrback(legacy_log.err, _why="Unhandled Error writing response")
