"""RequestRouterConfig: Ray Serve 2.60's defaults and validation, and how it travels (no Ray)."""

from __future__ import annotations

import pickle

import pytest
from pydantic import ValidationError

from ray_serving_ext import config, schema
from ray_serving_ext import request_router as rr
from ray_serving_ext._private.build import ship_request_router
from ray_serving_ext._private.common import DeploymentID
from ray_serving_ext._private.request_router import PowerOfTwoChoicesRequestRouter
from ray_serving_ext._private.request_router_config import (
    DEFAULT_REQUEST_ROUTER_PATH,
    SERIALIZED_CLASS_KEY,
)
from ray_serving_ext.config import DeploymentConfig, RequestRouterConfig
from ray_serving_ext.config_file import DeploymentSchema
from ray_serving_ext.deployment import deployment


class FirstRouter(rr.RequestRouter):
    async def choose_replicas(self, candidate_replicas: list[rr.RunningReplica],
                              pending_request: rr.PendingRequest | None = None) -> list[list[rr.RunningReplica]]:
        return [candidate_replicas[:1]]


def test_defaults_are_ray_serves() -> None:
    c = RequestRouterConfig()
    assert c.request_router_class == DEFAULT_REQUEST_ROUTER_PATH and c.is_default_request_router()
    assert c.request_router_kwargs == {}
    assert (c.request_routing_stats_period_s, c.request_routing_stats_timeout_s) == (10.0, 30.0)
    assert (c.initial_backoff_s, c.backoff_multiplier, c.max_backoff_s) == (0.025, 2.0, 0.5)
    assert c.get_request_router_class() is PowerOfTwoChoicesRequestRouter
    assert DeploymentConfig().request_router_config == c


@pytest.mark.parametrize("path", [
    "ray.serve._private.request_router:PowerOfTwoChoicesRequestRouter",
    "ray.serve._private.request_router.pow_2_router:PowerOfTwoChoicesRequestRouter",
])
def test_ray_serves_default_router_path_means_ours(path: str) -> None:
    assert RequestRouterConfig(request_router_class=path).is_default_request_router()


def test_our_default_class_counts_as_the_default() -> None:
    assert RequestRouterConfig(request_router_class=PowerOfTwoChoicesRequestRouter).is_default_request_router()


def test_a_class_is_kept_and_dumped_as_its_path_in_json() -> None:
    c = RequestRouterConfig(request_router_class=FirstRouter, request_router_kwargs={"k": [1, 2]})
    assert c.request_router_class is FirstRouter and not c.is_default_request_router()
    assert c.get_request_router_class() is FirstRouter
    dumped = c.model_dump(mode="json")
    assert dumped["request_router_class"] == f"{__name__}:FirstRouter"
    assert RequestRouterConfig(**dumped).get_request_router_class() is FirstRouter  # the path imports


@pytest.mark.parametrize("bad, message", [
    ({"request_router_class": "no_separator"}, "invalid import path"),
    ({"request_router_class": dict}, "RequestRouter subclass"),
    ({"request_router_class": 3}, "RequestRouter subclass"),
    ({"request_router_kwargs": {"f": object()}}, "not JSON-serializable"),
    ({"request_routing_stats_period_s": 0}, "greater than 0"),
    ({"request_routing_stats_timeout_s": -1}, "greater than 0"),
    ({"initial_backoff_s": 0}, "greater than 0"),
    ({"backoff_multiplier": 0}, "greater than 0"),
    ({"max_backoff_s": -0.5}, "greater than 0"),
    ({"unknown_field": 1}, "Extra inputs are not permitted"),
])
def test_invalid_values_are_rejected(bad: dict, message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        RequestRouterConfig(**bad)
    assert message in str(exc.value)


def test_equality_compares_the_public_fields() -> None:
    a = RequestRouterConfig(request_router_class=FirstRouter, max_backoff_s=1.0)
    assert a == RequestRouterConfig(request_router_class=FirstRouter, max_backoff_s=1.0)
    assert a != RequestRouterConfig(request_router_class=FirstRouter, max_backoff_s=2.0)
    assert a != RequestRouterConfig()


def test_it_is_a_deployment_option_in_code_and_in_a_file() -> None:
    opts = {"request_router_class": FirstRouter, "request_router_kwargs": {"a": 1}}
    d = deployment(request_router_config=opts)(lambda: None)
    assert d.config.request_router_config.request_router_class is FirstRouter
    d2 = d.options(request_router_config=RequestRouterConfig(request_routing_stats_period_s=2))
    assert d2.config.request_router_config.request_routing_stats_period_s == 2
    with pytest.raises(ValueError):
        deployment(request_router_config={"max_backoff_s": 0})(lambda: None)
    file = DeploymentSchema.model_validate(
        {"name": "D", "request_router_config": {"request_router_class": "pkg.mod:Router", "max_backoff_s": 1}})
    assert file.overrides()["request_router_config"] == {"request_router_class": "pkg.mod:Router", "max_backoff_s": 1}
    with pytest.raises(ValidationError):
        DeploymentSchema.model_validate({"name": "D", "request_router_config": {"initial_backoff_s": -1}})


def test_a_changed_router_config_is_applied_in_place() -> None:
    old = DeploymentConfig()
    new = DeploymentConfig(request_router_config={"request_router_class": FirstRouter})
    assert not old.needs_restart(new) and old.in_place_fields_changed(new) == {"request_router_config"}


def test_built_config_carries_the_class_pickled_by_value() -> None:
    dumped = DeploymentConfig(request_router_config={"request_router_class": FirstRouter}).model_dump()
    shipped = ship_request_router(dumped["request_router_config"])
    assert shipped["request_router_class"] == f"{__name__}:FirstRouter"
    assert pickle.loads(shipped[SERIALIZED_CLASS_KEY]).__name__ == "FirstRouter"
    # The controller validates the dumped dict; the bytes survive as the class to load.
    received = DeploymentConfig.model_validate({**dumped, "request_router_config": shipped}).request_router_config
    assert received.get_serialized_request_router_cls() == shipped[SERIALIZED_CLASS_KEY]
    assert received.get_request_router_class().__name__ == "FirstRouter"
    assert SERIALIZED_CLASS_KEY not in received.model_dump()  # replicas are not sent the class
    default = DeploymentConfig().model_dump()["request_router_config"]
    assert ship_request_router(default) == default  # the built-in router travels as its path only


def test_building_rejects_a_path_that_does_not_name_a_router() -> None:
    with pytest.raises(ValueError, match="could not be imported"):
        ship_request_router({"request_router_class": "no_such_module_xyz:Router"})
    with pytest.raises(ValueError, match="RequestRouter subclass"):
        ship_request_router({"request_router_class": "json:dumps"})


def test_exports_match_ray_serve() -> None:
    assert config.ReplicaID is rr.ReplicaID and schema.RequestRouterConfig is RequestRouterConfig
    rid = rr.ReplicaID("abc", DeploymentID("D", "app"))
    assert rr.ReplicaID.from_full_id_str(rid.to_full_id_str()) == rid
    assert str(rid) == "Replica(id='abc', deployment='D', app='app')"
    assert hash(rid) == hash(rr.ReplicaID.from_full_id_str("SERVE_REPLICA::app#D#abc"))


def test_a_built_spec_names_the_router_class_by_path_only() -> None:
    from ray_serving_ext._private.build import build_app

    d = deployment(request_router_config=RequestRouterConfig(request_router_class=FirstRouter))(lambda: None)
    (spec,) = build_app(d.bind(), "app", None).deployments
    assert spec.explicit_options["request_router_config"]["request_router_class"] == f"{__name__}:FirstRouter"
    assert spec.deployment_config().request_router_config.get_serialized_request_router_cls()
    # Nothing in the spec is the class object itself: the controller imports no user module.
    assert FirstRouter not in (spec.explicit_options["request_router_config"].values())
