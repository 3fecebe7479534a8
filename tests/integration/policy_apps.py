"""Applications for the application-level autoscaling tests, deployed from config files.

`Front` calls `Back`; both autoscale, and both report the number written in the
file named by the app's `stats_path` argument as the custom metric `wanted`.
`coordinated_policy` is an application-level policy: it gives Front `wanted`
replicas and Back twice as many, seeing both contexts in one call.
"""

from __future__ import annotations

import math
from typing import Any, Dict

import ray_serving_ext as serve
from ray_serving_ext.config import AutoscalingContext

_AUTOSCALING = {
    "min_replicas": 1, "max_replicas": 4, "upscale_delay_s": 0, "downscale_delay_s": 0.5,
    "metrics_interval_s": 0.2, "look_back_period_s": 1,
}


class _Reporter:
    def __init__(self, stats_path: str) -> None:
        self._path = stats_path

    def record_autoscaling_stats(self) -> Dict[str, float]:
        with open(self._path) as f:
            return {"wanted": float(f.read().strip() or 0)}


@serve.deployment(graceful_shutdown_wait_loop_s=0.1, autoscaling_config=_AUTOSCALING)
class Back(_Reporter):
    def __call__(self) -> str:
        return "back"


@serve.deployment(graceful_shutdown_wait_loop_s=0.1, autoscaling_config=_AUTOSCALING)
class Front(_Reporter):
    def __init__(self, back: Any, stats_path: str) -> None:
        super().__init__(stats_path)
        self._back = back

    async def __call__(self) -> str:
        return "front+" + await self._back.remote()


@serve.deployment(graceful_shutdown_wait_loop_s=0.1, num_replicas=1)
class Fixed:
    def __call__(self) -> str:
        return "fixed"


def app_builder(args: Dict[str, str]) -> Any:
    return Front.bind(Back.bind(args["stats_path"]), args["stats_path"])


fixed_app = Fixed.bind()


def coordinated_policy(contexts: Dict[Any, AutoscalingContext]):
    """Front gets `wanted` replicas (the largest any Front replica reports), Back twice that."""
    by_name = {dep_id.name: (dep_id, ctx) for dep_id, ctx in contexts.items()}
    assert set(by_name) == {"Front", "Back"}, f"the policy sees both deployments, got {set(by_name)}"
    front_id, front = by_name["Front"]
    back_id, back = by_name["Back"]
    values = (front.aggregated_metrics or {}).get("wanted", {})
    if not values:
        return {}, {}
    wanted = math.ceil(max(values.values()))
    calls = front.policy_state.get("calls", 0) + 1
    return {front_id: wanted, back_id: 2 * wanted}, {front_id: {"calls": calls}}
