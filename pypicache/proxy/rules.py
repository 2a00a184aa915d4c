# -*- test-case-name: tests.test_rules -*-
"""What the team has decided may be installed: rules applied to pages and files
when they are served, never to what is stored.

A rule (a cooldown, a block list, local yanks, upstream withdrawals, project
status) sees every project page :class:`~pypicache.proxy.views.Views` builds
and every file it is asked for. :class:`Rules` chains them. Each rule says
with :meth:`Rule.version` when its answer for a project may have changed (a
reload, a new yank, time passing a cooldown): that version is part of the
view's key, so rendered pages (and the fast lane's answers) are kept exactly
as long as they are right.
"""

from typing import Any, Hashable, Protocol

import attrs
from twisted.internet.defer import Deferred, gatherResults

from pypicache.index.model import DistFile, ProjectPage

#: Which view a page is built for: ``"simple"`` (the upstream's page merged
#: with the disk), ``"private"`` (a private project's ``/simple/`` page) or
#: ``"local"`` (the disk alone).
Area = str


class Rule(Protocol):
    """One decision about what may be served."""

    def version(self, area: Area, project: str) -> Hashable:
        """A value that changes whenever :meth:`page` or :meth:`refusal` may
        answer otherwise for ``project`` (``None`` for a rule that never changes)."""

    def page(self, area: Area, project: str, page: ProjectPage) -> ProjectPage:
        """``page`` as this rule lets it be served (the same object if unchanged)."""

    def refusal(self, project: str, filename: str, info: DistFile | None) -> str | None:
        """Why the file must answer ``404`` (a reason for people), or ``None``.

        :param info: what the stored file or the cached page says of the file,
            if anything is known.
        """


@attrs.frozen
class Rules:
    """Rules applied in order; no rules cost nothing."""

    rules: tuple[Rule, ...] = ()
    #: Read once (asked on every file request): whether a rule may refuse
    #: files, and the rules' ``ready`` methods.
    _refuses: bool = attrs.field(init=False, eq=False, repr=False)
    _readies: tuple[Any, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        refuses = any(getattr(rule, "refuses", True) for rule in self.rules)
        readies = tuple(
            ready
            for ready in (getattr(rule, "ready", None) for rule in self.rules)
            if ready is not None
        )
        object.__setattr__(self, "_refuses", refuses)
        object.__setattr__(self, "_readies", readies)

    def __bool__(self) -> bool:
        """Whether a rule may refuse files (a rule that never does, such as
        local yanks, says so with a class attribute ``refuses = False``), so
        that files are checked only then."""
        return self._refuses

    def version(self, area: Area, project: str) -> Hashable:
        """The rules' versions for ``project`` together (``()`` with no rules)."""
        return tuple(rule.version(area, project) for rule in self.rules)

    def page(self, area: Area, project: str, page: ProjectPage) -> ProjectPage:
        """``page`` as every rule lets it be served."""
        for rule in self.rules:
            page = rule.page(area, project, page)
        return page

    def refusal(self, project: str, filename: str, info: DistFile | None) -> str | None:
        """The first rule's reason to refuse the file, or ``None``."""
        for rule in self.rules:
            reason = rule.refusal(project, filename, info)
            if reason is not None:
                return reason
        return None

    def ready(self, area: Area, project: str) -> "Deferred[object] | None":
        """``None`` if every rule answers for ``project`` as things are now;
        else what to wait for first. A rule that reads shared state (the
        team's, in a bucket: :mod:`pypicache.storage.shared`) has a
        ``ready(area, project)`` method giving the revalidation of its view,
        so that a change made through another daemon applies within the
        store's ``state_max_age``. ``area`` is a page's, or ``"file"`` for a
        file's :meth:`refusal`."""
        waits = None
        for ready in self._readies:
            d = ready(area, project)
            if d is not None:
                waits = [d] if waits is None else waits + [d]
        if waits is None:
            return None
        return waits[0] if len(waits) == 1 else gatherResults(waits)

    def hidden(self) -> frozenset[str]:
        """Projects left out of the project lists (``/simple/``, ``/local/``):
        those a rule with a ``hidden()`` method hides whole (the block list's)."""
        found: frozenset[str] = frozenset()
        for rule in self.rules:
            hidden = getattr(rule, "hidden", None)
            if hidden is not None:
                found |= hidden()
        return found

    def added(self, rule: Rule) -> "Rules":
        """These rules followed by ``rule``."""
        return Rules(self.rules + (rule,))
