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
(the wheels read past them wait their turn, at most ``max_pending``, the
oldest dropped first), never a private project, never a file the rules
refuse. Never at the clients' expense: the download starts on the reactor's
next turn, and not at all if that turn comes more than ``max_lag`` late
(clients keep the reactor busy; the waiting ones are then dropped too).
Failures are only logged (at debug level: the client's own request for the
wheel says what is wrong).
"""

from collections import OrderedDict
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pypicache.proxy.mirror import Mirror
from pypicache.proxy.prefetch import MAX_LAG
from pypicache.proxy.views import Views

log = Logger()

#: Default largest wheel fetched after its ``.metadata`` (0: none).
DEFAULT_MAX_WHEEL = 0
#: Default downloads of these under way at most.
DEFAULT_CONCURRENCY = 8
#: Wheels waiting for one of those downloads to end, at most (then the
#: oldest is dropped: its client will have asked for it by then).
DEFAULT_PENDING = 256


@attrs.define
class WheelsAhead:
    """Starts a wheel's download when a client has read its ``.metadata``.

    :ivar max_file: largest wheel fetched, as the cached page gives its size.
    :ivar concurrency: these downloads under way at most.
    :ivar max_lag: seconds late a download may start; later: none.
    :ivar shed: downloads not started for the reactor's lag.
    :ivar started: downloads started (not counting wheels found stored).
    """

    _mirror: Mirror
    _views: Views
    _clock: IReactorTime
    max_file: int = DEFAULT_MAX_WHEEL
    concurrency: int = DEFAULT_CONCURRENCY
    max_lag: float = MAX_LAG
    shed: int = 0
    started: int = 0
    max_pending: int = DEFAULT_PENDING
    #: Downloads under way (for tests and shutdown: each fires when it ends).
    downloads: dict[str, "Deferred[Any]"] = attrs.field(factory=dict)
    #: Wheels waiting for one of those to end (file name: project), oldest first.
    _pending: "OrderedDict[str, str]" = attrs.field(factory=OrderedDict)

    def __call__(self, project: str, filename: str) -> None:
        """A client was answered the ``.metadata`` of ``filename``: fetch the
        wheel from the reactor's next turn on, if it fits the bounds."""
        if (
            self.max_file <= 0
            or not filename.endswith(".whl")
            or filename in self.downloads
            or filename in self._pending
        ):
            return
        self._clock.callLater(
            0, self._consider, project, filename, self._clock.seconds()
        )

    def _consider(self, project: str, filename: str, scheduled: float) -> None:
        """Start the download, or queue it behind the :attr:`concurrency`
        under way; none if this call comes more than :attr:`max_lag` late."""
        if self._late(scheduled) or not self._wanted(project, filename):
            return
        if len(self.downloads) < self.concurrency:
            self._start(project, filename)
            return
        self._pending[filename] = project
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)

    def _late(self, scheduled: float) -> bool:
        """Whether a call scheduled at ``scheduled`` for the next turn comes
        more than :attr:`max_lag` late: the queued downloads are dropped."""
        if self._clock.seconds() - scheduled <= self.max_lag:
            return False
        self.shed += 1 + len(self._pending)
        self._pending.clear()
        return True

    def _start(self, project: str, filename: str) -> None:
        d = Deferred.fromCoroutine(self._download(project, filename))
        if d.called:
            return
        self.downloads[filename] = d
        d.addBoth(self._ended, filename)

    def _ended(self, result: object, filename: str) -> None:
        """A download ended: the next queued ones, on the reactor's next turn."""
        del self.downloads[filename]
        if self._pending:
            self._clock.callLater(0, self._next, self._clock.seconds())

    def _next(self, scheduled: float) -> None:
        if self._late(scheduled):
            return
        while self._pending and len(self.downloads) < self.concurrency:
            filename, project = self._pending.popitem(last=False)
            if self._wanted(project, filename):
                self._start(project, filename)

    def _wanted(self, project: str, filename: str) -> bool:
        """Whether the wheel is not under way, and listed no larger than
        :attr:`max_file` on the cached upstream page (whether it is stored,
        or private, is asked when its turn comes)."""
        if self._mirror.in_flight(filename) is not None:
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
        """Download and store the wheel, unless the project is private or the
        wheel stored, under way, or refused by the rules."""
        try:
            if await self._views.is_private(project):
                return
            if await self._views.find(project, filename) is not None:
                return
            if self._mirror.in_flight(filename) is not None:
                return
            await self._views.check_upstream(project, filename)
            self.started += 1
            download = await self._mirror.download(project, filename)
            await download.stored_file()
        except Exception as e:
            log.debug(
                "Fetching {filename} after its .metadata failed: {reason}",
                filename=filename,
                reason=e,
            )
