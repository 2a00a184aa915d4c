# -*- test-case-name: tests.test_uploads_auth -*-
"""The guard in front of every route: path tricks refused, the access policy for reads."""

import re
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from pypicache.errors import BadRequest, PypicacheError

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
        if request.path == b"/health" and not write:
            # Open without credentials, but only to the networks allowed at all.
            checked = maybeDeferred(self._policy.check_address, request)
        else:
            checked = Deferred.fromCoroutine(self._policy.check(request, write=False))

        def allowed(_: object) -> None:
            result = self._inner.render(request)
            if result is not NOT_DONE_YET:
                request.write(result)
                request.finish()

        def refused(failure: Any) -> None:
            error = failure.value
            if not isinstance(error, PypicacheError):
                log.failure("Access check failed", failure)
                error = PypicacheError(
                    "Internal error; the daemon's log has the details."
                )
            request.write(error.apply(request))
            request.finish()

        checked.addCallbacks(allowed, refused)
        return NOT_DONE_YET
