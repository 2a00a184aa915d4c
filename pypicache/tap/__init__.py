# -*- test-case-name: tests.test_tap -*-
"""``twistd pypicache``: the one composition root.

:mod:`~pypicache.tap.options` reads the command line, :mod:`~pypicache.tap.build`
builds every object behind the web site, :mod:`~pypicache.tap.service` makes the
services twistd runs. Nothing else in the package reads options or the
environment, or builds long-lived objects.
"""

from pypicache.tap.build import build_app
from pypicache.tap.options import DEFAULT_LISTEN, Options
from pypicache.tap.service import makeService
from pypicache.tap.values import pip_index_url

__all__ = ["DEFAULT_LISTEN", "Options", "build_app", "makeService", "pip_index_url"]
