"""Application-level autoscaling policies and the external scaler (Ray Serve 2.60's contracts).

The application-level policy is set by `autoscaling_policy` in the config file
(Ray Serve has no `serve.run` keyword for it); the external scaler is enabled by
`external_scaler_enabled` on `serve.run` or in the file, and then sets replica
counts through the controller's `update_deployment_replicas`.
"""

from __future__ import annotations

import pytest
import ray

import ray_serving_ext as serve
from ray_serving_ext._private.config_deploy import deploy_config
from ray_serving_ext.config_file import ServeDeploySchema
from ray_serving_ext.exceptions import ExternalScalerDisabledError
from tests.integration.policy_apps import Fixed
from tests.utils import wait_for_condition

TIMEOUT = 60


def _deployment(app: str, name: str):
    return serve.status().applications[app].deployments[name]


def _running(app: str, name: str) -> int:
    return {str(k): v for k, v in _deployment(app, name).replica_states.items()}.get("RUNNING", 0)


def _controller():
    return ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")


def _counts(app: str, front: int, back: int) -> bool:
    return (_deployment(app, "Front").target_num_replicas, _deployment(app, "Back").target_num_replicas,
            _running(app, "Front"), _running(app, "Back")) == (front, back, front, back)


def test_application_policy_scales_deployments_together(serve_url, tmp_path):
    stats = tmp_path / "wanted"
    stats.write_text("1")
    schema = ServeDeploySchema.model_validate({"applications": [{
        "name": "coordinated", "route_prefix": None, "import_path": "tests.integration.policy_apps:app_builder",
        "args": {"stats_path": str(stats)},
        "autoscaling_policy": {"policy_function": "tests.integration.policy_apps:coordinated_policy"},
    }]})
    deploy_config(serve.api._get_client(), schema)
    wait_for_condition(lambda: _counts("coordinated", 1, 2), timeout=TIMEOUT,
                       message="the app policy gives Back twice Front's replicas")
    stats.write_text("2")
    wait_for_condition(lambda: _counts("coordinated", 2, 4), timeout=TIMEOUT,
                       message="one decision scales both deployments up")
    assert serve.get_app_handle("coordinated").remote().result(timeout_s=TIMEOUT) == "front+back"
    stats.write_text("1")
    wait_for_condition(lambda: _counts("coordinated", 1, 2), timeout=TIMEOUT, message="and both back down")


def test_application_policy_is_validated_with_the_file():
    with pytest.raises(ValueError, match="policy_function"):
        ServeDeploySchema.model_validate({"applications": [{
            "import_path": "tests.integration.policy_apps:fixed_app", "autoscaling_policy": {"policy_function": 3},
        }]})


def test_external_scaler_sets_replica_counts(serve_url):
    serve.run(Fixed.bind(), name="ext", route_prefix=None, external_scaler_enabled=True)
    assert _running("ext", "Fixed") == 1
    ray.get(_controller().update_deployment_replicas.remote(("Fixed", "ext"), 3))
    wait_for_condition(lambda: _running("ext", "Fixed") == 3 and _deployment("ext", "Fixed").target_num_replicas == 3,
                       timeout=TIMEOUT, message="the external scaler's count is reconciled")
    ray.get(_controller().update_deployment_replicas.remote(("Fixed", "ext"), 1))
    wait_for_condition(lambda: _running("ext", "Fixed") == 1 and len(_deployment("ext", "Fixed").replica_states) == 1,
                       timeout=TIMEOUT, message="and scaled down again")
    with pytest.raises(ValueError, match="not found"):
        ray.get(_controller().update_deployment_replicas.remote(("Nope", "ext"), 2))
    with pytest.raises(ValueError, match="not found"):
        ray.get(_controller().update_deployment_replicas.remote(("Fixed", "no-such-app"), 2))


def test_external_scaler_must_be_enabled(serve_url):
    serve.run(Fixed.bind(), name="closed", route_prefix=None)
    with pytest.raises(ExternalScalerDisabledError, match="external_scaler_enabled"):
        ray.get(_controller().update_deployment_replicas.remote(("Fixed", "closed"), 2))
    assert _deployment("closed", "Fixed").target_num_replicas == 1
    with pytest.raises(ValueError, match="external_scaler_enabled is set to True"):
        serve.run(Fixed.options(autoscaling_config={"min_replicas": 1, "max_replicas": 2}, num_replicas="auto").bind(),
                  name="both", route_prefix=None, external_scaler_enabled=True)
    assert "both" not in serve.status().applications


def test_external_scaler_from_the_config_file(serve_url):
    schema = ServeDeploySchema.model_validate({"applications": [{
        "name": "ext_file", "route_prefix": None, "import_path": "tests.integration.policy_apps:fixed_app",
        "external_scaler_enabled": True,
    }]})
    deploy_config(serve.api._get_client(), schema)
    wait_for_condition(lambda: _running("ext_file", "Fixed") == 1, timeout=TIMEOUT)
    ray.get(_controller().update_deployment_replicas.remote(("Fixed", "ext_file"), 2))
    wait_for_condition(lambda: _running("ext_file", "Fixed") == 2, timeout=TIMEOUT)
