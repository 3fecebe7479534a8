"""`backpressure_config` (Ray Serve 2.60's BackpressureConfig): the status code and
Retry-After header of HTTP requests rejected past `max_queued_requests`, applied
in place when changed."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import ray_serving_ext as serve
from ray_serving_ext.config import BackpressureConfig
from ray_serving_ext.exceptions import BackPressureError
from tests.utils import wait_for_condition


@serve.deployment(
    max_ongoing_requests=1,
    max_queued_requests=1,
    backpressure_config=BackpressureConfig(status_code=429, retry_after_s=7),
)
class Slow:
    def __call__(self, request=None) -> str:
        time.sleep(2)
        return "done"

    def pid(self) -> int:
        return os.getpid()


def _fill_and_reject(url: str) -> tuple:
    """Two requests occupy the replica and the queue; returns (third response,
    seconds it took, the two others' status codes)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(requests.get, url, timeout=30)
        time.sleep(0.5)  # let it reach the replica (it takes 2 s)
        queued = pool.submit(requests.get, url, timeout=30)
        time.sleep(0.5)
        assert not first.done() and not queued.done()
        start = time.monotonic()
        third = requests.get(url, timeout=30)
        elapsed = time.monotonic() - start
        return third, elapsed, [first.result().status_code, queued.result().status_code]


def test_http_rejection_uses_status_code_and_retry_after(serve_url):
    serve.run(Slow.bind(), name="bp", route_prefix="/bp")
    third, elapsed, others = _fill_and_reject(f"{serve_url}/bp")
    assert third.status_code == 429
    assert third.headers.get("retry-after") == "7"
    assert third.headers.get("x-request-id")
    assert "backpressure" in third.text
    assert elapsed < 1.5, f"the rejection must be immediate, took {elapsed:.2f}s"
    assert others == [200, 200]


def test_handle_error_carries_the_config(serve_url):
    handle = serve.run(Slow.options(backpressure_config={"retry_after_s": 2.5}).bind(), name="bp", route_prefix=None)
    first = handle.remote()
    time.sleep(0.5)
    queued = handle.remote()
    time.sleep(0.3)
    with pytest.raises(BackPressureError) as exc:
        handle.remote().result(timeout_s=30)
    assert (exc.value.status_code, exc.value.retry_after_s) == (503, 2.5)
    assert [first.result(timeout_s=30), queued.result(timeout_s=30)] == ["done", "done"]


def test_changing_backpressure_config_applies_in_place(serve_url):
    handle = serve.run(Slow.bind(), name="bp", route_prefix="/bp")
    pid = handle.pid.remote().result(timeout_s=30)
    serve.run(Slow.options(backpressure_config=BackpressureConfig(retry_after_s=0.2)).bind(),
              name="bp", route_prefix="/bp")

    def updated() -> bool:
        third, _, _ = _fill_and_reject(f"{serve_url}/bp")
        return third.status_code == 503 and third.headers.get("retry-after") == "1"

    wait_for_condition(updated, timeout=20, interval=0.2)
    assert handle.pid.remote().result(timeout_s=30) == pid  # the same replica: no restart
