# -*- test-case-name: tests.test_uploads_auth -*-
"""The guard in front of every route: path tricks refused, ``//`` merged, the access policy for reads."""

import re
import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from pypicache.errors import BadRequest, NotFound, PypicacheError

log = Logger()


#: Percent-encoded separators, backslashes, NUL, and encoded dot segments in a path.
_ENCODED_TRICK = re.compile(rb"%(2f|5c|00)|(^|/)(\.|%2e){1,2}(/|$)", re.IGNORECASE)


class Guarded(Resource):
    """Checks the access policy for reads before handing the request on.

    Writes are checked by their routes (``policy.check(request, write=True)``).
    """

    isLeaf = True

    def __init__(self, inner: Any, policy: Any) -> None:
        super().__init__()
        self._inner = inner
        self._policy = policy

    def render(self, request: Any) -> Any:
        write = request.method not in (b"GET", b"HEAD")
        if _ENCODED_TRICK.search(request.path):
            request.write(
                BadRequest("Invalid path: encoded separators, dots or NUL").apply(
                    request
                )
            )
            request.finish()
            return NOT_DONE_YET

        def allowed(_: object) -> None:
            if request.path.startswith(b"/") and b"//" in request.path:
                _merge_slashes(request, write)
                return
            result = self._inner.render(request)
            if result is not NOT_DONE_YET:
                request.write(result)
                request.finish()

        if (request.path == b"/health" and not write) or not (
            self._policy.reads_need_credentials
        ):
            # No credentials to check (and /health is open without them, but
            # only to the networks allowed at all): no Deferred on the hot path.
            try:
                self._policy.check_address(request)
                allowed(None)
            except Exception:
                answer_failure(request, Failure())
            return NOT_DONE_YET
        checked = Deferred.fromCoroutine(self._policy.check(request, write=False))
        checked.addCallback(allowed)
        checked.addErrback(lambda failure: answer_failure(request, failure))
        return NOT_DONE_YET


def relative_location(path: bytes, target: bytes, query: bytes = b"") -> bytes:
    """A relative ``Location`` that takes a client from ``path`` to ``target``.

    Both are absolute paths on this server. The answer climbs to the root
    with ``../`` (never a ``//`` that would name another host) and works
    behind a reverse proxy that serves us under a prefix.
    """
    depth = path.count(b"/") - 1
    location = b"../" * depth + target.lstrip(b"/")
    if not location or b":" in location.split(b"/", 1)[0]:
        location = b"./" + location
    return location + (b"?" + query if query else b"")


def _merge_slashes(request: Any, write: bool) -> None:
    """Answer a path with an empty segment (``//simple/``).

    Reads are redirected (``301``, as for other non-canonical URLs) to the
    path with the slashes merged; writes get a ``404``, as upload URLs never
    redirect (twine takes a redirect for a failure).
    """
    if write:
        refusal = NotFound("No such URL: the path has an empty segment (//)")
        request.write(refusal.apply(request))
    else:
        target = re.sub(rb"/{2,}", b"/", request.path)
        query = request.uri.partition(b"?")[2]
        location = relative_location(request.path, target, query)
        request.setResponseCode(301)
        request.setHeader(b"location", location)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.write(b"Moved to " + location + b"\n")
    request.finish()


def answer_failure(request: Any, failure: Failure) -> None:
    """End a request that failed outside the routes' own error handlers.

    Our errors answer with their status, werkzeug's (a ``Host`` it cannot
    encode, say) with theirs, anything else with a 500 that is logged. A
    request whose answer had begun is aborted, so that the client never takes
    a cut-short body for a whole one.
    """
    error = failure.value
    # werkzeug is imported with the site's Klein app (pypicache.web.kleinapp),
    # not before: until then no error can be one of its own.
    werkzeug = sys.modules.get("werkzeug.exceptions")
    if werkzeug is not None and isinstance(error, werkzeug.BadHost):
        error = BadRequest("Invalid Host header: not a host name that can be encoded")
    elif werkzeug is not None and isinstance(error, werkzeug.HTTPException):
        error = _HTTPError(error.code or 400, error.description or error.name)
    elif not isinstance(error, PypicacheError):
        log.failure("Unexpected error answering {uri}", failure, uri=_uri(request))
        error = PypicacheError("Internal error; the daemon's log has the details.")
    if request.finished or getattr(request, "_disconnected", False):
        return
    if request.startedWriting:
        request.transport.abortConnection()
        return
    request.write(error.apply(request))
    request.finish()


class _HTTPError(PypicacheError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _uri(request: Any) -> str:
    return bytes(request.uri or b"")[:200].decode("latin-1")
