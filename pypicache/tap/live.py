"""What :func:`~pypicache.tap.build.build_live` hands to the daemon: the
objects a ``SIGHUP`` reload changes, and the refresh marks shared by workers."""

from typing import Any, Callable

from twisted.logger import Logger
from twisted.python.filepath import FilePath

from pypicache.proxy.pages import ProjectPages
from pypicache.proxy.upstream import Upstream
from pypicache.proxy.withdrawals import WithdrawnRule
from pypicache.storage.marks import Marks
from pypicache.tap.named import Named
from pypicache.web.app import PypicacheApp
from pypicache.web.htpasswd import Htpasswd

log = Logger()


class Live:
    """The objects whose settings can change while the daemon runs (``SIGHUP``)."""

    app: PypicacheApp
    upstream: Upstream
    pages: ProjectPages
    #: An ``Htpasswd`` for another users file.
    users: Callable[[str], Htpasswd]
    #: The named upstreams, by name.
    named: dict[str, Named]
    #: The cooldown's rules (``min-age``), changed on reload.
    cooldown: Any
    #: ``withdrawn = "hide" | "keep"`` (its ``mode``).
    withdrawn: WithdrawnRule | None

    __slots__ = (
        "app",
        "upstream",
        "pages",
        "users",
        "named",
        "cooldown",
        "withdrawn",
        "__weakref__",
    )

    def __init__(
        self,
        app: PypicacheApp,
        upstream: Upstream,
        pages: ProjectPages,
        users: Callable[[str], Htpasswd],
        named: dict[str, Named] | None = None,
        cooldown: Any = None,
        withdrawn: WithdrawnRule | None = None,
    ) -> None:
        self.app = app
        self.upstream = upstream
        self.pages = pages
        self.users = users
        self.named = {} if named is None else named
        self.cooldown = cooldown
        self.withdrawn = withdrawn


def _open_marks(root: FilePath) -> Marks | None:
    """The refresh marks shared with the other workers (``None``, logged, if
    the cache folder cannot map them: a refresh then reaches this process only)."""
    try:
        return Marks(root)
    except (OSError, ValueError) as e:
        log.warn("No refresh marks in {root} ({reason})", root=root.path, reason=e)
        return None
