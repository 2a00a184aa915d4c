# -*- test-case-name: tests.test_config -*-
"""``--config FILE``: every option of the command line, in one TOML file.

The keys are the long names of the options (``page-ttl``, ``allow-from``),
found in the :class:`~twisted.python.usage.Options` itself, so an option
added there is a key here too. A value goes through the option's own
handler, as if it were given on the command line: the same coercion and the
same checks. Flags take ``true`` or ``false``; repeatable options (those
whose value is a list) take an array. Two are tables: ``[upstreams.NAME]``
(``url``, and optionally ``timeout``, ``page-ttl`` and ``min-age``) for ``--upstream``,
and ``route = { GLOB = NAME }`` for ``--route``. An option given on the command line
wins over the file.
"""

import getopt
from typing import Any, Sequence

from twisted.python import usage

from pypicache.proxy.cooldown import parse_duration
from pypicache.proxy.upstreams import UpstreamSpec, check_name, check_url

#: Options of every ``usage.Options`` that are not settings.
NOT_KEYS = frozenset({"help", "version", "config"})

#: Repeatable options written as a TOML table, by option: their key in the file.
TABLES = {"upstream": "upstreams", "route": "route"}

#: The option of each table key.
OPTION_OF = {key: option for option, key in TABLES.items()}

#: What an ``[upstreams.NAME]`` table may set, and whether it must.
UPSTREAM_KEYS = {"url": True, "timeout": False, "page-ttl": False, "min-age": False}


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
    import tomllib  # only with --config (its regular expressions: start-up time)

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
        if name in TABLES:
            kinds[TABLES[name]] = "table"
        elif not long_opt.endswith("="):
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
        if OPTION_OF.get(key, key) in given:
            continue
        try:
            if kind == "table":
                if not isinstance(value, dict):
                    raise usage.UsageError("must be a table")
                if key == "route":
                    _routes(options, value)
                else:
                    _upstreams(options, path, value)
                continue
            handler = options._dispatch[key]
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
        except ConfigError:
            raise
        except usage.UsageError as e:
            raise ConfigError(f"{path}: {key}: {e} (got {value!r})") from e


def _routes(options: usage.Options, table: dict[str, Any]) -> None:
    """``route = { GLOB = NAME }``, as ``--route GLOB=NAME`` each."""
    options.opts["route"] = []
    for glob, name in table.items():
        if not isinstance(name, str):
            raise usage.UsageError(f"{glob!r} must name an upstream (a string)")
        options._dispatch["route"]("route", f"{glob}={name}")


def _upstreams(options: usage.Options, path: str, table: dict[str, Any]) -> None:
    """``[upstreams.NAME]`` tables: ``url``, optionally ``timeout``, ``page-ttl``, ``min-age``."""
    specs = []
    for name, settings in table.items():
        where = f"upstreams.{name}"
        try:
            if not isinstance(settings, dict):
                raise ValueError("must be a table")
            check_name(name)
            unknown = set(settings) - set(UPSTREAM_KEYS)
            missing = [
                k for k, needed in UPSTREAM_KEYS.items() if needed and k not in settings
            ]
            if unknown or missing:
                raise ValueError(
                    f"unknown keys {sorted(unknown)}"
                    if unknown
                    else f"needs {missing[0]}"
                )
            url = settings["url"]
            if not isinstance(url, str):
                raise ValueError("url must be a string")
            numbers = {}
            for key in ("timeout", "page-ttl"):
                value = settings.get(key)
                if value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"{key} must be a number")
                if value < 0 or (key == "timeout" and value == 0):
                    raise ValueError(f"{key} must be positive")
                numbers[key] = float(value)
            min_age = settings.get("min-age")
            if min_age is not None:
                if not isinstance(min_age, str):
                    raise ValueError('min-age must be a string ("7d")')
                min_age = parse_duration(min_age)
            specs.append(
                UpstreamSpec(
                    name,
                    check_url(url),
                    numbers.get("timeout"),
                    numbers.get("page-ttl"),
                    min_age,
                )
            )
        except ValueError as e:
            raise ConfigError(f"{path}: {where}: {e}") from e
    options.opts["upstream"] = specs
