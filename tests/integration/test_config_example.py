"""examples/serve_config.yaml (shown in the README) deploys and serves, and redeploys in place."""

from __future__ import annotations

import os

import requests

import ray_serving_ext as serve
from ray_serving_ext._private.config_deploy import deploy_config
from ray_serving_ext.config_file import ServeDeploySchema, load_config_file
from tests.utils import wait_for_condition

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _all_running() -> bool:
    apps = serve.status().applications
    return {"hello", "classifier"} <= set(apps) and all(str(a.status) == "RUNNING" for a in apps.values())


def test_readme_config_deploys(serve_url):
    schema = load_config_file(os.path.join(ROOT, "examples", "serve_config.yaml"))
    deploy_config(serve.api._get_client(), schema)
    wait_for_condition(_all_running, timeout=60)
    assert requests.get(f"{serve_url}/hello", params={"name": "YAML"}, timeout=10).text == "Hello, YAML!"
    body = requests.get(f"{serve_url}/classify", params={"score": 0.7}, timeout=10).json()
    assert body["threshold"] == 0.8 and body["label"] == "negative"
    states = serve.status().applications["classifier"].deployments["Classifier"].replica_states
    assert {str(k): v for k, v in states.items()} == {"RUNNING": 2}


def _running(app: str, deployment: str) -> int:
    dep = serve.status().applications[app].deployments[deployment]
    return {str(k): v for k, v in dep.replica_states.items()}.get("RUNNING", 0)


def test_target_capacity_scales_replicas(serve_url):
    def config(capacity):
        return ServeDeploySchema.model_validate({
            "target_capacity": capacity,
            "applications": [{
                "name": "cap", "route_prefix": "/cap", "import_path": "examples.hello:app",
                "deployments": [{"name": "hello", "num_replicas": 4,
                                 "ray_actor_options": {"num_cpus": 0.1}}],
            }],
        })

    client = serve.api._get_client()
    deploy_config(client, config(50))
    wait_for_condition(lambda: _running("cap", "hello") == 2
                       and serve.status().applications["cap"].deployments["hello"].target_num_replicas == 2,
                       timeout=60)
    assert serve.status().target_capacity == 50
    deploy_config(client, config(100))
    wait_for_condition(lambda: _running("cap", "hello") == 4, timeout=60)
    assert serve.status().target_capacity == 100
