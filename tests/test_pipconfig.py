"""The default upstream read from pip's configuration as pip reads it
(``pypicache/tap/pipconfig.py``), without importing pip's ``Configuration``."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pypicache.tap import pip_index_url

ROOT = Path(__file__).resolve().parent.parent


def pips_own() -> str:
    """The index URL pip's own ``Configuration`` gives (as the daemon used to read it)."""
    from pip._internal.configuration import Configuration
    from pip._internal.models.index import PyPI

    configuration = Configuration(isolated=False)
    configuration.load()
    for key in ("install.index-url", "global.index-url"):
        try:
            value = configuration.get_value(key)
        except Exception:
            continue
        if value:
            return str(value).split()[0]
    return PyPI.simple_url


@pytest.fixture
def home(monkeypatch, tmp_path):
    """An empty home and XDG folders, no PIP_* variables."""
    for key in list(os.environ):
        if key.startswith("PIP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "xdg"))
    (tmp_path / "home").mkdir()
    return tmp_path


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


CASES = {
    "nothing": {},
    "user file": {
        "home/.config/pip/pip.conf": "[global]\nindex-url = http://user.invalid/s/\n"
    },
    "legacy user file, overridden by the new one": {
        "home/.pip/pip.conf": "[global]\nindex-url = http://legacy.invalid/s/\n",
        "home/.config/pip/pip.conf": "[global]\nindex_url = http://new.invalid/s/\n",
    },
    "legacy user file alone": {
        "home/.pip/pip.conf": "[install]\nindex-url = http://legacy.invalid/s/ http://x.invalid/\n",
    },
    "site-wide under the user's install section": {
        "xdg/pip/pip.conf": "[install]\nindex-url = http://site.invalid/s/\n",
        "home/.config/pip/pip.conf": "[global]\nindex-url = http://user.invalid/s/\n",
    },
    "PIP_CONFIG_FILE over the user's": {
        "env.conf": "[global]\nindex-url = http://env.invalid/s/\n",
        "home/.config/pip/pip.conf": "[install]\nindex-url = http://user.invalid/s/\n",
    },
    "PIP_CONFIG_FILE missing: the user's is read": {
        "missing.conf": None,
        "home/.config/pip/pip.conf": "[global]\nindex-url = http://user.invalid/s/\n",
    },
    "PIP_CONFIG_FILE is the null device": {
        "devnull": None,
        "home/.config/pip/pip.conf": "[global]\nindex-url = http://user.invalid/s/\n",
    },
    "extra-index-url is never the upstream": {
        "home/.config/pip/pip.conf": "[global]\nextra-index-url = http://extra.invalid/s/\n",
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_as_pips_configuration(home, monkeypatch, case):
    """pip_index_url gives what pip's own Configuration gives, for files in
    every place pip reads (site-wide, legacy and new user files,
    PIP_CONFIG_FILE, the null device) and their precedence."""
    for name, text in CASES[case].items():
        if name == "devnull":
            monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
        elif name.endswith(("env.conf", "missing.conf")):
            monkeypatch.setenv("PIP_CONFIG_FILE", str(home / name))
        if text is not None:
            write(home / name, text)
    assert pip_index_url() == pips_own()


def test_bad_file_is_a_usage_error(home, monkeypatch):
    """A pip configuration file that cannot be parsed is a usage error naming
    the way out (--index-url), as before."""
    from twisted.python import usage

    write(home / "bad.conf", "index-url = no section\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(home / "bad.conf"))
    with pytest.raises(usage.UsageError, match="--index-url"):
        pip_index_url()


def test_does_not_import_pips_machinery(home):
    """Reading pip's index URL imports neither pip's Configuration nor what it
    pulls in (rich, requests): 0.2 to 0.4 s at every start without --index-url."""
    write(
        home / "home/.config/pip/pip.conf",
        "[global]\nindex-url = http://u.invalid/s/\n",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PYTHONPATH"] = str(ROOT)
    code = (
        "import sys; from pypicache.tap.values import pip_index_url;"
        "print(pip_index_url());"
        "print(sorted(m for m in sys.modules if m.startswith("
        "('pip._internal.configuration', 'pip._vendor.rich', 'pip._vendor.requests'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == ["http://u.invalid/s/", "[]"]
