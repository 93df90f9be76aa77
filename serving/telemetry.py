"""Prometheus metrics, correct with several workers (prometheus_client multiprocess mode).

``recsys serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start; every worker
then writes its samples there and ``/metrics`` aggregates them.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

REQUESTS = Counter("recsys_http_requests_total", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram(
    "recsys_http_request_duration_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
SOURCES = Counter("recsys_recommendation_source_total", "Where served lists came from", ["source"])
MODEL_VERSION = Gauge("recsys_active_model_version", "Registry version being served", multiprocess_mode="livemax")
FALLBACK_SECONDS = Gauge(
    "recsys_fallback_streak_seconds",
    "How long a worker has answered only from its in-process fallback (0: it is serving from Redis)",
    multiprocess_mode="livemax",
)
LIVE_AGE = Gauge(
    "recsys_live_age_seconds",
    "Age of a worker's copy of the live catalog and rules (how long since it was brought up to date)",
    multiprocess_mode="livemax",
)
EVENT_BACKLOG = Gauge(
    "recsys_event_backlog",
    "Accepted events the drain has not stored yet (the Redis stream's length)",
    multiprocess_mode="livemostrecent",
)


_SOURCE_COUNTERS: dict[str, Any] = {}


def count_source(source: str) -> None:
    """Count one served list by its source (labelled children looked up once)."""
    counter = _SOURCE_COUNTERS.get(source) or _SOURCE_COUNTERS.setdefault(source, SOURCES.labels(source))
    counter.inc()


def set_model_version(version: str | None) -> None:
    """Record the served model version (numeric registry versions only)."""
    if version is not None and version.isdigit():
        MODEL_VERSION.set(int(version))


def set_health(fallback_seconds: float, live_age: float) -> None:
    """Record this worker's fallback streak and live-state age (a never-loaded state counts as a day old)."""
    FALLBACK_SECONDS.set(fallback_seconds)
    LIVE_AGE.set(min(live_age, 86_400.0))


def render_metrics() -> tuple[bytes, str]:
    """The exposition text, aggregated across workers when in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI middleware: count and time every HTTP request by route template and status."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._counters: dict[tuple[str, str, str], Any] = {}  # labelled children, looked up once
        self._histograms: dict[str, Any] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def record(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            key = (route, scope["method"], str(status["code"]))
            counter = self._counters.get(key) or self._counters.setdefault(key, REQUESTS.labels(*key))
            histogram = self._histograms.get(route) or self._histograms.setdefault(route, LATENCY.labels(route))
            counter.inc()
            histogram.observe(time.perf_counter() - started)
