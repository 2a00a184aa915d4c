# -*- test-case-name: tests.test_page_threads -*-
"""The bodies of the installer API's pages: kept per version, format and
encoding, rendered on the reactor when small and in a thread when large."""

from typing import Callable, Hashable
from weakref import WeakValueDictionary

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from pypicache.concurrency import RunBlocking, SingleFlight
from pypicache.index.model import MetadataOf, ProjectPage
from pypicache.index.simple import JSON_TYPE, render_html_page, render_json_page
from pypicache.proxy.views import View
from pypicache.web.rendered import (
    LEVEL,
    QUICK_LEVEL,
    Form,
    RenderCache,
    gzipped,
    media_of,
    plain_form,
    render_form,
)
from pypicache.web.routes.provenance import with_provenance_urls
from pypicache.web.routing import Body, accepts_gzip, file_urls

log = Logger()


class PageBodies:
    """Mixed into :class:`~.installer.InstallerRoutes` (whose fields these are)."""

    _rendered: RenderCache
    run_blocking: RunBlocking | None
    big_page: int
    _renders: SingleFlight[tuple[Body, Body | None]]
    page_max_age: int
    #: The bodies being compressed again behind their first clients'.
    _behind: "set[Deferred[object]]"
    #: Large pages' first gzipped bodies by slot, until asked for again
    #: (:meth:`_again`); weakly: no longer kept, they are forgotten here too.
    _quick: "WeakValueDictionary[Hashable, Body]"

    def _form(
        self,
        slot: tuple[str, ...],
        version: Hashable,
        accept: bytes | None,
        format_param: bytes | None,
        accept_encoding: bytes | None,
    ) -> Form:
        """Which body of the page ``slot`` at ``version`` these request
        headers (``Accept``, ``?format=``, ``Accept-Encoding``) ask for;
        ``/simple/`` ones carry ``Cache-Control``."""
        max_age = self.page_max_age if slot[0] == "simple" else None
        return Form(
            slot,
            (version, max_age),
            media_of(accept, format_param),
            max_age,
            accepts_gzip(accept_encoding),
        )

    def _body(self, form: Form, render: Callable[[str], bytes]) -> Body:
        """The body of ``form``, rendered here (on the reactor) if not kept.

        :param render: the page in a media type.
        """
        body = self._rendered.get(
            form.key(False), form.version, lambda: plain_form(form, render)
        )
        if form.gzip:
            identity = body
            body = self._rendered.get(
                form.key(True), form.version, lambda: gzipped(identity)
            )
        return body

    async def _body_later(self, form: Form, render: Callable[[str], bytes]) -> Body:
        """The body of ``form``, rendered and compressed in a thread if not
        kept (once, for all the requests that ask meanwhile).

        Made while its clients wait, a gzipped body is compressed at
        :data:`~pypicache.web.rendered.QUICK_LEVEL`; the body kept for the
        requests after is made at :data:`~pypicache.web.rendered.LEVEL`
        behind it once the page is asked for again (:meth:`_again`)."""
        kept = self._rendered.peek(form.key(form.gzip), form.version)
        if kept is not None:
            return self._again(form, kept) if self._quick else kept
        if self.run_blocking is None:
            return self._body(form, render)
        run_blocking = self.run_blocking

        async def made() -> tuple[Body, Body | None]:
            identity = self._rendered.peek(form.key(False), form.version)
            identity, quick = await run_blocking(
                render_form, form, render, identity, QUICK_LEVEL
            )
            # Kept here, for the requests to come, even if every client
            # waiting for it went away meanwhile.
            identity = self._rendered.get(
                form.key(False), form.version, lambda: identity
            )
            if quick is None:
                return identity, None
            zipped = self._rendered.get(form.key(True), form.version, lambda: quick)
            if zipped is quick:
                self._quick[form.key(True)] = quick
            return identity, zipped

        identity, zipped = await self._renders.run(form, made)
        return identity if zipped is None else zipped

    def _again(self, form: Form, kept: Body) -> Body:
        """``kept``, asked for again: if it is a large page's first gzipped
        body, its level :data:`~pypicache.web.rendered.LEVEL` one is made
        behind it now (not beside its first client's install, which asks
        for it once: a cold ``uv`` install's next requests come meanwhile)."""
        key = form.key(True)
        if self._quick.get(key) is kept:
            del self._quick[key]
            identity = self._rendered.peek(form.key(False), form.version)
            if identity is not None and self.run_blocking is not None:
                self._compress_behind(form, identity, kept)
        return kept

    def _compress_behind(self, form: Form, identity: Body, quick: Body) -> None:
        """Compress ``identity`` again at :data:`~pypicache.web.rendered.LEVEL`
        in a thread, and keep it in place of ``quick`` (its form sent to the
        first clients) if that is still kept for this version."""
        assert self.run_blocking is not None
        done = self.run_blocking(gzipped, identity, LEVEL, quick.etag)
        done.addCallback(
            lambda better: self._rendered.swap(
                form.key(True), form.version, quick, better
            )
        )
        done.addErrback(
            lambda failure: log.failure(
                "Could not compress {slot} again", failure, slot=form.slot
            )
        )
        self._behind.add(done)
        done.addBoth(lambda _: self._behind.discard(done))

    async def compressed_behind(self) -> None:
        """Wait until the bodies being compressed again behind their first
        clients' (:meth:`_compress_behind`) are kept."""
        while self._behind:
            await DeferredList(list(self._behind))

    def _project_body(
        self,
        route: str,
        name: str,
        view: View,
        offer: MetadataOf,
        accept: bytes | None,
        format_param: bytes | None,
        accept_encoding: bytes | None,
    ) -> Body | None:
        """The body of a project's page, built only if this version is not
        rendered; ``None`` for a page of :attr:`big_page` files or more not
        rendered yet (:meth:`_send_project_later` renders it in a thread)."""
        form = self._form(
            (route, name), view.key, accept, format_param, accept_encoding
        )
        kept = self._rendered.peek(form.key(form.gzip), form.version)
        if kept is not None:
            return self._again(form, kept) if self._quick else kept
        page = view.page  # built here, on the reactor
        if self.run_blocking is not None and len(page.files) >= self.big_page:
            return None
        return self._body(form, renderer(page, offer))


def renderer(page: ProjectPage, offer: MetadataOf) -> Callable[[str], bytes]:
    """How ``page`` is rendered in a media type (in any thread: ``page`` is
    built already)."""

    def render(media: str) -> bytes:
        shown = with_provenance_urls(page)
        write = render_json_page if media == JSON_TYPE else render_html_page
        url_of = file_urls(shown.name)
        return write(shown, lambda f: url_of(f.filename), offer)

    return render
