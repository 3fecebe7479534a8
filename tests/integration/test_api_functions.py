"""serve.run_many / RunTarget, serve.shutdown_async and controller_options on a
real Ray (Ray Serve 2.60's contract for these functions)."""

from __future__ import annotations

import asyncio
import os

import pytest
import ray
import requests

import ray_serving_ext as serve
from ray_serving_ext._private.cluster import find_controller
from ray_serving_ext.exceptions import RayServeException
from tests.utils import free_port, wait_for_condition

TIMEOUT = 15
FAST = {"graceful_shutdown_wait_loop_s": 0.1}


@serve.deployment(**FAST)
class Echo:
    def __init__(self, label: str) -> None:
        self.label = label

    def __call__(self, *args) -> str:
        return f"echo:{self.label}"


def test_run_many_deploys_all_and_returns_their_handles(serve_url):
    serve.run(Echo.bind("kept"), name="kept", route_prefix="/kept")
    handles = serve.run_many([
        serve.RunTarget(Echo.bind("a"), name="app_a", route_prefix="/a"),
        serve.RunTarget(Echo.bind("b"), name="app_b", route_prefix="/b"),
    ])
    assert [h.app_name for h in handles] == ["app_a", "app_b"]
    assert [h.remote().result(timeout_s=TIMEOUT) for h in handles] == ["echo:a", "echo:b"]
    apps = serve.status().applications
    assert {n: apps[n].status.value for n in ("app_a", "app_b", "kept")} == dict.fromkeys(
        ("app_a", "app_b", "kept"), "RUNNING")
    assert requests.get(f"{serve_url}/b", timeout=TIMEOUT).text == "echo:b"
    assert requests.get(f"{serve_url}/kept", timeout=TIMEOUT).text == "echo:kept"


def test_run_many_route_clash_changes_nothing(serve_url):
    serve.run(Echo.bind("old"), name="holder", route_prefix="/taken")
    with pytest.raises(RayServeException):
        serve.run_many([
            serve.RunTarget(Echo.bind("x"), name="new_x", route_prefix="/x"),
            serve.RunTarget(Echo.bind("y"), name="new_y", route_prefix="/taken"),
        ])
    assert set(serve.status().applications) == {"holder"}
    assert requests.get(f"{serve_url}/taken", timeout=TIMEOUT).text == "echo:old"


def test_run_many_without_waiting_returns_usable_handles(serve_url):
    (handle,) = serve.run_many(
        [serve.RunTarget(Echo.bind("later"), name="later", route_prefix=None)],
        wait_for_ingress_deployment_creation=False, wait_for_applications_running=False,
    )
    assert handle.remote().result(timeout_s=TIMEOUT) == "echo:later"
    wait_for_condition(lambda: serve.status().applications["later"].status.value == "RUNNING", timeout=TIMEOUT)


def test_run_rejects_bad_controller_options(serve_url):
    with pytest.raises(ValueError):
        serve.run(Echo.bind("e"), name="ext", controller_options={"runtime_env": {"pip": ["x"]}})
    assert "ext" not in serve.status().applications


def _restart(serve_instance, **start_kwargs) -> None:
    """Start Serve again as the shared fixture expects it (127.0.0.1, a free port)."""
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, **start_kwargs)
    serve_instance.options = {"host": "127.0.0.1", "port": port}
    serve_instance.url = f"http://127.0.0.1:{port}"
    serve_instance.admin_url = ""  # started without the admin API


def test_shutdown_async_from_a_running_loop_then_controller_options(serve_instance):
    serve_instance.ensure()
    serve.run(Echo.bind("s"), name="gone", route_prefix="/gone")

    async def main() -> None:
        await serve.shutdown_async()
        await serve.shutdown_async()  # nothing left: a no-op, as in Ray Serve

    asyncio.run(main())
    assert find_controller() is None
    assert serve.status().applications == {}
    _restart(serve_instance, controller_options={"runtime_env": {"env_vars": {"RSE_CTRL_OPT": "on"}}})
    controller = find_controller()
    value = ray.get(controller.__ray_call__.remote(lambda self: os.environ.get("RSE_CTRL_OPT")), timeout=TIMEOUT)
    assert value == "on"


@ray.remote
class _Stopper:
    async def stop(self) -> bool:
        import ray_serving_ext as serve_in_actor
        from ray_serving_ext._private.cluster import find_controller as find

        await serve_in_actor.shutdown_async()
        return find() is None


def test_shutdown_async_from_a_ray_actor(serve_instance):
    serve_instance.ensure()
    serve.run(Echo.bind("t"), name="in_actor", route_prefix="/t")
    stopper = _Stopper.remote()
    try:
        assert ray.get(stopper.stop.remote(), timeout=90) is True
    finally:
        ray.kill(stopper)
    wait_for_condition(lambda: find_controller() is None, timeout=TIMEOUT)
    _restart(serve_instance)
    assert serve.status().applications == {}
