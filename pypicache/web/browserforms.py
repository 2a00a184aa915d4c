# -*- test-case-name: tests.test_ui -*-
"""What the write routes need for the web interface's HTML forms: their
url-encoded fields, ``_method=DELETE`` for forms (which only ``GET`` and
``POST``), a ``303`` back to the page a form names, and the refusal of forms
posted from another site's page."""

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.web.iweb import IRequest

from pypicache.errors import Forbidden
from pypicache.web.routing import header, redirect

#: Where a form of the web interface may send the browser back to: a page
#: of the interface, relative to the route (see :func:`answer`).
_NEXT = re.compile(r"(\.\./)+\+ui/[A-Za-z0-9._~%/+-]*")


def url_form(request: IRequest) -> dict[str, str]:
    """The fields of an ``application/x-www-form-urlencoded`` body (a form of
    the web interface, or ``curl -d``); ``{}`` for any other body."""
    if not (header(request, b"content-type") or "").startswith(
        "application/x-www-form-urlencoded"
    ):
        return {}
    request.content.seek(0)
    fields = parse_qs(request.content.read(64 * 1024).decode("utf-8", "replace"))
    return {k: v[0] for k, v in fields.items()}


def refuse_cross_site(request: IRequest) -> None:
    """Refuse a write that a browser sends from another site's page (a form
    posted there, with this browser's credentials or from this machine).

    :raises Forbidden: if ``Sec-Fetch-Site`` says so, or ``Origin`` names
        another host than ``Host`` (or ``X-Forwarded-Host``).
    """
    site = header(request, b"sec-fetch-site")
    origin = header(request, b"origin")
    # A page cannot set X-Forwarded-Host on a form it posts: a proxy that
    # rewrites Host says there which host the browser saw.
    hosts = {
        urlsplit("//" + (header(request, name) or "").split(",")[0].strip()).hostname
        for name in (b"host", b"x-forwarded-host")
    }
    if site in ("cross-site", "same-site") or (
        origin is not None and urlsplit(origin).hostname not in hosts - {None}
    ):
        raise Forbidden("Writes from another site's page are refused")


def answer(request: IRequest, fields: dict[str, str]) -> Any:
    """``204``, or for a form of the web interface (a ``next`` field) ``303``
    back to its page."""
    target = fields.get("next")
    if target is not None and _NEXT.fullmatch(target):
        redirect(request, target)
        request.setResponseCode(303)
        return b""
    request.setResponseCode(204)
    return b""
