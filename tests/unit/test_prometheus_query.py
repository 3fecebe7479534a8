"""PrometheusQueryMixin against a small fake Prometheus on loopback (real HTTP, real refresh thread)."""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict

import pytest

from ray_serving_ext.autoscaling_policy import (
    PrometheusQueryMixin, PrometheusSample, PrometheusScalar, PrometheusVector,
)
from ray_serving_ext._private.prometheus_query import parse_headers, parse_result, query_url
from tests.utils import wait_for_condition

ANSWERS: Dict[str, dict] = {
    "scalar(1)": {"resultType": "scalar", "result": [100.0, "4.5"]},
    "depth": {"resultType": "vector", "result": [{"metric": {"q": "a"}, "value": [100.0, "7"]}]},
    "two": {"resultType": "vector", "result": [{"metric": {"q": "a"}, "value": [1, "1"]},
                                               {"metric": {"q": "b"}, "value": [1, "2"]}]},
    "idle": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "NaN"]}]},
}


class _Prometheus(BaseHTTPRequestHandler):
    seen_headers: list = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["query"][0]
        _Prometheus.seen_headers.append(self.headers.get("Authorization"))
        data = ANSWERS.get(query)
        body = {"status": "success", "data": data} if data else {"status": "error", "error": "bad query"}
        payload = json.dumps(body).encode()
        self.send_response(200 if data else 400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def prometheus():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Prometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class Policy(PrometheusQueryMixin):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)

    def __call__(self, ctx):
        return (self.prometheus_metrics or {}).get("depth", ctx), {}


def test_mixin_keeps_results_fresh(prometheus, monkeypatch):
    monkeypatch.setenv("RAY_PROMETHEUS_HEADERS", json.dumps([["Authorization", "Bearer t"]]))
    policy = Policy(prometheus_address=prometheus, prometheus_queries=list(ANSWERS) + ["broken"],
                    fetch_interval_s=0.05)
    results = wait_for_condition(lambda: policy.prometheus_results, timeout=10)
    assert results["scalar(1)"] == PrometheusScalar(value=4.5, timestamp=100.0)
    assert results["depth"] == PrometheusVector(samples=(PrometheusSample({"q": "a"}, 7.0, 100.0),))
    assert results["idle"].samples == () and "broken" not in results
    assert policy.prometheus_metrics == {"scalar(1)": 4.5, "depth": 7.0}  # 'two' has no single value
    assert policy(3) == (7.0, {})
    assert "Bearer t" in _Prometheus.seen_headers
    with pytest.raises(TypeError):
        results["depth"].samples[0].labels["q"] = "x"


def test_no_address_or_stale_cache_reads_none(prometheus):
    assert Policy(prometheus_address="", prometheus_queries=["depth"]).prometheus_metrics is None
    policy = Policy(prometheus_address=prometheus, prometheus_queries=["depth"], fetch_interval_s=60, cache_ttl_s=1.0)
    wait_for_condition(lambda: policy.prometheus_metrics, timeout=10)
    wait_for_condition(lambda: policy.prometheus_metrics is None, timeout=5, message="older than the TTL: None")


def test_parsing_rules():
    assert query_url("h:9090") == "http://h:9090/api/v1/query"
    assert query_url("https://h/api/v1/query/") == "https://h/api/v1/query"
    assert parse_headers('{"a": "b"}') == {"a": "b"}
    with pytest.raises(ValueError):
        parse_headers('{"a": 1}')
    assert parse_result({"status": "success", "data": {"resultType": "scalar", "result": [1, "Inf"]}}) is None
    with pytest.raises(ValueError, match="failed"):
        parse_result({"status": "error", "error": "x"})
    with pytest.raises(ValueError, match="Unsupported"):
        parse_result({"status": "success", "data": {"resultType": "matrix", "result": []}})
