"""Metrics at /-/metrics (Prometheus text, Ray Serve's names) and per-request access logs."""

from __future__ import annotations

import glob
import json
import os
import threading
import uuid

import ray
import requests
from prometheus_client.parser import text_string_to_metric_families

import ray_serving_ext as serve
from tests.utils import wait_for_condition


@serve.deployment(num_replicas=2)
class Echo:
    def __call__(self, request) -> str:
        if request.query_params.get("fail"):
            raise RuntimeError("asked to fail")
        return "echo"


def _scrape(url: str) -> dict:
    text = requests.get(f"{url}/-/metrics", timeout=10).text
    return {family.name: family for family in text_string_to_metric_families(text)}


def _sum(families: dict, name: str, **labels) -> float:
    family = families.get(name)
    if family is None:
        return 0.0
    return sum(
        s.value for s in family.samples
        if s.name == name + "_total" or (s.name == name and family.type != "counter")
        if all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_count_requests_and_errors(serve_url):
    app = f"metrics-{uuid.uuid4().hex[:8]}"  # counters are cumulative: a fresh app name starts at zero
    serve.run(Echo.bind(), name=app, route_prefix="/echo")
    url = f"{serve_url}/echo"
    sent = 0
    scraped_during_load = []

    def scraper() -> None:
        for _ in range(3):
            scraped_during_load.append(_scrape(serve_url))

    t = threading.Thread(target=scraper)
    t.start()
    with requests.Session() as session:
        for _ in range(60):
            assert session.get(url, timeout=10).status_code == 200
            sent += 1
    t.join(30)
    assert scraped_during_load and all(scraped_during_load)
    wait_for_condition(
        lambda: _sum(_scrape(serve_url), "ray_serve_num_http_requests", application=app, status_code="200") == sent,
        timeout=20, message="proxy request counter equals requests sent",
    )
    wait_for_condition(
        lambda: _sum(_scrape(serve_url), "ray_serve_deployment_request_counter", application=app,
                     deployment="Echo") == sent,
        timeout=20, message="replica request counters (both replicas) sum to requests sent",
    )
    families = _scrape(serve_url)
    latency = families["ray_serve_http_request_latency_ms"]
    counts = [s.value for s in latency.samples if s.name.endswith("_count") and s.labels.get("application") == app]
    assert sum(counts) == sent
    assert "ray_serve_deployment_processing_latency_ms" in families
    assert _sum(families, "ray_serve_deployment_replica_healthy", application=app) == 2  # 1 once RUNNING
    assert _sum(families, "ray_serve_deployment_num_replicas", application=app, state="RUNNING") == 2

    assert requests.get(url, params={"fail": "1"}, timeout=10).status_code == 500
    wait_for_condition(
        lambda: _sum(_scrape(serve_url), "ray_serve_num_http_error_requests", application=app, error_code="500") == 1,
        timeout=20, message="HTTP error counter",
    )
    wait_for_condition(
        lambda: _sum(_scrape(serve_url), "ray_serve_deployment_error_counter", application=app) == 1,
        timeout=20, message="replica error counter",
    )


def _serve_logs_dir() -> str:
    return os.path.join(ray._private.worker._global_node.get_logs_dir_path(), "serve")


def test_access_log_has_one_line_per_request_with_its_id(serve_url):
    serve.run(Echo.bind(), name="echo", route_prefix="/echo")
    ids = []
    with requests.Session() as session:
        for i in range(10):
            resp = session.get(f"{serve_url}/echo", timeout=10)
            ids.append(resp.headers["x-request-id"])
        resp = session.get(f"{serve_url}/echo", headers={"x-request-id": "client-chosen-id"}, timeout=10)
        assert resp.headers["x-request-id"] == "client-chosen-id"
        ids.append("client-chosen-id")

    def lines_for(pattern: str) -> list:
        out = []
        for path in glob.glob(os.path.join(_serve_logs_dir(), pattern)):
            with open(path) as f:
                out.extend(line for line in f if any(i in line for i in ids))
        return out

    def replica_lines_complete() -> bool:
        lines = lines_for("replica_echo_Echo_*.log")
        return all(sum(i in line for line in lines) == 1 for i in ids)

    wait_for_condition(replica_lines_complete, timeout=20, message="one replica access line per request")
    wait_for_condition(lambda: all(sum(i in l for l in lines_for("proxy_*.log")) == 1 for i in ids), timeout=20,
                       message=f"one proxy access line per request in {_serve_logs_dir()}")
    line = next(l for l in lines_for("replica_echo_Echo_*.log") if "client-chosen-id" in l)
    assert " OK " in line or " 200 " in line
    assert "ms" in line


@serve.deployment(logging_config={"encoding": "JSON"})
def json_logged(request) -> str:
    ctx = serve.get_replica_context()
    return ctx.request_id


def test_json_logs_and_request_id_in_context(serve_url):
    serve.run(json_logged.bind(), name="jsonlog", route_prefix="/jsonlog")
    resp = requests.get(f"{serve_url}/jsonlog", headers={"x-request-id": "json-req-1"}, timeout=10)
    assert resp.text == "json-req-1"

    def found() -> dict:
        for path in glob.glob(os.path.join(_serve_logs_dir(), "replica_jsonlog_json_logged_*.log")):
            with open(path) as f:
                for line in f:
                    if "json-req-1" in line:
                        return json.loads(line)
        return {}

    record = wait_for_condition(found, timeout=20)
    assert record["request_id"] == "json-req-1"
    assert record["deployment"] == "json_logged"
    assert record["app"] == "jsonlog"
