"""`@serve.deployment` options, their defaults and validation, and user_config (issue #2: items 2, 3).

The option checks need no cluster; the user_config and autoscaling checks deploy.
"""

from __future__ import annotations

import os

import pytest
import requests
from starlette.requests import Request

import ray_serving_ext as serve
from tests.utils import wait_for_condition

TIMEOUT = 15
FAST = {"graceful_shutdown_wait_loop_s": 0.1}


@serve.deployment
def plain(request: Request) -> str:
    return "plain"


@serve.deployment
class PlainClass:
    def __call__(self, request: Request) -> str:
        return "plain-class"


@serve.deployment(
    name="Custom",
    num_replicas=3,
    max_ongoing_requests=17,
    max_queued_requests=9,
    user_config={"k": "v"},
    ray_actor_options={"num_cpus": 0.25},
    health_check_period_s=3.5,
    health_check_timeout_s=7,
    graceful_shutdown_wait_loop_s=0.5,
    graceful_shutdown_timeout_s=4,
)
class Customised:
    def reconfigure(self, config):
        self.config = config

    def __call__(self, request: Request) -> str:
        return "custom"


# ---- options and defaults (no cluster) ------------------------------------------------


@pytest.mark.parametrize("dep", [plain, PlainClass], ids=["function", "class"])
def test_defaults_match_ray_serve(dep):
    assert isinstance(dep, serve.Deployment)
    assert dep.name == dep.func_or_class.__name__
    assert dep.num_replicas == 1
    assert dep.max_ongoing_requests == 5
    assert dep.max_queued_requests == -1
    assert dep.user_config is None
    cfg = dep.config
    assert cfg.num_replicas == 1
    assert cfg.max_ongoing_requests == 5
    assert cfg.max_queued_requests == -1
    assert cfg.health_check_period_s == 10
    assert cfg.health_check_timeout_s == 30
    assert cfg.graceful_shutdown_wait_loop_s == 2
    assert cfg.graceful_shutdown_timeout_s == 20
    assert cfg.autoscaling_config is None
    assert cfg.user_config is None


def test_explicit_options_are_kept():
    dep = Customised
    assert dep.name == "Custom"
    assert dep.func_or_class.__name__ == "Customised"
    assert dep.num_replicas == 3
    assert dep.max_ongoing_requests == 17
    assert dep.max_queued_requests == 9
    assert dep.user_config == {"k": "v"}
    assert dep.ray_actor_options["num_cpus"] == 0.25
    cfg = dep.config
    assert cfg.health_check_period_s == 3.5
    assert cfg.health_check_timeout_s == 7
    assert cfg.graceful_shutdown_wait_loop_s == 0.5
    assert cfg.graceful_shutdown_timeout_s == 4


def test_options_returns_a_changed_copy():
    changed = plain.options(num_replicas=2, max_ongoing_requests=11, name="renamed", user_config={"a": 1})
    assert changed is not plain
    assert isinstance(changed, serve.Deployment)
    assert changed.num_replicas == 2
    assert changed.max_ongoing_requests == 11
    assert changed.name == "renamed"
    assert changed.user_config == {"a": 1}
    assert changed.func_or_class is plain.func_or_class
    # Untouched options keep their values, and the original is unchanged.
    assert changed.config.health_check_period_s == 10
    assert plain.num_replicas == 1
    assert plain.max_ongoing_requests == 5
    assert plain.name == "plain"
    assert plain.user_config is None
    # Options stack: a copy of a copy keeps earlier changes.
    again = changed.options(max_queued_requests=3)
    assert (again.num_replicas, again.max_ongoing_requests, again.max_queued_requests) == (2, 11, 3)
    assert changed.max_queued_requests == -1


@pytest.mark.parametrize(
    "options",
    [
        {"max_ongoing_requests": 0},
        {"max_ongoing_requests": -3},
        {"num_replicas": 0},
        {"num_replicas": -1},
        {"num_replicas": "two"},
        {"health_check_period_s": 0},
        {"health_check_timeout_s": -1},
        {"graceful_shutdown_timeout_s": -1},
        {"user_config": {"not": object()}},  # must be JSON-serializable
        {"ray_actor_options": {"num_gpus": -1}},
        {"autoscaling_config": {"min_replicas": 3, "max_replicas": 1}},
        {"num_replicas": 2, "autoscaling_config": {"min_replicas": 1, "max_replicas": 3}},
    ],
    ids=lambda o: ",".join(sorted(o)) + "=" + repr(list(o.values()))[:40],
)
def test_invalid_options_raise_at_decoration_time(options):
    with pytest.raises((ValueError, TypeError)):

        @serve.deployment(**options)
        def f(request):
            return "never"

    with pytest.raises((ValueError, TypeError)):
        plain.options(**options)


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="not_an_option"):

        @serve.deployment(not_an_option=1)
        class C:
            pass


def test_num_replicas_with_autoscaling_message():
    with pytest.raises(ValueError, match="(?i)num_replicas"):
        serve.deployment(num_replicas=2, autoscaling_config={"min_replicas": 1, "max_replicas": 2})(PlainClass.func_or_class)


def test_autoscaling_config_accepted():
    dep = plain.options(autoscaling_config={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 3})
    auto = dep.config.autoscaling_config
    assert auto is not None
    assert (auto.min_replicas, auto.max_replicas, auto.target_ongoing_requests) == (1, 4, 3)
    assert dep.num_replicas is None  # autoscaling decides
    # The typed config works too.
    dep2 = plain.options(autoscaling_config=serve.AutoscalingConfig(min_replicas=2, max_replicas=5))
    assert dep2.config.autoscaling_config.min_replicas == 2
    assert dep2.config.initial_num_replicas() == 2
    # num_replicas="auto" turns on the default autoscaling policy.
    dep3 = plain.options(num_replicas="auto")
    assert dep3.config.autoscaling_config is not None
    assert dep3.config.autoscaling_config.max_replicas == 100


def test_bind_rejects_args_for_functions_and_direct_calls():
    with pytest.raises(ValueError):
        plain.bind(1)
    app = Customised.bind()
    assert isinstance(app, serve.Application)
    with pytest.raises(RuntimeError):
        Customised()


# ---- deployed -------------------------------------------------------------------------


@serve.deployment(**FAST)
class Greeter:
    """Replies with the greeting from user_config, set through reconfigure()."""

    def __init__(self) -> None:
        self.greeting = "unset"
        self.reconfigure_calls = 0

    def reconfigure(self, config: dict) -> None:
        self.greeting = config["greeting"]
        self.reconfigure_calls += 1

    def __call__(self, request: Request) -> dict:
        return {"greeting": self.greeting, "calls": self.reconfigure_calls, "pid": os.getpid()}


def test_user_config_reaches_replica_and_redeploy_changes_it(serve_url):
    serve.run(Greeter.options(user_config={"greeting": "hello"}).bind(), name="greeter", route_prefix="/greet")
    first = requests.get(f"{serve_url}/greet", timeout=TIMEOUT).json()
    assert first["greeting"] == "hello"
    assert first["calls"] == 1  # reconfigure ran once, before the first request

    # A user_config change is applied in place: same replica process, reconfigure() called again.
    handle = serve.run(
        Greeter.options(user_config={"greeting": "bonjour"}).bind(), name="greeter", route_prefix="/greet"
    )
    second = requests.get(f"{serve_url}/greet", timeout=TIMEOUT).json()
    assert second["greeting"] == "bonjour"
    assert second["pid"] == first["pid"]
    assert second["calls"] == 2
    assert serve.status().applications["greeter"].deployments["Greeter"].status == "HEALTHY"
    assert handle is not None


def test_user_config_scales_with_replicas(serve_url):
    serve.run(
        Greeter.options(num_replicas=2, user_config={"greeting": "hej"}).bind(), name="greeter2", route_prefix="/g2"
    )
    seen = {}

    def both_replicas_answer() -> bool:
        body = requests.get(f"{serve_url}/g2", timeout=TIMEOUT).json()
        seen[body["pid"]] = body["greeting"]
        return len(seen) == 2

    wait_for_condition(both_replicas_answer, timeout=30, interval=0.02, message="both replicas should answer")
    assert set(seen.values()) == {"hej"}


@serve.deployment(autoscaling_config={"min_replicas": 1, "initial_replicas": 2, "max_replicas": 3}, **FAST)
def autoscaled(request: Request) -> str:
    return "auto"


def test_autoscaling_deployment_runs(serve_url):
    serve.run(autoscaled.bind(), name="auto", route_prefix="/auto")
    assert requests.get(f"{serve_url}/auto", timeout=TIMEOUT).text == "auto"
    dep = serve.status().applications["auto"].deployments["autoscaled"]
    # Starts at initial_replicas (downscaling waits downscale_delay_s, 600 s by default).
    assert dep.status == "HEALTHY"
    assert dep.replica_states == {"RUNNING": 2}
