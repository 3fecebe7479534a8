"""A two-level graph: an ingress bound to two bindings of the same Model."""

from __future__ import annotations

from typing import Any

import ray_serving_ext as serve


@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=7)
class Model:
    def __init__(self, weight: int) -> None:
        self.weight = weight

    def __call__(self, x: int) -> int:
        return x * self.weight


@serve.deployment(route_prefix="/graph")
class Ingress:
    def __init__(self, first: Any, second: Any) -> None:
        self.first = first
        self.second = second

    async def __call__(self, request: Any) -> int:
        a = await self.first.remote(1)
        b = await self.second.remote(1)
        return a + b


app = Ingress.bind(Model.bind(2), Model.bind(3))

versioned = Model.options(name="Versioned", version="v1").bind(1)
