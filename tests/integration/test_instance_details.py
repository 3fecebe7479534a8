"""The controller's `ServeInstanceDetails` (the REST API's GET body) against Ray Serve 2.60's schema."""

from __future__ import annotations

import pytest

import ray_serving_ext as serve
from ray_serving_ext import schema
from ray_serving_ext._private.config_deploy import deploy_config
from ray_serving_ext.config_file import ServeDeploySchema
from tests.integration.policy_apps import Fixed


def test_details_describe_apps_deployments_replicas_and_proxies(serve_url):
    deploy_config(serve.api._get_client(), ServeDeploySchema.model_validate({"applications": [{
        "name": "decl", "route_prefix": None, "import_path": "tests.integration.policy_apps:fixed_app",
    }]}))
    serve.api._get_client().wait_for_application_running("decl")
    serve.run(Fixed.options(num_replicas=2).bind(), name="imp", route_prefix="/imp")
    data = serve.api._get_client().get_serve_details()
    details = schema.ServeInstanceDetails.model_validate(data)

    imp = details.applications["imp"]
    assert imp.status == schema.ApplicationStatus.RUNNING and imp.route_prefix == "/imp"
    assert imp.source == schema.APIType.IMPERATIVE and imp.deployed_app_config is None
    fixed = imp.deployments["Fixed"]
    assert fixed.status == schema.DeploymentStatus.HEALTHY and fixed.target_num_replicas == 2
    assert fixed.deployment_config.num_replicas == 2
    assert len(fixed.replicas) == 2 and {r.state for r in fixed.replicas} == {schema.ReplicaState.RUNNING}
    assert all(r.pid and r.node_id and r.actor_id and r.start_time_s > 0 for r in fixed.replicas)
    assert fixed.required_resources.get("CPU", 0) > 0

    decl = details.applications["decl"]
    assert decl.source == schema.APIType.DECLARATIVE
    assert decl.deployed_app_config.import_path == "tests.integration.policy_apps:fixed_app"
    assert details.proxies and all(p.status == schema.ProxyStatus.HEALTHY for p in details.proxies.values())
    assert details.controller_info.actor_name == "SERVE_CONTROLLER_ACTOR" and details.controller_info.actor_id
    assert details.http_options.port == int(serve_url.rsplit(":", 1)[1])

    status = details._get_status()
    assert status.applications["imp"].deployments["Fixed"].replica_states == {schema.ReplicaState.RUNNING: 2}

    only_decl = serve.api._get_client().get_serve_details("declarative")
    assert set(only_decl["applications"]) == {"decl"}

    ray_schema = pytest.importorskip("ray.serve.schema")
    theirs = ray_schema.ServeInstanceDetails.model_validate(data)  # what Ray Serve's own clients parse
    assert theirs.applications["imp"].deployments["Fixed"].target_num_replicas == 2
