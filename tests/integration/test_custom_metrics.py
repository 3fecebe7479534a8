"""Custom metrics from a deployment (`serve.metrics`) show up at the proxy's /-/metrics, tagged."""

from __future__ import annotations

import uuid

import requests
from prometheus_client.parser import text_string_to_metric_families

import ray_serving_ext as serve
from ray_serving_ext import metrics
from tests.utils import wait_for_condition


@serve.deployment
class Counted:
    def __init__(self, metric_name: str) -> None:
        self.hits = metrics.Counter(metric_name, description="Requests seen.", tag_keys=("model",))
        self.hits.set_default_tags({"model": "m1"})
        self.size = metrics.Histogram(f"{metric_name}_size", boundaries=[1, 10, 100])

    def __call__(self, request) -> str:
        self.hits.inc()
        self.size.observe(5)
        return "ok"


def _samples(url: str, sample_name: str) -> list:
    text = requests.get(f"{url}/-/metrics", timeout=10).text
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == sample_name]


def test_custom_counter_counts_requests_with_serve_tags(serve_url):
    app = f"custom-{uuid.uuid4().hex[:8]}"
    name = f"custom_hits_{uuid.uuid4().hex[:8]}"  # a fresh metric: counters are cumulative
    serve.run(Counted.bind(name), name=app, route_prefix="/custom")
    n = 7
    for _ in range(n):
        assert requests.get(f"{serve_url}/custom", timeout=10).text == "ok"

    def counted() -> list:
        samples = _samples(serve_url, f"ray_{name}_total")
        return samples if sum(s.value for s in samples) == n else []

    samples = wait_for_condition(counted, timeout=20, message=f"ray_{name}_total == {n} at /-/metrics")
    for sample in samples:
        assert sample.labels["model"] == "m1"
        assert sample.labels["deployment"] == "Counted"
        assert sample.labels["application"] == app
        assert sample.labels["replica"]
        assert sample.labels["route"] == "/custom"
    counts = wait_for_condition(
        lambda: [s for s in _samples(serve_url, f"ray_{name}_size_count") if s.value == n],
        timeout=20, message="histogram count == n",
    )
    assert counts[0].labels["deployment"] == "Counted"
    serve.delete(app)


@serve.deployment
class RayCounted:
    """Uses Ray core's `ray.util.metrics`, as Ray Serve's docs show for custom metrics."""

    def __init__(self, metric_name: str) -> None:
        from ray.util import metrics as ray_metrics

        self.hits = ray_metrics.Counter(metric_name, description="Requests seen.", tag_keys=("model",))
        self.hits.set_default_tags({"model": "m2"})
        self.depth = ray_metrics.Gauge(f"{metric_name}_depth", tag_keys=())
        self.latency = ray_metrics.Histogram(f"{metric_name}_ms", boundaries=[1.0, 10.0])

    def __call__(self, request) -> str:
        self.hits.inc(2)
        self.depth.set(3)
        self.latency.observe(5)
        return "ok"


def test_ray_util_metrics_in_a_replica_show_up_too(serve_url):
    app = f"raym-{uuid.uuid4().hex[:8]}"
    name = f"ray_hits_{uuid.uuid4().hex[:8]}"
    serve.run(RayCounted.bind(name), name=app, route_prefix="/raym")
    n = 4
    for _ in range(n):
        assert requests.get(f"{serve_url}/raym", timeout=10).text == "ok"
    samples = wait_for_condition(
        lambda: [s for s in _samples(serve_url, f"ray_{name}_total") if s.value == 2 * n],
        timeout=20, message=f"ray_{name}_total == {2 * n} at /-/metrics",
    )
    assert samples[0].labels["model"] == "m2"
    assert samples[0].labels["deployment"] == "RayCounted"
    assert samples[0].labels["application"] == app
    gauge = wait_for_condition(lambda: _samples(serve_url, f"ray_{name}_depth"), timeout=20)
    assert gauge[0].value == 3
    wait_for_condition(lambda: [s for s in _samples(serve_url, f"ray_{name}_ms_count") if s.value == n], timeout=20,
                       message="histogram count == n")
    serve.delete(app)
