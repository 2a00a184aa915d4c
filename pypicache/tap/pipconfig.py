# -*- test-case-name: tests.test_tap -*-
"""The index URL pip itself uses, read as pip reads it, without importing
pip's command machinery.

pip's ``Configuration`` (``pip._internal.configuration``) imports its
exceptions, which import rich and requests: 0.2 to 0.4 s at every start of
a daemon given no ``--index-url``. This reads the same files, in the same
order and with the same precedence, with :mod:`configparser`, and takes from
pip only what is cheap and says where its files are: its ``appdirs``
(platformdirs) and its built-in default index.
"""

import configparser
import locale
import os
import sys

#: The keys read, the first found wins: pip's install command, then global.
KEYS = ("install.index-url", "global.index-url")


def _normalize(name: str) -> str:
    """A key's name as pip normalizes it (``index_url`` is ``index-url``)."""
    name = name.lower().replace("_", "-")
    return name[2:] if name.startswith("--") else name


def _files(config_file: str | None) -> list[str]:
    """pip's configuration files, lowest precedence first (as pip's
    ``Configuration.iter_config_files`` and its ``OVERRIDE_ORDER``: global,
    user, site, then ``PIP_CONFIG_FILE``)."""
    from pip._internal.utils import appdirs

    windows = sys.platform.startswith("win") or (
        sys.platform == "cli" and os.name == "nt"
    )
    basename = "pip.ini" if windows else "pip.conf"
    files = [os.path.join(path, basename) for path in appdirs.site_config_dirs("pip")]
    if not (config_file and os.path.exists(config_file)):
        files.append(
            os.path.join(
                os.path.expanduser("~"), "pip" if windows else ".pip", basename
            )
        )
        files.append(os.path.join(appdirs.user_config_dir("pip"), basename))
    files.append(os.path.join(sys.prefix, basename))
    if config_file is not None:
        files.append(config_file)
    return files


def configured_index_url() -> str | None:
    """The ``index-url`` pip's configuration files give (``install`` before
    ``global``), or None.

    :raises ImportError: pip is not installed.
    :raises ValueError: a file cannot be read (bad encoding, bad syntax).
    """
    config_file = os.environ.get("PIP_CONFIG_FILE")
    if config_file == os.devnull:
        return None
    values: dict[str, str] = {}
    encoding = locale.getpreferredencoding(False)
    for name in _files(config_file):
        if not os.path.exists(name):
            continue
        parser = configparser.RawConfigParser()
        try:
            parser.read(name, encoding=encoding)
        except UnicodeDecodeError as e:
            raise ValueError(f"{name} contains invalid {encoding} characters") from e
        except configparser.Error as e:
            raise ValueError(str(e)) from e
        for section in parser.sections():
            for key, value in parser.items(section):
                values[f"{section}.{_normalize(key)}"] = value
    for key in KEYS:
        if values.get(key):
            return values[key]
    return None


def default_index_url() -> str:
    """pip's built-in index."""
    from pip._internal.models.index import PyPI

    return str(PyPI.simple_url)
