"""Values recorded with `ray.util.metrics` inside a replica also reach Serve's `/-/metrics`.

Ray exports `ray.util.metrics` through its own metrics agent, which Serve's
proxies do not read. In a replica, `install()` wraps `Metric._record` (the one
method Counter.inc, Gauge.set and Histogram.observe all end in) so that, after
Ray has recorded the value, the same value goes to a `ray_serving_ext.metrics`
metric of the same name, kind, description, tag keys and boundaries. That one
carries Serve's deployment, replica, application and route tags, so series of
different replicas stay apart. Ray's own recording is untouched: if it raises
(a missing tag, a bad value) nothing is mirrored. A metric that cannot be
mirrored (it declares one of Serve's reserved tag keys, or its name already
exists in the replica with another kind) is logged once and left to Ray alone.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

logger = logging.getLogger("ray_serving_ext.replica")

_MIRROR_ATTR = "_ray_serving_ext_mirror"
_UNMIRRORABLE = object()
_installed = False
_RECORD_METHOD = {"counter": "inc", "gauge": "set", "histogram": "observe"}


def install() -> None:
    """Mirror `ray.util.metrics` records of this process into Serve's registry (idempotent)."""
    global _installed
    if _installed:
        return
    from ray.util import metrics as ray_metrics

    original = ray_metrics.Metric._record

    def _record(self: Any, value: Any, tags: Optional[Dict[str, str]] = None) -> None:
        original(self, value, tags)
        try:
            _mirror(self, value, tags)
        except Exception:  # a mirror must never break the user's call
            logger.debug("Could not mirror metric %r to /-/metrics.", getattr(self, "_name", "?"), exc_info=True)

    ray_metrics.Metric._record = _record
    _installed = True


def _mirror(metric: Any, value: Any, tags: Optional[Dict[str, str]]) -> None:
    if getattr(metric, "_discard_metric", False):
        return
    mirror = getattr(metric, _MIRROR_ATTR, None)
    if mirror is None:
        mirror = _make_mirror(metric)
        setattr(metric, _MIRROR_ATTR, mirror)
    if mirror is _UNMIRRORABLE:
        return
    mirror.set_default_tags(dict(metric._default_tags))  # they may have changed since the last record
    record = getattr(mirror, _RECORD_METHOD[mirror._kind])
    record(value, tags)


def _make_mirror(metric: Any) -> Any:
    from ray.util import metrics as ray_metrics

    from ray_serving_ext import metrics as serve_metrics

    name, description, keys = metric._name, metric._description, tuple(metric._tag_keys)
    try:
        if isinstance(metric, ray_metrics.Counter):
            return serve_metrics.Counter(name, description, tag_keys=keys)
        if isinstance(metric, ray_metrics.Gauge):
            return serve_metrics.Gauge(name, description, tag_keys=keys)
        if isinstance(metric, ray_metrics.Histogram):
            return serve_metrics.Histogram(name, description, boundaries=list(metric.boundaries), tag_keys=keys)
    except (ValueError, TypeError) as exc:
        logger.warning("ray.util.metrics metric %r is not shown at /-/metrics: %s", name, exc)
    return _UNMIRRORABLE
