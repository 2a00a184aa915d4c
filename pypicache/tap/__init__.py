# -*- test-case-name: tests.test_tap -*-
"""``twistd pypicache``: the one composition root.

:mod:`~pypicache.tap.options` reads the command line, :mod:`~pypicache.tap.build`
builds every object behind the web site, :mod:`~pypicache.tap.service` makes the
services twistd runs. Nothing else in the package reads options or the
environment, or builds long-lived objects.
"""

import gc

# The daemon's modules are imported with the garbage collector paused: they
# make tens of thousands of objects that live as long as the process, and the
# collections their allocations set off (a hundred and fifty, one of them
# full) were a tenth of the start-up's CPU time and found nothing to free.
# Paused only while this package is imported, and only if it was running.
# What the imports made is then frozen (``gc.freeze``) before the collector
# runs again: its first collection would otherwise walk all of it at once
# (70,000 objects, 30 to 75 ms of CPU on the loaded machine, to free 3,000),
# and it lives as long as the process anyway.
_collecting = gc.isenabled()
gc.disable()
try:
    from pypicache.tap.build import build_app
    from pypicache.tap.options import DEFAULT_LISTEN, Options
    from pypicache.tap.service import makeService
    from pypicache.tap.values import pip_index_url
finally:
    if _collecting:
        gc.freeze()
        gc.enable()
del _collecting

__all__ = ["DEFAULT_LISTEN", "Options", "build_app", "makeService", "pip_index_url"]
