# -*- test-case-name: tests.test_config -*-
"""``--config FILE``: every option of the command line, in one TOML file.

The keys are the long names of the options (``page-ttl``, ``allow-from``),
found in the :class:`~twisted.python.usage.Options` itself, so an option
added there is a key here too. A value goes through the option's own
handler, as if it were given on the command line: the same coercion and the
same checks. Flags take ``true`` or ``false``; repeatable options (those
whose value is a list) take an array. An option given on the command line
wins over the file.
"""

import getopt
import tomllib
from typing import Any, Sequence

from twisted.python import usage

#: Options of every ``usage.Options`` that are not settings.
NOT_KEYS = frozenset({"help", "version", "config"})


class ConfigError(usage.UsageError):
    """A bad configuration file: its message names the file and the key."""


def given_on_command_line(options: usage.Options, argv: Sequence[str]) -> set[str]:
    """The long names of the options that ``argv`` gives."""
    try:
        opts, _ = getopt.getopt(list(argv), options.shortOpt, options.longOpt)
    except getopt.error:
        return set()
    names = set()
    for opt, _ in opts:
        name = opt.lstrip("-")
        names.add(options.synonyms.get(name, name))
    return names


def read_config(path: str) -> dict[str, Any]:
    """The table of a TOML file.

    :raises ConfigError: if it cannot be read or is not TOML.
    """
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"--config {path!r} cannot be read: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path!r} is not valid TOML: {e}") from e


def option_kinds(options: usage.Options) -> dict[str, str]:
    """Every key a configuration file may set: ``"flag"``, ``"list"`` or ``"value"``."""
    kinds = {}
    for long_opt in options.longOpt:
        name = long_opt.removesuffix("=")
        if name in NOT_KEYS:
            continue
        if not long_opt.endswith("="):
            kinds[name] = "flag"
        elif isinstance(options.opts.get(name), list):
            kinds[name] = "list"
        else:
            kinds[name] = "value"
    return kinds


def _text(value: Any) -> str | None:
    """A TOML scalar as the command line would give it; ``None`` for tables and arrays."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def apply_config(
    options: usage.Options, path: str, table: dict[str, Any], given: set[str]
) -> None:
    """Set ``options`` from ``table``, but for the options in ``given``.

    :raises ConfigError: for an unknown key, a value of the wrong type or a bad
        value, naming the key.
    """
    kinds = option_kinds(options)
    for key, value in table.items():
        kind = kinds.get(key)
        if kind is None:
            known = ", ".join(sorted(kinds))
            raise ConfigError(f"{path}: unknown key {key!r} (the keys are: {known})")
        if key in given:
            continue
        handler = options._dispatch[key]
        try:
            if kind == "flag":
                if not isinstance(value, bool):
                    raise usage.UsageError("must be true or false")
                options.opts[key] = int(value)
            elif kind == "list":
                if not isinstance(value, list) or any(_text(v) is None for v in value):
                    raise usage.UsageError("must be an array of strings")
                options.opts[key] = []
                for item in value:
                    handler(key, _text(item))
            else:
                text = _text(value)
                if text is None:
                    raise usage.UsageError("must be a string or a number")
                if isinstance(handler, usage.CoerceParameter):
                    try:
                        options.opts[key] = handler.coerce(text)
                    except ValueError as e:
                        raise usage.UsageError(str(e) or "bad value") from e
                else:
                    handler(key, text)
        except usage.UsageError as e:
            raise ConfigError(f"{path}: {key}: {e} (got {value!r})") from e
