"""Model multiplexing: requests carry a model id; replicas holding the model get its requests."""

from __future__ import annotations

import os

import requests

import ray_serving_ext as serve
from tests.utils import wait_for_condition


@serve.deployment(num_replicas=2, max_ongoing_requests=10)
class ModelServer:
    def __init__(self) -> None:
        self.loads = 0

    @serve.multiplexed(max_num_models_per_replica=2)
    async def get_model(self, model_id: str) -> str:
        self.loads += 1
        return f"model-{model_id}"

    async def __call__(self, request=None) -> dict:
        model_id = serve.get_multiplexed_model_id()
        model = await self.get_model(model_id)
        return {"model": model, "pid": os.getpid(), "loads": self.loads}


def test_requests_stick_to_replicas_holding_their_model(serve_url):
    handle = serve.run(ModelServer.bind(), name="mux", route_prefix="/mux")
    url = f"{serve_url}/mux"
    first = requests.get(url, headers={"serve_multiplexed_model_id": "alpha"}, timeout=10).json()
    assert first["model"] == "model-alpha"
    holder = first["pid"]

    # Once the controller has told callers where "alpha" lives, its requests go there.
    def sticky() -> bool:
        pids = {requests.get(url, headers={"serve_multiplexed_model_id": "alpha"}, timeout=10).json()["pid"]
                for _ in range(10)}
        return pids == {holder}

    wait_for_condition(sticky, timeout=20, message="requests for 'alpha' go to the replica that loaded it")
    via_handle = handle.options(multiplexed_model_id="alpha").remote().result(timeout_s=10)
    assert via_handle["model"] == "model-alpha" and via_handle["pid"] == holder
