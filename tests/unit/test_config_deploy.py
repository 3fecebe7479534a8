"""Unit tests for config-file deploys and the CLI's offline parts (no Ray cluster).

Apps are built in-process (`local=True`); `deploy_config` runs against a fake
client; CLI verbs that fail before connecting run under click's CliRunner.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import ray
import yaml
from click.testing import CliRunner

from ray_serving_ext._private import config_deploy
from ray_serving_ext._private.config_types import route_prefix_clashes
from ray_serving_ext._private.config_deploy import (
    AppBuildError,
    build_app_from_schema,
    build_config_from_import_paths,
    call_app_builder,
    deploy_config,
    import_attr,
)
from ray_serving_ext._private.build import build_app, merge_runtime_envs
from ray_serving_ext.cli import _status_view, cli, load_target
from ray_serving_ext.config_file import ConfigError, ServeApplicationSchema, ServeDeploySchema, load_config_file
from ray_serving_ext.deployment import Application
from ray_serving_ext.exceptions import RayServeException
from ray_serving_ext.schema import (
    ApplicationStatus,
    ApplicationStatusOverview,
    DeploymentStatus,
    DeploymentStatusOverview,
    DeploymentStatusTrigger,
    ProxyStatus,
    ReplicaState,
    ServeStatus,
)
from tests.e2e.apps import echo, graph
from tests.utils import free_port

GRAPH = "tests.e2e.apps.graph:app"


def build(import_path: str = GRAPH, **fields: Any):
    return build_app_from_schema(ServeApplicationSchema(import_path=import_path, **fields), local=True)


def specs(built) -> Dict[str, Any]:
    return {s.name: s for s in built.deployments}


def versions(built) -> Dict[str, str]:
    return {s.name: s.code_version for s in built.deployments}


# ---------------------------------------------------------------- import_attr


def test_import_attr_accepts_colon_dot_and_nested_forms() -> None:
    assert import_attr("tests.e2e.apps.graph:app") is graph.app
    assert import_attr("tests.e2e.apps.graph.app") is graph.app
    assert import_attr("tests.e2e.apps.echo:GreeterArgs.model_validate") == echo.GreeterArgs.model_validate


@pytest.mark.parametrize(
    "path, error",
    [
        ("noseparator", ValueError),
        ("a:b:c", ValueError),
        ("module:", ValueError),
        ("no_such_module_xyz:app", ModuleNotFoundError),
        ("tests.e2e.apps.graph:missing", AttributeError),
    ],
)
def test_import_attr_errors(path: str, error: type) -> None:
    with pytest.raises(error):
        import_attr(path)


# ---------------------------------------------------------------- builders


def test_builder_args_are_validated_into_the_annotated_model() -> None:
    app = call_app_builder(echo.greeter, {"name": "x", "greeting": "Yo"}, "m:greeter")
    assert isinstance(app, Application) and app.args == ("Yo", "x")
    with pytest.raises(AppBuildError, match=r"m:greeter.*name"):
        call_app_builder(echo.greeter, {}, "m:greeter")


def test_builder_errors_name_the_import_path() -> None:
    assert call_app_builder(echo.plain_builder, {"name": "y"}, "p").args == ("Hi", "y")
    with pytest.raises(AppBuildError, match="m:bad_builder.*int"):
        call_app_builder(echo.bad_builder, {}, "m:bad_builder")
    with pytest.raises(AppBuildError, match="m:not_an_app"):
        call_app_builder(echo.not_an_app, {}, "m:not_an_app")
    with pytest.raises(AppBuildError, match="args can only be passed"):
        call_app_builder(echo.app, {"a": "b"}, "m:app")


def test_unimportable_target_names_app_and_path() -> None:
    with pytest.raises(AppBuildError, match="Application 'default'.*no_such_module_xyz:app"):
        build("no_such_module_xyz:app")


def test_every_failing_app_is_reported_at_once() -> None:
    apps = [
        ServeApplicationSchema(name="a", route_prefix="/a", import_path="no_such_module_xyz:app"),
        ServeApplicationSchema(name="b", route_prefix="/b", import_path="tests.e2e.apps.echo:greeter"),
        ServeApplicationSchema(name="c", route_prefix="/c", import_path="tests.e2e.apps.echo:app"),
    ]
    with pytest.raises(AppBuildError) as err:
        config_deploy.build_apps(apps, local=True)
    lines = str(err.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Application 'a': failed to import 'no_such_module_xyz:app'")
    assert lines[1].startswith("Application 'b': Invalid args for application builder") and "name" in lines[1]


# ---------------------------------------------------------------- overrides


def test_overrides_apply_by_deployment_name_only() -> None:
    built = build(deployments=[{"name": "Model_1", "num_replicas": 3, "user_config": {"k": 1}}])
    by_name = specs(built)
    assert by_name["Model_1"].config["num_replicas"] == 3
    assert by_name["Model_1"].config["user_config"] == {"k": 1}
    assert by_name["Model_1"].config["max_ongoing_requests"] == 7  # kept from code
    assert by_name["Model"].config["num_replicas"] == 2 and by_name["Model"].config["user_config"] is None
    assert built.ingress == "Ingress" and built.route_prefix == "/graph"


def test_autoscaling_override_replaces_num_replicas() -> None:
    by_name = specs(build(deployments=[{"name": "Model", "num_replicas": "auto", "autoscaling_config": {"max_replicas": 4}}]))
    assert by_name["Model"].config["num_replicas"] is None
    assert by_name["Model"].config["autoscaling_config"]["max_replicas"] == 4


def test_unknown_deployment_override_lists_the_apps_deployments() -> None:
    with pytest.raises(AppBuildError, match=r"\['Nope'\].*\['Ingress', 'Model', 'Model_1'\]"):
        build(deployments=[{"name": "Nope", "num_replicas": 1}])


def test_config_route_prefix_wins_over_code() -> None:
    assert build(route_prefix="/other").route_prefix == "/other"
    assert build(route_prefix=None).route_prefix is None
    assert build("tests.e2e.apps.echo:app").route_prefix == "/"


# ---------------------------------------------------------------- runtime_env


def test_app_runtime_env_is_every_replicas_default() -> None:
    env = {"env_vars": {"A": "1"}, "pip": ["x"]}
    own = {"ray_actor_options": {"num_cpus": 0.25, "runtime_env": {"env_vars": {"B": "2"}}}}
    by_name = specs(build(runtime_env=env, deployments=[{"name": "Model_1", **own}]))
    assert by_name["Model"].config["ray_actor_options"] == {"num_cpus": 0.5, "runtime_env": env}
    assert by_name["Ingress"].config["ray_actor_options"] == {"runtime_env": env}
    assert by_name["Model_1"].config["ray_actor_options"] == {
        "num_cpus": 0.25,
        "runtime_env": {"env_vars": {"A": "1", "B": "2"}, "pip": ["x"]},
    }
    assert "runtime_env" not in specs(build())["Ingress"].config["ray_actor_options"]


def test_merge_runtime_envs_combines_env_vars_child_wins() -> None:
    merged = merge_runtime_envs({"working_dir": "a", "env_vars": {"X": "1", "Y": "1"}}, {"env_vars": {"Y": "2"}})
    assert merged == {"working_dir": "a", "env_vars": {"X": "1", "Y": "2"}}


# ---------------------------------------------------------------- code versions


@pytest.mark.parametrize(
    "override",
    [
        {"num_replicas": 5},
        {"user_config": {"a": 2}},
        {"max_ongoing_requests": 99},
        {"autoscaling_config": {"min_replicas": 1, "max_replicas": 3}},
        {"health_check_period_s": 3.0, "health_check_timeout_s": 4.0},
        {"graceful_shutdown_timeout_s": 1.0},
    ],
)
def test_in_place_options_keep_the_code_version(override: Dict[str, Any]) -> None:
    changed = build(deployments=[{"name": "Model", **override}])
    assert versions(changed) == versions(build())


def test_import_path_runtime_env_and_args_change_the_code_version() -> None:
    base = versions(build())
    assert versions(build("tests.e2e.apps.graph.app")) != base
    assert set(versions(build(runtime_env={"env_vars": {"A": "1"}})).values()).isdisjoint(base.values())
    greet = versions(build("tests.e2e.apps.echo:greeter", args={"name": "a"}))
    assert versions(build("tests.e2e.apps.echo:greeter", args={"name": "a"})) == greet
    assert versions(build("tests.e2e.apps.echo:greeter", args={"name": "b"})) != greet


def _write_module(tmp_path: Path, body: str) -> str:
    name = f"cfgdeploy_mod_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    return name


def test_module_code_change_changes_the_code_version_unless_versioned(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    source = """
        import ray_serving_ext as serve

        def helper():
            return {value}

        @serve.deployment
        def plain(request):
            return helper()

        app = plain.bind()
        pinned = plain.options(version="v1").bind()
    """
    name = _write_module(tmp_path, source.format(value=1))
    before = (versions(build(f"{name}:app")), versions(build(f"{name}:pinned")))
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source.format(value=2)))
    sys.modules.pop(name, None)
    importlib.invalidate_caches()
    after = (versions(build(f"{name}:app")), versions(build(f"{name}:pinned")))
    assert after[0] != before[0]
    assert after[1] == before[1]


# ---------------------------------------------------------------- deploy_config


class FakeClient:
    """Records what deploy_config asks of the controller."""

    def __init__(self, running: Optional[Dict[str, Optional[str]]] = None) -> None:
        self.running = dict(running or {})
        self.calls: List[tuple] = []

    def get_serve_status(self) -> ServeStatus:
        apps = {
            name: ApplicationStatusOverview(ApplicationStatus.RUNNING, "", 0.0, route_prefix=prefix)
            for name, prefix in self.running.items()
        }
        return ServeStatus(applications=apps)

    def delete_apps(self, names: List[str], blocking: bool = True) -> None:
        self.calls.append(("delete", tuple(names), blocking))

    def deploy_applications(self, builts: List[Any], configs: List[Any], delete_missing: bool,
                            target_capacity: Optional[float] = None) -> None:
        # As the controller: the new goal plus (unless declarative) the other running
        # apps must not share a route prefix, else the call fails and nothing changes.
        wanted = [(b.name, b.route_prefix) for b in builts]
        kept = [] if delete_missing else [(n, p) for n, p in self.running.items() if n not in dict(wanted)]
        for prefix, holder, newcomer in route_prefix_clashes(wanted + kept):
            cause = RayServeException(f'Prefix {prefix} is used by both application "{holder}" and "{newcomer}".')
            raise ray.exceptions.RayTaskError("deploy_applications", "", cause)
        self.calls.append(("deploy_all", wanted, configs, delete_missing))


@pytest.fixture
def local_builds(monkeypatch) -> None:
    real = config_deploy.build_apps
    monkeypatch.setattr(config_deploy, "build_apps", lambda apps, local=False, **kw: real(apps, local=True, **kw))


def two_apps(**echo_fields: Any) -> ServeDeploySchema:
    return ServeDeploySchema.model_validate(
        {
            "applications": [
                {"name": "echo", "route_prefix": "/echo", "import_path": "tests.e2e.apps.echo:app", **echo_fields},
                {"name": "graph", "route_prefix": "/graph", "import_path": GRAPH},
            ]
        }
    )


def test_deploy_config_sends_plain_configs_and_deletes_missing_apps(local_builds) -> None:
    client = FakeClient({"old": "/old", "echo": "/echo"})
    result = deploy_config(client, two_apps(deployments=[{"name": "Echo", "user_config": {"m": 1}}]))
    assert result.deployed == ["echo", "graph"] and result.deleted == ["old"]
    (call,) = client.calls
    assert call[0] == "deploy_all" and call[1] == [("echo", "/echo"), ("graph", "/graph")]
    assert call[3] is True  # declarative: the controller removes "old" in the same step
    config = call[2][0]
    assert config == {
        "name": "echo",
        "route_prefix": "/echo",
        "import_path": "tests.e2e.apps.echo:app",
        "deployments": [{"name": "Echo", "user_config": {"m": 1}}],
    }
    assert yaml.safe_load(yaml.safe_dump(config)) == config  # plain data


def test_non_declarative_deploy_keeps_other_apps(local_builds) -> None:
    client = FakeClient({"old": "/old"})
    assert deploy_config(client, two_apps(), declarative=False).deleted == []
    assert [(c[0], c[3]) for c in client.calls] == [("deploy_all", False)]


def test_prefix_swap_is_one_step(local_builds) -> None:
    client = FakeClient({"graph": "/echo", "echo": "/graph"})
    deploy_config(client, two_apps())
    assert client.calls[0][1] == [("echo", "/echo"), ("graph", "/graph")]


def test_route_clash_or_build_failure_changes_nothing(local_builds) -> None:
    client = FakeClient({"other": "/echo"})
    with pytest.raises(RayServeException, match='^Deploying the config failed: Prefix /echo is used by both'):
        deploy_config(client, two_apps(), declarative=False)
    with pytest.raises(AppBuildError, match="Nope"):
        deploy_config(client, two_apps(deployments=[{"name": "Nope"}]))
    assert client.calls == []


# ---------------------------------------------------------------- build (config generation)


def test_build_single_app_format() -> None:
    config = build_config_from_import_paths([GRAPH])
    assert list(config) == ["proxy_location", "http_options", "applications"]
    assert config["proxy_location"] == "EveryNode"
    assert config["http_options"] == {"host": "0.0.0.0", "port": 8000}
    (app,) = config["applications"]
    assert list(app) == ["name", "route_prefix", "import_path", "runtime_env", "deployments"]
    assert (app["name"], app["route_prefix"], app["import_path"], app["runtime_env"]) == ("app1", "/", GRAPH, {})
    model = {"num_replicas": 2, "max_ongoing_requests": 7, "ray_actor_options": {"num_cpus": 0.5}}
    assert app["deployments"] == [{"name": "Model", **model}, {"name": "Model_1", **model}, {"name": "Ingress"}]


def test_build_multiple_apps_are_named_app1_app2() -> None:
    config = build_config_from_import_paths([GRAPH, "tests.e2e.apps.echo:app"])
    assert [(a["name"], a["route_prefix"]) for a in config["applications"]] == [("app1", "/app1"), ("app2", "/app2")]
    assert config["applications"][1]["deployments"] == [
        {"name": "Echo", "max_ongoing_requests": 10, "user_config": {"message": "hello"}}
    ]


def test_build_rejects_builders_and_non_apps() -> None:
    with pytest.raises(AppBuildError, match="Expected 'tests.e2e.apps.echo:greeter' to be an Application"):
        build_config_from_import_paths(["tests.e2e.apps.echo:greeter"])


def test_cli_build_writes_a_loadable_file(tmp_path: Path) -> None:
    out_path = tmp_path / "built.yaml"
    result = CliRunner().invoke(cli, ["build", GRAPH, "tests.e2e.apps.echo:app", "-o", str(out_path)])
    assert result.exit_code == 0, result.output
    text = out_path.read_text()
    assert text.startswith("# This file was generated")
    assert "\n\napplications:\n" in text  # blank line between top-level keys
    schema = load_config_file(str(out_path))
    assert [a.name for a in schema.applications] == ["app1", "app2"]
    assert build_config_from_import_paths([GRAPH, "tests.e2e.apps.echo:app"]) == yaml.safe_load(text)


# ---------------------------------------------------------------- invalid files and CLI failures


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_invalid_file_names_each_field_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad.yaml",
        """
        applications:
          - name: a
            import_path: tests.e2e.apps.echo:app
            deployments:
              - name: Echo
                num_replicas: -1
          - name: b
            route_prefix: nope
            import_path: x:y
        """,
    )
    with pytest.raises(ConfigError) as err:
        load_config_file(path)
    message = str(err.value)
    assert "bad.yaml" in message
    assert "applications.0.deployments.0.num_replicas:" in message
    assert "applications.1.route_prefix:" in message


def test_cli_rejects_invalid_file_before_connecting(tmp_path: Path) -> None:
    import ray

    path = write(tmp_path, "bad.yaml", "applications:\n  - import_path: m:a\n    deployments: [{name: A, max_ongoing_requests: 0}]\n")
    for verb in ("deploy", "run"):
        result = CliRunner().invoke(cli, [verb, path, "-a", f"127.0.0.1:{free_port()}"])
        assert result.exit_code == 1
        assert "bad.yaml" in result.stderr
        assert "applications.0.deployments.0.max_ongoing_requests:" in result.stderr
        assert "Traceback" not in result.stderr
    assert not ray.is_initialized()


def test_cli_without_a_cluster_fails_with_one_line(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    for args in (["status"], ["config"], ["shutdown", "-y"], ["start"]):
        result = CliRunner().invoke(cli, [*args, "--address", address])
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.strip().startswith("Error: Could not connect") and address in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_import_path_targets_and_arguments(tmp_path: Path) -> None:
    schema, is_file = load_target("tests.e2e.apps.echo:greeter", ("name=a", "greeting=b=c"), "g", "/g", {"env_vars": {"A": "1"}})
    (app,) = schema.applications
    assert not is_file and app.args == {"name": "a", "greeting": "b=c"}
    assert (app.name, app.route_prefix, app.runtime_env) == ("g", "/g", {"env_vars": {"A": "1"}})
    result = CliRunner().invoke(cli, ["deploy", "tests.e2e.apps.echo:greeter", "oops"])
    assert result.exit_code == 1 and "Invalid application argument 'oops'" in result.stderr
    result = CliRunner().invoke(cli, ["run", "tests.e2e.apps.echo:app", "--route-prefix", "bad"])
    assert result.exit_code == 1 and "route_prefix" in result.stderr


def test_status_view_has_ray_serves_shape() -> None:
    dep = DeploymentStatusOverview(
        DeploymentStatus.HEALTHY, DeploymentStatusTrigger.CONFIG_UPDATE_COMPLETED, {ReplicaState.RUNNING: 1},
        message="", target_num_replicas=1, last_error="x",
    )
    app = ApplicationStatusOverview(ApplicationStatus.RUNNING, "", 1.0, {"D": dep}, route_prefix="/")
    raw = ServeStatus(proxies={"n1": ProxyStatus.HEALTHY}, applications={"a": app})
    view = _status_view(raw)
    assert list(view["applications"]["a"]) == ["status", "message", "last_deployed_time_s", "deployments"]
    assert list(view["applications"]["a"]["deployments"]["D"]) == ["status", "status_trigger", "replica_states", "message"]
    assert view == {
        "proxies": {"n1": "HEALTHY"},
        "applications": {"a": {"status": "RUNNING", "message": "", "last_deployed_time_s": 1.0, "deployments": {
            "D": {"status": "HEALTHY", "status_trigger": "CONFIG_UPDATE_COMPLETED",
                  "replica_states": {"RUNNING": 1}, "message": ""}}}},
        "target_capacity": None,
    }
    # Plain data: what the YAML dumper gets has no enums left in it.
    assert type(view["applications"]["a"]["status"]) is str
    assert [type(k) for k in view["applications"]["a"]["deployments"]["D"]["replica_states"]] == [str]


# ---------------------------------------------------------------- build_app inputs


def test_build_app_inputs_complete_the_specs() -> None:
    job_env = {"env_vars": {"J": "1"}}
    plain = specs(build_app(graph.app, "g", "/g"))
    built = specs(build_app(graph.app, "g", "/g", runtime_env=job_env, logging_config={"log_level": "DEBUG"}))
    # serve.run's rule: the default env only for deployments without one of their own.
    assert built["Ingress"].config["ray_actor_options"] == {"runtime_env": job_env}
    assert built["Model"].config["ray_actor_options"] == {"num_cpus": 0.5, "runtime_env": job_env}
    assert all(s.config["logging_config"] == {"log_level": "DEBUG"} for s in built.values())
    # Neither input is part of the code version; version_inputs are.
    assert {n: s.code_version for n, s in built.items()} == {n: s.code_version for n, s in plain.items()}
    other = specs(build_app(graph.app, "g", "/g", version_inputs=("x",)))
    assert all(other[n].code_version != plain[n].code_version for n in plain)


def test_build_app_keeps_a_deployments_own_env_and_logging() -> None:
    import ray_serving_ext as serve

    @serve.deployment(ray_actor_options={"runtime_env": {"pip": ["a"]}}, logging_config={"log_level": "ERROR"})
    def own(request: Any) -> str:
        return "x"

    (spec,) = build_app(own.bind(), "o", None, runtime_env={"env_vars": {"J": "1"}},
                        logging_config={"log_level": "DEBUG"}).deployments
    assert spec.config["ray_actor_options"] == {"runtime_env": {"pip": ["a"]}}
    assert spec.config["logging_config"]["log_level"] == "ERROR"
    (merged,) = build_app(own.bind(), "o", None, runtime_env={"env_vars": {"J": "1"}}, merge_runtime_env=True).deployments
    assert merged.config["ray_actor_options"] == {"runtime_env": {"pip": ["a"], "env_vars": {"J": "1"}}}
