"""DeploymentHandle.options takes Ray Serve 2.60's keywords; ControllerOptions and
run_many's target checks validate as Ray Serve does. No Ray."""

from __future__ import annotations

import pickle
import warnings

import pytest
from pydantic import ValidationError

import ray_serving_ext as serve
from ray_serving_ext.api import _check_targets
from ray_serving_ext.config import ControllerOptions
from ray_serving_ext.config_file import ServeDeploySchema
from ray_serving_ext.exceptions import RayServeException
from ray_serving_ext.handle import DeploymentHandle


def _opts(handle: DeploymentHandle):
    return handle._options


def test_defaults_are_ray_serves() -> None:
    o = _opts(DeploymentHandle("d", "app"))
    assert (o.method_name, o.stream, o.multiplexed_model_id, o.session_id) == ("__call__", False, "", "")
    assert (o._by_reference, o.request_serialization, o.response_serialization) == (True, "cloudpickle", "cloudpickle")


def test_every_option_is_kept_and_the_rest_unchanged() -> None:
    h = DeploymentHandle("d", "app").options(method_name="m", multiplexed_model_id="v1", stream=True)
    h2 = h.options(session_id="s-1", _by_reference=False, request_serialization="MSGPACK",
                   response_serialization="orjson")
    o = _opts(h2)
    assert (o.method_name, o.multiplexed_model_id, o.stream) == ("m", "v1", True)
    assert (o.session_id, o._by_reference) == ("s-1", False)
    assert (o.request_serialization, o.response_serialization) == ("msgpack", "orjson")
    assert _opts(h).session_id == ""  # options() returns a copy


def test_options_survive_pickling() -> None:
    h = DeploymentHandle("d", "app").options(session_id="abc", response_serialization="pickle")
    o = _opts(pickle.loads(pickle.dumps(h)))
    assert (o.session_id, o.response_serialization) == ("abc", "pickle")


@pytest.mark.parametrize("key,which", [("request_serialization", "request"),
                                       ("response_serialization", "response")])
def test_unknown_serialization_is_rejected(key: str, which: str) -> None:
    with pytest.raises(ValueError, match=f"Unsupported {which} serialization method: yaml"):
        DeploymentHandle("d", "app").options(**{key: "yaml"})


def test_prefer_local_routing_warns_as_deprecated() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = DeploymentHandle("d", "app").options(_prefer_local_routing=True)
    assert any("_prefer_local_routing" in str(w.message) for w in caught)
    assert _opts(h)._prefer_local_routing is True


def test_controller_options_accepts_env_vars_only() -> None:
    assert ControllerOptions().runtime_env is None
    assert ControllerOptions(runtime_env={"env_vars": {"A": "1"}}).runtime_env == {"env_vars": {"A": "1"}}
    for bad in ({"pip": ["x"]}, {"env_vars": {"A": 1}}, {"env_vars": ["A"]}, {"env_vars": {"": "x"}}):
        with pytest.raises(ValidationError):
            ControllerOptions(runtime_env=bad)
    with pytest.raises(ValidationError):
        ControllerOptions(other=1)


def test_config_file_takes_controller_options() -> None:
    app = {"name": "a", "import_path": "m:app"}
    schema = ServeDeploySchema(applications=[app], controller_options={"runtime_env": {"env_vars": {"K": "v"}}})
    assert schema.controller_options.runtime_env == {"env_vars": {"K": "v"}}
    with pytest.raises(ValidationError):
        ServeDeploySchema(applications=[app], controller_options={"runtime_env": {"working_dir": "."}})


@serve.deployment
class _D:
    def __call__(self) -> str:
        return "x"


def test_run_target_defaults_are_ray_serves() -> None:
    t = serve.RunTarget(_D.bind())
    assert (t.name, t.route_prefix, t.logging_config, t.external_scaler_enabled) == ("default", "/", None, False)


def test_run_many_target_checks() -> None:
    with pytest.raises(ValueError, match="No applications provided"):
        _check_targets([])
    with pytest.raises(RayServeException, match="non-empty string"):
        _check_targets([serve.RunTarget(_D.bind(), name="")])
    with pytest.raises(TypeError, match="expects an `Application`"):
        _check_targets([serve.RunTarget(object(), name="a")])
    with pytest.raises(ValueError, match="more than once"):
        _check_targets([serve.RunTarget(_D.bind(), name="a", route_prefix="/a"),
                        serve.RunTarget(_D.bind(), name="a", route_prefix="/b")])
    with pytest.raises(ValueError):
        _check_targets([serve.RunTarget(_D.bind(), name="a", route_prefix="no-slash")])
    _check_targets([serve.RunTarget(_D.bind(), name="a", external_scaler_enabled=True)])
    _check_targets([serve.RunTarget(_D.bind(), name="a", route_prefix="/a"),
                    serve.RunTarget(_D.bind(), name="b", route_prefix=None)])
