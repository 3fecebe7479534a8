"""Unit tests for ray_serving_ext.config (pure pydantic; no Ray needed)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from ray_serving_ext.config import (
    AutoscalingConfig,
    DeploymentConfig,
    HTTPOptions,
    LoggingConfig,
    ProxyLocation,
    RayActorOptionsSchema,
    format_validation_error,
    validate_ray_actor_options,
)
from ray_serving_ext.config_file import (
    ConfigError,
    DeploymentSchema,
    HTTPOptionsSchema,
    ServeApplicationSchema,
    ServeDeploySchema,
    load_config_file,
    validate_route_prefix,
)


def errors_of(exc_info: pytest.ExceptionInfo[ValidationError]) -> str:
    return format_validation_error(exc_info.value)


# ---------------------------------------------------------------- import hygiene


def _ray_imports_outside_getattr(path) -> list:
    """Lines of `path` that import Ray anywhere but inside its module-level `__getattr__`."""
    import ast

    tree = ast.parse(path.read_text())
    allowed = {id(n) for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "__getattr__"
               for n in ast.walk(f)}
    bad = []
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        if any(n == "ray" or n.startswith("ray.") for n in names) and id(node) not in allowed:
            bad.append(node.lineno)
    return bad


def test_module_does_not_import_ray() -> None:
    # config.py, config_file.py and every package module they import (read with
    # ast, so deferred imports count too) stay free of Ray: schemas validate
    # without it. The one exception is config.__getattr__, which looks up Ray
    # core's ActorClass (re-exported as Ray Serve's config does) on first use.
    from tests.unit.test_import_graph import PACKAGE, ROOT, _imports, _module_name, import_graph

    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = import_graph()
    for start in ("ray_serving_ext.config", "ray_serving_ext.config_file"):
        seen, todo = set(), [start]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            todo += [m for m in graph[name] if not name.startswith(m + ".") and m != PACKAGE]
        for name in seen - {"ray_serving_ext.config"}:
            assert "ray" not in _imports(paths[name], set(paths), external=True), (start, name)
    assert _ray_imports_outside_getattr(ROOT / "config.py") == []
    from ray.actor import ActorClass

    from ray_serving_ext import config
    assert config.ActorClass is ActorClass


# ---------------------------------------------------------------- defaults


def test_proxy_location_values() -> None:
    assert [p.value for p in ProxyLocation] == ["Disabled", "HeadOnly", "EveryNode"]
    assert ProxyLocation("EveryNode") is ProxyLocation.EveryNode


def test_autoscaling_defaults_match_ray_serve() -> None:
    c = AutoscalingConfig()
    assert (c.min_replicas, c.initial_replicas, c.max_replicas) == (1, None, 1)
    assert c.target_ongoing_requests == 2.0
    assert c.metrics_interval_s == 10.0
    assert c.look_back_period_s == 30.0
    assert c.smoothing_factor == 1.0
    assert c.upscale_smoothing_factor is None and c.downscale_smoothing_factor is None
    assert c.upscaling_factor is None and c.downscaling_factor is None
    assert c.downscale_delay_s == 600.0
    assert c.upscale_delay_s == 30.0


def test_autoscaling_default_for_auto() -> None:
    d = AutoscalingConfig.default()
    assert (d.min_replicas, d.max_replicas, d.target_ongoing_requests) == (1, 100, 2.0)
    assert d.model_fields_set == {"min_replicas", "max_replicas", "target_ongoing_requests"}


def test_deployment_config_defaults_match_ray_serve() -> None:
    c = DeploymentConfig()
    assert c.num_replicas == 1
    assert c.max_ongoing_requests == 5
    assert c.max_queued_requests == -1
    assert c.user_config is None and c.autoscaling_config is None
    assert c.graceful_shutdown_wait_loop_s == 2.0
    assert c.graceful_shutdown_timeout_s == 20.0
    assert c.health_check_period_s == 10.0
    assert c.health_check_timeout_s == 30.0
    assert c.ray_actor_options == {}
    assert c.max_replicas_per_node is None
    assert c.initial_num_replicas() == 1


def test_http_defaults_match_ray_serve() -> None:
    h = HTTPOptions()
    assert (h.host, h.port, h.root_path, h.root_url) == ("127.0.0.1", 8000, "", "")
    assert h.middlewares == [] and h.location is None and h.num_cpus == 0
    assert h.request_timeout_s is None
    assert h.keep_alive_timeout_s == 90
    s = HTTPOptionsSchema()
    assert (s.host, s.port, s.root_path, s.request_timeout_s) == ("0.0.0.0", 8000, "", None)
    assert s.keep_alive_timeout_s == 90


def test_logging_and_app_and_deploy_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_SERVE_LOG_ENCODING", raising=False)
    lc = LoggingConfig()
    assert (lc.encoding, lc.log_level, lc.logs_dir) == ("TEXT", "INFO", None)
    assert lc.enable_access_log is True and lc.additional_log_standard_attrs == []
    app = ServeApplicationSchema(import_path="mod:app")
    assert (app.name, app.route_prefix, app.runtime_env, app.args) == ("default", "/", {}, {})
    assert app.deployments == [] and app.logging_config is None
    assert app.external_scaler_enabled is False
    full = ServeDeploySchema(applications=[])
    assert full.proxy_location is ProxyLocation.EveryNode
    assert full.http_options == HTTPOptionsSchema()
    assert full.grpc_options is None and full.target_capacity is None


def test_log_encoding_default_follows_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_SERVE_LOG_ENCODING", "JSON")
    assert LoggingConfig().encoding == "JSON"


# ---------------------------------------------------------------- AutoscalingConfig


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"min_replicas": -1}, "min_replicas"),
        ({"max_replicas": 0}, "max_replicas"),
        ({"initial_replicas": -1}, "initial_replicas"),
        ({"target_ongoing_requests": 0}, "target_ongoing_requests"),
        ({"metrics_interval_s": 0}, "metrics_interval_s"),
        ({"look_back_period_s": -1}, "look_back_period_s"),
        ({"smoothing_factor": 0}, "smoothing_factor"),
        ({"upscaling_factor": 0}, "upscaling_factor"),
        ({"downscaling_factor": -0.5}, "downscaling_factor"),
        ({"downscale_delay_s": -1}, "downscale_delay_s"),
        ({"upscale_delay_s": -1}, "upscale_delay_s"),
        ({"min_replicas": True}, "min_replicas"),
    ],
)
def test_autoscaling_field_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        AutoscalingConfig(**kwargs)
    assert errors_of(exc).startswith(f"{field}: ")


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"min_replicas": 3, "max_replicas": 2}, ["max_replicas (2)", "min_replicas (3)"]),
        ({"min_replicas": 2, "max_replicas": 5, "initial_replicas": 1},
         ["initial_replicas (1)", "min_replicas (2)"]),
        ({"min_replicas": 2, "max_replicas": 5, "initial_replicas": 6},
         ["initial_replicas (6)", "max_replicas (5)"]),
    ],
)
def test_autoscaling_replica_bounds(kwargs: dict, words: list[str]) -> None:
    with pytest.raises(ValidationError) as exc:
        AutoscalingConfig(**kwargs)
    text = errors_of(exc)
    assert all(w in text for w in words), text


def test_autoscaling_bounds_inclusive() -> None:
    c = AutoscalingConfig(min_replicas=0, initial_replicas=0, max_replicas=1)
    assert c.initial_replicas == 0
    assert AutoscalingConfig(min_replicas=3, max_replicas=3, initial_replicas=3).max_replicas == 3


def test_scaling_factor_precedence() -> None:
    c = AutoscalingConfig(smoothing_factor=0.5)
    assert c.get_upscaling_factor() == 0.5 and c.get_downscaling_factor() == 0.5
    c = AutoscalingConfig(smoothing_factor=0.5, upscale_smoothing_factor=0.7,
                          downscale_smoothing_factor=0.3)
    assert c.get_upscaling_factor() == 0.7 and c.get_downscaling_factor() == 0.3
    c = AutoscalingConfig(upscale_smoothing_factor=0.7, upscaling_factor=2.0,
                          downscale_smoothing_factor=0.3, downscaling_factor=0.1)
    assert c.get_upscaling_factor() == 2.0 and c.get_downscaling_factor() == 0.1


# ---------------------------------------------------------------- LoggingConfig


@pytest.mark.parametrize(
    "given, stored", [("DEBUG", "DEBUG"), ("debug", "DEBUG"), (30, "WARNING"), ("WARN", "WARN")]
)
def test_log_level_normalised(given: object, stored: str) -> None:
    assert LoggingConfig(log_level=given).log_level == stored


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"log_level": "LOUD"}, "log_level"),
        ({"log_level": 25}, "log_level"),
        ({"log_level": True}, "log_level"),
        ({"encoding": "XML"}, "encoding"),
        ({"encoding": "json"}, "encoding"),
        ({"additional_log_standard_attrs": ["nope"]}, "additional_log_standard_attrs"),
        ({"colour": True}, "colour"),
    ],
)
def test_logging_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        LoggingConfig(**kwargs)
    assert errors_of(exc).startswith(f"{field}: ")


def test_log_standard_attrs_deduplicated_in_order() -> None:
    lc = LoggingConfig(additional_log_standard_attrs=["name", "lineno", "name"])
    assert lc.additional_log_standard_attrs == ["name", "lineno"]


# ---------------------------------------------------------------- HTTP options


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"port": 70000}, "port"),
        ({"port": -1}, "port"),
        ({"request_timeout_s": 0}, "request_timeout_s"),
        ({"location": "Moon"}, "location"),
        ({"ssl_keyfile": "k.pem"}, "ssl_keyfile"),
    ],
)
def test_http_options_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        HTTPOptions(**kwargs)
    assert errors_of(exc).startswith(f"{field}: ")


def test_http_options_location_deprecated_and_normalised() -> None:
    with pytest.warns(DeprecationWarning):
        assert HTTPOptions(location="NoServer").location is ProxyLocation.Disabled
    with pytest.warns(DeprecationWarning):
        assert HTTPOptions(location="HeadOnly").location is ProxyLocation.HeadOnly


def test_http_options_no_host_disables_proxy_and_accepts_middlewares() -> None:
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware

    assert HTTPOptions(host=None).location is ProxyLocation.Disabled
    cors = Middleware(CORSMiddleware, allow_origins=["*"])
    h = HTTPOptions.model_validate({"middlewares": [cors], "port": 9000})
    assert h.middlewares == [cors] and h.port == 9000
    for bad in ([CORSMiddleware], ["cors"]):  # a class, not Middleware(cls, ...); a string
        with pytest.raises(ValidationError, match="starlette.middleware.Middleware"):
            HTTPOptions(middlewares=bad)


def test_http_options_assignment_validated() -> None:
    h = HTTPOptions()
    with pytest.raises(ValidationError):
        h.port = 99999


def test_http_options_schema_to_http_options() -> None:
    s = HTTPOptionsSchema(host="::", port=8123, root_path="/x", request_timeout_s=3,
                          keep_alive_timeout_s=7)
    h = s.to_http_options()
    assert isinstance(h, HTTPOptions)
    assert (h.host, h.port, h.root_path, h.request_timeout_s, h.keep_alive_timeout_s) == (
        "::", 8123, "/x", 3.0, 7)
    with pytest.raises(ValidationError) as exc:
        HTTPOptionsSchema(ssl_certfile="c.pem")
    assert "ssl_certfile" in errors_of(exc)


# ---------------------------------------------------------------- ray_actor_options


def test_validate_ray_actor_options_keeps_only_given_keys() -> None:
    out = validate_ray_actor_options({"num_cpus": 2, "resources": {"TPU": 1}})
    assert out == {"num_cpus": 2.0, "resources": {"TPU": 1.0}}
    assert validate_ray_actor_options({}) == {}


def test_validate_ray_actor_options_unknown_key_lists_allowed() -> None:
    with pytest.raises(ValueError) as exc:
        validate_ray_actor_options({"num_cpus": 1, "max_restarts": 3})
    msg = str(exc.value)
    assert "'max_restarts'" in msg
    for allowed in RayActorOptionsSchema.model_fields:
        assert allowed in msg


@pytest.mark.parametrize(
    "opts, field",
    [
        ({"num_cpus": -1}, "num_cpus"),
        ({"num_gpus": -0.5}, "num_gpus"),
        ({"memory": -1}, "memory"),
        ({"resources": {"GPU": -1}}, "resources.GPU"),
        ({"label_selector": {"zone": 1}}, "label_selector.zone"),
    ],
)
def test_validate_ray_actor_options_bad_values(opts: dict, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        validate_ray_actor_options(opts)
    assert errors_of(exc).startswith(f"{field}: ")


def test_validate_ray_actor_options_rejects_non_dict() -> None:
    with pytest.raises(TypeError):
        validate_ray_actor_options(["num_cpus"])  # type: ignore[arg-type]


# ---------------------------------------------------------------- DeploymentConfig


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_replicas": -1}, "num_replicas"),
        ({"max_ongoing_requests": 0}, "max_ongoing_requests"),
        ({"max_queued_requests": 0}, "max_queued_requests"),
        ({"max_queued_requests": -2}, "max_queued_requests"),
        ({"user_config": {"f": object()}}, "user_config"),
        ({"graceful_shutdown_wait_loop_s": -1}, "graceful_shutdown_wait_loop_s"),
        ({"graceful_shutdown_timeout_s": -1}, "graceful_shutdown_timeout_s"),
        ({"health_check_period_s": 0}, "health_check_period_s"),
        ({"health_check_timeout_s": 0}, "health_check_timeout_s"),
        ({"ray_actor_options": {"bogus": 1}}, "ray_actor_options"),
        ({"ray_actor_options": {"num_cpus": -1}}, "ray_actor_options"),
        ({"max_replicas_per_node": 0}, "max_replicas_per_node"),
        ({"max_replicas_per_node": 101}, "max_replicas_per_node"),
        ({"placement_group_strategy": "RANDOM", "placement_group_bundles": [{"CPU": 1}]},
         "placement_group_strategy"),
        ({"unknown_option": 1}, "unknown_option"),
    ],
)
def test_deployment_config_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        DeploymentConfig(**kwargs)
    assert errors_of(exc).startswith(f"{field}: ")


def test_deployment_config_user_config_error_is_clear() -> None:
    with pytest.raises(ValidationError) as exc:
        DeploymentConfig(user_config={"fn": print})
    assert "JSON-serializable" in errors_of(exc)


def test_deployment_config_accepted_edges() -> None:
    c = DeploymentConfig(num_replicas=0, max_queued_requests=1, max_replicas_per_node=100,
                         user_config=[1, "a", {"b": None}])
    assert (c.num_replicas, c.max_queued_requests, c.max_replicas_per_node) == (0, 1, 100)


def test_deployment_config_autoscaling_invariant() -> None:
    c = DeploymentConfig(autoscaling_config={"min_replicas": 2, "max_replicas": 4})
    assert c.num_replicas is None and c.initial_num_replicas() == 2
    with pytest.raises(ValidationError) as exc:
        DeploymentConfig(num_replicas=3, autoscaling_config={"max_replicas": 4})
    assert "Manually setting num_replicas is not allowed" in errors_of(exc)
    with pytest.raises(ValidationError):
        DeploymentConfig(num_replicas=None)


def test_deployment_config_placement_group_rules() -> None:
    with pytest.raises(ValidationError) as exc:
        DeploymentConfig(placement_group_strategy="PACK")
    assert "placement_group_bundles" in errors_of(exc)
    with pytest.raises(ValidationError) as exc:
        DeploymentConfig(placement_group_bundles=[{"CPU": 1}], max_replicas_per_node=2)
    assert "max_replicas_per_node" in errors_of(exc)


def test_from_options_plain() -> None:
    c = DeploymentConfig.from_options(
        {"name": "Model", "num_replicas": 3, "max_ongoing_requests": 7,
         "ray_actor_options": {"num_gpus": 1}, "user_config": {"t": 1}}
    )
    assert (c.num_replicas, c.max_ongoing_requests) == (3, 7)
    assert c.ray_actor_options == {"num_gpus": 1.0} and c.user_config == {"t": 1}
    assert DeploymentConfig.from_options({}) == DeploymentConfig()
    assert DeploymentConfig.from_options({"num_replicas": None, "ray_actor_options": None}) == (
        DeploymentConfig())


def test_from_options_auto_uses_ray_serve_defaults() -> None:
    c = DeploymentConfig.from_options({"num_replicas": "auto"})
    assert c.num_replicas is None
    assert c.autoscaling_config is not None
    a = c.autoscaling_config
    assert (a.min_replicas, a.max_replicas, a.target_ongoing_requests) == (1, 100, 2.0)
    assert a.upscale_delay_s == 30.0  # other fields keep their defaults
    assert c.initial_num_replicas() == 1


@pytest.mark.parametrize(
    "given",
    [{"max_replicas": 10, "initial_replicas": 4},
     AutoscalingConfig(max_replicas=10, initial_replicas=4)],
)
def test_from_options_auto_merges_given_autoscaling(given: object) -> None:
    c = DeploymentConfig.from_options({"num_replicas": "auto", "autoscaling_config": given})
    a = c.autoscaling_config
    assert a is not None
    # Only the set fields override the "auto" defaults (min stays 1, target stays 2).
    assert (a.min_replicas, a.max_replicas, a.target_ongoing_requests) == (1, 10, 2.0)
    assert c.initial_num_replicas() == 4


def test_from_options_autoscaling_without_num_replicas() -> None:
    c = DeploymentConfig.from_options({"autoscaling_config": {"min_replicas": 0,
                                                              "max_replicas": 5}})
    assert c.num_replicas is None and c.initial_num_replicas() == 0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_replicas": 2, "autoscaling_config": {"max_replicas": 3}},
         "Manually setting num_replicas is not allowed when autoscaling_config is provided."),
        ({"num_replicas": 0}, "larger than 0"),
        ({"num_replicas": "many"}, '"auto"'),
        ({"max_ongoing_requests": None}, "max_ongoing_requests"),
        ({"version": "1"}, "version"),
    ],
)
def test_from_options_errors(options: dict, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        DeploymentConfig.from_options(options)
    assert message in str(exc.value)


def test_from_options_invalid_value_is_validation_error() -> None:
    with pytest.raises(ValidationError) as exc:
        DeploymentConfig.from_options({"num_replicas": "auto",
                                       "autoscaling_config": {"min_replicas": 200}})
    assert "autoscaling_config" in errors_of(exc)


def test_needs_restart_and_in_place_fields() -> None:
    base = DeploymentConfig(num_replicas=2, ray_actor_options={"num_cpus": 1})
    same = DeploymentConfig(num_replicas=2, ray_actor_options={"num_cpus": 1})
    assert not base.needs_restart(same) and base.in_place_fields_changed(same) == set()

    light = DeploymentConfig(num_replicas=4, user_config={"a": 1},
                             ray_actor_options={"num_cpus": 1})
    assert not base.needs_restart(light)
    assert base.in_place_fields_changed(light) == {"num_replicas", "user_config"}

    heavy = DeploymentConfig(num_replicas=4, ray_actor_options={"num_cpus": 2})
    assert base.needs_restart(heavy)
    assert base.in_place_fields_changed(heavy) == {"num_replicas"}

    assert base.needs_restart(DeploymentConfig(num_replicas=2, max_replicas_per_node=1,
                                               ray_actor_options={"num_cpus": 1}))

    pg = DeploymentConfig(placement_group_bundles=[{"CPU": 1}], placement_group_strategy="PACK")
    spread = DeploymentConfig(placement_group_bundles=[{"CPU": 1}],
                              placement_group_strategy="SPREAD")
    assert pg.needs_restart(spread) and pg.in_place_fields_changed(spread) == set()


# ---------------------------------------------------------------- DeploymentSchema


def test_deployment_schema_requires_name() -> None:
    with pytest.raises(ValidationError) as exc:
        DeploymentSchema.model_validate({})
    assert errors_of(exc) == "name: Field required"
    with pytest.raises(ValidationError) as exc:
        DeploymentSchema(name="")
    assert errors_of(exc).startswith("name: ")


def test_overrides_returns_only_set_fields() -> None:
    d = DeploymentSchema.model_validate(
        {
            "name": "Model",
            "max_ongoing_requests": 9,
            "user_config": {"threshold": 0.5},
            "ray_actor_options": {"num_gpus": 1},
            "logging_config": {"log_level": "debug"},
        }
    )
    assert d.overrides() == {
        "max_ongoing_requests": 9,
        "user_config": {"threshold": 0.5},
        "ray_actor_options": {"num_gpus": 1.0},
        "logging_config": {"log_level": "DEBUG"},
    }
    assert DeploymentSchema(name="Model").overrides() == {}


def test_overrides_keep_explicit_nulls() -> None:
    d = DeploymentSchema.model_validate({"name": "M", "user_config": None,
                                         "max_replicas_per_node": None})
    assert d.overrides() == {"user_config": None, "max_replicas_per_node": None}


def test_overrides_merge_cleanly_over_code_options() -> None:
    code_autoscaling = {"num_replicas": None, "autoscaling_config": {"max_replicas": 5}}
    fixed = DeploymentSchema(name="M", num_replicas=3).overrides()
    assert fixed == {"num_replicas": 3, "autoscaling_config": None}
    assert DeploymentConfig.from_options({**code_autoscaling, **fixed}).num_replicas == 3

    code_fixed = {"num_replicas": 2}
    auto = DeploymentSchema(name="M", autoscaling_config={"max_replicas": 4}).overrides()
    assert auto == {"autoscaling_config": {"max_replicas": 4}, "num_replicas": None}
    merged = DeploymentConfig.from_options({**code_fixed, **auto})
    assert merged.num_replicas is None and merged.autoscaling_config is not None

    d = DeploymentSchema(name="M", num_replicas="auto",
                         autoscaling_config={"min_replicas": 5})
    assert d.overrides() == {"num_replicas": "auto", "autoscaling_config": {"min_replicas": 5}}
    c = DeploymentConfig.from_options({**code_fixed, **d.overrides()})
    assert c.autoscaling_config is not None and c.autoscaling_config.max_replicas == 100


def test_deployment_schema_num_replicas_and_autoscaling_conflict() -> None:
    with pytest.raises(ValidationError) as exc:
        DeploymentSchema(name="M", num_replicas=2, autoscaling_config={"max_replicas": 3})
    assert "Manually setting num_replicas is not allowed" in errors_of(exc)
    ok = DeploymentSchema(name="M", num_replicas="auto", autoscaling_config={"max_replicas": 3})
    assert ok.is_autoscaling_configured()


@pytest.mark.parametrize(
    "data, field",
    [
        ({"num_replicas": 0}, "num_replicas"),
        ({"num_replicas": "lots"}, "num_replicas"),
        ({"num_replicas": True}, "num_replicas"),
        ({"max_ongoing_requests": 0}, "max_ongoing_requests"),
        ({"max_ongoing_requests": None}, "max_ongoing_requests"),
        ({"max_queued_requests": 0}, "max_queued_requests"),
        ({"user_config": [1, 2]}, "user_config"),
        ({"autoscaling_config": {"min_replicas": 2}}, "autoscaling_config"),
        ({"autoscaling_config": {"max_replicas": 3, "bogus": 1}}, "autoscaling_config"),
        ({"health_check_period_s": 0}, "health_check_period_s"),
        ({"graceful_shutdown_timeout_s": -1}, "graceful_shutdown_timeout_s"),
        ({"ray_actor_options": {"num_cpus": -1}}, "ray_actor_options.num_cpus"),
        ({"ray_actor_options": {"max_restarts": 1}}, "ray_actor_options.max_restarts"),
        ({"placement_group_bundles": []}, "placement_group_bundles"),
        ({"placement_group_strategy": "NOPE"}, "placement_group_strategy"),
        ({"max_replicas_per_node": 0}, "max_replicas_per_node"),
        ({"logging_config": {"log_level": "LOUD"}}, "logging_config.log_level"),
        ({"route_prefix": "/x"}, "route_prefix"),
    ],
)
def test_deployment_schema_validation(data: dict, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        DeploymentSchema.model_validate({"name": "M", **data})
    assert errors_of(exc).startswith(f"{field}: "), errors_of(exc)


def test_deployment_schema_autoscaling_validated_over_auto_defaults() -> None:
    # min_replicas=2 alone violates max_replicas=1, but with "auto" max is 100.
    d = DeploymentSchema(name="M", num_replicas="auto", autoscaling_config={"min_replicas": 2})
    assert d.autoscaling_config == {"min_replicas": 2}
    with pytest.raises(ValidationError) as exc:
        DeploymentSchema(name="M", autoscaling_config={"min_replicas": 2})
    assert "max_replicas (1)" in errors_of(exc)


# ---------------------------------------------------------------- route prefix / apps


@pytest.mark.parametrize("prefix", [None, "/", "/api", "/api/v1"])
def test_valid_route_prefixes(prefix: str | None) -> None:
    assert validate_route_prefix(prefix) == prefix
    assert ServeApplicationSchema(import_path="m:a", route_prefix=prefix).route_prefix == prefix


@pytest.mark.parametrize(
    "prefix, words",
    [("api", 'must start with "/"'), ("/api/", 'cannot end with "/"'),
     ("/api/{id}", '"{" or "}"'), ("/api/id}", '"{" or "}"'), ("", 'must start with "/"')],
)
def test_invalid_route_prefixes(prefix: str, words: str) -> None:
    with pytest.raises(ValueError) as exc:
        validate_route_prefix(prefix)
    assert words in str(exc.value) and prefix in str(exc.value)
    with pytest.raises(ValidationError) as vexc:
        ServeApplicationSchema(import_path="m:a", route_prefix=prefix)
    assert errors_of(vexc).startswith("route_prefix: ")


@pytest.mark.parametrize("path", ["pkg.mod:app", "pkg.mod.app", "mod:app"])
def test_valid_import_paths(path: str) -> None:
    assert ServeApplicationSchema(import_path=path).import_path == path


@pytest.mark.parametrize("path", ["app", "a:b:c", ":app", "mod:", ".mod", "mod."])
def test_invalid_import_paths(path: str) -> None:
    with pytest.raises(ValidationError) as exc:
        ServeApplicationSchema(import_path=path)
    text = errors_of(exc)
    assert text.startswith("import_path: ") and path in text


def test_app_requires_import_path_and_unique_deployments() -> None:
    with pytest.raises(ValidationError) as exc:
        ServeApplicationSchema.model_validate({"name": "a"})
    assert errors_of(exc) == "import_path: Field required"
    with pytest.raises(ValidationError) as exc:
        ServeApplicationSchema(import_path="m:a", deployments=[{"name": "D"}, {"name": "D"}])
    text = errors_of(exc)
    assert text.startswith("deployments: ") and "'D'" in text


def test_external_scaler_forbids_autoscaling() -> None:
    with pytest.raises(ValidationError) as exc:
        ServeApplicationSchema(import_path="m:a", external_scaler_enabled=True,
                               deployments=[{"name": "D", "num_replicas": "auto"}])
    assert "'D'" in errors_of(exc)
    assert ServeApplicationSchema(import_path="m:a", external_scaler_enabled=True,
                                  deployments=[{"name": "D", "num_replicas": 2}])


def test_deploy_schema_duplicate_app_names() -> None:
    with pytest.raises(ValidationError) as exc:
        ServeDeploySchema(applications=[
            {"name": "app1", "import_path": "m:a", "route_prefix": "/a"},
            {"name": "app1", "import_path": "m:b", "route_prefix": "/b"},
        ])
    text = errors_of(exc)
    assert text.startswith("applications: ") and "'app1'" in text


def test_deploy_schema_duplicate_route_prefixes() -> None:
    with pytest.raises(ValidationError) as exc:
        ServeDeploySchema(applications=[
            {"name": "a", "import_path": "m:a", "route_prefix": "/same"},
            {"name": "b", "import_path": "m:b", "route_prefix": "/same"},
        ])
    text = errors_of(exc)
    assert "route prefix" in text and "'/same'" in text
    # None route prefixes never collide.
    ok = ServeDeploySchema(applications=[
        {"name": "a", "import_path": "m:a", "route_prefix": None},
        {"name": "b", "import_path": "m:b", "route_prefix": None},
    ])
    assert len(ok.applications) == 2


def test_deploy_schema_rejects_nested_host_port_and_bad_target_capacity() -> None:
    with pytest.raises(ValidationError) as exc:
        ServeDeploySchema(applications=[{"import_path": "m:a", "port": 9000}])
    assert "port" in errors_of(exc) and "http_options" in errors_of(exc)
    for bad in (-1, 101):
        with pytest.raises(ValidationError) as exc:
            ServeDeploySchema(applications=[], target_capacity=bad)
        assert errors_of(exc).startswith("target_capacity: ")
    with pytest.raises(ValidationError) as exc:
        ServeDeploySchema(applications=[], proxy_location="Everywhere")
    assert errors_of(exc).startswith("proxy_location: ")


# ---------------------------------------------------------------- format_validation_error


def test_format_validation_error_one_line_per_error_with_dotted_paths() -> None:
    data = {
        "applications": [
            {"import_path": "m:a",
             "deployments": [{"name": "ok"}, {"name": "bad", "max_ongoing_requests": -3}]},
            {"name": "two", "import_path": "m:b", "route_prefix": "/two", "extra": 1},
        ],
        "http_options": {"port": "eighty"},
    }
    with pytest.raises(ValidationError) as exc:
        ServeDeploySchema.model_validate(data)
    lines = format_validation_error(exc.value).splitlines()
    assert len(lines) == len(exc.value.errors()) == 3
    assert (
        "applications.0.deployments.1.max_ongoing_requests: "
        "Input should be greater than 0 (got -3)"
    ) in lines
    assert "applications.1.extra: Extra inputs are not permitted (got 1)" in lines
    assert any(line.startswith("http_options.port: Input should be a valid integer")
               and "'eighty'" in line for line in lines)


def test_format_validation_error_strips_value_error_prefix_and_root() -> None:
    with pytest.raises(ValidationError) as exc:
        AutoscalingConfig(min_replicas=5, max_replicas=2)
    assert format_validation_error(exc.value) == (
        "<root>: max_replicas (2) must be greater than or equal to min_replicas (5)"
    )


# ---------------------------------------------------------------- load_config_file


def write(tmp_path: Path, text: str, name: str = "serve.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


GOOD_MULTI_APP = """
    proxy_location: HeadOnly
    http_options:
      host: 0.0.0.0
      port: 8100
      request_timeout_s: 30
    logging_config:
      encoding: JSON
      log_level: DEBUG
    target_capacity: 50
    applications:
      - name: text
        route_prefix: /text
        import_path: text_ml:app
        runtime_env:
          pip: [torch]
        args:
          model: small
        deployments:
          - name: Translator
            num_replicas: auto
            autoscaling_config:
              max_replicas: 8
            ray_actor_options:
              num_cpus: 0.5
            user_config:
              language: french
          - name: Summarizer
            num_replicas: 2
            max_ongoing_requests: 10
      - name: other
        route_prefix: null
        import_path: other.module.app
"""


def test_load_good_multi_app_file(tmp_path: Path) -> None:
    cfg = load_config_file(write(tmp_path, GOOD_MULTI_APP))
    assert cfg.proxy_location is ProxyLocation.HeadOnly
    assert (cfg.http_options.port, cfg.http_options.request_timeout_s) == (8100, 30.0)
    assert cfg.logging_config is not None and cfg.logging_config.encoding == "JSON"
    assert cfg.target_capacity == 50
    text, other = cfg.applications
    assert (text.name, text.route_prefix, text.args) == ("text", "/text", {"model": "small"})
    assert text.deployment_names == ["Translator", "Summarizer"]
    translator = text.deployments[0].overrides()
    assert translator == {
        "num_replicas": "auto",
        "autoscaling_config": {"max_replicas": 8},
        "ray_actor_options": {"num_cpus": 0.5},
        "user_config": {"language": "french"},
    }
    built = DeploymentConfig.from_options(translator)
    assert built.autoscaling_config is not None
    assert built.autoscaling_config.max_replicas == 8
    assert other.route_prefix is None


def test_load_single_app_file_is_wrapped(tmp_path: Path) -> None:
    path = write(tmp_path, """
        import_path: my_mod:app
        route_prefix: /hello
        port: 9001
        deployments:
          - name: Hello
            num_replicas: 3
    """)
    cfg = load_config_file(path)
    assert [a.import_path for a in cfg.applications] == ["my_mod:app"]
    assert cfg.applications[0].route_prefix == "/hello"
    assert cfg.http_options.port == 9001
    assert cfg.applications[0].deployments[0].num_replicas == 3


def test_load_deep_type_error_names_path_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, """
        applications:
          - name: app
            import_path: mod:app
            deployments:
              - name: D
                max_ongoing_requests: lots
    """)
    with pytest.raises(ConfigError) as exc:
        load_config_file(path)
    msg = str(exc.value)
    assert path in msg and exc.value.path == path
    assert "applications.0.deployments.0.max_ongoing_requests: Input should be a valid integer" in msg
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize(
    "text, words",
    [
        ("- a\n- b\n", "mapping"),
        ("", "empty"),
        ("applications: [\n", "not valid YAML"),
        ("http_options: {}\n", "applications: Field required"),
        ("applications: []\nbogus: 1\n", "bogus: Extra inputs are not permitted"),
        ("applications:\n  - import_path: nodots\n", "applications.0.import_path"),
    ],
)
def test_load_bad_files(tmp_path: Path, text: str, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config_file(path)
    assert path in str(exc.value) and words in str(exc.value)


def test_load_missing_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as exc:
        load_config_file(missing)
    assert missing in str(exc.value)
