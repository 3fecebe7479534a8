"""The autoscaling policy, without Ray: load windows, delays, bounds, scale to and from zero."""

from ray_serving_ext._private.autoscaling import AutoscalingState, LoadWindow, desired_replicas
from ray_serving_ext.config import AutoscalingConfig


def cfg(**kw) -> AutoscalingConfig:
    base = dict(min_replicas=1, max_replicas=10, target_ongoing_requests=2, upscale_delay_s=5,
                downscale_delay_s=10, look_back_period_s=4)
    base.update(kw)
    return AutoscalingConfig(**base)


def test_desired_is_ceil_of_load_over_target_within_bounds():
    c = cfg()
    assert desired_replicas(c, 0, 3) == 1
    assert desired_replicas(c, 5, 1) == 3
    assert desired_replicas(c, 100, 1) == 10
    assert desired_replicas(cfg(min_replicas=0), 0, 2) == 0


def test_factors_move_part_of_the_way():
    c = cfg(upscaling_factor=0.5, downscaling_factor=0.5)
    assert desired_replicas(c, 16, 2) == 5  # raw 8: half of +6
    assert desired_replicas(c, 4, 8) == 5  # raw 2: half of -6


def test_window_averages_each_source_and_sums():
    w = LoadWindow()
    for t, v in [(0, 2), (1, 4), (2, 6)]:
        w.record("a", v, now=t)
    w.record("b", 10, now=2)
    assert w.average_total(look_back_s=10, now=2) == 4 + 10
    assert w.average_total(look_back_s=1.5, now=2) == 5 + 10


def test_upscale_waits_for_delay_then_applies():
    s = AutoscalingState(cfg(), initial_target=1)
    for t in range(0, 5):
        s.window.record("a", 6, now=t)
        assert s.decide(now=t) == 1
    s.window.record("a", 6, now=5)
    assert s.decide(now=5) == 3


def test_downscale_waits_longer_and_resets_on_upswing():
    s = AutoscalingState(cfg(), initial_target=4)
    s.window.record("a", 8, now=0)
    assert s.decide(now=0) == 4
    s.window.record("a", 0, now=5)
    assert s.decide(now=9) == 4  # average still above... window 4s: only 0 -> wants 1
    s.window.record("a", 8, now=12)
    assert s.decide(now=12) == 4  # back up: downscale timer reset
    s.window.record("a", 0, now=20)
    assert s.decide(now=25) == 4
    assert s.decide(now=35) == 1


def test_scale_from_zero_is_immediate_and_to_zero_after_delay():
    s = AutoscalingState(cfg(min_replicas=0), initial_target=0)
    assert s.decide(now=0) == 0
    s.window.record("proxy", 1, now=1)
    assert s.decide(now=1) == 1
    s.window.record("proxy", 0, now=2)
    assert s.decide(now=7) == 1
    assert s.decide(now=17) == 0


def test_dead_sources_expire():
    w = LoadWindow()
    w.record("gone", 5, now=0)
    assert w.average_total(look_back_s=4, now=1) == 5
    assert w.average_total(look_back_s=4, now=100) == 0


# ---- 2.60's policy hooks ---------------------------------------------------------------
import pytest  # noqa: E402

from ray_serving_ext import autoscaling_policy  # noqa: E402
from ray_serving_ext._private.autoscaling import CustomMetrics, resolve_policy  # noqa: E402
from ray_serving_ext.config import AggregationFunction, AutoscalingContext, AutoscalingPolicy  # noqa: E402


def test_new_config_fields_and_defaults():
    c = AutoscalingConfig()
    assert c.downscale_to_zero_delay_s is None
    assert c.aggregation_function is AggregationFunction.MEAN
    assert c.policy.is_default_policy_function()
    assert AutoscalingConfig(aggregation_function="MAX").aggregation_function is AggregationFunction.MAX
    with pytest.raises(Exception):
        AutoscalingConfig(aggregation_function="median")
    with pytest.raises(Exception):
        AutoscalingConfig(downscale_to_zero_delay_s=-1)
    with pytest.raises(Exception, match="JSON"):
        AutoscalingPolicy(policy_function="m:f", policy_kwargs={"x": object()})


def test_ray_serve_default_policy_path_means_ours():
    p = AutoscalingPolicy(policy_function="ray.serve.autoscaling_policy:default_autoscaling_policy")
    assert p.is_default_policy_function()
    assert resolve_policy(p) is autoscaling_policy.default_autoscaling_policy


class Doubler:
    def __init__(self, factor: int = 2) -> None:
        self.factor = factor

    def __call__(self, ctx):
        return ctx.target_num_replicas * self.factor, ctx.policy_state


def test_class_policy_is_instantiated_once_with_kwargs_and_path_is_imported():
    inst = resolve_policy(AutoscalingPolicy(policy_function=Doubler, policy_kwargs={"factor": 3}))
    assert isinstance(inst, Doubler) and inst.factor == 3
    fn = resolve_policy(AutoscalingPolicy(policy_function="tests.unit.test_autoscaling:Doubler"))
    assert isinstance(fn, Doubler)
    dumped = AutoscalingPolicy(policy_function=Doubler).model_dump(mode="json")
    assert dumped["policy_function"] == "tests.unit.test_autoscaling.Doubler"


def test_custom_policy_decision_is_delayed_and_bounded():
    seen = []

    def policy(ctx):
        seen.append(ctx)
        return 50, {"mine": 1}

    s = AutoscalingState(cfg(policy={"policy_function": policy}), initial_target=2)
    assert s.decide(now=0, running=["a", "b"]) == 2  # upscale_delay_s=5
    assert s.decide(now=5, running=["a", "b"]) == 10  # max_replicas
    ctx = seen[-1]
    assert isinstance(ctx, AutoscalingContext) and ctx.current_num_replicas == 2
    assert ctx.policy_state["mine"] == 1 and ctx.running_replicas == ["a", "b"]


def test_downscale_to_zero_has_its_own_delay():
    s = AutoscalingState(cfg(min_replicas=0, downscale_to_zero_delay_s=1, downscale_delay_s=100), 1)
    assert s.decide(now=0, running=["a"]) == 1
    assert s.decide(now=1, running=["a"]) == 0


def test_custom_metrics_aggregate_per_replica_in_window():
    m = CustomMetrics()
    for t, v in [(0, 1), (1, 5), (2, 3)]:
        m.record("r1", {"q": v}, now=t)
    assert m.aggregated(10, 2, AggregationFunction.MAX) == {"q": {"r1": 5}}
    assert m.aggregated(10, 2, AggregationFunction.MEAN) == {"q": {"r1": 3}}
    assert [s.value for s in m.raw(1.5, 2)["q"]["r1"]] == [5, 3]
    m.trim(30, ["other"], now=2)
    assert m.raw(10, 2) == {}


def test_context_lazy_fields_and_running_requests():
    calls = []
    ctx = AutoscalingContext(None, "d", "app", 1, 1, [], lambda: calls.append(1) or 5.0, 2.0, None, None,
                             0, 3, {}, None, None, 0.0, AutoscalingConfig())
    assert ctx.total_num_requests == 5.0 and ctx.total_num_requests == 5.0 and calls == [1]
    assert ctx.total_running_requests == 3.0
