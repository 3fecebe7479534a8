"""Autoscaling policies (Ray Serve 2.60's ``ray.serve.autoscaling_policy``).

A policy is called as ``policy(ctx: AutoscalingContext) -> (num_replicas,
policy_state)``. Whatever policy a deployment uses, Serve wraps it
(:func:`_apply_autoscaling_config`): with no replica running and requests
waiting it scales up at once (cold start); otherwise the policy's decision is
moved toward by the up/down-scaling factor, applied only after it has held for
``upscale_delay_s`` / ``downscale_delay_s`` (``downscale_to_zero_delay_s`` for
1 -> 0), and the controller then bounds it by the capacity-adjusted min/max.
:func:`default_autoscaling_policy` is the controller's built-in behaviour.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable, Dict, Optional, Tuple, Union

from ray_serving_ext._private.prometheus_query import (
    PrometheusQueryMixin, PrometheusSample, PrometheusScalar, PrometheusVector,
)
from ray_serving_ext.config import AutoscalingConfig, AutoscalingContext

__all__ = ["AutoscalingConfig", "AutoscalingContext", "PrometheusQueryMixin", "PrometheusSample", "PrometheusScalar",
           "PrometheusVector", "default_autoscaling_policy", "replica_queue_length_autoscaling_policy"]

Decision = Tuple[Union[int, float], Dict[str, Any]]
PolicyFn = Callable[[AutoscalingContext], Decision]

# Serve's own keys in a policy_state (a custom policy's keys live beside them).
DECISION_COUNTER_KEY = "__decision_counters"
DECISION_TIMESTAMP_KEY = "__decision_timestamp"
_EPS_S = 1e-6


def _apply_scaling_factors(desired: Union[int, float], current: int, config: AutoscalingConfig) -> int:
    """Move from *current* toward *desired* by the up/down-scaling factor (rounded up);
    a downscale the factor would round away still steps down by one."""
    if current == 0:
        return math.ceil(desired)
    delta = desired - current
    factor = config.get_upscaling_factor() if delta > 0 else config.get_downscaling_factor()
    scaled = math.ceil(current + factor * delta)
    if math.ceil(float(desired)) < current and scaled == current:
        scaled -= 1
    return scaled


def _apply_delay_logic(desired: int, target: int, config: AutoscalingConfig, state: Dict[str, Any],
                       now: Optional[float] = None) -> Tuple[int, Dict[str, Any]]:
    """Return *desired* once it has pointed the same way (up or down from *target*)
    for the configured delay in wall-clock time, else *target*; keeps its timer in *state*."""
    now = time.time() if now is None else now
    counter = state.get(DECISION_COUNTER_KEY, 0)
    since = state.get(DECISION_TIMESTAMP_KEY)
    decision = target
    if desired != target:
        up = desired > target
        if (up and counter < 0) or (not up and counter > 0):
            counter, since = 0, None
        counter += 1 if up else -1
        since = now if since is None else since
        if up:
            delay = config.upscale_delay_s
        elif target == 1:
            delay = config.downscale_to_zero_delay_s
            delay = config.downscale_delay_s if delay is None else delay
        else:
            delay, desired = config.downscale_delay_s, max(1, desired)
        if now - since + _EPS_S >= delay:
            counter, since, decision = 0, None, desired
    else:
        counter, since = 0, None
    state[DECISION_COUNTER_KEY] = counter
    state[DECISION_TIMESTAMP_KEY] = since
    return decision, state


def _cold_start(ctx: AutoscalingContext) -> Optional[int]:
    """Replicas to start at once when none runs and requests wait, else None."""
    if ctx.current_num_replicas == 0 and ctx.total_num_requests > 0:
        return max(math.ceil(ctx.config.get_upscaling_factor()), ctx.target_num_replicas)
    return None


def _apply_defaults(desired: Union[int, float], ctx: AutoscalingContext, user_state: Dict[str, Any],
                    serve_state: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
    """Factors and delays applied to one decision; Serve's timer keys merged into *user_state*."""
    internal = {DECISION_COUNTER_KEY: serve_state.get(DECISION_COUNTER_KEY, 0),
                DECISION_TIMESTAMP_KEY: serve_state.get(DECISION_TIMESTAMP_KEY)}
    scaled = _apply_scaling_factors(desired, ctx.current_num_replicas, ctx.config)
    if ctx.current_num_replicas == 0 and scaled > 0:
        user_state.update(internal)
        return scaled, user_state
    final, internal = _apply_delay_logic(max(0, scaled), ctx.target_num_replicas, ctx.config, internal,
                                         ctx.current_time)
    user_state.update(internal)
    return final, user_state


def _apply_autoscaling_config(policy: PolicyFn) -> Callable[[AutoscalingContext], Tuple[int, Dict[str, Any]]]:
    """*policy* with cold start, scaling factors and delays applied to its decisions."""

    @functools.wraps(policy)
    def wrapped(ctx: AutoscalingContext) -> Tuple[int, Dict[str, Any]]:
        cold = _cold_start(ctx)
        if cold is not None:
            return cold, ctx.policy_state
        before = dict(ctx.policy_state)
        desired, user_state = policy(ctx)
        return _apply_defaults(desired, ctx, dict(user_state or {}), before)

    return wrapped


AppDecision = Tuple[Dict[Any, Union[int, float]], Optional[Dict[Any, Dict[str, Any]]]]
AppPolicyFn = Callable[[Dict[Any, AutoscalingContext]], AppDecision]


def _apply_app_level_autoscaling_config(
    policy: AppPolicyFn,
) -> Callable[[Dict[Any, AutoscalingContext]], Tuple[Dict[Any, int], Dict[Any, Dict[str, Any]]]]:
    """An application-level *policy* (``contexts -> (decisions, states)``, keyed by
    deployment id) with cold start, factors and delays applied to each deployment's
    decision. A deployment the policy leaves out of its decisions keeps its target."""

    @functools.wraps(policy)
    def wrapped(contexts: Dict[Any, AutoscalingContext]) -> Tuple[Dict[Any, int], Dict[Any, Dict[str, Any]]]:
        before = {dep_id: dict(ctx.policy_state) for dep_id, ctx in contexts.items()}
        desired, user_states = policy(contexts)
        if not isinstance(desired, dict):
            raise TypeError("An application-level autoscaling policy must return "
                            "({deployment_id: num_replicas}, {deployment_id: policy_state}).")
        desired = {_key_for(k, contexts): v for k, v in desired.items()}
        user_states = {_key_for(k, contexts): v for k, v in (user_states or {}).items()}
        decisions: Dict[Any, int] = {}
        states: Dict[Any, Dict[str, Any]] = {}
        for dep_id, ctx in contexts.items():
            user_state = dict(user_states.get(dep_id) or {})
            if dep_id not in desired:
                user_state.update({k: v for k, v in before[dep_id].items() if k.startswith("__")})
                states[dep_id] = user_state
                continue
            cold = _cold_start(ctx)
            if cold is not None:
                decisions[dep_id], states[dep_id] = cold, {**before[dep_id], **user_state}
                continue
            decisions[dep_id], states[dep_id] = _apply_defaults(desired[dep_id], ctx, user_state, before[dep_id])
        return decisions, states

    return wrapped


def _key_for(key: Any, contexts: Dict[Any, AutoscalingContext]) -> Any:
    """The contexts' key a policy meant: the deployment id itself, or its deployment name."""
    if key in contexts:
        return key
    for dep_id in contexts:
        if getattr(dep_id, "name", None) == key:
            return dep_id
    raise KeyError(f"The autoscaling policy decided for {key!r}, which is not a deployment of the application.")


def replica_queue_length_autoscaling_policy(ctx: AutoscalingContext) -> Decision:
    """Ray Serve's request-based policy: the replicas that would put
    ``target_ongoing_requests`` (queued plus running) on each one, i.e.
    ``total_num_requests / target_ongoing_requests`` (a float; Serve rounds up).
    With no replica running it scales up at once if requests wait, else keeps
    the current target."""
    cold = _cold_start(ctx)
    if cold is not None:
        return cold, ctx.policy_state
    running = ctx.current_num_replicas
    if running == 0:
        return ctx.target_num_replicas, {}
    return running * ctx.total_num_requests / (ctx.config.target_ongoing_requests * running), {}


default_autoscaling_policy = replica_queue_length_autoscaling_policy
