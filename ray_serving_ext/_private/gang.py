"""Gang scheduling: replicas placed, started and stopped in groups of `gang_size`.

As in Ray Serve 2.60, each gang has one placement group holding the bundles
of all its replicas (the deployment's `placement_group_bundles` per replica,
else the replica's own resources), with the gang's placement strategy; member
`rank` runs in bundle `rank * bundles_per_replica`, and the tasks and actors a
member starts are captured by the group. Under RESTART_GANG, a member that
stops for any reason other than the whole gang being stopped (death, failed
health checks, a failed constructor) makes the other members stop at once;
the gang's placement group is released when its last member is gone, and the
deployment starts a whole new gang in its place.

The tracker holds no Ray objects of its own besides the placement groups,
which it creates and removes through `cluster` (or the functions it is
given, so the logic is testable without Ray).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ray_serving_ext._private.cluster import (
    create_placement_group,
    in_placement_group,
    remove_placement_group,
)
from ray_serving_ext._private.common import DeploymentID
from ray_serving_ext._private.constants import DEFAULT_REPLICA_NUM_CPUS
from ray_serving_ext._private.scheduling_config import (
    GangRuntimeFailurePolicy,
    bundle_label_selectors,
)
from ray_serving_ext.config import DeploymentConfig
from ray_serving_ext.schema import ReplicaState

logger = logging.getLogger("ray_serving_ext.controller")

GANG_PG_NAME_PREFIX = "SERVE_GANG::"

_ACTIVE = (ReplicaState.STARTING, ReplicaState.RECOVERING, ReplicaState.UPDATING, ReplicaState.RUNNING)

# Starts one member replica with the given scheduling strategy and returns its record.
StartMember = Callable[[Any], Any]


@dataclass
class Gang:
    """One gang: its placement group and its members' replica ids, by rank."""

    gang_id: str
    version_key: str
    placement_group: Any
    pg_name: str
    member_ids: list[str] = field(default_factory=list)


def round_up_to_gangs(num_replicas: int, gang_size: int) -> int:
    """The smallest multiple of `gang_size` that is >= `num_replicas` (Ray Serve rounds
    autoscaling decisions and capacity-scaled counts up to whole gangs the same way)."""
    return math.ceil(num_replicas / gang_size) * gang_size if num_replicas > 0 else 0


def required_resources(ray_actor_options: dict[str, Any]) -> dict[str, float]:
    """The resources a replica actor with these options needs (zero amounts left out):
    what placement checks compare with nodes, and the bundle a gang reserves per replica
    when the deployment sets no `placement_group_bundles`."""
    bundle: dict[str, float] = {"CPU": float(ray_actor_options.get("num_cpus", DEFAULT_REPLICA_NUM_CPUS) or 0)}
    if ray_actor_options.get("num_gpus"):
        bundle["GPU"] = float(ray_actor_options["num_gpus"])
    if ray_actor_options.get("memory"):
        bundle["memory"] = float(ray_actor_options["memory"])
    bundle.update({k: float(v) for k, v in (ray_actor_options.get("resources") or {}).items()})
    return {k: v for k, v in bundle.items() if v > 0}


def gang_bundles(config: DeploymentConfig) -> tuple[list[dict[str, float]], list[dict[str, str]] | None, int]:
    """(bundles, label selectors or None, bundles per replica) of one gang's placement group.

    Raises ValueError when a replica would need an empty bundle (Ray refuses those).
    """
    gang = config.gang_scheduling_config
    assert gang is not None
    per_replica = config.placement_group_bundles or [required_resources(config.ray_actor_options)]
    if not all(per_replica):
        raise ValueError(
            "A gang's placement group needs resources for each replica, but the replica requests none "
            "(e.g. num_cpus=0). Give the replica resources or set placement_group_bundles."
        )
    selectors = bundle_label_selectors(config.placement_group_bundle_label_selector, len(per_replica))
    bundles = [dict(b) for _ in range(gang.gang_size) for b in per_replica]
    gang_selectors = [dict(s) for _ in range(gang.gang_size) for s in selectors] if selectors else None
    return bundles, gang_selectors, len(per_replica)


class GangTracker:
    """The gangs of one deployment, and the rules they are scaled and failed by."""

    def __init__(self, deployment_id: DeploymentID,
                 create_pg: Callable[..., Any] = create_placement_group,
                 remove_pg: Callable[[Any], None] = remove_placement_group,
                 strategy_for: Callable[[Any, int], Any] = in_placement_group) -> None:
        self.deployment_id = deployment_id
        self.gangs: dict[str, Gang] = {}
        self._create_pg = create_pg
        self._remove_pg = remove_pg
        self._strategy_for = strategy_for

    def gang_of(self, replica_id: str) -> Gang | None:
        for gang in self.gangs.values():
            if replica_id in gang.member_ids:
                return gang
        return None

    # ---- starting --------------------------------------------------------------------
    def start_gang(self, version_key: str, config: DeploymentConfig, start_member: StartMember) -> Gang:
        """Reserve a new gang's placement group and start all its members into it.

        On any failure the members already started are stopped, the group is
        released and the error is raised (the caller counts it as a failed start).
        """
        gang_cfg = config.gang_scheduling_config
        assert gang_cfg is not None
        bundles, selectors, per_replica = gang_bundles(config)
        gang_id = uuid.uuid4().hex[:8]
        name = f"{GANG_PG_NAME_PREFIX}{self.deployment_id.app_name}::{self.deployment_id.name}::{gang_id}"
        group = self._create_pg(bundles, gang_cfg.gang_placement_strategy.value, name, selectors)
        gang = Gang(gang_id, version_key, group, name)
        started: list[Any] = []
        try:
            for rank in range(gang_cfg.gang_size):
                rec = start_member(self._strategy_for(group, rank * per_replica))
                started.append(rec)
                gang.member_ids.append(rec.replica_id)
        except Exception:
            for rec in started:
                rec.stop(graceful=False, timeout_s=0)
            if not started:
                self._remove_pg(group)
            else:  # released by `reap` once the stopped members are gone
                self.gangs[gang_id] = gang
            raise
        self.gangs[gang_id] = gang
        logger.info("Started gang %s of %s (%d replicas, placement group %s).",
                    gang_id, self.deployment_id, len(started), name)
        return gang

    # ---- failure policy and clean-up -------------------------------------------------
    def enforce_failure_policy(self, replicas: dict[str, Any], policy: GangRuntimeFailurePolicy | None) -> list[str]:
        """Under RESTART_GANG (also the rule for gangs left from a gang config since
        replaced), stop every live member of a gang that has lost a member.
        Returns the ids of the gangs it tore down."""
        torn_down = []
        if policy not in (None, GangRuntimeFailurePolicy.RESTART_GANG):
            return torn_down
        for gang in self.gangs.values():
            members = [replicas.get(rid) for rid in gang.member_ids]
            lost = [m for m in members if m is None or m.state == ReplicaState.STOPPING]
            alive = [m for m in members if m is not None and m.state != ReplicaState.STOPPING]
            if lost and alive:
                for rec in alive:
                    rec.stop(graceful=False, timeout_s=0)
                torn_down.append(gang.gang_id)
                logger.warning("Gang %s of %s lost a replica; stopping the whole gang (RESTART_GANG).",
                               gang.gang_id, self.deployment_id)
        return torn_down

    def reap(self, replicas: dict[str, Any]) -> None:
        """Release the placement group of every gang none of whose members is left."""
        for gang_id, gang in list(self.gangs.items()):
            if not any(rid in replicas for rid in gang.member_ids):
                self._remove_pg(gang.placement_group)
                del self.gangs[gang_id]

    def remove_all(self) -> None:
        """Release every gang's placement group now (the end of a shutdown)."""
        for gang in self.gangs.values():
            self._remove_pg(gang.placement_group)
        self.gangs.clear()

    # ---- scaling ---------------------------------------------------------------------
    def live_gangs(self, replicas: dict[str, Any], version_key: str | None = None) -> list[Gang]:
        """Gangs all of whose members are active (of `version_key` if given)."""
        result = []
        for gang in self.gangs.values():
            members = [replicas.get(rid) for rid in gang.member_ids]
            complete = bool(members) and all(m is not None and m.state in _ACTIVE for m in members)
            if complete and (version_key is None or gang.version_key == version_key):
                result.append(gang)
        return result

    def stop_gang(self, gang: Gang, replicas: dict[str, Any], timeout_s: float) -> None:
        """Stop every member of `gang` gracefully (a deliberate stop, not a failure)."""
        for rid in gang.member_ids:
            rec = replicas.get(rid)
            if rec is not None:
                rec.stop(graceful=True, timeout_s=timeout_s)

    def running_members(self, gang: Gang, replicas: dict[str, Any]) -> int:
        return sum(1 for rid in gang.member_ids if replicas.get(rid) is not None
                   and replicas[rid].state == ReplicaState.RUNNING)

    def scale(self, replicas: dict[str, Any], version_key: str, target: int, gang_size: int, *,
              can_start: bool, keep_all_old: bool, start_gang: Callable[[], bool], timeout_s: float) -> None:
        """One scaling step in whole gangs: start gangs of `version_key` up to
        `target` replicas (when `can_start`; `start_gang` returns False to stop
        trying this step), stop surplus ones, and retire older gangs and replicas
        outside any gang as fully running new gangs replace them (all of them are
        kept while `keep_all_old`, i.e. the new version fails to start)."""
        needed = target // gang_size
        current = self.live_gangs(replicas, version_key)
        if can_start:
            for _ in range(needed - len(current)):
                if not start_gang():
                    break
            current = self.live_gangs(replicas, version_key)
        if len(current) > needed:
            order = sorted(current, key=lambda g: (self.running_members(g, replicas) == gang_size,
                                                   replicas[g.member_ids[0]].start_time))
            for gang in order[: len(current) - needed]:
                self.stop_gang(gang, replicas, timeout_s)
            current = order[len(current) - needed:]
        running_new = sum(gang_size for g in current if self.running_members(g, replicas) == gang_size)
        keep_old = target if keep_all_old else max(0, target - running_new)
        self._retire_old(replicas, version_key, keep_old, timeout_s)

    def _retire_old(self, replicas: dict[str, Any], version_key: str, keep: int, timeout_s: float) -> None:
        """Stop older units (whole gangs; replicas outside any gang one by one) until at
        most `keep` of their replicas remain, starting replicas first, newest first."""
        units: list[tuple[int, float, int, Callable[[], None]]] = []
        for gang in self.live_gangs(replicas):
            if gang.version_key != version_key:
                first = replicas[gang.member_ids[0]]
                units.append((int(self.running_members(gang, replicas) == len(gang.member_ids)), -first.start_time,
                              len(gang.member_ids), lambda g=gang: self.stop_gang(g, replicas, timeout_s)))
        for rec in replicas.values():
            if rec.state in _ACTIVE and self.gang_of(rec.replica_id) is None:
                units.append((int(rec.state == ReplicaState.RUNNING), -rec.start_time, 1,
                              lambda r=rec: r.stop(graceful=True, timeout_s=timeout_s)))
        units.sort(key=lambda u: (u[0], u[1]))
        remaining = sum(u[2] for u in units)
        for _running, _age, size, stop in units:
            if remaining <= keep:
                break
            stop()
            remaining -= size
