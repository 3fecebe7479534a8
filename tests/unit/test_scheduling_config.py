"""Gang scheduling, deployment-actor and bundle-label-selector options: the models,
their validation (Ray Serve 2.60's rules) in code, in `.options()` and in a config
file. No Ray needed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ray_serving_ext import deployment
from ray_serving_ext._private.scheduling_config import bundle_label_selectors
from ray_serving_ext.config import (
    DeploymentActorConfig,
    DeploymentConfig,
    GangPlacementStrategy,
    GangRuntimeFailurePolicy,
    GangSchedulingConfig,
)
from ray_serving_ext.config_file import DeploymentSchema


class Counter:
    pass


def test_gang_enums_and_defaults_match_ray_serve() -> None:
    assert [m.value for m in GangPlacementStrategy] == ["PACK", "SPREAD"]
    assert [m.value for m in GangRuntimeFailurePolicy] == ["RESTART_GANG", "RESTART_REPLICA"]
    gang = GangSchedulingConfig(gang_size=2)
    assert gang.gang_placement_strategy == GangPlacementStrategy.PACK
    assert gang.runtime_failure_policy == GangRuntimeFailurePolicy.RESTART_GANG
    assert GangSchedulingConfig(gang_size=1, gang_placement_strategy="SPREAD").gang_placement_strategy == "SPREAD"


@pytest.mark.parametrize("kwargs, words", [
    ({"gang_size": 0}, "greater than or equal to 1"),
    ({}, "gang_size"),
    ({"gang_size": 2, "gang_placement_strategy": "STRICT_PACK"}, "gang_placement_strategy"),
    ({"gang_size": 2, "runtime_failure_policy": "RESTART_REPLICA"}, "not yet implemented"),
    ({"gang_size": 2, "unknown": 1}, "unknown"),
    ({"gang_size": True}, "boolean"),
])
def test_gang_config_validation(kwargs: dict, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        GangSchedulingConfig(**kwargs)


@pytest.mark.parametrize("options, words", [
    ({"num_replicas": 3, "gang_scheduling_config": {"gang_size": 2}}, r"num_replicas \(3\) must be a multiple of gang_size \(2\)"),
    ({"num_replicas": 2, "gang_scheduling_config": {"gang_size": 1}, "max_replicas_per_node": 1},
     "max_replicas_per_node is not allowed"),
    ({"gang_scheduling_config": {"gang_size": 1}, "placement_group_bundles": [{"CPU": 1}],
      "placement_group_strategy": "PACK"}, "gang_placement_strategy instead"),
    ({"placement_group_bundle_label_selector": [{"zone": "a"}]}, "placement_group_bundles` must also be provided"),
    ({"placement_group_bundles": [{"CPU": 1}] * 3, "placement_group_bundle_label_selector": [{"z": "a"}] * 2},
     "Got 2 selectors for 3 bundles"),
    ({"deployment_actors": [{"name": "a", "actor_class": Counter}, {"name": "a", "actor_class": Counter}]},
     r"unique names. Duplicate name\(s\): \['a'\]"),
    ({"deployment_actors": [{"name": "a", "actor_class": 5}]}, "actor_class must be"),
    ({"deployment_actors": [{"name": "a", "actor_class": "no_separator"}]}, "invalid import path"),
    ({"deployment_actors": [{"name": "", "actor_class": Counter}]}, "at least 1 character"),
])
def test_invalid_combinations_fail_in_code_and_options(options: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        deployment(**options)(lambda: None)
    with pytest.raises(ValueError, match=words):
        deployment(lambda: None).options(**options)


def test_valid_combinations() -> None:
    config = DeploymentConfig.from_options({
        "num_replicas": 4, "gang_scheduling_config": GangSchedulingConfig(gang_size=2),
        "placement_group_bundles": [{"CPU": 1}, {"GPU": 1}], "placement_group_bundle_label_selector": [{"z": "a"}],
        "deployment_actors": [DeploymentActorConfig(name="c", actor_class=Counter, init_args=[1])],
    })
    assert config.gang_scheduling_config.gang_size == 2
    assert config.deployment_actors[0].init_args == (1,)
    # With autoscaling, num_replicas is not checked against the gang size (the
    # controller rounds its decisions up to whole gangs).
    auto = DeploymentConfig.from_options({"num_replicas": "auto", "gang_scheduling_config": {"gang_size": 4}})
    assert auto.autoscaling_config is not None


def test_bundle_label_selectors_broadcast_a_single_selector() -> None:
    assert bundle_label_selectors(None, 3) is None
    assert bundle_label_selectors([{"z": "a"}], 3) == [{"z": "a"}] * 3
    assert bundle_label_selectors([{"z": "a"}, {"z": "b"}], 2) == [{"z": "a"}, {"z": "b"}]


def test_deployment_actor_config_equality_and_json_use_the_import_path() -> None:
    by_class = DeploymentActorConfig(name="c", actor_class=Counter)
    by_path = DeploymentActorConfig(name="c", actor_class=f"{__name__}:Counter")
    assert by_class == by_path and by_class != DeploymentActorConfig(name="c", actor_class=Counter, init_args=(1,))
    assert by_class.model_dump(mode="json")["actor_class"] == f"{__name__}:Counter"
    assert by_class.init_kwargs == {} and by_class.actor_options == {}


def test_new_scheduling_options_need_new_replicas() -> None:
    base = DeploymentConfig(num_replicas=2, placement_group_bundles=[{"CPU": 1}])
    for change in ({"gang_scheduling_config": {"gang_size": 2}},
                   {"placement_group_bundle_label_selector": [{"z": "a"}]},
                   {"deployment_actors": [{"name": "c", "actor_class": Counter}]}):
        other = DeploymentConfig.model_validate({**base.model_dump(), **change})
        assert base.needs_restart(other) and not base.in_place_fields_changed(other)


def test_file_schema_accepts_and_checks_the_options() -> None:
    schema = DeploymentSchema.model_validate({
        "name": "D", "num_replicas": 4, "gang_scheduling_config": {"gang_size": 2, "gang_placement_strategy": "SPREAD"},
        "deployment_actors": [{"name": "c", "actor_class": "pkg.mod:Counter", "init_kwargs": {"n": 1}}],
    })
    overrides = schema.overrides()
    assert overrides["gang_scheduling_config"] == {"gang_size": 2, "gang_placement_strategy": "SPREAD"}
    assert overrides["deployment_actors"][0].actor_class == "pkg.mod:Counter"
    for bad, words in [
        ({"num_replicas": 3, "gang_scheduling_config": {"gang_size": 2}}, "multiple of gang_size"),
        ({"gang_scheduling_config": {"gang_size": 2}, "max_replicas_per_node": 1}, "max_replicas_per_node"),
        ({"placement_group_bundle_label_selector": [{"z": "a"}]}, "must also be provided"),
        ({"deployment_actors": [{"name": "c", "actor_class": "pkg.mod:C", "extra": 1}]}, "extra"),
    ]:
        with pytest.raises(ValidationError, match=words):
            DeploymentSchema.model_validate({"name": "D", **bad})


def test_file_overrides_merge_over_code_options() -> None:
    code = deployment(num_replicas=2, placement_group_bundles=[{"CPU": 1}])(lambda: None)
    schema = DeploymentSchema.model_validate({"name": "D", "gang_scheduling_config": {"gang_size": 2},
                                              "placement_group_bundle_label_selector": [{"z": "a"}],
                                              "placement_group_bundles": [{"CPU": 1}]})
    merged = code.options(**schema.overrides()).config
    assert merged.gang_scheduling_config.gang_size == 2 and merged.placement_group_bundle_label_selector == [{"z": "a"}]
    with pytest.raises(ValueError, match="multiple of gang_size"):
        code.options(**DeploymentSchema.model_validate({"name": "D", "gang_scheduling_config": {"gang_size": 3}})
                     .overrides())


def test_file_null_turns_a_scheduling_option_off() -> None:
    code = deployment(num_replicas=2, gang_scheduling_config={"gang_size": 2},
                      deployment_actors=[{"name": "c", "actor_class": Counter}])(lambda: None)
    schema = DeploymentSchema.model_validate({"name": "D", "gang_scheduling_config": None, "deployment_actors": None})
    merged = code.options(**schema.overrides()).config
    assert merged.gang_scheduling_config is None and merged.deployment_actors is None
