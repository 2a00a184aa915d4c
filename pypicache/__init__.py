"""pypicache: a caching proxy and private index for Python packages."""

__version__ = "0.1.0.dev0"
