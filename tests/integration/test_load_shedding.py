"""Load shedding as the production guide describes it (seed 001): 2 ongoing + 2 queued, rest 503
(no Retry-After by default: BackpressureConfig.retry_after_s defaults to None, as in Ray Serve 2.60)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import requests

import ray_serving_ext as serve
from ray_serving_ext.exceptions import BackPressureError


@serve.deployment(max_ongoing_requests=2, max_queued_requests=2)
class SlowDeployment:
    def __init__(self) -> None:
        self.running = 0
        self.max_seen = 0

    def __call__(self, request=None) -> str:
        self.running += 1
        self.max_seen = max(self.max_seen, self.running)
        try:
            time.sleep(2)
        finally:
            self.running -= 1
        return "Hello!"

    def max_concurrency_seen(self) -> int:
        return self.max_seen


def _proxy_queue_full(url: str, pool: ThreadPoolExecutor, n: int) -> list:
    return [pool.submit(requests.get, url, timeout=30) for _ in range(n)]


def test_http_sheds_load_with_503(serve_url):
    handle = serve.run(SlowDeployment.bind(), name="slow", route_prefix="/slow")
    url = f"{serve_url}/slow"
    with ThreadPoolExecutor(max_workers=16) as pool:
        first = _proxy_queue_full(url, pool, 2)
        time.sleep(0.5)  # let them reach the replica (they take 2 s each)
        queued = _proxy_queue_full(url, pool, 2)
        time.sleep(0.5)
        assert not any(f.done() for f in first + queued)
        start = time.monotonic()
        rejected = [f.result() for f in _proxy_queue_full(url, pool, 5)]
        elapsed = time.monotonic() - start
        assert [r.status_code for r in rejected] == [503] * 5
        assert elapsed < 1.5, f"rejections must be immediate, took {elapsed:.2f}s"
        for r in rejected:
            assert "retry-after" not in r.headers  # Ray Serve 2.60: BackpressureConfig.retry_after_s=None
            assert r.headers.get("x-request-id")
            assert "backpressure" in r.text
        assert [f.result().status_code for f in first + queued] == [200] * 4
    # The replica never ran more than max_ongoing_requests at once.
    assert handle.max_concurrency_seen.remote().result() <= 2


def test_handle_raises_backpressure_error(serve_url):
    handle = serve.run(SlowDeployment.bind(), name="slow", route_prefix=None)

    async def scenario() -> tuple:
        first = [handle.remote() for _ in range(2)]
        await asyncio.sleep(0.5)
        queued = [handle.remote() for _ in range(2)]
        await asyncio.sleep(0.3)
        errors = 0
        start = time.monotonic()
        for _ in range(5):
            try:
                await handle.remote()
            except BackPressureError as exc:
                errors += 1
                assert exc.max_queued_requests == 2
        elapsed = time.monotonic() - start
        results = await asyncio.gather(*first, *queued)
        return errors, elapsed, results

    errors, elapsed, results = asyncio.run(scenario())
    assert errors == 5
    assert elapsed < 1.0
    assert results == ["Hello!"] * 4
