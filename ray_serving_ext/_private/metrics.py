"""Prometheus metrics: recorded in every serving process, scraped in one place.

Each process (proxy, replica, a driver using handles) records into its own
prometheus_client registry. A pusher on the process's router loop sends the
registry's text, plus the load its routers see (for autoscaling), to the
controller every METRICS_PUSH_INTERVAL_S. The controller merges the latest
text of every live source; proxies serve the result at `GET /-/metrics`.
Metric names are Ray Serve's, so existing Grafana dashboards work.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ray_serving_ext._private.constants import METRICS_PUSH_INTERVAL_S

logger = logging.getLogger("ray_serving_ext.metrics")

# Latency buckets in milliseconds (Ray Serve's default boundaries).
LATENCY_BUCKETS_MS = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 60000, 120000, 300000, 600000,
]

REGISTRY = CollectorRegistry(auto_describe=True)

# ---- proxy ----------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "ray_serve_num_http_requests", "HTTP requests handled by the proxy.",
    ["route", "method", "application", "status_code"], registry=REGISTRY,
)
HTTP_ERRORS = Counter(
    "ray_serve_num_http_error_requests", "HTTP requests that ended with a status >= 400.",
    ["route", "error_code", "method", "application"], registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "ray_serve_http_request_latency_ms", "End-to-end HTTP latency at the proxy (ms).",
    ["route", "application", "method", "status_code"], buckets=LATENCY_BUCKETS_MS, registry=REGISTRY,
)
BACKPRESSURE = Counter(
    "ray_serve_num_backpressure_rejections", "Requests refused because a caller's queue was full.",
    ["deployment", "application"], registry=REGISTRY,
)
QUEUED = Gauge(
    "ray_serve_deployment_queued_queries", "Requests queued at a caller waiting for a replica.",
    ["deployment", "application"], registry=REGISTRY,
)
# ---- replica --------------------------------------------------------------------------
REPLICA_REQUESTS = Counter(
    "ray_serve_deployment_request_counter", "Requests processed by a replica.",
    ["deployment", "replica", "route", "application"], registry=REGISTRY,
)
REPLICA_ERRORS = Counter(
    "ray_serve_deployment_error_counter", "Requests that raised in a replica.",
    ["deployment", "replica", "route", "application"], registry=REGISTRY,
)
REPLICA_LATENCY = Histogram(
    "ray_serve_deployment_processing_latency_ms", "Time a replica spent on a request (ms).",
    ["deployment", "replica", "route", "application"], buckets=LATENCY_BUCKETS_MS, registry=REGISTRY,
)
REPLICA_ONGOING = Gauge(
    "ray_serve_replica_processing_queries", "Requests a replica is running or has admitted.",
    ["deployment", "replica", "application"], registry=REGISTRY,
)

# ---- controller (rendered by the controller itself) -----------------------------------------
CONTROLLER_REGISTRY = CollectorRegistry(auto_describe=True)
REPLICA_HEALTHY = Gauge(
    "ray_serve_deployment_replica_healthy", "1 when the replica passes health checks, else 0.",
    ["deployment", "replica", "application"], registry=CONTROLLER_REGISTRY,
)
HEALTH_CHECK_FAILURES = Counter(
    "ray_serve_deployment_health_check_failures", "Failed replica health checks.",
    ["deployment", "replica", "application"], registry=CONTROLLER_REGISTRY,
)
NUM_REPLICAS = Gauge(
    "ray_serve_deployment_num_replicas", "Replicas of a deployment by state.",
    ["deployment", "application", "state"], registry=CONTROLLER_REGISTRY,
)
TARGET_REPLICAS = Gauge(
    "ray_serve_autoscaling_target_replicas", "The replica count the controller is moving toward.",
    ["deployment", "application"], registry=CONTROLLER_REGISTRY,
)
DESIRED_REPLICAS = Gauge(
    "ray_serve_autoscaling_desired_replicas", "What the autoscaling policy proposes now (before delays).",
    ["deployment", "application"], registry=CONTROLLER_REGISTRY,
)
AUTOSCALING_LOAD = Gauge(
    "ray_serve_autoscaling_total_requests", "Queued plus ongoing requests the autoscaler averaged.",
    ["deployment", "application"], registry=CONTROLLER_REGISTRY,
)


# ---- user metrics (ray_serving_ext.metrics) ------------------------------------------
_USER_METRICS: Dict[str, Any] = {}
_CHILDREN: Dict[Tuple[int, Tuple[str, ...]], Any] = {}
_MAX_CHILDREN = 100_000  # label sets are few (route x method x status); a bound all the same


def child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, looked up once: labels() takes a lock and builds
    a tuple each time, which is measurable on a path run for every request."""
    key = (id(metric), labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = metric.labels(*labels)
        if len(_CHILDREN) < _MAX_CHILDREN:
            _CHILDREN[key] = found
    return found


_USER_KINDS = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}


def user_metric(kind: str, name: str, description: str, labels: Tuple[str, ...],
                buckets: Optional[List[float]] = None) -> Any:
    """The prometheus metric behind a user's `ray_serving_ext.metrics` object, in REGISTRY.

    It is exported as `ray_<name>` (Ray exports application metrics under the
    `ray_` prefix), so it is pushed with the process's other metrics and shows up
    at `/-/metrics`. Creating the same name again in a process returns the same
    metric; a different kind or different tag keys for an existing name raise
    ValueError.
    """
    existing = _USER_METRICS.get(name)
    if existing is not None:
        if existing[0] != kind or existing[1] != labels:
            raise ValueError(
                f"Metric {name!r} already exists in this process as a {existing[0]} "
                f"with tag keys {existing[1]}; it cannot be redefined."
            )
        return existing[2]
    options: Dict[str, Any] = {"registry": REGISTRY}
    if buckets is not None:
        options["buckets"] = list(buckets)
    metric = _USER_KINDS[kind](f"ray_{name}", description or name, list(labels), **options)
    _USER_METRICS[name] = (kind, labels, metric)
    return metric


class MetricsPusher:
    """Sends this process's metrics and router load to the controller, periodically."""

    def __init__(self, loop: asyncio.AbstractEventLoop, get_controller: Callable[[], Any]) -> None:
        self.source_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._loop = loop
        self._get_controller = get_controller
        self._load_providers: List[Callable[[], Dict[str, float]]] = []
        self._flushers: List[Callable[[], None]] = []
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._run())

    def add_load_provider(self, fn: Callable[[], Dict[str, float]]) -> None:
        self._load_providers.append(fn)

    def add_flusher(self, fn: Callable[[], None]) -> None:
        self._flushers.append(fn)

    def push_soon(self) -> None:
        """Push now rather than at the next interval (a request waits with no replica)."""
        self._wake.set()

    def _report(self) -> Dict[str, Any]:
        load: Dict[str, float] = {}
        for provider in self._load_providers:
            for key, value in provider().items():
                load[key] = load.get(key, 0.0) + value
        return {"source": self.source_id, "time": time.time(), "load": load,
                "metrics": generate_latest(REGISTRY).decode()}

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), METRICS_PUSH_INTERVAL_S)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            for flush in self._flushers:
                try:
                    flush()
                except Exception:
                    pass
            try:
                await asyncio.wait_for(self._get_controller().record_metrics.remote(self._report()), 10)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the controller may be restarting; try next time
                logger.debug("metrics push failed: %s", exc)


_pusher: Optional[MetricsPusher] = None


def stop_pusher() -> None:
    """Stop pushing (after serve.shutdown() in a driver)."""
    global _pusher
    if _pusher is not None:
        _pusher._loop.call_soon_threadsafe(_pusher._task.cancel)
        _pusher = None


def get_pusher(loop: asyncio.AbstractEventLoop, get_controller: Callable[[], Any]) -> MetricsPusher:
    """The process's pusher (created on first use, on `loop`)."""
    global _pusher
    if _pusher is None or _pusher._loop is not loop:
        _pusher = MetricsPusher(loop, get_controller)
    return _pusher


class MetricsStore:
    """Controller side: the latest metrics text of every source, merged on demand."""

    def __init__(self, ttl_s: float = 60.0) -> None:
        self._texts: Dict[str, tuple] = {}
        self._ttl_s = ttl_s

    def record(self, source: str, text: str) -> None:
        self._texts[source] = (time.time(), text)

    def render(self) -> str:
        now = time.time()
        families: Dict[str, Any] = {}
        for source, (stamp, text) in list(self._texts.items()):
            if now - stamp > self._ttl_s:
                del self._texts[source]
                continue
            _merge(families, text, source)
        _merge(families, generate_latest(CONTROLLER_REGISTRY).decode(), "controller")
        return _render(families.values())


def _merge(families: Dict[str, Any], text: str, source: str) -> None:
    """Add a source's families; each sample gets a `source` label so series never collide."""
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):
            continue
        family.samples = [
            s if "source" in s.labels else s._replace(labels={**s.labels, "source": source})
            for s in family.samples
            if not s.name.endswith("_created")
        ]
        existing = families.get(family.name)
        if existing is None:
            families[family.name] = family
        else:
            existing.samples.extend(family.samples)


def _render(families: Any) -> str:
    class _Collector:
        def collect(self) -> Any:
            return list(families)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return generate_latest(registry).decode()
