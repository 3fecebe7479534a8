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
