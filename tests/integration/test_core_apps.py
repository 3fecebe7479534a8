"""Applications side by side, status, handles by name, replica context, failures
(issue #2: items 10, 11).
"""

from __future__ import annotations

import os

import pytest
import ray
import requests
from starlette.requests import Request

import ray_serving_ext as serve
from ray_serving_ext import exceptions
from tests.utils import wait_for_condition

TIMEOUT = 15
FAST = {"graceful_shutdown_wait_loop_s": 0.1}


@serve.deployment(**FAST)
class Backend:
    def __init__(self, label: str) -> None:
        self.label = label

    def __call__(self, *args) -> str:
        return f"backend:{self.label}"

    def context(self) -> dict:
        ctx = serve.get_replica_context()
        return {"app_name": ctx.app_name, "deployment": ctx.deployment, "replica_tag": ctx.replica_tag,
                "pid": os.getpid()}


@serve.deployment(**FAST)
class Frontend:
    def __init__(self, backend) -> None:
        self.backend = backend

    async def __call__(self, request: Request) -> dict:
        ctx = serve.get_replica_context()
        return {
            "backend": await self.backend.remote(),
            "backend_ctx": await self.backend.context.remote(),
            "app_name": ctx.app_name,
            "deployment": ctx.deployment,
            "replica_tag": ctx.replica_tag,
        }

    async def lookup(self, deployment_name: str) -> str:
        """serve.get_deployment_handle inside a replica defaults to its own application."""
        return await serve.get_deployment_handle(deployment_name).remote()


@serve.deployment(**FAST)
class Broken:
    def __init__(self) -> None:
        raise ValueError("constructor exploded: missing weights file /models/w.bin")

    def __call__(self, *args) -> str:
        return "never"


def deploy_pair(name: str, label: str, prefix: str):
    return serve.run(Frontend.bind(Backend.bind(label)), name=name, route_prefix=prefix)


def test_exceptions_importable():
    assert issubclass(serve.exceptions.BackPressureError, serve.exceptions.RayServeException)
    assert issubclass(serve.exceptions.DeploymentUnavailableError, serve.exceptions.RayServeException)
    assert issubclass(serve.exceptions.RequestCancelledError, serve.exceptions.RayServeException)
    assert issubclass(serve.exceptions.RayServeException, Exception)
    from ray_serving_ext.exceptions import (  # noqa: F401 - the import is the test
        BackPressureError,
        DeploymentUnavailableError,
        RayServeException,
        RequestCancelledError,
    )

    assert exceptions is serve.exceptions


def test_replica_context_outside_a_replica_raises():
    with pytest.raises(serve.exceptions.RayServeException):
        serve.get_replica_context()


def test_two_apps_status_delete_one(serve_url):
    deploy_pair("app1", "one", "/app1")
    deploy_pair("app2", "two", "/app2")

    status = serve.status()
    assert set(status.applications) == {"app1", "app2"}
    for name in ("app1", "app2"):
        app = status.applications[name]
        assert app.status == "RUNNING"
        assert set(app.deployments) == {"Frontend", "Backend"}
        for dname, dep in app.deployments.items():
            assert dep.status == "HEALTHY", (name, dname)
            assert dep.replica_states == {"RUNNING": 1}, (name, dname)
    assert status.applications["app1"].route_prefix == "/app1"

    # A third application cannot take a route prefix another one uses.
    with pytest.raises(serve.exceptions.RayServeException, match="/app2"):
        serve.run(Backend.bind("clash"), name="app3", route_prefix="/app2")
    assert "app3" not in serve.status().applications

    one = requests.get(f"{serve_url}/app1", timeout=TIMEOUT).json()
    two = requests.get(f"{serve_url}/app2", timeout=TIMEOUT).json()
    assert one["backend"] == "backend:one"
    assert two["backend"] == "backend:two"

    serve.delete("app1")
    assert set(serve.status().applications) == {"app2"}
    wait_for_condition(lambda: requests.get(f"{serve_url}/app1", timeout=TIMEOUT).status_code == 404,
                       timeout=20, message="deleted app's route should 404")
    assert requests.get(f"{serve_url}/-/routes", timeout=TIMEOUT).json() == {"/app2": "app2"}
    for _ in range(3):
        resp = requests.get(f"{serve_url}/app2", timeout=TIMEOUT)
        assert resp.status_code == 200
        assert resp.json()["backend"] == "backend:two"
    with pytest.raises(serve.exceptions.RayServeException):
        serve.get_app_handle("app1")
    # Deleting an application that does not exist is not an error.
    serve.delete("never-existed")


def test_handles_by_name_and_replica_context(serve_url):
    deploy_pair("ctxapp", "ctx", "/ctx")

    app_handle = serve.get_app_handle("ctxapp")
    assert (app_handle.app_name, app_handle.deployment_name) == ("ctxapp", "Frontend")
    backend = serve.get_deployment_handle("Backend", app_name="ctxapp")
    assert backend.remote().result(timeout_s=TIMEOUT) == "backend:ctx"
    assert app_handle.lookup.remote("Backend").result(timeout_s=TIMEOUT) == "backend:ctx"
    with pytest.raises(serve.exceptions.RayServeException):
        serve.get_deployment_handle("NoSuchDeployment", app_name="ctxapp")

    ctx = backend.context.remote().result(timeout_s=TIMEOUT)
    assert ctx["app_name"] == "ctxapp"
    assert ctx["deployment"] == "Backend"
    assert ctx["replica_tag"]
    # The replica tag names the replica's actor: SERVE_REPLICA::<app>#<deployment>#<tag>.
    names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
    assert f"SERVE_REPLICA::ctxapp#Backend#{ctx['replica_tag']}" in names

    over_http = requests.get(f"{serve_url}/ctx", timeout=TIMEOUT).json()
    assert over_http["app_name"] == "ctxapp"
    assert over_http["deployment"] == "Frontend"
    assert over_http["replica_tag"] and over_http["replica_tag"] != ctx["replica_tag"]
    assert over_http["backend_ctx"]["replica_tag"] == ctx["replica_tag"]


def test_constructor_failure_is_deploy_failed_and_isolated(serve_url):
    deploy_pair("healthy", "ok", "/healthy")

    with pytest.raises(RuntimeError) as info:
        serve.run(Broken.bind(), name="broken", route_prefix="/broken")
    text = str(info.value)
    assert "constructor exploded: missing weights file /models/w.bin" in text
    assert "broken" in text

    app = serve.status().applications["broken"]
    assert app.status == "DEPLOY_FAILED"
    assert "constructor exploded" in app.message
    dep = app.deployments["Broken"]
    assert dep.status == "DEPLOY_FAILED"
    assert "constructor exploded" in dep.message
    assert dep.replica_states.get("RUNNING", 0) == 0

    # The other application is untouched.
    healthy = serve.status().applications["healthy"]
    assert healthy.status == "RUNNING"
    assert all(d.status == "HEALTHY" for d in healthy.deployments.values())
    resp = requests.get(f"{serve_url}/healthy", timeout=TIMEOUT)
    assert resp.status_code == 200
    assert resp.json()["backend"] == "backend:ok"

    # Fixing the code under the same name recovers the application.
    serve.run(Backend.bind("fixed"), name="broken", route_prefix="/broken")
    assert serve.status().applications["broken"].status == "RUNNING"
    assert requests.get(f"{serve_url}/broken", timeout=TIMEOUT).text == "backend:fixed"
