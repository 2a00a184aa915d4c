# -*- test-case-name: tests.test_cooldown -*-
"""Building the cooldown's rules, installing them in the views, and again on ``SIGHUP``."""

from typing import Any, Callable

import attrs
from twisted.logger import Logger
from twisted.web.resource import IResource

from pypicache.proxy.cooldown import Cooldown, CooldownSettings, replaced, spelled
from pypicache.proxy.firstseen import FirstSeen
from pypicache.proxy.views import Views
from pypicache.storage.interface import IStore
from pypicache.web.app import PypicacheApp, add_error_handlers
from pypicache.web.routes.asof import ClientCutRoutes
from pypicache.web.routes.installer import InstallerRoutes
from pypicache.web.routing import klein_app, register

log = Logger()


class Cooldowns:
    """The cooldown of the daemon's views and of each named upstream's own
    views, as the settings say; :meth:`change` installs new ones.

    :ivar named: each named upstream's views, by name.
    """

    settings: CooldownSettings
    _clock: Any
    _store: IStore
    _first_seen: FirstSeen
    _views: Views
    _routed: Callable[[str], str | None]
    named: dict[str, Views]
    on_held: Callable[[str, str], None] | None

    __slots__ = (
        "settings",
        "_clock",
        "_store",
        "_first_seen",
        "_views",
        "_routed",
        "named",
        "on_held",
        "__weakref__",
    )

    def __init__(
        self,
        settings: CooldownSettings,
        clock: Any,
        store: IStore,
        first_seen: FirstSeen,
        views: Views,
        routed: Callable[[str], str | None],
        named: dict[str, Views] | None = None,
        on_held: Callable[[str, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._store = store
        self._first_seen = first_seen
        self._views = views
        self._routed = routed
        self.named = {} if named is None else named
        self.on_held = on_held

    def rule(self, settings: CooldownSettings, routed: Any = None) -> Cooldown:
        return Cooldown(
            settings,
            self._clock,
            self._first_seen,
            self._store,
            routed or (lambda project: None),
            self.on_held,
        )

    def install(self) -> None:
        """Put the rules the settings make into the views (new rules: every
        page is built again once)."""
        s = self.settings
        self._views.rules = replaced(
            self._views.rules, self.rule(s, self._routed) if s.active else None
        )
        own = dict(s.upstream_ages)
        for name, views in self.named.items():
            settings = attrs.evolve(
                s, min_age=own.get(name, s.min_age), upstream_ages=()
            )
            views.rules = replaced(
                views.rules, self.rule(settings) if settings.active else None
            )
        if s.active:
            log.info(
                "Cooldown: min-age {age} ({mode}; clock {clock}; unknown upload "
                "times: {unknown}; exempt: {exempt}; private uploads: {private})",
                age=spelled(s.min_age) if s.min_age else "none",
                mode=s.mode,
                clock=s.clock,
                unknown=s.unknown,
                exempt=", ".join(s.exempt) or "none",
                private="held back" if s.private else "exempt",
            )

    def change(self, **values: Any) -> bool:
        """Change settings (``SIGHUP``) and install the rules they make."""
        self.settings = attrs.evolve(self.settings, **values)
        self.install()
        return True

    def client_rule(self, min_age: float | None, as_of: float | None) -> Cooldown:
        """One client's filter: the server's clock settings, no exemptions."""
        s = self.settings
        settings = CooldownSettings(
            min_age=min_age or None,
            as_of=as_of,
            unknown=s.unknown,
            clock=s.clock,
            private=True,
        )
        # Not counted in the metrics: those count the server's own cooldown.
        return Cooldown(settings, self._clock, self._first_seen, self._store)

    def client_routes(self, app: PypicacheApp) -> ClientCutRoutes:
        """``/+min-age/...`` and ``/+as-of/...`` over ``app``'s objects."""

        def site_for(views: Views) -> IResource:
            usage = app.capacity.usage if app.capacity is not None else None
            installer = InstallerRoutes(
                app.store, app.mirror, views, usage, run_blocking=app.run_blocking
            )
            installer.page_max_age = app.installer.page_max_age
            klein = klein_app()
            add_error_handlers(klein)
            register(klein, installer)
            return klein.resource()

        return ClientCutRoutes(self._views, self.client_rule, site_for)
