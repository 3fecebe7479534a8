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
