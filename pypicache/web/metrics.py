# -*- test-case-name: tests.test_metrics -*-
"""What the daemon counts, for ``GET /metrics`` (Prometheus) and ``GET /+stats``.

:class:`Metrics` holds prometheus-client's counters, gauges and histograms;
``tap/`` builds one per process and hands its ``count_*`` methods to the
objects that see each event (the upstream client, the mirror, the disk's
capacity, uploads, bulk jobs). Requests are counted once each, when they end,
by :func:`pypicache.web.accesslog.account`.

With ``--workers``, every worker writes its figures to files in a folder
(prometheus-client's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR``, set by
the twistd process, which empties the folder at start), and any worker
answers ``/metrics`` with the sum over all of them.
"""

import time
from collections import deque
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

#: The route kinds requests are counted by (first path segment of a read).
_READ_KINDS = {
    b"simple": "page",
    b"local": "page",
    b"packages": "file",
    b"pypi": "json",
    b"index.json": "json",
    b"": "home",
    b"+ui": "ui",
    b"metrics": "stats",
    b"+stats": "stats",
    b"health": "health",
}

#: Seconds between two samples of the hit counts (the last hour's ratio).
SAMPLE_INTERVAL = 60.0

#: The window of the recent hit ratio.
HOUR = 3600.0


def route_kind(method: bytes, path: bytes) -> str:
    """The kind of route a request went to, as a label: ``page``, ``file``,
    ``json``, ``home``, ``ui``, ``stats``, ``health``, ``other`` for reads; ``bulk``
    (``POST /requirements.txt``, ``POST /+warm``) or ``write`` (uploads,
    deletions, yanks)."""
    first = path[1:].split(b"/", 1)[0]
    if method == b"GET" or method == b"HEAD":
        return _READ_KINDS.get(first, "other")
    return "bulk" if first in (b"requirements.txt", b"+warm") else "write"


class CountedFlights(dict[str, Any]):
    """The mirror's table of downloads in flight, telling ``change`` of each
    entry added (``1``) and removed (``-1``): the downloads-in-flight gauge."""

    def __init__(self, change: Callable[[int], None]) -> None:
        super().__init__()
        self._change = change

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self:
            self._change(1)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._change(-1)

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            self._change(-1)
        return super().pop(key, *default)


def _outcome(code: int) -> str:
    if code == 304:
        return "304"
    if code in (404, 410):
        return "404"
    return "ok" if 200 <= code < 300 or code == 416 else "error"


class Metrics:
    """The daemon's figures (one per process).

    :param multiprocess_dir: the folder of prometheus-client's multiprocess
        mode (``PROMETHEUS_MULTIPROC_DIR``, which must have been set before
        prometheus-client was imported); ``None``: this process alone.
    """

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "pypicache_requests",
            "Requests answered, by route kind and status.",
            ["kind", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "pypicache_request_duration_seconds",
            "Seconds from a request's arrival to the end of its answer, by route kind.",
            ["kind"],
            registry=registry,
        )
        self.served = Counter(
            "pypicache_served_bytes",
            "Body bytes of pages and files sent, by where they came from "
            "(cache: stored; upstream: fetched for the request).",
            ["source"],
            registry=registry,
        )
        self.cache = Counter(
            "pypicache_cache_requests",
            "Page and file requests answered from the cache (hit) or not (miss).",
            ["kind", "result"],
            registry=registry,
        )
        self.upstream = Counter(
            "pypicache_upstream_requests",
            "Requests to the upstream, by outcome (ok, 304, 404, error, timeout).",
            ["outcome"],
            registry=registry,
        )
        self.upstream_last = Gauge(
            "pypicache_upstream_last_answer_timestamp_seconds",
            "When the upstream last answered (ok, 304, 404) or failed (error,"
            " timeout), in seconds since the epoch.",
            ["outcome"],
            registry=registry,
            multiprocess_mode="max",
        )
        #: The wall clock of :attr:`upstream_last` (a test may replace it).
        self.wall_clock: Callable[[], float] = time.time
        self.in_flight = Gauge(
            "pypicache_downloads_in_flight",
            "Files being downloaded from the upstream now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.evicted = Counter(
            "pypicache_evicted_files", "Mirrored files evicted.", registry=registry
        )
        self.evicted_bytes = Counter(
            "pypicache_evicted_bytes",
            "Bytes of mirrored files evicted.",
            registry=registry,
        )
        self.uploads = Counter(
            "pypicache_uploads", "Files uploaded and stored.", registry=registry
        )
        self.bulk_jobs = Counter(
            "pypicache_bulk_jobs",
            "POST /requirements.txt and POST /+warm jobs, by outcome (done, failed, cancelled).",
            ["outcome"],
            registry=registry,
        )
        self.cache_size = Gauge(
            "pypicache_cache_size_bytes",
            "Bytes in the mirror (as last counted).",
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.cache_files = Gauge(
            "pypicache_cache_files",
            "Files in the mirror (as last counted).",
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.cooldown = Counter(
            "pypicache_cooldown_held",
            "Page and file requests the cooldown held back (mode enforce), or "
            "would have (mode observe), by kind (page, file) and mode.",
            ["kind", "mode"],
            registry=registry,
        )
        # The reactor's health (pypicache/web/watchdog.py).
        self.reactor_lag = Histogram(
            "pypicache_reactor_lag_seconds",
            "How late the reactor ran a timer due every 50 ms (what blocked it).",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.reactor_stalls = Counter(
            "pypicache_reactor_stalls",
            "Timers the reactor ran more than 100 ms late.",
            registry=registry,
        )
        self.gc_pause = Histogram(
            "pypicache_gc_pause_seconds",
            "Garbage collections, by generation, and how long each took.",
            ["generation"],
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
        )
        #: (kind, status) -> the children a request's end touches.
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        #: ``upstream`` and ``upstream_last``'s children by outcome, found once.
        self._upstream_children: dict[str, tuple[Any, Any]] = {}
        self._hits = {
            (kind, hit): self.cache.labels(kind, "hit" if hit else "miss")
            for kind in ("page", "file")
            for hit in (True, False)
        }
        self._sources = {
            True: self.served.labels("cache"),
            False: self.served.labels("upstream"),
        }
        #: (time, hits, misses) samples of the last hour, oldest first.
        self.samples: deque[tuple[float, float, float]] = deque()

    # The events, called where they happen.

    def count_request(
        self, kind: str, status: int, duration: float, sent: int, hit: bool | None
    ) -> None:
        """A request ended (see :func:`pypicache.web.accesslog.account`)."""
        children = self._children.get((kind, status))
        if children is None:
            # The labelled counter's value itself: a child is always
            # observable, and Counter.inc's checks cost as much as the
            # increment, on every request (session 9).
            children = self._children[(kind, status)] = (
                self.requests.labels(kind, str(status))._value.inc,
                self.latency.labels(kind),
            )
        children[0](1)
        children[1].observe(duration)
        if hit is not None:
            counter = self._hits.get((kind, hit))
            if counter is not None:
                counter.inc()
            if sent:
                self._sources[hit].inc(sent)

    def count_upstream(self, code: int | None, timed_out: bool = False) -> None:
        """The upstream answered with status ``code``, or failed (``None``)."""
        if code is None:
            outcome = "timeout" if timed_out else "error"
        else:
            outcome = _outcome(code)
        children = self._upstream_children.get(outcome)
        if children is None:
            children = self._upstream_children[outcome] = (
                self.upstream.labels(outcome),
                self.upstream_last.labels(outcome),
            )
        children[0].inc()
        children[1].set(self.wall_clock())

    def count_download(self, change: int) -> None:
        """A download from the upstream started (``1``) or ended (``-1``)."""
        self.in_flight.inc(change)

    def count_eviction(self, files: int, size: int) -> None:
        self.evicted.inc(files)
        self.evicted_bytes.inc(size)

    def count_upload(self) -> None:
        self.uploads.inc()

    def count_bulk_job(self, outcome: str) -> None:
        self.bulk_jobs.labels(outcome).inc()

    def count_cooldown(self, kind: str, mode: str) -> None:
        """The cooldown held back (or would have) a page or a file."""
        self.cooldown.labels(kind, mode).inc()

    def count_size(self, size: int, files: int) -> None:
        """The mirror's size and file count changed."""
        self.cache_size.set(size)
        self.cache_files.set(files)

    # Reading them back.

    def collected(self) -> CollectorRegistry:
        """The registry to expose: this process's, or all workers' summed."""
        if self.multiprocess_dir is None:
            return self.registry
        merged = CollectorRegistry()
        MultiProcessCollector(merged, self.multiprocess_dir)
        return merged

    def exposition(self) -> bytes:
        """The Prometheus text format of every figure."""
        return generate_latest(self.collected())

    def values(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample's value by (sample name, sorted labels)."""
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in self.collected().collect()
            for s in family.samples
        }

    def sample(self, now: float) -> None:
        """Keep the hit counts of now, for the last hour's ratio."""
        hits, misses = _hits_misses(self.values())
        self.samples.append((now, hits, misses))
        while len(self.samples) > 1 and self.samples[1][0] <= now - HOUR:
            self.samples.popleft()

    def stats(self, now: float, started: float) -> dict[str, Any]:
        """The figures a person wants at a glance (``GET /+stats``)."""
        values = self.values()
        hits, misses = _hits_misses(values)
        then = next(
            (s for s in self.samples if s[0] >= now - HOUR),
            (started, 0.0, 0.0),
        )

        def total(name: str, **labels: str) -> int:
            return int(
                sum(
                    v
                    for (n, ls), v in values.items()
                    if n == name and all((k, labels[k]) in ls for k in labels)
                )
            )

        def by(name: str, label: str, keys: Iterable[str]) -> dict[str, int]:
            return {k: total(name, **{label: k}) for k in keys}

        size = values.get(("pypicache_cache_size_bytes", ()))
        files = values.get(("pypicache_cache_files", ()))
        return {
            "uptime_seconds": round(now - started, 3),
            "requests": total("pypicache_requests_total"),
            "hits": int(hits),
            "misses": int(misses),
            "hit_ratio": _ratio(hits, misses),
            "hit_ratio_last_hour": _ratio(hits - then[1], misses - then[2]),
            "pages": {
                r: total("pypicache_cache_requests_total", kind="page", result=r)
                for r in ("hit", "miss")
            },
            "files": {
                r: total("pypicache_cache_requests_total", kind="file", result=r)
                for r in ("hit", "miss")
            },
            "bytes_served": by(
                "pypicache_served_bytes_total", "source", ("cache", "upstream")
            ),
            "upstream": by(
                "pypicache_upstream_requests_total",
                "outcome",
                ("ok", "304", "404", "error", "timeout"),
            ),
            "downloads_in_flight": total("pypicache_downloads_in_flight"),
            "evicted_files": total("pypicache_evicted_files_total"),
            "evicted_bytes": total("pypicache_evicted_bytes_total"),
            "uploads": total("pypicache_uploads_total"),
            "bulk_jobs": by(
                "pypicache_bulk_jobs_total", "outcome", ("done", "failed", "cancelled")
            ),
            "cache_size_bytes": int(size or 0),
            "cache_files": int(files or 0),
            **_upstream_health(values),
        }


def _upstream_health(values: dict[Any, float]) -> dict[str, Any]:
    """When the upstream last answered and last failed (epoch seconds, or
    ``None``), and how it last failed (``error`` or ``timeout``)."""
    last = {
        dict(labels).get("outcome"): value
        for (name, labels), value in values.items()
        if name == "pypicache_upstream_last_answer_timestamp_seconds" and value
    }
    answered = [last[k] for k in ("ok", "304", "404") if k in last]
    failed = {k: last[k] for k in ("error", "timeout") if k in last}
    kind = max(failed, key=lambda k: failed[k]) if failed else None
    return {
        "upstream_last_success": max(answered) if answered else None,
        "upstream_last_error": failed[kind] if kind is not None else None,
        "upstream_last_error_kind": kind,
    }


def _hits_misses(values: dict[Any, float]) -> tuple[float, float]:
    hits = misses = 0.0
    for (name, labels), value in values.items():
        if name == "pypicache_cache_requests_total":
            if ("result", "hit") in labels:
                hits += value
            else:
                misses += value
    return hits, misses


def _ratio(hits: float, misses: float) -> float | None:
    """Hits over hits and misses (``None`` without either)."""
    if hits + misses <= 0:
        return None
    return round(hits / (hits + misses), 4)
