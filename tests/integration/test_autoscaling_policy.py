"""Custom autoscaling policies fed by custom metrics (Ray Serve 2.60's advanced autoscaling).

The deployment's `record_autoscaling_stats()` reports a metric read from a file the
test writes; the custom policy wants as many replicas as the largest value any
replica reports. Writing 2 scales 1 -> 2; writing 0 scales back to min_replicas.
"""

from __future__ import annotations

import math

import ray_serving_ext as serve
from ray_serving_ext.config import AutoscalingContext
from tests.utils import wait_for_condition


def wanted_replicas_policy(ctx: AutoscalingContext):
    """Scale to the largest `wanted` metric any running replica reports."""
    assert isinstance(ctx, AutoscalingContext)
    values = (ctx.aggregated_metrics or {}).get("wanted", {})
    raw = (ctx.raw_metrics or {}).get("wanted", {})
    assert set(raw) == set(values)
    decision = math.ceil(max(values.values())) if values else ctx.target_num_replicas
    return decision, {"calls": ctx.policy_state.get("calls", 0) + 1}


def _running(app: str, deployment: str) -> int:
    dep = serve.status().applications[app].deployments[deployment]
    return {str(k): v for k, v in dep.replica_states.items()}.get("RUNNING", 0)


def _target(app: str, deployment: str) -> int:
    return serve.status().applications[app].deployments[deployment].target_num_replicas


def _make_app(path: str):
    @serve.deployment(
        graceful_shutdown_wait_loop_s=0.1,
        autoscaling_config={
            "min_replicas": 1, "max_replicas": 3, "upscale_delay_s": 0, "downscale_delay_s": 0.5,
            "metrics_interval_s": 0.2, "look_back_period_s": 1,
            "policy": {"policy_function": wanted_replicas_policy},
        },
    )
    class Reporter:
        def __init__(self, stats_path: str) -> None:
            self._path = stats_path

        async def record_autoscaling_stats(self) -> dict:
            with open(self._path) as f:
                return {"wanted": float(f.read().strip() or 0)}

        def __call__(self) -> str:
            return "ok"

    return Reporter.bind(path)


def test_custom_policy_scales_on_custom_metric(serve_instance, tmp_path):
    stats = tmp_path / "wanted"
    stats.write_text("1")
    handle = serve.run(_make_app(str(stats)), name="custom_metric", route_prefix=None)
    assert handle.remote().result(timeout_s=30) == "ok"
    assert _running("custom_metric", "Reporter") == 1
    stats.write_text("2")
    wait_for_condition(lambda: _running("custom_metric", "Reporter") == 2, timeout=30,
                       message="the custom policy scales up on the custom metric")
    stats.write_text("0")
    wait_for_condition(lambda: _running("custom_metric", "Reporter") == 1
                       and _target("custom_metric", "Reporter") == 1, timeout=30,
                       message="and back down to min_replicas")
    serve.delete("custom_metric")


def test_policy_by_import_path_and_bounds(serve_instance, tmp_path):
    """An import path names the policy too; its decision is clamped to max_replicas."""
    stats = tmp_path / "wanted"
    stats.write_text("9")
    app = _make_app(str(stats))
    app = app.deployment.options(autoscaling_config={
        "min_replicas": 1, "max_replicas": 2, "upscale_delay_s": 0, "downscale_delay_s": 0.5,
        "metrics_interval_s": 0.2, "look_back_period_s": 1,
        "policy": {"policy_function": f"{__name__}:wanted_replicas_policy"},
    }).bind(str(stats))
    serve.run(app, name="custom_path", route_prefix=None)
    wait_for_condition(lambda: _running("custom_path", "Reporter") == 2, timeout=30, message="up to max_replicas")
    assert _target("custom_path", "Reporter") == 2
    serve.delete("custom_path")
