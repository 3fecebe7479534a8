"""Instant PromQL queries for autoscaling policies (`autoscaling_policy.PrometheusQueryMixin`).

A policy runs on the controller's loop and must never wait on the network,
so the mixin keeps a cache that a daemon thread refreshes: reads return the
last results, or None when they are missing or older than the cache's TTL.
Results keep Prometheus' types (a scalar, or an instant vector of labelled
samples); NaN/Inf values count as no data. One failed query is logged and
left out; the others still count.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.parse
import urllib.request
import weakref
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from ray_serving_ext._private.constants import prometheus_headers, prometheus_host

logger = logging.getLogger("ray_serving_ext.controller")

DEFAULT_FETCH_INTERVAL_S = 5.0
DEFAULT_CACHE_TTL_S = 15.0
DEFAULT_QUERY_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class PrometheusScalar:
    """A scalar result of an instant query."""

    value: float
    timestamp: float


@dataclass(frozen=True)
class PrometheusSample:
    """One labelled sample of an instant vector (labels are read-only)."""

    labels: Mapping[str, str]
    value: float
    timestamp: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))


@dataclass(frozen=True)
class PrometheusVector:
    """An instant vector result: its samples, in Prometheus' order."""

    samples: Tuple[PrometheusSample, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples", tuple(self.samples))


Result = Union[PrometheusScalar, PrometheusVector]


def parse_headers(raw: Any) -> Dict[str, str]:
    """Headers from a JSON object or a JSON list of [name, value] pairs (as Ray's dashboard takes them)."""
    value = json.loads(raw) if isinstance(raw, str) else raw
    if isinstance(value, list):
        try:
            value = dict(value)
        except (TypeError, ValueError):
            value = None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError("Prometheus headers must be a JSON object with string keys and values, "
                         "or a JSON list of [name, value] pairs.")
    return dict(value)


def query_url(address: str) -> str:
    """The `/api/v1/query` URL of a Prometheus given as host:port or a URL (with or without the path)."""
    address = address.rstrip("/")
    if "://" not in address:
        address = "http://" + address
    return address if address.endswith("/api/v1/query") else address + "/api/v1/query"


def _point(raw: Any) -> Optional[Tuple[float, float]]:
    """(value, timestamp) of a `[timestamp, "value"]` pair; None for a non-finite value."""
    if not isinstance(raw, list) or len(raw) != 2:
        raise ValueError("Prometheus sample must contain [timestamp, value].")
    timestamp, value = float(raw[0]), float(raw[1])
    if not math.isfinite(timestamp):
        raise ValueError("Prometheus sample timestamp must be finite.")
    return (value, timestamp) if math.isfinite(value) else None


def parse_result(body: Any) -> Optional[Result]:
    """The typed result of a query's JSON response (None for a non-finite scalar)."""
    if not isinstance(body, dict) or body.get("status") != "success":
        raise ValueError(f"Prometheus query failed: {body.get('error') if isinstance(body, dict) else body}")
    data = body.get("data")
    if not isinstance(data, dict):
        raise ValueError("Prometheus query response is missing its data object.")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        point = _point(result)
        return None if point is None else PrometheusScalar(value=point[0], timestamp=point[1])
    if kind != "vector" or not isinstance(result, list):
        raise ValueError(f"Unsupported Prometheus result: {kind!r}.")
    samples = []
    for item in result:
        if not isinstance(item, dict) or "value" not in item:
            raise ValueError("Prometheus vector samples must be objects with a value (native histograms are "
                             "not supported).")
        labels = item.get("metric", {})
        if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in labels.items()):
            raise ValueError("Prometheus vector labels must map strings to strings.")
        point = _point(item["value"])
        if point is not None:  # e.g. histogram_quantile over an idle window: no data
            samples.append(PrometheusSample(labels=labels, value=point[0], timestamp=point[1]))
    return PrometheusVector(samples=tuple(samples))


def run_queries(address: str, queries: List[str], headers: Dict[str, str],
                timeout_s: float = DEFAULT_QUERY_TIMEOUT_S) -> Dict[str, Result]:
    """query -> result for each query that succeeded with data."""
    url = query_url(address)
    out: Dict[str, Result] = {}
    for query in queries:
        try:
            request = urllib.request.Request(url + "?" + urllib.parse.urlencode({"query": query}), headers=headers)
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                result = parse_result(json.load(response))
        except Exception as exc:
            logger.warning("Failed to evaluate Prometheus query %r: %s", query, exc)
            continue
        if result is not None:
            out[query] = result
    return out


def single_value(result: Result) -> Optional[float]:
    """The value of a scalar or of a one-sample vector; None otherwise."""
    if isinstance(result, PrometheusScalar):
        return result.value
    return result.samples[0].value if len(result.samples) == 1 else None


class _Cache:
    """What the refresh thread writes and readers read (no reference to the policy, so it can be collected)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.results: Optional[Dict[str, Result]] = None
        self.updated_at = 0.0


def _refresh(cache: _Cache, address: str, queries: List[str], headers: Dict[str, str], interval_s: float) -> None:
    while not cache.stop.is_set():
        results = run_queries(address, queries, headers)
        with cache.lock:
            cache.results = results or None
            cache.updated_at = time.monotonic()
        cache.stop.wait(interval_s)


class PrometheusQueryMixin:
    """Keeps the results of PromQL queries fresh for an autoscaling policy.

    Mix it into a policy class and read `self.prometheus_results` (query ->
    PrometheusScalar or PrometheusVector) or `self.prometheus_metrics` (query
    -> float, for scalars and one-sample vectors) in `__call__`. The first read
    starts a daemon thread that runs the queries every `fetch_interval_s`;
    reads never block and return None while Prometheus is unset, unreachable,
    or the results are older than `cache_ttl_s`. `prometheus_address` defaults
    to `$RAY_PROMETHEUS_HOST`; headers come from `$RAY_PROMETHEUS_HEADERS`
    (JSON). The thread stops when the policy object is garbage collected.
    """

    def __init__(self, *, prometheus_address: Optional[str] = None, prometheus_queries: Optional[List[str]] = None,
                 fetch_interval_s: float = DEFAULT_FETCH_INTERVAL_S, cache_ttl_s: float = DEFAULT_CACHE_TTL_S,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._prometheus_address = prometheus_address or prometheus_host()
        self._prometheus_headers = parse_headers(prometheus_headers())
        self._prometheus_queries = list(prometheus_queries or [])
        self._fetch_interval_s = fetch_interval_s
        self._cache_ttl_s = cache_ttl_s
        self._cache = _Cache()
        self._refreshing = False

    def _start_refreshing(self) -> None:
        if self._refreshing:
            return
        self._refreshing = True
        if not (self._prometheus_address and self._prometheus_queries):
            return
        threading.Thread(
            target=_refresh, name="serve-prometheus-autoscaling-fetch", daemon=True,
            args=(self._cache, self._prometheus_address, self._prometheus_queries, self._prometheus_headers,
                  self._fetch_interval_s),
        ).start()
        weakref.finalize(self, self._cache.stop.set)

    def _fresh_results(self) -> Optional[Dict[str, Result]]:
        self._start_refreshing()
        with self._cache.lock:
            if self._cache.results is None or time.monotonic() - self._cache.updated_at > self._cache_ttl_s:
                return None
            return dict(self._cache.results)

    @property
    def prometheus_results(self) -> Optional[Dict[str, Result]]:
        """The latest typed results, or None when there are none fresh enough."""
        return self._fresh_results()

    @property
    def prometheus_metrics(self) -> Optional[Dict[str, float]]:
        """The latest single values (scalars and one-sample vectors), or None when there are none."""
        results = self._fresh_results()
        if results is None:
            return None
        values = {q: v for q, r in results.items() if (v := single_value(r)) is not None}
        return values or None
