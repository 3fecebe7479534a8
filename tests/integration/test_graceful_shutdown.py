"""Scaling down and deleting drain replicas: in-flight requests finish, then the actor stops."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor

import ray
import requests

import ray_serving_ext as serve
from ray_serving_ext._private.constants import SERVE_NAMESPACE
from tests.utils import wait_for_condition


@serve.deployment(num_replicas=2, max_ongoing_requests=10, graceful_shutdown_wait_loop_s=0.2,
                  graceful_shutdown_timeout_s=20)
class Slow:
    async def __call__(self, request) -> str:
        await asyncio.sleep(float(request.query_params.get("s", "0")))
        return str(os.getpid())


def _replica_names(app: str) -> list:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == SERVE_NAMESPACE and a["name"].startswith(f"SERVE_REPLICA::{app}#")]


def test_scale_down_drains_in_flight_requests(serve_url):
    serve.run(Slow.bind(), name="slow", route_prefix="/slow")
    url = f"{serve_url}/slow"
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(requests.get, url, params={"s": "3"}, timeout=30) for _ in range(8)]
        time.sleep(1)  # all 8 are running, spread over both replicas
        serve.run(Slow.options(num_replicas=1).bind(), name="slow", route_prefix="/slow")
        results = [f.result() for f in futures]
    assert [r.status_code for r in results] == [200] * 8
    assert len({r.text for r in results}) == 2, "requests ran on both replicas"
    wait_for_condition(lambda: len(_replica_names("slow")) == 1, timeout=30)


def test_delete_drains_then_removes_actors(serve_url):
    serve.run(Slow.bind(), name="slow", route_prefix="/slow")
    url = f"{serve_url}/slow"
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(requests.get, url, params={"s": "2"}, timeout=30) for _ in range(4)]
        time.sleep(0.7)
        serve.delete("slow")
        assert [f.result().status_code for f in futures] == [200] * 4
    assert _replica_names("slow") == []
    assert "slow" not in serve.status().applications
    assert requests.get(url, timeout=10).status_code == 404
