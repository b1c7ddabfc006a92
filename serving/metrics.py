"""Prometheus metrics of the service, labelled by route, never by the raw path.

BentoML's own HTTP metrics label every request with its path, so each unknown path a scanner tries
became a new series in every metric (6,000 random paths made /metrics 25.7 MB), and its middleware runs
before any of ours, so it cannot be told otherwise. The service turns BentoML's metrics off
(``metrics={"enabled": False}``) and records these instead, from its edge middleware: one series set per
known route, every unknown path in the one ``(unknown)`` bucket.

Under `bentoml serve` the workers run with ``PROMETHEUS_MULTIPROC_DIR`` set (``serving.launch`` gives each
server process its own folder), and /metrics adds up every worker's files; in-process (tests) the
default registry is used.
"""

from __future__ import annotations

import os
import threading
from typing import Any

UNKNOWN_ROUTE = "(unknown)"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_lock = threading.Lock()
_metrics: dict[str, Any] | None = None


def _instruments() -> dict[str, Any]:
    """Created on first use, once per process: prometheus_client reads PROMETHEUS_MULTIPROC_DIR when a
    metric is created, and a second registration of a name in one process is an error."""
    global _metrics
    with _lock:
        if _metrics is None:
            import prometheus_client as prom

            _metrics = {
                "requests": prom.Counter(
                    "propensity_http_requests_total", "HTTP requests answered, by route and status",
                    ["route", "status"],
                ),
                "duration": prom.Histogram(
                    "propensity_http_request_duration_seconds", "Time to answer, by route",
                    ["route"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
                ),
                "in_progress": prom.Gauge(
                    "propensity_http_requests_in_progress", "Requests being answered, by route",
                    ["route"], multiprocess_mode="livesum",
                ),
            }
        return _metrics


def observe(route: str, status: int, seconds: float) -> None:
    metrics = _instruments()
    metrics["requests"].labels(route=route, status=str(status)).inc()
    metrics["duration"].labels(route=route).observe(seconds)


def in_progress(route: str) -> Any:
    """A context manager counting the request as in progress while it runs."""
    return _instruments()["in_progress"].labels(route=route).track_inprogress()


def render() -> bytes:
    """The exposition text of every metric of this server (all workers under `bentoml serve`)."""
    import prometheus_client as prom

    _instruments()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = prom.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return prom.generate_latest(registry)
    return prom.generate_latest()


def process_exit() -> None:
    """Tell the multiprocess files this worker is gone (its in-progress gauge stops counting)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and _metrics is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), directory)
