"""Model composition with DeploymentHandles (issue #2: item 4).

One application of four deployments is deployed once for the module:

    Pipeline (ingress)  --handles-->  Preprocessor, Model, Postprocessor

Pipeline chains them by passing each DeploymentResponse straight into the next
handle call. The tests call it from the driver (sync and async), over HTTP,
through pickled handles, and stream from a generator method.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import time

import pytest
import requests
from starlette.requests import Request

import ray_serving_ext as serve
from ray_serving_ext.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator

APP = "composition"
PREFIX = "/pipeline"
WEIGHT = 10
TIMEOUT = 15
FAST = {"graceful_shutdown_wait_loop_s": 0.1}


@serve.deployment(**FAST)
class Preprocessor:
    def __call__(self, text: str) -> str:
        return text.strip().lower()


@serve.deployment(**FAST)
class Model:
    def __init__(self, weight: int) -> None:
        self.weight = weight

    def predict(self, text: str) -> dict:
        return {"text": text, "score": len(text) * self.weight}

    def numbers(self, n: int):
        for i in range(n):
            yield {"i": i, "pid": os.getpid()}

    async def squares(self, n: int):
        for i in range(n):
            await asyncio.sleep(0)
            yield i * i

    def fail(self) -> None:
        raise ValueError("model failure on purpose")

    async def slow(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "slow done"


@serve.deployment(**FAST)
class Postprocessor:
    def __call__(self, result: dict) -> str:
        return f"{result['text']}:{result['score']}"


@serve.deployment(**FAST)
class Pipeline:
    def __init__(self, pre: DeploymentHandle, model: DeploymentHandle, post: DeploymentHandle) -> None:
        self.pre, self.model, self.post = pre, model, post

    async def __call__(self, text) -> str:
        if isinstance(text, Request):  # HTTP: the body is the text
            text = (await text.body()).decode()
        cleaned = self.pre.remote(text)
        scored = self.model.predict.remote(cleaned)  # a DeploymentResponse as an argument
        return await self.post.remote(scored)

    def sync_chain(self, text: str) -> str:
        """Sync method (runs in a thread): blocking .result() on handles inside a replica."""
        cleaned = self.pre.remote(text).result(timeout_s=TIMEOUT)
        scored = self.model.options(method_name="predict").remote(cleaned).result(timeout_s=TIMEOUT)
        return self.post.remote(scored).result(timeout_s=TIMEOUT)

    def handle_types(self) -> list:
        return [type(h).__name__ for h in (self.pre, self.model, self.post)]

    async def call_with(self, handle: DeploymentHandle, *args):
        """Use a handle the caller passed in (it was pickled into this replica)."""
        return await handle.remote(*args)

    async def stream_through(self, n: int) -> list:
        gen = self.model.options(stream=True).squares.remote(n)
        return [item async for item in gen]


def build_app() -> serve.Application:
    return Pipeline.bind(Preprocessor.bind(), Model.bind(WEIGHT), Postprocessor.bind())


def expected(text: str) -> str:
    cleaned = text.strip().lower()
    return f"{cleaned}:{len(cleaned) * WEIGHT}"


def base_url(serve_session) -> str:
    """The session Serve instance's URL (the fixture gives the URL or an object with ensure())."""
    return serve_session if isinstance(serve_session, str) else serve_session.ensure()


@pytest.fixture(scope="module")
def pipeline(serve_session):
    """(handle, base_url): the composed app, deployed once for this module."""
    url = base_url(serve_session)
    handle = serve.run(build_app(), name=APP, route_prefix=PREFIX)
    yield handle, url
    serve.delete(APP)


def test_graph_has_four_healthy_deployments(pipeline):
    app = serve.status().applications[APP]
    assert app.status == "RUNNING"
    assert set(app.deployments) == {"Pipeline", "Preprocessor", "Model", "Postprocessor"}
    for name, dep in app.deployments.items():
        assert dep.status == "HEALTHY", name
        assert dep.replica_states == {"RUNNING": 1}, name


def test_chain_through_driver_handle(pipeline):
    handle, _ = pipeline
    response = handle.remote("  Hello World ")
    assert isinstance(response, DeploymentResponse)
    assert response.result(timeout_s=TIMEOUT) == expected("  Hello World ")


def test_chain_over_http(pipeline):
    _, url = pipeline
    resp = requests.post(f"{url}{PREFIX}", data="  Ray SERVE  ", timeout=TIMEOUT)
    assert resp.status_code == 200
    assert resp.text == expected("  Ray SERVE  ")


def test_bound_children_arrive_as_handles_and_block_inside_replicas(pipeline):
    handle, _ = pipeline
    assert handle.handle_types.remote().result(timeout_s=TIMEOUT) == ["DeploymentHandle"] * 3
    assert handle.options(method_name="sync_chain").remote(" ABC ").result(timeout_s=TIMEOUT) == expected("abc")


def test_method_and_options_method_name(pipeline):
    model = serve.get_deployment_handle("Model", app_name=APP)
    assert model.predict.remote("abcd").result(timeout_s=TIMEOUT) == {"text": "abcd", "score": 40}
    assert model.options(method_name="predict").remote("ab").result(timeout_s=TIMEOUT) == {"text": "ab", "score": 20}
    # options() returns a new handle; the original still calls __call__ of its deployment.
    pre = serve.get_deployment_handle("Preprocessor", app_name=APP)
    _ = pre.options(method_name="no_such_method")
    assert pre.remote(" X ").result(timeout_s=TIMEOUT) == "x"


def test_response_passed_as_argument_from_driver(pipeline):
    pre = serve.get_deployment_handle("Preprocessor", app_name=APP)
    model = serve.get_deployment_handle("Model", app_name=APP)
    post = serve.get_deployment_handle("Postprocessor", app_name=APP)
    result = post.remote(model.predict.remote(pre.remote("  Chained  "))).result(timeout_s=TIMEOUT)
    assert result == expected("  Chained  ")


def test_handles_pickle_round_trip(pipeline):
    model = serve.get_deployment_handle("Model", app_name=APP).options(method_name="predict")
    clone = pickle.loads(pickle.dumps(model))
    assert isinstance(clone, DeploymentHandle)
    assert (clone.deployment_name, clone.app_name) == ("Model", APP)
    assert clone.remote("xyz").result(timeout_s=TIMEOUT) == {"text": "xyz", "score": 30}  # method_name kept

    app_handle = pickle.loads(pickle.dumps(serve.get_app_handle(APP)))
    assert app_handle.remote(" Q ").result(timeout_s=TIMEOUT) == expected("q")


def test_handle_passed_into_a_replica(pipeline):
    handle, _ = pipeline
    pre = serve.get_deployment_handle("Preprocessor", app_name=APP)
    assert handle.call_with.remote(pre, "  PASSED ").result(timeout_s=TIMEOUT) == "passed"
    predict = serve.get_deployment_handle("Model", app_name=APP).options(method_name="predict")
    assert handle.call_with.remote(predict, "ab").result(timeout_s=TIMEOUT) == {"text": "ab", "score": 20}


async def test_await_responses_from_async_driver(pipeline):
    handle, _ = pipeline
    assert await handle.remote(" Async ") == expected("async")
    texts = [f" Item{i} " for i in range(5)]
    results = await asyncio.gather(*(handle.remote(t) for t in texts))
    assert results == [expected(t) for t in texts]


def test_result_timeout_and_user_errors(pipeline):
    model = serve.get_deployment_handle("Model", app_name=APP)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        model.slow.remote(3).result(timeout_s=0.3)
    assert time.monotonic() - start < 2.5
    assert model.slow.remote(0.01).result(timeout_s=TIMEOUT) == "slow done"

    with pytest.raises(ValueError, match="model failure on purpose"):
        model.fail.remote().result(timeout_s=TIMEOUT)
    # The replica keeps serving after a user exception.
    assert model.predict.remote("ok").result(timeout_s=TIMEOUT) == {"text": "ok", "score": 20}


def test_streaming_sync_generator(pipeline):
    model = serve.get_deployment_handle("Model", app_name=APP)
    gen = model.options(stream=True).numbers.remote(4)
    assert isinstance(gen, DeploymentResponseGenerator)
    items = list(gen)
    assert [item["i"] for item in items] == [0, 1, 2, 3]
    assert len({item["pid"] for item in items}) == 1
    assert list(model.options(stream=True, method_name="numbers").remote(0)) == []


async def test_streaming_async_iteration(pipeline):
    model = serve.get_deployment_handle("Model", app_name=APP)
    items = [x async for x in model.options(stream=True).squares.remote(5)]
    assert items == [0, 1, 4, 9, 16]


def test_streaming_inside_replica(pipeline):
    handle, _ = pipeline
    assert handle.stream_through.remote(4).result(timeout_s=TIMEOUT) == [0, 1, 4, 9]


def test_stream_true_on_non_generator_raises_type_error(pipeline):
    model = serve.get_deployment_handle("Model", app_name=APP)
    with pytest.raises(TypeError):
        list(model.options(stream=True).predict.remote("x"))


def test_generator_method_without_stream_raises_type_error(pipeline):
    """Ray Serve: calling a generator method without stream=True is a TypeError."""
    model = serve.get_deployment_handle("Model", app_name=APP)
    with pytest.raises(TypeError):
        model.numbers.remote(3).result(timeout_s=TIMEOUT)
    assert model.predict.remote("ok").result(timeout_s=TIMEOUT) == {"text": "ok", "score": 20}
