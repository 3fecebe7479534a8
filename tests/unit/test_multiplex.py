"""@serve.multiplexed without Ray: LRU per replica, shared concurrent loads, eviction runs __del__."""

import asyncio

import pytest

import ray_serving_ext as serve
from ray_serving_ext import multiplex


class Model:
    deleted: list = []

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    def __del__(self) -> None:
        Model.deleted.append(self.model_id)


class Server:
    def __init__(self) -> None:
        self.loads = []

    @serve.multiplexed(max_num_models_per_replica=2)
    async def get_model(self, model_id: str) -> Model:
        self.loads.append(model_id)
        await asyncio.sleep(0.01)
        return Model(model_id)


def test_lru_eviction_and_cache_hits(monkeypatch):
    reported = []
    monkeypatch.setattr(multiplex, "_on_models_changed", lambda ids: reported.append(ids))
    Model.deleted = []
    server = Server()

    async def main():
        for model_id in ["a", "b", "a", "c", "a", "b"]:
            model = await server.get_model(model_id)
            assert model.model_id == model_id

    asyncio.run(main())
    # a, b loaded; a hit; c evicts b (LRU); a hit; b evicts c
    assert server.loads == ["a", "b", "c", "b"]
    assert "b" in Model.deleted and "c" in Model.deleted and "a" not in Model.deleted
    assert reported[-1] == ["a", "b"]


def test_concurrent_requests_for_one_model_load_it_once(monkeypatch):
    monkeypatch.setattr(multiplex, "_on_models_changed", None)
    server = Server()

    async def main():
        return await asyncio.gather(*[server.get_model("m") for _ in range(5)])

    models = asyncio.run(main())
    assert server.loads == ["m"]
    assert len({id(m) for m in models}) == 1


def test_validation():
    with pytest.raises(ValueError):
        serve.multiplexed(max_num_models_per_replica=0)
    with pytest.raises(TypeError):
        serve.multiplexed(lambda model_id: model_id)
    with pytest.raises(TypeError):
        @serve.multiplexed
        async def two_args(a, b):
            return a
