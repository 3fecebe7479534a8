"""Deployment-scoped actors on a real cluster: created with the deployment before
its replicas, shared by them through `serve.get_deployment_actor`, told who they
are by `serve.get_deployment_actor_context`, recreated when they die, and gone
with the application."""

from __future__ import annotations

import os
from typing import Any

import pytest
import ray
import requests
from starlette.requests import Request

import ray_serving_ext as serve
from ray_serving_ext._private.common import DeploymentID, deployment_actor_name
from ray_serving_ext.config import DeploymentActorConfig
from ray_serving_ext.exceptions import RayServeException
from tests.utils import wait_for_condition

TIMEOUT = 30


@ray.remote
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.value = start

    def incr(self) -> int:
        self.value += 1
        return self.value

    def whoami(self) -> dict[str, Any]:
        ctx = serve.get_deployment_actor_context()
        return {"app": ctx.app_name, "deployment": ctx.deployment, "actor": ctx.actor_name,
                "code_version": ctx.code_version, "pid": os.getpid()}


@serve.deployment(
    num_replicas=2,
    ray_actor_options={"num_cpus": 0.1},
    deployment_actors=[DeploymentActorConfig(name="counter", actor_class=Counter, init_kwargs={"start": 100},
                                             actor_options={"num_cpus": 0.1})],
    graceful_shutdown_wait_loop_s=0.1,
)
class Shared:
    def __init__(self) -> None:
        # The actor exists before any replica starts, so constructors may use it.
        self.seen_at_start = ray.get(serve.get_deployment_actor("counter").incr.remote())

    async def __call__(self, request: Request) -> dict[str, Any]:
        counter = serve.get_deployment_actor("counter")  # looked up per call: survives recreation
        if request.url.path.endswith("/whoami"):
            return await counter.whoami.remote()
        if request.url.path.endswith("/undeclared"):
            try:
                serve.get_deployment_actor("nope")
            except ValueError:
                return {"undeclared": "ValueError"}
        return {"value": await counter.incr.remote(), "replica": serve.get_replica_context().replica_id.unique_id,
                "seen_at_start": self.seen_at_start}


def _actor_name(app: str) -> str:
    return deployment_actor_name(DeploymentID("Shared", app), "counter")


def _live(app: str) -> Any:
    try:
        return ray.get_actor(_actor_name(app), namespace="serve")
    except ValueError:
        return None


def test_replicas_share_the_deployment_actor_and_it_knows_its_context(serve_url):
    serve.run(Shared.bind(), name="actors", route_prefix="/actors")
    bodies = [requests.get(f"{serve_url}/actors", timeout=TIMEOUT).json() for _ in range(20)]
    values = [b["value"] for b in bodies]
    # One counter for all replicas: the two constructors took 101 and 102.
    assert values == list(range(103, 123))
    assert sorted({b["seen_at_start"] for b in bodies}) in ([101], [102], [101, 102])
    who = requests.get(f"{serve_url}/actors/whoami", timeout=TIMEOUT).json()
    assert (who["app"], who["deployment"], who["actor"]) == ("actors", "Shared", "counter")
    assert who["code_version"] and who["pid"] != os.getpid()
    assert requests.get(f"{serve_url}/actors/undeclared", timeout=TIMEOUT).json() == {"undeclared": "ValueError"}


def test_the_actor_is_recreated_after_it_dies_and_goes_with_the_app(serve_url):
    serve.run(Shared.bind(), name="actorlife", route_prefix="/actorlife")
    first = requests.get(f"{serve_url}/actorlife/whoami", timeout=TIMEOUT).json()["pid"]
    ray.kill(_live("actorlife"), no_restart=True)

    def recreated() -> bool:
        body = requests.get(f"{serve_url}/actorlife/whoami", timeout=TIMEOUT).json()
        return body["pid"] != first

    wait_for_condition(recreated, timeout=TIMEOUT, message="a new counter actor")
    # A fresh instance: constructed again with the declared arguments.
    assert requests.get(f"{serve_url}/actorlife", timeout=TIMEOUT).json()["value"] == 101

    serve.delete("actorlife")
    wait_for_condition(lambda: _live("actorlife") is None, timeout=TIMEOUT, message="actor deleted with the app")


def test_actor_class_by_import_path_with_options(serve_url):
    app = Shared.options(deployment_actors=[
        {"name": "counter", "actor_class": "tests.integration.test_deployment_actors:Counter",
         "init_args": [7]},
    ]).bind()
    serve.run(app, name="bypath", route_prefix="/bypath")
    values = sorted(requests.get(f"{serve_url}/bypath", timeout=TIMEOUT).json()["value"] for _ in range(3))
    assert values == [10, 11, 12]  # 8 and 9 were taken by the two constructors


def test_context_apis_outside_their_places():
    with pytest.raises(RayServeException, match="deployment replica"):
        serve.get_deployment_actor("counter")
    with pytest.raises(RayServeException, match="deployment actor"):
        serve.get_deployment_actor_context()
