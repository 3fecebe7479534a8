"""Run in a subprocess by test_node_failure.py: a 3-node cluster on this machine loses a node.

Prints one line per check; exits non-zero on the first failed check.
"""

from __future__ import annotations

import os
import sys

import ray
import requests
from ray.cluster_utils import Cluster

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

import ray_serving_ext as serve  # noqa: E402
from tests.utils import free_port, wait_for_condition  # noqa: E402


@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 1}, health_check_period_s=1,
                  graceful_shutdown_wait_loop_s=0.1)
def where(request=None) -> str:
    return ray.get_runtime_context().get_node_id()


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        first = cluster.add_node(num_cpus=2)
        ray.init(address=cluster.address)
        port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"port": port})
        url = f"http://127.0.0.1:{port}/"
        serve.run(where.bind(), name="where", route_prefix="/")
        nodes = {requests.get(url, timeout=10).text for _ in range(20)}
        assert nodes == {first.node_id}, nodes
        print("replicas on the first worker:", nodes, flush=True)
        second = cluster.add_node(num_cpus=2)
        cluster.remove_node(first, allow_graceful=False)
        print("first worker removed", flush=True)

        def moved() -> bool:
            got = {requests.get(url, timeout=5).text for _ in range(10)}
            return got == {second.node_id}

        wait_for_condition(moved, timeout=90, interval=0.5, message="replicas recreated on the second worker")
        wait_for_condition(lambda: str(serve.status().applications["where"].status) == "RUNNING", timeout=60)
        states = serve.status().applications["where"].deployments["where"].replica_states
        assert {str(k): v for k, v in states.items()} == {"RUNNING": 2}, states
        print("replicas recreated on the second worker", flush=True)
        serve.shutdown()
        left = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "serve"]
        assert left == [], left
        print("shutdown left no actor in namespace serve", flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
    print("OK", flush=True)
