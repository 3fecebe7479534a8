"""Placement groups and max_replicas_per_node are honoured, not just accepted."""

from __future__ import annotations

import ray

import ray_serving_ext as serve
from ray_serving_ext._private.build import build_app
from tests.utils import wait_for_condition


@ray.remote(num_cpus=1)
def in_group() -> bool:
    return ray.util.get_current_placement_group() is not None


@serve.deployment(placement_group_bundles=[{"CPU": 1}, {"CPU": 1}], placement_group_strategy="PACK",
                  graceful_shutdown_wait_loop_s=0.1)
class Grouped:
    def __call__(self) -> dict:
        group = ray.util.get_current_placement_group()
        # A task started by the replica lands in the replica's group (captured).
        return {"has_group": group is not None, "bundles": len(group.bundle_specs) if group else 0,
                "task_in_group": ray.get(in_group.remote())}


def test_replica_runs_in_its_placement_group(serve_url):
    handle = serve.run(Grouped.bind(), name="grouped", route_prefix=None)
    assert handle.remote().result(timeout_s=30) == {"has_group": True, "bundles": 2, "task_in_group": True}


@serve.deployment(placement_group_bundles=[{"GPU": 1}], graceful_shutdown_wait_loop_s=0.1)
def cpu_replica_in_gpu_bundle() -> str:
    return "never"


def test_replica_that_cannot_fit_its_first_bundle_fails_clearly(serve_url):
    try:
        serve.run(cpu_replica_in_gpu_bundle.bind(), name="badbundle", route_prefix=None)
        raise AssertionError("must fail")
    except RuntimeError as exc:
        assert "first placement group bundle" in str(exc)


@serve.deployment(num_replicas=2, max_replicas_per_node=1, ray_actor_options={"num_cpus": 0.1},
                  graceful_shutdown_wait_loop_s=0.1)
def one_per_node() -> str:
    return "ok"


def test_max_replicas_per_node_on_a_single_node(serve_url):
    client = serve.api._get_client()
    client.deploy_application(build_app(one_per_node.bind(), "pernode", None))

    def one_running_with_reason() -> bool:
        dep = serve.status().applications["pernode"].deployments["one_per_node"]
        states = {str(k): v for k, v in dep.replica_states.items()}
        return states == {"RUNNING": 1} and "max_replicas_per_node=1" in dep.message

    wait_for_condition(one_running_with_reason, timeout=30)
