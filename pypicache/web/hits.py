"""Whether a request was answered from the cache: set by the routes, read by
the access event of ``--json-log`` (and the metrics)."""

from twisted.web.iweb import IRequest

#: The request attribute that says whether the answer came from the cache.
CACHE_HIT = "pypicache_cache_hit"


def mark_cache_hit(request: IRequest, hit: bool) -> None:
    """Say whether a request is answered from what is stored (``True``) or
    had to wait for the upstream (``False``), for the access event."""
    setattr(request, CACHE_HIT, hit)
