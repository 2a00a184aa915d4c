"""Declares the ``twistd pypicache`` plugin; everything else lives in ``pypicache``."""

from twisted.application.service import ServiceMaker

pypicache = ServiceMaker(
    "pypicache",
    "pypicache.tap",
    "Caching proxy and private index for Python packages.",
    "pypicache",
)
