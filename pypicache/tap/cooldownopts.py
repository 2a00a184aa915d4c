# -*- test-case-name: tests.test_cooldown -*-
"""The options of the cooldown: ``--min-age`` and its companions."""

from typing import Any, Callable

from twisted.python import usage

from pypicache.proxy.cooldown import (
    CLOCKS,
    MODES,
    UNKNOWN,
    CooldownSettings,
    parse_duration,
)
from pypicache.tap.values import yes_no


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        text = value.strip().lower()
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return check


class CooldownOptions:
    """A mixin of :class:`~pypicache.tap.options.Options`: the cooldown's options."""

    optParameters: list[list[Any]] = [
        [
            "min-age",
            None,
            None,
            "Offer only files uploaded at least this long ago (7d, 36h, 90m; "
            "0: no cooldown): newer ones are left out of pages and their URLs "
            "answer 404. Applied when answering: nothing stored is filtered.",
            parse_duration,
        ],
        [
            "min-age-unknown",
            None,
            "include",
            "Files with no known upload time: include (offered, logged) or exclude.",
            _one_of(UNKNOWN),
        ],
        [
            "min-age-clock",
            None,
            "upstream",
            "A file's age counts from: upstream (its upload-time), first-seen "
            "(when this server first saw it) or later-of-both.",
            _one_of(CLOCKS),
        ],
        [
            "min-age-mode",
            None,
            "enforce",
            "enforce: hold files back; observe: hide nothing, log and count "
            "what would have been held back.",
            _one_of(MODES),
        ],
        [
            "min-age-private",
            None,
            False,
            "yes: private uploads are held back too (default: no, they are exempt).",
            yes_no,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["min-age-exempt"] = []

    def opt_min_age_exempt(self, glob: str) -> None:
        """A project (glob on normalized names: ruff, my-company-*) the cooldown never holds back (repeatable)."""
        text = glob.strip().lower()
        if not text:
            raise usage.UsageError("--min-age-exempt needs a name or a glob")
        self["min-age-exempt"].append(text)

    def cooldown_settings(self) -> CooldownSettings:
        """The cooldown as the options set it (per-upstream ages included)."""
        return CooldownSettings(
            min_age=self["min-age"] or None,
            upstream_ages=tuple(
                (spec.name, spec.min_age)
                for spec in self["upstream"]
                if getattr(spec, "min_age", None) is not None
            ),
            exempt=tuple(self["min-age-exempt"]),
            unknown=self["min-age-unknown"],
            clock=self["min-age-clock"],
            private=bool(self["min-age-private"]),
            mode=self["min-age-mode"],
        )
