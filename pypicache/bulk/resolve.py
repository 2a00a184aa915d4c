# -*- test-case-name: tests.test_bulk_resolve -*-
"""Resolving requirements for one target with resolvelib (synchronous, run in a thread).

:class:`Provider` is a resolvelib provider over a :class:`Source` (pages and
core metadata); :func:`resolve` runs resolvelib and, when some requirements
cannot be satisfied, drops the requirements that led to the conflict and
resolves the rest again. Choosing versions and files is in
:mod:`pypicache.bulk.candidates`, reading core metadata in
:mod:`pypicache.bulk.metadata`.
"""

from typing import Any, Iterable, Mapping, Sequence

import attrs
from resolvelib import BaseReporter, Resolver
from resolvelib.resolvers import ResolutionImpossible, ResolutionTooDeep
from twisted.logger import Logger

from pypicache.bulk.candidates import choose_versions
from pypicache.bulk.nodes import Candidate, NeedsPython, Source, Wanted
from pypicache.bulk.provider import Provider
from pypicache.bulk.targets import Target

log = Logger()


@attrs.frozen
class Resolution:
    """The outcome for one target.

    :ivar pins: project to the chosen candidate (base projects, no extras).
    :ivar unresolved: origin of each top-level requirement left out, to why.
    """

    pins: Mapping[str, Candidate]
    unresolved: Mapping[int, str]
    notes: Mapping[str, str]


def describe_conflict(causes: Iterable[Any], provider: Provider) -> str:
    """A one-line reason from resolvelib's causes."""
    parts: list[str] = []
    for cause in causes:
        requirement, parent = cause.requirement, cause.parent
        text = str(requirement)
        if parent is not None:
            text += f" (required by {parent})"
        elif isinstance(requirement, Wanted) and requirement.origin is not None:
            text += " (requested)"
        if isinstance(requirement, NeedsPython):
            text += f", but the target is Python {provider.target.python_version}"
        elif isinstance(requirement, Wanted) and requirement.name in provider.problems:
            text += f": {provider.problems[requirement.name]}"
        if text not in parts:
            parts.append(text)
    return "no version satisfies " + "; ".join(parts)


def unsatisfiable(provider: Provider, wanted: Sequence[Wanted]) -> dict[int, str]:
    """The top-level requirements that no version satisfies even on their own.

    They are set aside before resolving, each with the reason resolvelib
    would give, so that N unknown names cost N look-ups, not N resolutions.
    """
    found: dict[int, str] = {}
    for w in wanted:
        if w.origin is None or w.origin in found:
            continue
        matches = choose_versions(
            provider.releases(w.name),
            provider.target,
            w.specifier,
            pre=provider.pre,
            hashes=w.hashes,
        )
        if not matches:
            reason = f"no version satisfies {w} (requested)"
            if w.name in provider.problems:
                reason += f": {provider.problems[w.name]}"
            found[w.origin] = reason
    return found


def resolve(
    source: Source,
    target: Target,
    wanted: Sequence[Wanted],
    *,
    pre: bool = False,
    deps: bool = True,
    max_rounds: int = 20000,
) -> Resolution:
    """Resolve ``wanted`` (top-level requirements with origins) for ``target`` (blocking).

    When no solution exists, the top-level requirements that led to the
    conflict are set aside with the reason and the rest is resolved again, so
    one bad line does not keep the others from being cached.
    """
    notes: dict[str, str] = {}
    unresolved = unsatisfiable(Provider(source, target, pre=pre, deps=deps), wanted)
    remaining = [w for w in wanted if w.origin not in unresolved]
    while remaining:
        provider = Provider(source, target, pre=pre, deps=deps)
        for w in remaining:
            if w.origin is not None:
                provider.roots[w.key].add(w.origin)
        try:
            result = Resolver(provider, BaseReporter()).resolve(
                remaining, max_rounds=max_rounds
            )
        except ResolutionImpossible as e:
            notes.update(provider.notes)
            reason = describe_conflict(e.causes, provider)
            culprits: set[int] = set()
            for cause in e.causes:
                requirement = cause.requirement
                if (
                    cause.parent is None
                    and isinstance(requirement, Wanted)
                    and requirement.origin is not None
                ):
                    culprits.add(requirement.origin)
                elif cause.parent is not None:
                    culprits |= provider.roots.get(cause.parent.key, set())
                culprits |= provider.roots.get(requirement.key, set())
            if not culprits:
                culprits = {w.origin for w in remaining if w.origin is not None}
            for origin in culprits:
                unresolved.setdefault(origin, reason)
            left = [w for w in remaining if w.origin not in culprits]
            if len(left) == len(remaining):
                break
            remaining = left
            continue
        except ResolutionTooDeep as e:
            for w in remaining:
                if w.origin is not None:
                    unresolved.setdefault(
                        w.origin, f"resolution gave up after {e.round_count} rounds"
                    )
            break
        notes.update(provider.notes)
        pins = {
            c.name: c
            for key, c in result.mapping.items()
            if isinstance(c, Candidate) and not c.extras
        }
        return Resolution(pins, unresolved, notes)
    return Resolution({}, unresolved, notes)
