"""Rollout options without Ray: their validation, the step sizes they give, and what the
deployment state machine does with them (surge, stop-first, retry bound, ranks)."""

from __future__ import annotations

from typing import List

import pytest
from pydantic import ValidationError

from ray_serving_ext._private import rollout
from ray_serving_ext._private.deployment_state import ACTIVE
from ray_serving_ext.config import DeploymentConfig
from ray_serving_ext.config_file import DeploymentSchema
from ray_serving_ext.deployment import deployment
from ray_serving_ext.schema import DeploymentStatus, ReplicaState
from tests.unit.test_deployment_state import Harness, spec

ROLLOUT_OPTIONS = ("max_constructor_retry_count", "rolling_update_percentage", "max_surge_percent")


# ---- options ---------------------------------------------------------------------------
def test_defaults_are_ray_serves() -> None:
    cfg = DeploymentConfig()
    assert (cfg.max_constructor_retry_count, cfg.rolling_update_percentage, cfg.max_surge_percent) == (20, 0.2, 0)


@pytest.mark.parametrize("option,value", [
    ("rolling_update_percentage", 0), ("rolling_update_percentage", 1.01), ("rolling_update_percentage", -0.5),
    ("max_surge_percent", -1), ("max_surge_percent", 101), ("max_surge_percent", True),
    ("max_constructor_retry_count", 0), ("max_constructor_retry_count", -3), ("max_constructor_retry_count", True),
])
def test_out_of_range_values_are_rejected_in_code_and_in_files(option: str, value: object) -> None:
    with pytest.raises(ValidationError):
        DeploymentConfig.from_options({option: value})
    with pytest.raises(ValidationError):
        DeploymentSchema.model_validate({"name": "D", option: value})


def test_bounds_themselves_are_accepted() -> None:
    cfg = DeploymentConfig.from_options(
        {"rolling_update_percentage": 1.0, "max_surge_percent": 100, "max_constructor_retry_count": 1})
    assert (cfg.rolling_update_percentage, cfg.max_surge_percent, cfg.max_constructor_retry_count) == (1.0, 100, 1)
    d = deployment(max_surge_percent=0, rolling_update_percentage=0.01)(lambda: None)
    assert d.options(max_constructor_retry_count=7).explicit_options == {
        "max_surge_percent": 0, "rolling_update_percentage": 0.01, "max_constructor_retry_count": 7}


@pytest.mark.parametrize("option,value", [
    ("max_constructor_retry_count", 5), ("rolling_update_percentage", 0.5), ("max_surge_percent", 30)])
def test_changing_a_rollout_option_restarts_nothing(option: str, value: object) -> None:
    before, after = DeploymentConfig(), DeploymentConfig.from_options({option: value})
    assert not before.needs_restart(after)
    h = _running(2)
    ids = set(h.state.replicas)
    h.state.deploy(spec("v1", num_replicas=2, **{option: value}))
    h.tick(2)
    assert set(h.state.replicas) == ids and not h.in_state(ReplicaState.STOPPING)


# ---- step sizes -------------------------------------------------------------------------
def test_rollout_size_rounds_down_but_replaces_at_least_one() -> None:
    assert rollout.rollout_size(0.2, 4) == 1
    assert rollout.rollout_size(0.2, 10) == 2
    assert rollout.rollout_size(0.5, 5) == 2
    assert rollout.rollout_size(1.0, 3) == 3
    assert rollout.rollout_size(0.2, 0) == 1


def test_surge_allowance_rounds_up_in_integers() -> None:
    assert rollout.surge_allowance(28, 25) == 7  # float maths would give 8
    assert rollout.surge_allowance(50, 4) == 2
    assert rollout.surge_allowance(1, 1) == 1
    assert rollout.surge_allowance(0, 10) == 0
    assert rollout.surge_allowance(100, 3) == 3


# ---- the state machine -------------------------------------------------------------------
def _running(n: int, version: str = "v1", **config: object) -> Harness:
    h = Harness()
    h.state.deploy(spec(version, num_replicas=n, **config))
    h.tick()
    h.finish_starts()
    h.tick()
    assert h.running() == n
    return h


def _live(h: Harness) -> int:
    return len([r for r in h.state.replicas.values() if r.state in ACTIVE])


def _finish_one_start(h: Harness) -> bool:
    for rec in h.in_state(ReplicaState.STARTING, "current"):
        calls = rec.actor.pending("initialize_and_get_metadata")
        if calls:
            calls[0].fut.set_result({"node_id": "n1"})
            return True
    return False


def _roll_one_start_at_a_time(h: Harness, ticks: int = 60) -> List[tuple]:
    """Drive a rollout, finishing one constructor per tick; (live, running, old running) per tick."""
    seen = []
    for _ in range(ticks):
        h.tick()
        h.finish_drains()
        seen.append((_live(h), h.running(), len(h.in_state(ReplicaState.RUNNING, "old"))))
        if not h.in_state(ReplicaState.RUNNING, "old") and h.state.status == DeploymentStatus.HEALTHY:
            break
        _finish_one_start(h)
    return seen


def test_surge_rollout_keeps_the_target_running_within_the_allowance() -> None:
    h = _running(4)
    h.state.deploy(spec("v2", num_replicas=4, max_surge_percent=50, rolling_update_percentage=0.25))
    h.tick()
    assert len(h.in_state(ReplicaState.STARTING, "current")) == 2  # the whole surge at once
    assert h.in_state(ReplicaState.STOPPING) == []  # nothing stops before a replacement runs
    seen = _roll_one_start_at_a_time(h)
    assert max(live for live, _, _ in seen) == 6
    assert min(running for _, running, _ in seen) >= 4
    assert h.state.status == DeploymentStatus.HEALTHY
    assert len(h.in_state(ReplicaState.RUNNING, "current")) == 4 and _live(h) == 4


def test_stop_first_rollout_replaces_a_batch_at_a_time() -> None:
    h = _running(4)
    h.state.deploy(spec("v2", num_replicas=4, rolling_update_percentage=0.5))
    h.tick()
    assert len(h.in_state(ReplicaState.STOPPING, "old")) == 2  # old replicas go first, two at a time
    assert len(h.in_state(ReplicaState.STARTING, "current")) == 2
    seen = _roll_one_start_at_a_time(h)
    assert max(live for live, _, _ in seen) == 4
    assert min(running for _, running, _ in seen) == 2
    assert len(h.in_state(ReplicaState.RUNNING, "current")) == 4 and _live(h) == 4


def test_default_rollout_replaces_one_replica_per_step() -> None:
    h = _running(3)
    h.state.deploy(spec("v2", num_replicas=3))  # 20% of 3 rounds down to 0: at least one
    h.tick()
    assert len(h.in_state(ReplicaState.STOPPING, "old")) == 1
    assert len(h.in_state(ReplicaState.STARTING, "current")) == 1
    h.tick(3)
    assert len(h.in_state(ReplicaState.STARTING, "current")) == 1  # waits for it to run
    seen = _roll_one_start_at_a_time(h)
    assert min(running for _, running, _ in seen) == 2


def test_failed_surge_rollout_keeps_every_old_replica() -> None:
    h = _running(2)
    h.state.deploy(spec("v2", num_replicas=2, max_surge_percent=100, max_constructor_retry_count=4))
    attempts = 0
    for _ in range(30):
        h.tick()
        if h.state.status == DeploymentStatus.DEPLOY_FAILED:
            break
        attempts += h.finish_starts(error=RuntimeError("boom"))
    assert h.state.status == DeploymentStatus.DEPLOY_FAILED
    assert attempts == 4  # min(max_constructor_retry_count=4, 3 per replica * 2)
    h.tick(3)
    assert len(h.in_state(ReplicaState.RUNNING, "old")) == 2 and h.in_state(ReplicaState.STARTING) == []


def test_retry_threshold_is_capped_by_three_per_target_replica() -> None:
    h = Harness()
    h.state.deploy(spec("v1", num_replicas=1, max_constructor_retry_count=10))
    attempts = 0
    for _ in range(40):
        h.tick()
        if h.state.status == DeploymentStatus.DEPLOY_FAILED:
            break
        attempts += h.finish_starts(error=RuntimeError("boom"))
    assert attempts == 3 and h.state.status == DeploymentStatus.DEPLOY_FAILED


def test_zero_replicas_is_never_deploy_failed() -> None:
    h = Harness()
    h.state.deploy(spec("v1", num_replicas=0, max_constructor_retry_count=1))
    h.tick(2)
    assert h.state.status == DeploymentStatus.HEALTHY


# ---- ranks in the state machine -------------------------------------------------------------
def test_starting_replicas_get_ranks_and_stopped_ones_free_them() -> None:
    h = Harness()
    h.state.deploy(spec(num_replicas=3))
    h.tick()
    ids = sorted(h.state.replicas)
    payloads = [h.state.assign_rank(rid, "n1") for rid in ids]
    assert [p["rank"] for p in payloads] == [0, 1, 2] and {p["world_size"] for p in payloads} == {3}
    assert h.state.assign_rank(ids[0], "n1") == payloads[0]  # asked again: same rank
    assert h.state.assign_rank("not-a-replica", "n1") is None
    h.finish_starts()
    h.tick()
    assert h.state.status == DeploymentStatus.HEALTHY
    assert [d["rank"]["rank"] for d in sorted(h.state.replica_details(), key=lambda d: d["replica_id"])] == [0, 1, 2]

    h.state.deploy(spec(num_replicas=2))
    h.tick()
    (stopping,) = h.in_state(ReplicaState.STOPPING)
    assert h.state.assign_rank(stopping.replica_id, "n1") is None  # a draining replica is no longer wanted
    assert h.state.ranks.get(stopping.replica_id) is not None  # but keeps its rank until it is gone
    for rec in h.in_state(ReplicaState.UPDATING):
        rec.actor.pending("reconfigure")[0].fut.set_result({"node_id": "n1"})
    h.finish_drains()
    h.tick(2)
    assert h.state.ranks.get(stopping.replica_id) is None
    survivors = sorted(h.state.ranks.get(r).rank for r in h.state.replicas)
    assert survivors == [0, 1]  # compacted once settled
    told = {rid: rec.actor.calls.get("update_rank", []) for rid, rec in h.state.replicas.items()}
    moved = [rid for rid, calls in told.items() if calls]
    assert len(moved) == (1 if stopping.replica_id != ids[2] else 0)  # only a replica holding rank 2 moves


def test_a_replacement_takes_the_rank_of_the_replica_it_replaces() -> None:
    h = Harness()
    h.state.deploy(spec(num_replicas=3))
    h.tick()
    for rid in sorted(h.state.replicas):
        h.state.assign_rank(rid, "n1")
    h.finish_starts()
    h.tick()
    victim = next(r for r in h.state.replicas.values() if h.state.ranks.get(r.replica_id).rank == 1)
    h.state.mark_replica_dead(victim.replica_id, "killed")
    h.tick()
    (replacement,) = h.in_state(ReplicaState.STARTING)
    assert h.state.assign_rank(replacement.replica_id, "n1")["rank"] == 1


def test_a_one_replica_rollout_starts_the_replacement_first() -> None:
    """Unlike Ray Serve's stop-first default, the only serving replica is kept until its replacement
    runs, and a new version that never starts leaves the old one serving (DEPLOY_FAILED)."""
    h = _running(1)
    h.state.deploy(spec("v2", num_replicas=1))
    for _ in range(30):
        h.tick()
        assert len(h.in_state(ReplicaState.RUNNING, "old")) == 1, "the old replica keeps serving"
        if h.state.status == DeploymentStatus.DEPLOY_FAILED:
            break
        h.finish_starts(error=RuntimeError("boom"))
    assert h.state.status == DeploymentStatus.DEPLOY_FAILED
    h2 = _running(1)
    h2.state.deploy(spec("v2", num_replicas=1))
    h2.tick()
    assert len(h2.in_state(ReplicaState.STARTING, "current")) == 1 and len(h2.in_state(ReplicaState.RUNNING, "old")) == 1
    h2.finish_starts()
    h2.tick(3)
    assert len(h2.in_state(ReplicaState.RUNNING, "current")) == 1 and not h2.in_state(ReplicaState.RUNNING, "old")
