"""`handle.broadcast()`: one call to every running replica (Ray Serve 2.60's DeploymentBroadcastResponse)."""

from __future__ import annotations

import pytest

import ray_serving_ext as serve
from ray_serving_ext.handle import DeploymentBroadcastResponse

TIMEOUT = 30


@serve.deployment(num_replicas=3, graceful_shutdown_wait_loop_s=0.1)
class Cached:
    def __init__(self) -> None:
        self.cache = {"k": 1}

    def reset(self, value: int = 0) -> str:
        self.cache = {"k": value}
        return serve.get_replica_context().replica_tag

    def read(self) -> int:
        return self.cache["k"]

    def fail(self) -> None:
        raise ValueError("no such cache")


@serve.deployment
class Admin:
    def __init__(self, cached) -> None:
        self.cached = cached

    async def __call__(self) -> int:
        return len(await self.cached.broadcast("reset", value=7).results_async(timeout_s=TIMEOUT))


def test_broadcast_reaches_every_replica(serve_url):
    handle = serve.run(Cached.bind(), name="bcast", route_prefix=None)
    response = handle.broadcast("reset", value=5)
    assert isinstance(response, DeploymentBroadcastResponse)
    ids = response.results(timeout_s=TIMEOUT)
    assert len(ids) == 3 and len(set(ids)) == 3
    assert {handle.read.remote().result(timeout_s=TIMEOUT) for _ in range(12)} == {5}


def test_broadcast_errors_raise_or_are_returned(serve_url):
    handle = serve.run(Cached.bind(), name="bcast_err", route_prefix=None)
    with pytest.raises(ValueError, match="no such cache"):
        handle.broadcast("fail").results(timeout_s=TIMEOUT)
    errors = handle.broadcast("fail").results(timeout_s=TIMEOUT, return_exceptions=True)
    assert len(errors) == 3 and all(isinstance(e, ValueError) for e in errors)
    with pytest.raises(ValueError, match="non-negative"):
        handle.broadcast("reset").results(timeout_s=-1)


def test_broadcast_from_inside_a_deployment(serve_url):
    handle = serve.run(Admin.bind(Cached.bind()), name="bcast_in", route_prefix=None)
    assert handle.remote().result(timeout_s=TIMEOUT) == 3
