"""The deployment options, the config file's deployment schema and DeploymentConfig
name the same fields: each is declared once, on the model (no Ray needed)."""

from __future__ import annotations

import pytest

from ray_serving_ext._private.config_deploy import NON_CONFIG_OPTIONS as deploy_non_config
from ray_serving_ext.config import NON_CONFIG_OPTIONS, DeploymentConfig
from ray_serving_ext.config_file import DeploymentSchema
from ray_serving_ext.deployment import DEPLOYMENT_OPTIONS, deployment

MODEL_FIELDS = set(DeploymentConfig.model_fields)


def test_deployment_options_are_the_model_fields_plus_bookkeeping() -> None:
    assert set(DEPLOYMENT_OPTIONS) == MODEL_FIELDS | {"name", "version", "route_prefix"}
    assert len(DEPLOYMENT_OPTIONS) == len(set(DEPLOYMENT_OPTIONS))
    assert set(NON_CONFIG_OPTIONS).isdisjoint(MODEL_FIELDS)
    assert deploy_non_config is NON_CONFIG_OPTIONS  # serve build leaves out the same ones


def test_file_schema_fields_are_the_model_fields_plus_name() -> None:
    assert set(DeploymentSchema.model_fields) - {"name"} == MODEL_FIELDS
    assert DeploymentSchema.model_fields["name"].is_required()


@pytest.mark.parametrize("field", sorted(MODEL_FIELDS))
def test_every_file_schema_field_is_optional(field: str) -> None:
    info = DeploymentSchema.model_fields[field]
    assert not info.is_required() and info.default is None
    assert field not in DeploymentSchema(name="D").model_fields_set


# One valid, non-default value per option; a new model field must be added here.
SAMPLES = {
    "num_replicas": 3,
    "max_ongoing_requests": 9,
    "max_queued_requests": 4,
    "backpressure_config": {"status_code": 429, "retry_after_s": 2.0},
    "user_config": {"k": 1},
    "autoscaling_config": {"min_replicas": 0, "max_replicas": 2},
    "graceful_shutdown_wait_loop_s": 1.0,
    "graceful_shutdown_timeout_s": 5.0,
    "health_check_period_s": 3.0,
    "health_check_timeout_s": 4.0,
    "ray_actor_options": {"num_cpus": 0.5},
    "max_replicas_per_node": 2,
    "placement_group_bundles": [{"CPU": 1.0}],
    "placement_group_strategy": None,  # needs bundles: checked together below
    "placement_group_bundle_label_selector": None,  # needs bundles: checked together below
    "gang_scheduling_config": {"gang_size": 1, "gang_placement_strategy": "SPREAD"},
    "deployment_actors": [{"name": "counter", "actor_class": "tests.unit.test_option_schema:Counter"}],
    "logging_config": {"log_level": "DEBUG"},
    "request_router_config": {"request_router_class": "my_pkg.routers:HeaderRouter",
                              "request_routing_stats_period_s": 2.0},
    "max_constructor_retry_count": 5,
    "rolling_update_percentage": 0.5,
    "max_surge_percent": 25,
}


def test_samples_cover_the_model() -> None:
    assert set(SAMPLES) == MODEL_FIELDS


@pytest.mark.parametrize("field", sorted(set(SAMPLES) - {"placement_group_strategy",
                                                          "placement_group_bundle_label_selector"}))
def test_every_model_field_is_an_option_in_code_and_in_a_file(field: str) -> None:
    value = SAMPLES[field]
    assert deployment(**{field: value})(lambda: None).explicit_options == {field: value}
    assert field in DeploymentSchema.model_validate({"name": "D", field: value}).overrides()


def test_placement_group_strategy_is_an_option_in_code_and_in_a_file() -> None:
    opts = {"placement_group_bundles": [{"CPU": 1.0}], "placement_group_strategy": "SPREAD"}
    assert deployment(**opts)(lambda: None).explicit_options == opts
    assert DeploymentSchema.model_validate({"name": "D", **opts}).overrides() == opts


def test_bundle_label_selector_is_an_option_in_code_and_in_a_file() -> None:
    opts = {"placement_group_bundles": [{"CPU": 1.0}], "placement_group_bundle_label_selector": [{"zone": "a"}]}
    assert deployment(**opts)(lambda: None).explicit_options == opts
    assert DeploymentSchema.model_validate({"name": "D", **opts}).overrides() == opts


def test_unknown_option_lists_the_derived_names() -> None:
    with pytest.raises(TypeError) as exc:
        deployment(not_an_option=1)
    assert "not_an_option" in str(exc.value)
    for name in DEPLOYMENT_OPTIONS:
        assert repr(name) in str(exc.value)
