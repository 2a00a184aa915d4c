# -*- test-case-name: tests.test_startup -*-
"""The Klein app a site's routes are registered on (:func:`new_app`), with
werkzeug's URL builders compiled when first used.

Imported by :func:`pypicache.web.routing.klein_app` only, when a site's Klein
app is made: Klein and werkzeug (their packages import werkzeug's test client
and development server, Klein's forms, sessions and templates: 54 modules) are
not loaded by a daemon until a request needs Klein's routing.
"""

from typing import Any, Callable

from klein import Klein
from werkzeug.routing import Map, Rule, RuleFactory


class _Rule(Rule):
    """A werkzeug rule whose two URL builders are compiled when a URL is first
    built from it, not when it is added to the map.

    werkzeug compiles them (an AST made and compiled, two per rule) as the
    rule is bound: for this site's 49 routes, most of the time of making the
    site at start-up (:func:`new_app`), for builders nothing here uses
    (pypicache builds no URL from its routes; werkzeug would for a rule's
    ``defaults`` or ``redirect_to``)."""

    def _compile_builder(self, append_unknown: bool = True) -> Callable[..., Any]:
        compile_now = super()._compile_builder
        name = "_build_unknown" if append_unknown else "_build"

        def build_later(rule: "_Rule", *args: Any, **kwargs: Any) -> Any:
            builder = compile_now(append_unknown).__get__(rule, None)
            setattr(rule, name, builder)  # once: the compiled one from now on
            return builder(*args, **kwargs)

        return build_later


class _Map(Map):
    """A werkzeug map whose rules are :class:`_Rule`: Klein makes werkzeug's
    own, which become ours as they are added (same object, same state: a
    subclass that only defers work)."""

    def add(self, rulefactory: RuleFactory) -> None:
        for rule in rulefactory.get_rules(self):
            if type(rule) is Rule:
                rule.__class__ = _Rule
            super().add(rule)


def new_app() -> Klein:
    """A Klein app whose routes compile their URL builders on first use
    (:class:`_Rule`)."""
    app = Klein()
    app._url_map = _Map()  # Klein's own map, which it makes in __init__
    return app
