"""@serve.batch inside a replica: concurrent HTTP requests are served in batches."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import List

import requests

import ray_serving_ext as serve


@serve.deployment(max_ongoing_requests=32)
class BatchedModel:
    def __init__(self) -> None:
        self.sizes: List[int] = []

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.2)
    async def predict(self, texts: List[str]) -> List[str]:
        self.sizes.append(len(texts))
        return [f"{t.upper()}:{len(texts)}" for t in texts]

    async def __call__(self, request) -> str:
        return await self.predict(request.query_params["text"])

    def batch_sizes(self) -> List[int]:
        return self.sizes


def test_concurrent_requests_are_batched(serve_url):
    handle = serve.run(BatchedModel.bind(), name="batched", route_prefix="/batched")
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(requests.get, f"{serve_url}/batched", params={"text": f"t{i}"}, timeout=30)
                   for i in range(16)]
        bodies = [f.result().text for f in futures]
    assert sorted(b.split(":")[0] for b in bodies) == sorted(f"T{i}" for i in range(16))
    sizes = handle.batch_sizes.remote().result()
    assert sum(sizes) == 16
    assert max(sizes) > 1, sizes
    assert all(s <= 8 for s in sizes)


@serve.deployment(max_ongoing_requests=32)
class TokenBudget:
    """Batches bounded by total characters (batch_size_fn), not by the number of requests."""

    def __init__(self) -> None:
        self.batches: List[List[str]] = []

    @serve.batch(max_batch_size=12, batch_wait_timeout_s=0.2, batch_size_fn=lambda items: sum(map(len, items)))
    async def predict(self, texts: List[str]) -> List[str]:
        self.batches.append(list(texts))
        return [t.upper() for t in texts]

    async def __call__(self, text: str) -> str:
        return await self.predict(text)

    def seen(self) -> List[List[str]]:
        return self.batches


def test_batch_size_fn_bounds_the_summed_size_in_a_replica(serve_url):
    handle = serve.run(TokenBudget.bind(), name="token-budget", route_prefix=None)
    texts = [f"t{i:03d}" for i in range(12)]  # 4 characters each: at most 3 per batch
    responses = [handle.remote(t) for t in texts]
    assert [r.result(timeout_s=30) for r in responses] == [t.upper() for t in texts]
    batches = handle.seen.remote().result()
    assert sorted(sum(batches, [])) == texts
    assert all(sum(map(len, b)) <= 12 for b in batches), batches
    assert max(len(b) for b in batches) > 1, batches
    serve.delete("token-budget")
