# -*- test-case-name: tests.test_cooldown_client -*-
"""The index filtered for one client: ``/+min-age/<duration>/...`` and
``/+as-of/<RFC 3339 time>/...``.

Under either prefix the whole installer API (``simple/``, ``local/``, the
files and their ``.metadata``) answers as it does at the root, with one more
rule after the server's own (its cooldown, block list...): files uploaded
less than ``<duration>`` ago, or after ``<time>``, are left out of the pages
and their URLs answer ``404``. The pages' file URLs are relative, so they
stay under the prefix. Nothing needs configuring on the server: this is for
clients that have no ``exclude-newer`` of their own, and for point-in-time
installs.
"""

from collections import OrderedDict
from typing import Callable

import attrs
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from pypicache.errors import BadRequest
from pypicache.proxy.cooldown import (
    Cooldown,
    CooldownSettings,
    parse_duration,
    parse_time,
)
from pypicache.proxy.views import Views
from pypicache.web.routing import route

#: Prefixes kept at once (each its rendered pages); the least recently used go.
MAX_SITES = 64


class _Site:
    views: Views
    rule: Cooldown
    resource: IResource

    __slots__ = ("views", "rule", "resource", "__weakref__")

    def __init__(self, views: Views, rule: Cooldown, resource: IResource) -> None:
        self.views = views
        self.rule = rule
        self.resource = resource


class ClientCutRoutes:
    """The two prefixes; one site per distinct filter, built on first use.

    :ivar rule_for: the client's rule for ``(min_age, as_of)``, with the
        server's clock settings.
    :ivar site_for: the installer site over a :class:`Views`.
    """

    _views: Views
    _rule_for: Callable[[float | None, float | None], Cooldown]
    _site_for: Callable[[Views], IResource]
    _sites: "OrderedDict[CooldownSettings, _Site]"

    __slots__ = ("_views", "_rule_for", "_site_for", "_sites", "__weakref__")

    def __init__(
        self,
        views: Views,
        rule_for: Callable[[float | None, float | None], Cooldown],
        site_for: Callable[[Views], IResource],
        sites: "OrderedDict[CooldownSettings, _Site] | None" = None,
    ) -> None:
        self._views = views
        self._rule_for = rule_for
        self._site_for = site_for
        self._sites = OrderedDict() if sites is None else sites

    def _site(self, rule: Cooldown) -> IResource:
        site = self._sites.get(rule.settings)
        if site is None:
            views = attrs.evolve(self._views, on_cold=None)
            site = self._sites[rule.settings] = _Site(
                views, rule, self._site_for(views)
            )
            while len(self._sites) > MAX_SITES:
                self._sites.popitem(last=False)
        else:
            self._sites.move_to_end(rule.settings)
        # The server's rules as they are now (a reload replaces them), then the client's.
        site.views.rules = self._views.rules.added(site.rule)
        return site.resource

    def _filtered(
        self, prefix: str, parse: Callable[[str], float], value: str, as_of: bool
    ) -> IResource:
        try:
            number = parse(value)
        except ValueError as e:
            raise BadRequest(f"{prefix}: {e}") from None
        rule = self._rule_for(None, number) if as_of else self._rule_for(number, None)
        return self._site(rule)

    @route("/+min-age/<duration>/", branch=True)
    def min_age(self, request: IRequest, duration: str) -> IResource:
        """The index without the files uploaded less than ``duration`` ago."""
        return self._filtered("/+min-age/", parse_duration, duration, False)

    @route("/+as-of/<time>/", branch=True)
    def as_of(self, request: IRequest, time: str) -> IResource:
        """The index as it was at ``time``: no file uploaded after it."""
        return self._filtered("/+as-of/", parse_time, time, True)
