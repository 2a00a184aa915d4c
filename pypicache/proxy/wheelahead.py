# -*- test-case-name: tests.test_wheelahead -*-
"""Wheels fetched once a client has read their ``.metadata``.

uv, pip and poetry read the ``.metadata`` of the wheel their resolver picks,
and download the wheels themselves only once the whole resolution is done.
When a client is answered a wheel's ``.metadata`` for a proxied project,
:class:`WheelsAhead` starts that wheel's download into the cache (through
the mirror's single-flight download, as a client's request would: the
client's own request later finds it stored or joins it under way), so that
the wheels arrive while the resolver is still reading pages.

Bounded: only wheels the cached upstream page says are at most
``max_file`` bytes, at most ``concurrency`` of these downloads under way
(past them none is started: the client fetches the wheel itself), never a
private project, never a file the rules refuse. Never at the clients'
expense: the download starts on the reactor's next turn, and not at all if
that turn comes more than ``max_lag`` late (clients keep the reactor busy).
Failures are only logged (at debug level: the client's own request for the
wheel says what is wrong).
"""

from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pypicache.concurrency import NotReady
from pypicache.errors import PypicacheError
from pypicache.proxy.mirror import Mirror
from pypicache.proxy.prefetch import MAX_LAG
from pypicache.proxy.views import Views

log = Logger()

#: Default largest wheel fetched after its ``.metadata`` (0: none).
DEFAULT_MAX_WHEEL = 0
#: Default downloads of these under way at most.
DEFAULT_CONCURRENCY = 8


@attrs.define
class WheelsAhead:
    """Starts a wheel's download when a client has read its ``.metadata``.

    :ivar max_file: largest wheel fetched, as the cached page gives its size.
    :ivar concurrency: these downloads under way at most.
    :ivar max_lag: seconds late a download may start; later: none.
    :ivar shed: downloads not started for the reactor's lag.
    :ivar started: downloads started.
    """

    _mirror: Mirror
    _views: Views
    _clock: IReactorTime
    max_file: int = DEFAULT_MAX_WHEEL
    concurrency: int = DEFAULT_CONCURRENCY
    max_lag: float = MAX_LAG
    shed: int = 0
    started: int = 0
    #: Downloads under way (for tests and shutdown: each fires when it ends).
    downloads: dict[str, "Deferred[Any]"] = attrs.field(factory=dict)

    def metadata_answered(self, project: str, filename: str) -> None:
        """A client was answered the ``.metadata`` of ``filename``: fetch the
        wheel on the next turn of the reactor, if it fits the bounds."""
        if (
            self.max_file <= 0
            or not filename.endswith(".whl")
            or filename in self.downloads
            or len(self.downloads) >= self.concurrency
        ):
            return
        self._clock.callLater(
            0, self._start_unless_late, project, filename, self._clock.seconds()
        )

    def _start_unless_late(self, project: str, filename: str, scheduled: float) -> None:
        if self._clock.seconds() - scheduled > self.max_lag:
            self.shed += 1
            return
        if filename in self.downloads or len(self.downloads) >= self.concurrency:
            return
        if not self._wanted(project, filename):
            return
        d = Deferred.fromCoroutine(self._download(project, filename))
        if d.called:
            return
        self.started += 1
        self.downloads[filename] = d
        d.addBoth(lambda _: self.downloads.pop(filename, None))

    def _wanted(self, project: str, filename: str) -> bool:
        """Whether the wheel is proxied, not stored nor under way, and listed
        no larger than :attr:`max_file` on the cached page (all known at once,
        else it is not fetched)."""
        if self._mirror.in_flight(filename) is not None:
            return False
        try:
            if self._views.is_private_now(project):
                return False
            if self._views.find_now(project, filename) is not None:
                return False
        except (NotReady, PypicacheError):  # NotFound: refused by the rules
            return False
        cached = self._mirror.pages.cached_now(project)
        info = cached.page.file(filename) if cached is not None else None
        return (
            info is not None
            and info.url is not None
            and info.size is not None
            and info.size <= self.max_file
        )

    async def _download(self, project: str, filename: str) -> None:
        try:
            await self._views.check_upstream(project, filename)
            download = await self._mirror.download(project, filename)
            await download.stored_file()
        except Exception as e:
            log.debug(
                "Fetching {filename} after its .metadata failed: {reason}",
                filename=filename,
                reason=e,
            )
