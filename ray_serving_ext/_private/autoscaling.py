"""Autoscaling: from reported load and custom metrics to a target number of replicas.

Callers (handles and proxies) report, per deployment, the requests they have
queued plus in flight; replicas whose class defines `record_autoscaling_stats()`
report custom metrics. The controller keeps each source's reports for
`look_back_period_s` (`LoadWindow`, `CustomMetrics`) and, each decision, builds
an `AutoscalingContext` and calls the deployment's policy (by default
`autoscaling_policy.default_autoscaling_policy`: `total / target_ongoing_requests`),
wrapped so that up/down-scaling factors, `upscale_delay_s`/`downscale_delay_s`
(`downscale_to_zero_delay_s` for 1 -> 0) and, with no replica running and a
request waiting, an immediate cold start apply to every policy alike. The
result is clamped to [min_replicas, max_replicas].
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from ray_serving_ext import autoscaling_policy as policies
from ray_serving_ext.config import AggregationFunction, AutoscalingConfig, AutoscalingContext, AutoscalingPolicy

logger = logging.getLogger("ray_serving_ext.controller")

# A source that stopped reporting (process gone) is forgotten after this long.
SOURCE_TTL_S = 30.0


class LoadWindow:
    """Timestamped load reports from many sources for one deployment."""

    def __init__(self) -> None:
        self._samples: Dict[str, Deque[Tuple[float, float]]] = {}

    def record(self, source: str, value: float, now: Optional[float] = None) -> None:
        now = time.time() if now is None else now
        self._samples.setdefault(source, deque()).append((now, float(value)))

    def average_total(self, look_back_s: float, now: Optional[float] = None) -> float:
        """Sum over sources of each one's mean load within the window."""
        now = time.time() if now is None else now
        total = 0.0
        for source in list(self._samples):
            samples = self._samples[source]
            while samples and samples[0][0] < now - max(look_back_s, SOURCE_TTL_S):
                samples.popleft()
            if not samples:
                del self._samples[source]
                continue
            recent = [v for t, v in samples if t >= now - look_back_s]
            if not recent:  # nothing in the window: the latest value still stands
                recent = [samples[-1][1]]
            total += sum(recent) / len(recent)
        return total

    def latest_total(self) -> float:
        return sum(s[-1][1] for s in self._samples.values() if s)


def desired_replicas(config: AutoscalingConfig, total_load: float, current: int) -> int:
    """The replica count the default policy wants now, before delays and cold start."""
    raw = total_load / config.target_ongoing_requests if total_load > 0 else 0
    wanted = policies._apply_scaling_factors(raw, current, config) if raw != current else current
    return max(config.min_replicas, min(config.max_replicas, wanted))


@dataclass(order=True)
class TimeStampedValue:
    """One sample of a metric (Ray Serve's ``TimeStampedValue``)."""

    timestamp: float
    value: float = field(compare=False)


_REDUCE: Dict[AggregationFunction, Callable[[List[float]], float]] = {
    AggregationFunction.MEAN: lambda vs: sum(vs) / len(vs),
    AggregationFunction.MAX: max,
    AggregationFunction.MIN: min,
}


class CustomMetrics:
    """Per-replica samples of the metrics `record_autoscaling_stats()` returns."""

    def __init__(self) -> None:
        self._samples: Dict[str, Dict[str, Deque[TimeStampedValue]]] = {}

    def record(self, replica_id: str, stats: Dict[str, float], now: Optional[float] = None) -> None:
        now = time.time() if now is None else now
        for name, value in stats.items():
            self._samples.setdefault(name, {}).setdefault(replica_id, deque()).append(
                TimeStampedValue(now, float(value)))

    def trim(self, keep_s: float, replicas: Optional[List[str]], now: float) -> None:
        """Forget samples older than *keep_s* and replicas not in *replicas* (None keeps all)."""
        for name in list(self._samples):
            per = self._samples[name]
            for rid in list(per):
                q = per[rid]
                while q and q[0].timestamp < now - keep_s:
                    q.popleft()
                if not q or (replicas is not None and rid not in replicas):
                    del per[rid]
            if not per:
                del self._samples[name]

    def raw(self, look_back_s: float, now: float) -> Dict[str, Dict[str, List[TimeStampedValue]]]:
        """name -> replica id -> samples in the window (the latest one if none is)."""
        out: Dict[str, Dict[str, List[TimeStampedValue]]] = {}
        for name, per in self._samples.items():
            for rid, q in per.items():
                recent = [s for s in q if s.timestamp >= now - look_back_s] or [q[-1]]
                out.setdefault(name, {})[rid] = recent
        return out

    def aggregated(self, look_back_s: float, now: float, how: AggregationFunction) -> Dict[str, Dict[str, float]]:
        """name -> replica id -> its samples in the window reduced by *how*."""
        reduce = _REDUCE[AggregationFunction(how)]
        return {name: {rid: reduce([s.value for s in series]) for rid, series in per.items()}
                for name, per in self.raw(look_back_s, now).items()}


def _import_path(path: str) -> Any:
    module, sep, attr = path.partition(":")
    if not sep:
        module, _, attr = path.rpartition(".")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def resolve_policy(policy: AutoscalingPolicy) -> Callable[[Any], Any]:
    """The callable *policy* names: the default policy, an imported path, a function,
    or an instance of a class (made once, with ``policy_kwargs``). Raises ImportError
    or AttributeError for a path that does not resolve."""
    if policy.is_default_policy_function():
        return policies.default_autoscaling_policy
    fn = policy.policy_function
    if isinstance(fn, str):
        fn = _import_path(fn)
    if inspect.isclass(fn):
        return fn(**policy.policy_kwargs)
    return fn


def wrapped_policy(policy: AutoscalingPolicy) -> Callable[[AutoscalingContext], Tuple[int, Dict[str, Any]]]:
    """The resolved policy with Serve's factors, delays and cold start applied; falls back
    to the default policy (logging why) if the named one cannot be resolved."""
    try:
        fn = resolve_policy(policy)
    except Exception:
        logger.exception("Autoscaling policy %r could not be loaded; using the default policy.",
                         policy.policy_function)
        fn = policies.default_autoscaling_policy
    return policies._apply_autoscaling_config(fn)


def resolve_app_policy(policy: AutoscalingPolicy) -> Callable[[Dict[Any, AutoscalingContext]], Any]:
    """An application-level policy, wrapped with Serve's per-deployment factors and delays."""
    if policy.is_default_policy_function():
        raise ValueError("An application-level autoscaling_policy must name a policy function.")
    return policies._apply_app_level_autoscaling_config(resolve_policy(policy))


class AppAutoscaler:
    """One application's policy: each decision sees every autoscaling deployment of the app at once."""

    def __init__(self, policy: AutoscalingPolicy, app_name: str) -> None:
        self.policy = policy
        self.app_name = app_name
        try:
            self._policy: Optional[Callable[[Dict[Any, AutoscalingContext]], Any]] = resolve_app_policy(policy)
        except Exception:
            logger.exception("Application autoscaling policy %r of app '%s' could not be loaded; each "
                             "deployment uses its own policy.", policy.policy_function, app_name)
            self._policy = None

    @property
    def loaded(self) -> bool:
        return self._policy is not None

    def decide(self, members: Dict[Any, Tuple[AutoscalingState, List[str], Tuple[int, int]]],
               now: Optional[float] = None) -> Dict[Any, int]:
        """One decision for all *members* (deployment id -> (state, running replica ids,
        capacity-adjusted bounds)); returns each one's (possibly new) target."""
        now = time.time() if now is None else now
        if self._policy is None or not members:
            return {dep_id: st.target for dep_id, (st, _, _) in members.items()}
        contexts = {dep_id: st.context(now, running, bounds) for dep_id, (st, running, bounds) in members.items()}
        try:
            decisions, states = self._policy(contexts)
        except Exception:
            logger.exception("Autoscaling policy of app '%s' raised; keeping the replica counts.", self.app_name)
            return {dep_id: st.target for dep_id, (st, _, _) in members.items()}
        out = {}
        for dep_id, (st, _, _) in members.items():
            st.policy_state = dict((states or {}).get(dep_id) or {})
            ctx = contexts[dep_id]
            if dep_id in decisions:
                out[dep_id] = st.apply(decisions[dep_id], ctx.capacity_adjusted_min_replicas,
                                       ctx.capacity_adjusted_max_replicas, now)
            else:
                out[dep_id] = st.target
        return out


class AutoscalingState:
    """Per-deployment decision state: load, custom metrics, policy and its state."""

    def __init__(self, config: AutoscalingConfig, initial_target: int, deployment_id: Any = None) -> None:
        self.config = config
        self.deployment_id = deployment_id
        self.window = LoadWindow()
        self.custom = CustomMetrics()
        self.target = initial_target
        self.policy_state: Dict[str, Any] = {}
        self.last_total = 0.0
        self.last_desired = initial_target
        self.last_scale_up_time: Optional[float] = None
        self.last_scale_down_time: Optional[float] = None
        self._policy = wrapped_policy(config.policy)

    def update_config(self, config: AutoscalingConfig) -> None:
        if config.policy != self.config.policy:
            self._policy, self.policy_state = wrapped_policy(config.policy), {}
        self.config = config
        self.target = max(config.min_replicas, min(config.max_replicas, self.target))

    def context(self, now: float, running: Optional[List[str]] = None,
                bounds: Optional[Tuple[int, int]] = None) -> AutoscalingContext:
        """The `AutoscalingContext` of this decision; *running* are the running replicas'
        ids (None: as many as the target), *bounds* the capacity-adjusted (min, max)."""
        cfg = self.config
        total = self.window.average_total(cfg.look_back_period_s, now)
        self.last_total = total
        self.custom.trim(max(cfg.look_back_period_s, SOURCE_TTL_S), running, now)
        low, high = bounds if bounds is not None else (cfg.min_replicas, cfg.max_replicas)
        name, app = (self.deployment_id.name, self.deployment_id.app_name) if self.deployment_id else ("", "")
        return AutoscalingContext(
            deployment_id=self.deployment_id, deployment_name=name, app_name=app,
            current_num_replicas=self.target if running is None else len(running),
            target_num_replicas=self.target, running_replicas=list(running or []),
            total_num_requests=total, total_queued_requests=0.0,
            aggregated_metrics=lambda: self.custom.aggregated(cfg.look_back_period_s, now, cfg.aggregation_function),
            raw_metrics=lambda: self.custom.raw(cfg.look_back_period_s, now),
            capacity_adjusted_min_replicas=low, capacity_adjusted_max_replicas=high,
            policy_state=dict(self.policy_state), last_scale_up_time=self.last_scale_up_time,
            last_scale_down_time=self.last_scale_down_time, current_time=now, config=cfg,
        )

    def apply(self, decision: Any, low: int, high: int, now: float) -> int:
        """Make *decision* (rounded up, clamped to [low, high]) the target; returns it."""
        try:
            wanted = math.ceil(decision)
        except (TypeError, ValueError):
            logger.error("Autoscaling policy returned %r, not a number; keeping %d replicas.", decision, self.target)
            return self.target
        wanted = max(low, min(high, wanted))
        self.last_desired = wanted
        if wanted > self.target:
            self.last_scale_up_time = now
        elif wanted < self.target:
            self.last_scale_down_time = now
        self.target = wanted
        return wanted

    def decide(self, now: Optional[float] = None, running: Optional[List[str]] = None,
               bounds: Optional[Tuple[int, int]] = None) -> int:
        """Advance the policy by one step; returns the (possibly new) target."""
        now = time.time() if now is None else now
        ctx = self.context(now, running, bounds)
        try:
            decision, state = self._policy(ctx)
        except Exception:
            logger.exception("Autoscaling policy of %s raised; keeping %d replicas.", self.deployment_id, self.target)
            return self.target
        self.policy_state = dict(state or {})
        return self.apply(decision, ctx.capacity_adjusted_min_replicas, ctx.capacity_adjusted_max_replicas, now)
