# -*- test-case-name: tests.test_fastlane -*-
"""The installer API's answers ready at once, for ``web/fastlane`` (no
request object): what :class:`~.installer.InstallerRoutes` would send, when
it needs no waiting."""

from typing import Any

from pypicache.concurrency import NotReady, result_now
from pypicache.index.model import DistFile
from pypicache.index.names import METADATA_SUFFIX, check_filename
from pypicache.storage.records import Opened, StoredFile
from pypicache.web.routing import Body, project_of

#: What a page is asked with: area, name, ``Accept``, ``Accept-Encoding``.
_Asked = tuple[str, str, bytes | None, bytes | None]


class ReadyAnswers:
    """Mixed into :class:`~.installer.InstallerRoutes` (whose ``_views``,
    ``_store``, ``_project_body`` and ``record_use`` these use)."""

    _views: Any
    _store: Any

    #: The reactor's split turns (:class:`~pypicache.web.turns.Turns`), set
    #: where the site is made; ``None``: every page is looked up per request.
    turns: Any = None
    #: The page bodies :meth:`page_ready` found in the first part of the turn
    #: :attr:`_turn` (the ``polls`` of :attr:`turns` when it began); made per
    #: instance by the first such call (no turn is numbered -1).
    _turn_pages: dict[_Asked, Body]
    _turn = -1

    def page_ready(
        self,
        area: str,
        name: str,
        accept: bytes | None,
        accept_encoding: bytes | None,
    ) -> Body | None:
        """The body of the page ``/<area>/<name>/`` (``name`` normalized, no
        query) if it needs no waiting, as :meth:`simple_page_now` and
        :meth:`local_page` would send it; ``None`` otherwise.

        Looked up once per turn of the reactor: in the first part of a split
        turn (:mod:`~pypicache.web.turns`), where only clients' connections
        are read and what the lane does not answer at once waits for the
        turn's second part, the same page asked for again (same ``Accept``
        and ``Accept-Encoding``) gets the body found for the first request of
        the turn. What could change a page there (a thread's result, an
        upstream's answer, a timer) runs in the second part or between turns,
        and a change made in the first part has not been answered yet, so no
        client can tell these requests from ones read a moment earlier; the
        next turn looks again. The checks per request (host, access policy,
        ``If-None-Match``, method) are the caller's, as before.

        :raises NotFound: where those would answer 404.
        """
        key = (area, name, accept, accept_encoding)
        turns = self.turns
        if turns is None or turns.now:
            return self._page_now(key)
        if turns.polls != self._turn:
            self._turn = turns.polls
            self._turn_pages = {}
        body = self._turn_pages.get(key)
        if body is None:
            body = self._page_now(key)
            if body is not None:
                self._turn_pages[key] = body
        return body

    def _page_now(self, asked: _Asked) -> Body | None:
        """:meth:`page_ready` of ``asked`` (its arguments), looked up now."""
        area, name, accept, accept_encoding = asked
        if area == "simple":
            view = self._views.simple_now(name)
            if view is None:
                return None
            offer = self._views.offered
        else:
            try:
                view = self._views.local_now(name)
            except NotReady:
                return None
            offer = DistFile.recorded_metadata
        return self._project_body(
            area, name, view, offer, accept, None, accept_encoding
        )

    def stored_ready(
        self, project: str, filename: str
    ) -> tuple[StoredFile, Opened] | None:
        """The stored archive :meth:`package_now` would serve from a local
        file, and that file, or ``None``.

        :raises PypicacheError: where :meth:`package_now` would answer an error.
        """
        check_filename(filename)
        if filename.endswith(METADATA_SUFFIX):
            return None
        try:
            found = self._views.stored_now(project_of(project, filename), filename)
        except NotReady:
            return None
        if found is None or found[1].url is not None:
            return None  # not stored, or a redirect: twisted.web answers it
        self.record_use(found[0])
        return found  # type: ignore[no-any-return]

    def metadata_ready(self, project: str, filename: str) -> bytes | None:
        """The core metadata ``/packages/<project>/<filename>`` (a ``.metadata``)
        answers with if it is on disk, else ``None``.

        :raises PypicacheError: where :meth:`package_now` would answer an error.
        """
        check_filename(filename)
        if not filename.endswith(METADATA_SUFFIX):
            return None
        archive = filename[: -len(METADATA_SUFFIX)]
        name = project_of(project, archive)
        try:
            if self._views.rules:
                self._views.check_now(name, archive)
            opened = result_now(self._store.open_metadata(name, archive))
        except NotReady:
            return None
        if opened is None or opened.url is not None:
            return None
        content = opened.path.getContent()
        if self._views.on_metadata is not None:
            self._views.on_metadata(name, archive)
        return content  # type: ignore[no-any-return]
