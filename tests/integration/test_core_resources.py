"""Replica resources and the actors Serve runs (issue #2: items 8, 9).

The session's Ray has 16 logical CPUs and 2 logical GPUs. Fractional GPUs are
packed by Ray; a replica asking for more than any node has stays pending, and
the deployment's status says why instead of failing.
"""

from __future__ import annotations

import collections
import os
import threading

import ray
import requests

import ray_serving_ext as serve
from tests.utils import wait_for_condition

TIMEOUT = 15
FAST = {"graceful_shutdown_wait_loop_s": 0.1}


@serve.deployment(num_replicas=4, ray_actor_options={"num_gpus": 0.5, "num_cpus": 0.1}, **FAST)
class GpuModel:
    def __call__(self, *args) -> dict:
        return {
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "replica": serve.get_replica_context().replica_tag,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }


# A replica that was never placed is still stopped gracefully (as in Ray Serve), which
# waits out graceful_shutdown_timeout_s; keep that short here.
@serve.deployment(graceful_shutdown_wait_loop_s=0.1, graceful_shutdown_timeout_s=0)
class Needy:
    """Resources are set per test with .options(ray_actor_options=...)."""

    def __call__(self, *args) -> str:
        return "scheduled"


def test_fractional_gpus_are_packed_two_per_gpu(serve_url):
    handle = serve.run(GpuModel.bind(), name="gpu", route_prefix="/gpu")
    assert serve.status().applications["gpu"].deployments["GpuModel"].replica_states == {"RUNNING": 4}

    seen: dict = {}

    def all_replicas_seen() -> bool:
        out = handle.remote().result(timeout_s=TIMEOUT)
        seen[out["replica"]] = out
        return len(seen) == 4

    wait_for_condition(all_replicas_seen, timeout=60, interval=0.01, message="all 4 replicas should answer")
    per_gpu = collections.Counter()
    for out in seen.values():
        assert len(out["gpu_ids"]) == 1, out  # exactly one GPU each
        per_gpu[out["gpu_ids"][0]] += 1
        assert out["cuda_visible_devices"] == out["gpu_ids"][0]
    assert per_gpu == {"0": 2, "1": 2}

    # Over HTTP the replicas are the same ones.
    resp = requests.get(f"{serve_url}/gpu", timeout=TIMEOUT)
    assert resp.status_code == 200
    assert resp.json()["replica"] in seen


def _deploy_unschedulable(name: str, ray_actor_options: dict, fragment: str, serve_url: str) -> None:
    """Deploy a replica that cannot be placed; check status explains it; then fix the app.

    serve.run blocks until RUNNING, so it runs in a thread. Redeploying the app with
    resources the cluster has lets that serve.run return, so no thread is left behind.
    """
    errors: list = []

    def run() -> None:
        try:
            serve.run(Needy.options(ray_actor_options=ray_actor_options).bind(), name=name, route_prefix=f"/{name}")
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True, name=f"serve-run-{name}")
    thread.start()
    try:

        def explains_why():
            app = serve.status().applications.get(name)
            if app is None:
                return None
            dep = app.deployments.get("Needy")
            if dep is None or fragment not in dep.message:
                return None
            return app, dep

        app, dep = wait_for_condition(explains_why, timeout=30, interval=0.1,
                                      message=f"status of {name} should say why replicas cannot be scheduled")
        assert "cannot be scheduled" in dep.message
        assert app.status == "DEPLOYING"
        assert fragment in app.message
        assert dep.status == "UPDATING"
        assert dep.replica_states == {"STARTING": 1}
        assert thread.is_alive(), "serve.run must still be waiting"
        assert not errors
        # The route is published already; requests to it wait for a replica.
        assert requests.get(f"{serve_url}/-/routes", timeout=TIMEOUT).json().get(f"/{name}") == name
    finally:
        # Replace the unschedulable version with one that fits; the waiting serve.run returns.
        serve.run(Needy.options(ray_actor_options={"num_cpus": 0.1}).bind(), name=name, route_prefix=f"/{name}")
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert not errors, errors
    assert requests.get(f"{serve_url}/{name}", timeout=TIMEOUT).text == "scheduled"
    serve.delete(name)
    assert name not in serve.status().applications


def test_too_many_gpus_stays_pending_with_message(serve_url):
    _deploy_unschedulable("greedy_gpu", {"num_gpus": 4}, "GPU", serve_url)


def test_missing_custom_resource_stays_pending_with_message(serve_url):
    _deploy_unschedulable("custom_res", {"num_cpus": 0.1, "resources": {"tpu_pod": 1}}, "tpu_pod", serve_url)


def test_named_actors_live_in_serve_namespace(serve_url):
    serve.run(Needy.options(num_replicas=2, ray_actor_options={"num_cpus": 0.1}).bind(),
              name="actors_app", route_prefix="/actors")
    actors = ray.util.list_named_actors(all_namespaces=True)
    by_name = {a["name"]: a["namespace"] for a in actors}

    assert by_name.get("SERVE_CONTROLLER_ACTOR") == "serve"
    proxies = [n for n in by_name if n.startswith("SERVE_PROXY_ACTOR-")]
    assert len(proxies) == 1  # one node, one proxy
    assert by_name[proxies[0]] == "serve"
    replicas = sorted(n for n in by_name if n.startswith("SERVE_REPLICA::actors_app#Needy#"))
    assert len(replicas) == 2
    assert all(by_name[n] == "serve" for n in replicas)
    assert len(set(replicas)) == 2

    # The replica actors are reachable by name in the "serve" namespace.
    actor = ray.get_actor(replicas[0], namespace="serve")
    assert actor is not None

    serve.delete("actors_app")

    def replicas_gone() -> bool:
        names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
        return not any(n.startswith("SERVE_REPLICA::actors_app#") for n in names)

    wait_for_condition(replicas_gone, timeout=30, message="replica actors should be gone after delete")
    names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
    assert "SERVE_CONTROLLER_ACTOR" in names and proxies[0] in names
