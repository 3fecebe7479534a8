"""`deploy/grafana/serve-dashboard.json` (issue 16): every metric its queries use is one the instance exports.

An app is driven through every path the dashboard charts (answers, a user
error, requests refused past max_queued_requests, autoscaling), then each
metric name in the dashboard's queries must be a sample name in `/-/metrics`.
"""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

import ray_serving_ext as serve
from tests.utils import wait_for_condition

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "serve-dashboard.json"


@serve.deployment(max_ongoing_requests=1, max_queued_requests=1, graceful_shutdown_wait_loop_s=0.1,
                  autoscaling_config={"min_replicas": 1, "max_replicas": 2, "metrics_interval_s": 0.5,
                                      "look_back_period_s": 2})
async def charted(request) -> str:
    if request.url.path.endswith("/fail"):
        raise RuntimeError("charted failure")
    if request.url.path.endswith("/slow"):
        await asyncio.sleep(0.5)
    return "ok"


def _queries(node) -> list:
    """Every PromQL string in the dashboard (panel targets and templating queries)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                found.append(value)
            else:
                found += _queries(value)
    elif isinstance(node, list):
        for item in node:
            found += _queries(item)
    return found


def test_dashboard_is_well_formed():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("requests per second", "error rate", "p50", "p99", "replicas", "queue", "autoscaling"):
        assert topic in titles, topic


def test_every_metric_in_the_dashboard_is_exported(serve_url):
    names = sorted({m for q in _queries(json.loads(DASHBOARD.read_text())) for m in re.findall(r"\bray_serve_\w+", q)})
    assert len(names) >= 12, names
    serve.run(charted.bind(), name="charted", route_prefix="/charted")
    assert requests.get(f"{serve_url}/charted", timeout=10).text == "ok"
    assert requests.get(f"{serve_url}/charted/fail", timeout=10).status_code == 500
    with ThreadPoolExecutor(8) as pool:  # more than one running plus one queued: some are refused
        codes = list(pool.map(lambda _: requests.get(f"{serve_url}/charted/slow", timeout=30).status_code, range(8)))
    assert 503 in codes and 200 in codes, codes

    def missing() -> list:
        text = requests.get(f"{serve_url}/-/metrics", timeout=10).text
        exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
        return [n for n in names if n not in exported]

    try:
        wait_for_condition(lambda: not missing(), timeout=30, message="every dashboard metric is exported")
    except Exception:
        raise AssertionError(f"dashboard metrics not in /-/metrics: {missing()}") from None
