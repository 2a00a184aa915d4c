"""The values of options: sizes, rates, durations, yes/no, and the index URL
pip itself uses (the default upstream)."""

import os

from twisted.python import usage


def pip_index_url() -> str:
    """The index URL pip itself uses, read now.

    ``PIP_INDEX_URL``, then pip's ``install.index-url``, then ``global.index-url``,
    then pip's built-in default. Never ``extra-index-url`` or ``find-links``.

    :raises usage.UsageError: if pip cannot be consulted.
    """
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"].split()[0]
    from pypicache.tap.pipconfig import configured_index_url, default_index_url

    try:
        value = configured_index_url() or default_index_url()
    except ImportError as e:
        raise usage.UsageError(
            "pip is not importable here to read its index URL: give --index-url"
        ) from e
    except Exception as e:
        raise usage.UsageError(
            f"Cannot read pip's configuration ({e}): give --index-url"
        ) from e
    return value.split()[0]


def size(value: str) -> int:
    """A size in bytes, with an optional K, M or G (binary) suffix."""
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    factor = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
    number = int(float(text[:-1] if factor > 1 else text) * factor)
    if number <= 0:
        raise ValueError("must be positive")
    return number


def rate(value: str) -> int:
    """A rate in bytes per second: 0, or a size."""
    return 0 if value.strip() in ("0", "0B") else size(value)


def duration(value: str) -> float:
    """A duration in seconds, with an optional s, m, h or d suffix (``90d``)."""
    text = value.strip().lower()
    factor = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(text[-1:], 1)
    number = float(text[:-1] if not text[-1:].isdigit() else text) * factor
    if number <= 0:
        raise ValueError("must be positive")
    return number


def yes_no(value: str) -> bool:
    text = value.strip().lower()
    if text in ("yes", "true", "on", "1"):
        return True
    if text in ("no", "false", "off", "0"):
        return False
    raise ValueError("must be yes or no")


def positive(value: str) -> float:
    number = float(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def withdrawn_mode(value: str) -> str:
    """``hide`` or ``keep`` (``--withdrawn``)."""
    mode = value.strip().lower()
    if mode not in ("hide", "keep"):
        raise ValueError(f"must be hide or keep, not {value!r}")
    return mode
