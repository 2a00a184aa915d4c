# -*- test-case-name: tests.test_config -*-
"""``SIGHUP``: read the options again (``--config`` file and command line) and
apply what can change while the daemon runs.

What :data:`APPLY` names changes in place; any other changed option is logged
as needing a restart. The users file is read again in any case. A file that
no longer parses, or values that fail their checks, are logged and the
running configuration stays. With ``--workers``, the twistd process forwards
the signal to every worker (:mod:`pypicache.tap.workers`), which reloads.
"""

import signal
from typing import TYPE_CHECKING, Any, Callable

from twisted.application import service
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.server import Site

from pypicache.tap.options import Options

if TYPE_CHECKING:  # the twistd process of --workers builds none of it
    from pypicache.tap.live import Live

log = Logger()


def _users_file(live: "Live", site: Site, path: Any) -> bool:
    if path is None or live.app.policy.checker is None:
        return False  # turning users on or off changes more: restart
    try:
        live.app.policy.checker = live.users(path)
    except OSError as e:
        log.error("Cannot read {path} ({reason})", path=path, reason=e.strerror)
        return False
    return True


def _setter(target: Callable[["Live"], Any], name: str) -> Callable[..., bool]:
    def apply(live: "Live", site: Site, value: Any) -> bool:
        setattr(target(live), name, value)
        return True

    return apply


def _limit(name: str) -> Callable[..., bool]:
    def apply(live: "Live", site: Site, value: Any) -> bool:
        live.app.capacity.set_limit(name, value)
        return True

    return apply


def _max_upload_size(live: "Live", site: Site, value: int) -> bool:
    from pypicache.web.limits import limited_request_factory

    site.requestFactory = limited_request_factory(value)
    return True


def _policy(live: "Live") -> Any:
    return live.app.policy


def _upstream(live: "Live") -> Any:
    return live.upstream


def _named_upstreams(live: "Live", site: Site, specs: Any) -> bool:
    """The named upstreams' credentials, timeouts and page TTLs; the same
    names and URLs (credentials aside), else a restart."""
    from pypicache.proxy.upstream import split_credentials

    if [s.name for s in specs] != list(live.named):
        return False
    for spec in specs:
        url = split_credentials(spec.url)[0].rstrip("/") + "/"
        if url != live.named[spec.name].upstream.index_url:
            return False
    for spec in specs:
        named = live.named[spec.name]
        named.upstream.use_credentials(spec.url)
        named.upstream.timeout = (
            live.upstream.timeout if spec.timeout is None else spec.timeout
        )
        named.pages.ttl = live.pages.ttl if spec.page_ttl is None else spec.page_ttl
        named.spec = spec
    if live.cooldown is not None:  # their own min-age
        live.cooldown.change(
            upstream_ages=tuple(
                (s.name, s.min_age) for s in specs if s.min_age is not None
            )
        )
    return True


def _following(
    name: str, spec_field: str, target: Callable[[Any], Any]
) -> Callable[..., bool]:
    """Set the default upstream's ``name`` and that of each named upstream
    that has no ``spec_field`` of its own."""

    def apply(live: "Live", site: Site, value: Any) -> bool:
        setattr(target(live), name, value)
        for named in live.named.values():
            if getattr(named.spec, spec_field, None) is None:
                setattr(target(named), name, value)
        return True

    return apply


def _bulk(live: "Live") -> Any:
    return live.app.bulk


def _cooldown(field: str, convert: Callable[[Any], Any] = lambda v: v) -> Any:
    """Change one setting of the cooldown (``min-age...``): new rules at once."""

    def apply(live: "Live", site: Site, value: Any) -> bool:
        if live.cooldown is None:
            return False
        return bool(live.cooldown.change(**{field: convert(value)}))

    return apply


def _block_list(live: "Live", site: Site, entries: Any) -> bool:
    """The block list replaced whole in the rules of the views (the default
    upstream's and each named one's; the entries are checked already)."""
    from pypicache.proxy.blocklist import with_block_list

    for views in (live.app.views, *(n.views for n in live.named.values())):
        if views is not None:
            # Only the block list is replaced: each view keeps its own other
            # rules (a named upstream's cooldown, its withdrawals).
            views.rules = with_block_list(views.rules, entries)
    return True


def _withdrawn(live: "Live", site: Site, mode: str) -> bool:
    """``withdrawn``, for ``/local/`` and each named upstream's."""
    for named in live.named.values():
        if named.withdrawn is not None:
            named.withdrawn.mode = mode
    if live.withdrawn is not None:
        live.withdrawn.mode = mode
    return True


#: How each option that can change while the daemon runs is changed: a
#: function of the live objects, the site and the new value, which returns
#: whether it could (else it needs a restart).
APPLY: dict[str, Callable[["Live", Site, Any], bool]] = {
    "allow-from": _setter(_policy, "allow_from"),
    "trust-proxy": _setter(_policy, "trust_proxy"),
    "read-auth": _setter(_policy, "read_auth"),
    "auth-file": _users_file,
    "index-url": lambda live, site, url: live.upstream.use_credentials(url),
    "page-ttl": _following("ttl", "page_ttl", lambda live: live.pages),
    "page-max-age": _setter(lambda live: live.app.installer, "page_max_age"),
    "timeout": _following("timeout", "timeout", _upstream),
    "page-deadline": _following("page_deadline", "page_deadline", _upstream),
    "min-rate": _following("min_rate", "min_rate", _upstream),
    "max-page-size": _following("max_page_size", "max_page_size", _upstream),
    "max-upload-size": _max_upload_size,
    "bulk-max-lines": _setter(_bulk, "max_lines"),
    "bulk-max-projects": _setter(_bulk, "max_projects"),
    "bulk-max-rounds": _setter(_bulk, "max_rounds"),
    "upstream": _named_upstreams,
    "max-cache-size": _limit("max_size"),
    "evict-unused-after": _limit("unused_after"),
    "min-age": _cooldown("min_age", lambda age: age or None),
    "min-age-unknown": _cooldown("unknown"),
    "min-age-clock": _cooldown("clock"),
    "min-age-mode": _cooldown("mode"),
    "min-age-private": _cooldown("private", bool),
    "min-age-exempt": _cooldown("exempt", tuple),
    "block": _block_list,
    "withdrawn": _withdrawn,
}


def reload(options: Options, live: "Live", site: Site) -> None:
    """Read the options again from ``options.argv`` and apply what changed and
    can change; log what changed and what needs a restart.

    ``options`` keeps the values in force: those applied are updated, so an
    option that needs a restart is reported again at the next reload.
    """
    fresh = Options()
    try:
        fresh.parseOptions(options.argv)
    except usage.UsageError as e:
        log.error(
            "Reloading the configuration failed; the running one stays: {error}",
            error=str(e),
        )
        return
    applied, restart = [], []
    for key, value in fresh.opts.items():
        if value == options.opts.get(key):
            continue
        apply = APPLY.get(key)
        if apply is not None and apply(live, site, value):
            options.opts[key] = value
            applied.append(key)
        else:
            restart.append(key)
    checker = live.app.policy.checker
    if "auth-file" not in applied and checker is not None:
        try:
            checker.load()
        except OSError as e:
            log.error(
                "Cannot read {path} ({reason})",
                path=checker.path.path,
                reason=e.strerror,
            )
    log.info(
        "Configuration reloaded: changed {changed}; needs a restart: {restart}",
        changed=", ".join(sorted(applied)) or "nothing",
        restart=", ".join(sorted(restart)) or "nothing",
        changed_keys=applied,
        restart_keys=restart,
    )


class Reloader(service.Service):
    """Runs ``on_hangup`` (on the reactor thread) at each ``SIGHUP`` while running."""

    def __init__(self, reactor: Any, on_hangup: Callable[[], None]) -> None:
        self._reactor = reactor
        self._on_hangup = on_hangup

    def startService(self) -> None:
        super().startService()
        signal.signal(
            signal.SIGHUP,
            lambda *_: self._reactor.callFromThread(self._on_hangup),
        )

    def stopService(self) -> None:
        super().stopService()
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
