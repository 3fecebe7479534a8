"""Autoscaling under a bounded load loop: up to >= 3 replicas, back down; scale to and from zero."""

from __future__ import annotations

import asyncio
import threading
import time

import requests

import ray_serving_ext as serve
from tests.utils import wait_for_condition


@serve.deployment(
    max_ongoing_requests=5,
    graceful_shutdown_wait_loop_s=0.1,
    autoscaling_config={
        "min_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 0.5,
        "downscale_delay_s": 2,
        "look_back_period_s": 1,
        "metrics_interval_s": 0.5,
    },
)
class Busy:
    async def __call__(self, request) -> str:
        await asyncio.sleep(0.3)
        return "ok"


def _running_replicas(app: str, deployment: str) -> int:
    dep = serve.status().applications[app].deployments[deployment]
    return {str(k): v for k, v in dep.replica_states.items()}.get("RUNNING", 0)


def _load(url: str, stop: threading.Event, deadline: float, counts: list) -> None:
    with requests.Session() as session:
        while not stop.is_set() and time.monotonic() < deadline:
            counts.append(session.get(url, timeout=30).status_code)


def test_scales_up_under_load_and_back_down(serve_url):
    serve.run(Busy.bind(), name="busy", route_prefix="/busy")
    assert _running_replicas("busy", "Busy") == 1
    stop = threading.Event()
    counts: list = []
    deadline = time.monotonic() + 40
    threads = [threading.Thread(target=_load, args=(f"{serve_url}/busy", stop, deadline, counts), daemon=True)
               for _ in range(6)]
    for t in threads:
        t.start()
    try:
        wait_for_condition(lambda: _running_replicas("busy", "Busy") >= 3, timeout=30,
                           message="scale up to at least 3 replicas")
        target = serve.status().applications["busy"].deployments["Busy"].target_num_replicas
        assert target >= 3
    finally:
        stop.set()
        for t in threads:
            t.join(35)
    assert counts and set(counts) == {200}
    wait_for_condition(lambda: _running_replicas("busy", "Busy") == 1
                       and serve.status().applications["busy"].deployments["Busy"].target_num_replicas == 1,
                       timeout=40, message="scale back down to min_replicas")


@serve.deployment(
    graceful_shutdown_wait_loop_s=0.1,
    autoscaling_config={
        "min_replicas": 0,
        "max_replicas": 2,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 0.5,
        "downscale_delay_s": 2,
        "look_back_period_s": 1,
    },
)
def lazy(request) -> str:
    return "cold start served"


def test_scale_to_zero_then_cold_start(serve_url):
    serve.run(lazy.bind(), name="lazy", route_prefix="/lazy")
    wait_for_condition(lambda: _running_replicas("lazy", "lazy") == 0, timeout=30, message="idle at zero")
    start = time.monotonic()
    resp = requests.get(f"{serve_url}/lazy", timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.text == "cold start served"
    print(f"cold start took {time.monotonic() - start:.2f}s")
    assert _running_replicas("lazy", "lazy") == 1
    wait_for_condition(lambda: _running_replicas("lazy", "lazy") == 0, timeout=30, message="back to zero")


def test_autoscaling_validation():
    import pytest

    with pytest.raises(Exception, match="num_replicas"):
        serve.deployment(num_replicas=2, autoscaling_config={"min_replicas": 1, "max_replicas": 3})(lambda r: r)
    with pytest.raises(Exception, match="initial_replicas"):
        serve.deployment(autoscaling_config={"min_replicas": 2, "initial_replicas": 1, "max_replicas": 3})(
            lambda r: r
        )
    auto = serve.deployment(num_replicas="auto")(lambda r: r)
    assert auto.config.autoscaling_config.max_replicas == 100
