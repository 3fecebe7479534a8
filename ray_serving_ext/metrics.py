"""Custom metrics from a deployment: `Counter`, `Gauge`, `Histogram` (Ray Serve 2.60's API).

    from ray_serving_ext import metrics

    @serve.deployment
    class Model:
        def __init__(self):
            self.hits = metrics.Counter("my_hits", description="Hits.", tag_keys=("model",))
            self.hits.set_default_tags({"model": "v1"})

        def __call__(self, request):
            self.hits.inc()

Inside a replica every metric is tagged with `deployment`, `replica`,
`application` and `route` (the route of the request being handled, '' when
none) unless the caller gives those tags itself; `deployment`, `replica` and
`application` may not be declared as tag keys. Values are recorded into the
process's metrics registry, pushed to the controller with Serve's own
metrics, and served at the proxies' `GET /-/metrics` as `ray_<name>`
(counters with Prometheus' `_total` suffix), as Ray exports them.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Dict, List, Optional, Tuple, Union

from ray_serving_ext._private import metrics as _metrics
from ray_serving_ext.context import _get_replica_context_or_none, _get_request_context

DEPLOYMENT_TAG = "deployment"
REPLICA_TAG = "replica"
APPLICATION_TAG = "application"
ROUTE_TAG = "route"
_RESERVED = (DEPLOYMENT_TAG, REPLICA_TAG, APPLICATION_TAG)
_VALID_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

__all__ = ["Counter", "Gauge", "Histogram"]


def _check_name(name: str) -> bool:
    """True when the metric must be discarded (an invalid name warns, as in Ray)."""
    if not name:
        raise ValueError("Empty name is not allowed. Please provide a metric name.")
    if not _VALID_NAME.match(name):
        warnings.warn(
            f"Invalid metric name: {name}. Metric will be discarded and data will not be "
            "collected or published. Metric names can only contain letters, numbers and _, "
            "and cannot start with a number.",
            UserWarning,
        )
        return True
    return False


def _serve_tag_keys(tag_keys: Tuple[str, ...]) -> Tuple[str, ...]:
    """The user's tag keys, preceded by Serve's when running in a replica."""
    if _get_replica_context_or_none() is None:
        return tag_keys
    for key in _RESERVED:
        if key in tag_keys:
            raise ValueError(f"'{key}' tag is reserved for Ray Serve metrics")
    serve_keys = _RESERVED + (() if ROUTE_TAG in tag_keys else (ROUTE_TAG,))
    return serve_keys + tag_keys


class _Metric:
    """What Counter, Gauge and Histogram share: tag keys, default tags, recording."""

    _kind = ""

    def __init__(self, name: str, description: str = "", tag_keys: Optional[Tuple[str, ...]] = None,
                 boundaries: Optional[List[float]] = None) -> None:
        if tag_keys is not None and not isinstance(tag_keys, tuple):
            raise TypeError(f"tag_keys should be a tuple type, got: {type(tag_keys)}")
        for key in tag_keys or ():
            if not isinstance(key, str):
                raise TypeError(f"Tag keys must be str, got {type(key)}.")
        self._name = name
        self._description = description
        self._discard = _check_name(name)
        self._tag_keys: Tuple[str, ...] = _serve_tag_keys(tuple(tag_keys or ()))
        self._default_tags: Dict[str, str] = {}
        self._metric: Any = None
        if not self._discard:
            self._metric = _metrics.user_metric(self._kind, name, description, self._tag_keys, boundaries)
        self.set_default_tags({})

    def set_default_tags(self, default_tags: Dict[str, str]) -> "_Metric":
        """Tags used by every record call (per-call tags win); returns the metric itself.

        Inside a replica, Serve's `deployment`, `replica` and `application` tags are
        added; giving any of them here is a ValueError.
        """
        replica = _get_replica_context_or_none()
        tags = dict(default_tags)
        if replica is not None:
            for key in _RESERVED:
                if key in tags:
                    raise ValueError(f"'{key}' tag is reserved for Ray Serve metrics")
            tags.update({DEPLOYMENT_TAG: replica.deployment, REPLICA_TAG: replica.replica_tag,
                         APPLICATION_TAG: replica.app_name})
        for key, value in tags.items():
            if key not in self._tag_keys:
                raise ValueError(f"Unrecognized tag key {key}.")
            if not isinstance(value, str):
                raise TypeError(f"Tag values must be str, got {type(value)}.")
        self._default_tags = tags
        return self

    @property
    def info(self) -> Dict[str, Any]:
        """The metric's name, description, tag keys and default tags."""
        return {"name": self._name, "description": self._description,
                "tag_keys": self._tag_keys, "default_tags": self._default_tags}

    def _child(self, tags: Optional[Dict[str, str]]) -> Any:
        """The labelled prometheus series for default tags + `tags` (+ the request's route)."""
        for value in (tags or {}).values():
            if not isinstance(value, str):
                raise TypeError(f"Tag values must be str, got {type(value)}.")
        final = {**self._default_tags, **(tags or {})}
        if ROUTE_TAG in self._tag_keys and ROUTE_TAG not in final:
            request = _get_request_context()
            final[ROUTE_TAG] = request.route if request is not None else ""
        missing = [key for key in self._tag_keys if key not in final]
        if missing:
            raise ValueError(f"Missing value for tag key(s): {','.join(missing)}.")
        if not self._tag_keys:
            return self._metric
        return self._metric.labels(*[final[key] for key in self._tag_keys])


def _check_value(value: Any) -> None:
    if not isinstance(value, (int, float)):
        raise TypeError(f"value must be int or float, got {type(value)}.")


class Counter(_Metric):
    """A cumulative metric that only increases (a Prometheus counter)."""

    _kind = "counter"

    def __init__(self, name: str, description: str = "", tag_keys: Optional[Tuple[str, ...]] = None) -> None:
        super().__init__(name, description, tag_keys)

    def inc(self, value: Union[int, float] = 1.0, tags: Optional[Dict[str, str]] = None) -> None:
        """Add `value` (> 0, default 1) to the series of the default tags plus `tags`."""
        _check_value(value)
        if value <= 0:
            raise ValueError(f"value must be >0, got {value}")
        if not self._discard:
            self._child(tags).inc(value)


class Gauge(_Metric):
    """The last value set (a Prometheus gauge)."""

    _kind = "gauge"

    def __init__(self, name: str, description: str = "", tag_keys: Optional[Tuple[str, ...]] = None) -> None:
        super().__init__(name, description, tag_keys)

    def set(self, value: Optional[Union[int, float]], tags: Optional[Dict[str, str]] = None) -> None:
        """Set the gauge's series for the default tags plus `tags` to `value` (None: no-op)."""
        if value is None:
            return
        _check_value(value)
        if not self._discard:
            self._child(tags).set(value)


class Histogram(_Metric):
    """Observations counted in buckets with the given upper `boundaries` (a Prometheus histogram)."""

    _kind = "histogram"

    def __init__(self, name: str, description: str = "", boundaries: Optional[List[float]] = None,
                 tag_keys: Optional[Tuple[str, ...]] = None) -> None:
        if not boundaries:
            raise ValueError(
                "boundaries argument should be provided when using the Histogram class. "
                'e.g., Histogram("name", boundaries=[1.0, 2.0])'
            )
        for i, boundary in enumerate(boundaries):
            if boundary <= 0:
                raise ValueError(f"Invalid `boundaries` argument at index {i}, {boundaries}. "
                                 "Use positive values for the arguments.")
        self.boundaries = list(boundaries)
        super().__init__(name, description, tag_keys, boundaries=self.boundaries)

    def observe(self, value: Union[int, float], tags: Optional[Dict[str, str]] = None) -> None:
        """Count `value` in its bucket of the series for the default tags plus `tags`."""
        _check_value(value)
        if not self._discard:
            self._child(tags).observe(value)
