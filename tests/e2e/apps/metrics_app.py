"""A two-replica app for the Prometheus e2e test: `GET /...` answers "ok",
`GET /...?fail=1` raises in the replica (so the proxy answers 500)."""

from __future__ import annotations

from typing import Any

import ray_serving_ext as serve


@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.25})
class Counted:
    def __call__(self, request: Any) -> str:
        if request.query_params.get("fail"):
            raise RuntimeError("failing on purpose")
        return "ok"


app = Counted.bind()
