# -*- test-case-name: tests.test_proxy -*-
"""A project page as :class:`~pypicache.proxy.views.Views` give it."""

from typing import Callable, Hashable, Protocol

import attrs

from pypicache.index.model import ProjectPage
from pypicache.storage.records import StoredFile


@attrs.define
class View:
    """A project page as it is now: a key naming this version of it, and the page.

    The page is built on first use: a caller that already holds what it makes
    of this version (a rendered body) never builds it.
    """

    key: Hashable
    _build: Callable[[], ProjectPage]
    _page: ProjectPage | None = None
    #: The stored files the page is built from, where it is built from them
    #: alone (``/local/``): callers that need the records reuse this list.
    stored: list[StoredFile] | None = attrs.field(default=None, kw_only=True)
    #: The upstream page fetched for this view, not yet told to
    #: :attr:`Views.on_cold` (see :meth:`Views.simple`).
    fetched: ProjectPage | None = attrs.field(default=None, kw_only=True)
    #: Lets the write of the page fetched for this view start (see
    #: :meth:`Views.simple`), if it waits for :meth:`Views.announce`.
    written: Callable[[], None] | None = attrs.field(default=None, kw_only=True)

    @property
    def page(self) -> ProjectPage:
        if self._page is None:
            self._page = self._build()
        return self._page


class ColdPages(Protocol):
    def page_fetched(self, project: str, page: ProjectPage) -> None:
        """``page`` has just been fetched from upstream for a client."""
