"""How far one reconcile step may take a rolling update (Ray Serve 2.60's rules).

A step replaces at most `rollout_size` replicas. Without surge
(`max_surge_percent=0`) old replicas stop first and replacements fill the
freed places, so the live count never exceeds the target; except where that
would stop every serving replica (e.g. a deployment of one), which instead
takes a surge of one (`leaves_none_serving`). With surge, up to
`surge_allowance` extra new replicas start and an old replica stops only
while more than the target are running, so serving capacity never drops
below the target. Pure functions over replica records: no Ray.
"""

from __future__ import annotations

from typing import List, Protocol, Sequence

from ray_serving_ext.schema import ReplicaState


class _Replica(Protocol):
    state: ReplicaState
    start_time: float


def rollout_size(fraction: float, target: int) -> int:
    """Replicas one step may replace: `fraction` of the target, rounded down, at least 1."""
    return max(int(fraction * target), 1)


def surge_allowance(percent: int, target: int) -> int:
    """Extra replicas allowed above the target: `percent` of it, rounded up (integer maths)."""
    return (percent * target + 99) // 100


def _running(replicas: Sequence[_Replica]) -> int:
    return sum(r.state == ReplicaState.RUNNING for r in replicas)


def surge_to_start(target: int, current: Sequence[_Replica], old: Sequence[_Replica], surge: int) -> int:
    """New-version replicas to start now: the missing ones, as far as the live
    count stays within target + surge (`current`, `old`: live replicas by version)."""
    missing = target - len(current)
    slots = surge + target - len(current) - len(old)
    return max(0, min(missing, slots))


def surge_old_to_stop(target: int, current: Sequence[_Replica], old: Sequence[_Replica],
                      batch: int, failed: bool) -> List[_Replica]:
    """Old replicas to stop now without running fewer than `target` replicas.

    Starting ones go first (they serve nothing), then running ones while more
    than the target run; at most `batch` in all. After a failed rollout only
    old replicas above the target are stopped, so the survivors keep serving.
    """
    candidates = [r for r in old if r.state == ReplicaState.RUNNING
                  or (not failed and r.state == ReplicaState.STARTING)]
    surplus = len(old) - target if failed else _running(current) + _running(old) - target
    surplus = max(surplus, 0)
    chosen: List[_Replica] = []
    for rec in sorted(candidates, key=lambda r: r.state == ReplicaState.RUNNING):
        if len(chosen) >= batch:
            break
        running = rec.state == ReplicaState.RUNNING
        if running and surplus <= 0:
            continue
        chosen.append(rec)
        surplus -= running
    return chosen


def leaves_none_serving(current: Sequence[_Replica], old: Sequence[_Replica], stopping: Sequence[_Replica]) -> bool:
    """Whether stopping `stopping` (old replicas) would leave no replica running at all."""
    running_old = _running(old)
    return _running(current) == 0 and running_old > 0 and running_old == _running(stopping)


def stop_first_old_to_stop(target: int, current: Sequence[_Replica], old: Sequence[_Replica],
                           old_stopping: int, batch: int) -> List[_Replica]:
    """Old replicas to stop now when replacements start only in their place.

    While a scale-down is under way (more old replicas, live or draining, than
    the target) none: the scale-down goes first. Otherwise as many as keep
    the replicas in transition (stopped old ones not yet replaced by running
    new ones) within `batch`; starting ones first, then the oldest running.
    """
    if target < len(old) + old_stopping:
        return []
    pending = target - _running(current) - len(old)
    budget = max(batch - pending, 0)
    candidates = [r for r in old if r.state in (ReplicaState.STARTING, ReplicaState.RUNNING)]
    order = sorted(candidates, key=lambda r: (r.state == ReplicaState.RUNNING, r.start_time))
    return order[:budget]


def excess_to_stop(current: Sequence[_Replica], old: Sequence[_Replica], excess: int) -> List[_Replica]:
    """The `excess` live replicas a scale-down stops: old versions first, then
    replicas not yet running, then the longest-running."""
    order = sorted(old, key=lambda r: (r.state == ReplicaState.RUNNING, -r.start_time))
    order += sorted(current, key=lambda r: (r.state == ReplicaState.RUNNING, r.start_time))
    return order[:max(excess, 0)]
