"""Reconciles one deployment's replicas toward its goal: count, code version, config.

A code, constructor-argument or ray_actor_options change is a new version,
rolled out as Ray Serve 2.60 does (see `rollout.py`): `rolling_update_percentage`
of the replicas at a time; with `max_surge_percent` new replicas start first and
old ones drain once the new ones run, else old ones stop first. Other option
changes are applied in place through `reconfigure` on live replicas.
Constructors that keep raising (`max_constructor_retry_count`, at most 3 per
target replica) stop the rollout with DEPLOY_FAILED; the replicas of the
previous version still running keep serving. Each replica holds a dense rank
(`ranks.py`), asked for before its constructor runs.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

from ray_serving_ext._private import metrics, rollout
from ray_serving_ext._private.autoscaling import AutoscalingState
from ray_serving_ext._private.build import DeploymentSpec
from ray_serving_ext._private.cluster import NodeSnapshot
from ray_serving_ext._private.common import DeploymentID, DeploymentTargetInfo, ReplicaInfo
from ray_serving_ext._private.constants import (
    HEALTH_CHECK_FAILURE_THRESHOLD,
    MAX_PER_REPLICA_RETRY_COUNT,
    SLOW_STARTUP_WARNING_S,
)
from ray_serving_ext._private.deployment_actors import DeploymentActors
from ray_serving_ext._private.gang import GangTracker, required_resources, round_up_to_gangs
from ray_serving_ext._private.ranks import RankAllocator
from ray_serving_ext._private.replica_record import ReplicaRecord, short_error
from ray_serving_ext.config import DeploymentConfig
from ray_serving_ext.schema import (
    DeploymentStatus, DeploymentStatusOverview, DeploymentStatusTrigger, ReplicaRank, ReplicaState,
)

logger = logging.getLogger("ray_serving_ext.controller")

ACTIVE = (ReplicaState.STARTING, ReplicaState.RECOVERING, ReplicaState.UPDATING, ReplicaState.RUNNING)


def version_key(spec: DeploymentSpec) -> str:
    """What makes a replica obsolete when it changes (code, args, resources)."""
    cfg = spec.config
    return json.dumps(
        [spec.code_version, cfg.get("ray_actor_options", {}), cfg.get("max_replicas_per_node"),
         cfg.get("placement_group_bundles"), cfg.get("placement_group_strategy")],
        sort_keys=True,
        default=str,
    ) + scheduling_version_suffix(spec)


# Makes the record of a new replica: (deployment_id, replica_id, version_key, config).
# Tests pass a fake whose actor calls complete when they say.
RecordFactory = Callable[[DeploymentID, str, str, Dict[str, Any]], ReplicaRecord]


class DeploymentState:
    """Goal and live replicas of one deployment; `update()` takes one reconcile step.

    It asks Ray nothing itself: node facts come in as the `NodeSnapshot` given
    to `update()`, and replicas are driven through their `ReplicaRecord`s.
    """

    def __init__(self, deployment_id: DeploymentID, broadcast: Callable[[DeploymentID, Any], None],
                 record_factory: RecordFactory = ReplicaRecord) -> None:
        self.id = deployment_id
        self._broadcast = broadcast
        self._new_record = record_factory
        self.spec: Optional[DeploymentSpec] = None
        self.config = DeploymentConfig()
        self.version_key = ""
        self.target_num_replicas = 0
        self.replicas: Dict[str, ReplicaRecord] = {}
        self.deleting = False
        self.status = DeploymentStatus.UPDATING
        self.trigger = DeploymentStatusTrigger.CONFIG_UPDATE_STARTED
        self.message = ""
        self.last_error = ""
        self.failed_starts = 0
        self._infeasible_checked = False
        self._last_broadcast: Any = None
        self.autoscaling: Optional[AutoscalingState] = None
        # Set by a restarted controller until it has adopted the live replicas: callers
        # keep the replica set they know instead of hearing of an empty one meanwhile.
        self.recovering = False
        self.capacity: Optional[float] = None  # target_capacity percent; None means 100
        self._unplaced_reason = ""  # why the last replica could not be started, if it could not
        self.external_target: Optional[int] = None  # set by an external scaler until the next deploy
        self.app_autoscaled = False  # its application's autoscaling_policy sets the target instead
        self._gangs = GangTracker(deployment_id)
        self._actors = DeploymentActors(deployment_id)
        self.ranks = RankAllocator()
        self._ranked_membership: frozenset = frozenset()  # replicas the ranks were last made dense over

    # ---- goal ------------------------------------------------------------------------
    def deploy(self, spec: DeploymentSpec) -> None:
        new_key = version_key(spec)
        new_config = spec.deployment_config()
        if new_key != self.version_key:
            self.failed_starts = 0
            self.last_error = ""
            self._infeasible_checked = False
        self.spec = spec
        self._actors.sync(getattr(spec, "deployment_actors", None) or {})
        self.version_key = new_key
        self.config = new_config
        self.deleting = False
        self.external_target = None  # a deploy states the count again, as in Ray Serve
        self.target_num_replicas = self._initial_target(new_config)
        bundle_problem = _first_bundle_problem(new_config)
        if bundle_problem:  # the replica could never be placed: say so instead of waiting forever
            self.failed_starts = new_config.max_constructor_retry_count
            self.last_error = bundle_problem
        self.status = DeploymentStatus.UPDATING
        self.trigger = DeploymentStatusTrigger.CONFIG_UPDATE_STARTED
        self.message = ""
        self._broadcast_if_changed(force=True)

    def _scaled(self, n: int) -> int:
        """n at the current target_capacity (rounded up, so a non-zero capacity keeps a replica)."""
        if self.capacity is None:
            return n
        return math.ceil(n * self.capacity / 100.0)

    def set_capacity(self, capacity: Optional[float]) -> None:
        self.capacity = capacity
        if self.config.autoscaling_config is None and not self.deleting:
            base = self.external_target if self.external_target is not None else self.config.num_replicas
            self.target_num_replicas = self._scaled(int(base or 0))

    def set_external_target(self, num_replicas: int) -> None:
        """An external scaler's replica count; it holds (scaled by target_capacity) until the next deploy."""
        self.external_target = int(num_replicas)
        self.target_num_replicas = self._scaled(self.external_target)

    def _initial_target(self, config: DeploymentConfig) -> int:
        auto = config.autoscaling_config
        if auto is None:
            self.autoscaling = None
            return self._scaled(int(config.num_replicas or 0))
        if self.autoscaling is None:  # a redeploy keeps the current scale and load history
            self.autoscaling = AutoscalingState(auto, config.initial_num_replicas(), self.id)
        else:
            self.autoscaling.update_config(auto)
        return self.autoscaling.target

    def record_load(self, source: str, value: float) -> None:
        if self.autoscaling is not None:
            self.autoscaling.window.record(source, value)

    def record_custom_metrics(self, replica_id: str, stats: Dict[str, float], timestamp: float) -> None:
        """A replica's `record_autoscaling_stats()` result, for the policy's context."""
        if self.autoscaling is not None and replica_id in self.replicas:
            self.autoscaling.custom.record(replica_id, stats, timestamp)

    def autoscaling_inputs(self) -> Optional[Tuple[AutoscalingState, List[str], Tuple[int, int]]]:
        """(state, running replica ids, bounds at the current target_capacity) for a
        decision, or None when this deployment does not autoscale now."""
        if self.autoscaling is None or self.deleting or self.spec is None:
            return None
        auto = self.autoscaling.config
        bounds = (self._scaled(auto.min_replicas), self._scaled(auto.max_replicas))
        running = [r.replica_id for r in self._records(ReplicaState.RUNNING)]
        return self.autoscaling, running, bounds

    def autoscale(self) -> None:
        """One autoscaling decision by the deployment's own policy (no-op without
        autoscaling_config, or while its application's policy decides for it)."""
        inputs = None if self.app_autoscaled else self.autoscaling_inputs()
        if inputs is None:
            return
        state, running, bounds = inputs
        self.target_num_replicas = state.decide(running=running, bounds=bounds)

    def delete(self) -> None:
        self.deleting = True
        self.target_num_replicas = 0

    def is_gone(self) -> bool:
        return self.deleting and not self.replicas

    # ---- one step --------------------------------------------------------------------
    def update(self, nodes: NodeSnapshot) -> None:
        """One reconcile step, placing new replicas with what `nodes` says."""
        if self.spec is None and not self.replicas:
            return
        self.autoscale()
        self._update_deployment_actors()
        self._poll_pending()
        self._poll_health()
        self._gangs.enforce_failure_policy(self.replicas, self._gang_policy())
        self._poll_stopping()
        self._gangs.reap(self.replicas)
        self._scale(nodes)
        if self.deleting and not self.replicas:
            self._actors.kill_all()  # only now: draining replicas may still use them
        self._update_status(nodes)
        self._compact_ranks()
        self._broadcast_if_changed()
        self.export_gauges()

    def _records(self, *states: ReplicaState) -> List[ReplicaRecord]:
        return [r for r in self.replicas.values() if r.state in states]

    def _poll_pending(self) -> None:
        for rec in self._records(ReplicaState.STARTING, ReplicaState.RECOVERING, ReplicaState.UPDATING):
            try:
                meta = rec.poll_pending()
            except Exception as exc:
                self._on_start_failure(rec, exc)
                continue
            if meta is None:
                continue
            if rec.state == ReplicaState.RECOVERING:
                if rec.finish_recovery(meta) and meta.get("rank"):
                    self.ranks.recover(rec.replica_id, rec.node_id, ReplicaRank(**meta["rank"]))
            else:
                rec.mark_running()
                if rec.version_key == self.version_key:
                    self.failed_starts = 0

    def adopt_recovered(self, replica_id: str, actor: Any) -> None:
        """Track a live replica found by a restarted controller; it reports what it runs next step."""
        rec = self._new_record(self.id, replica_id, "", {})
        rec.recover(actor)
        self.replicas[replica_id] = rec

    def kill_all_replicas(self) -> None:
        """Kill every replica actor now, without draining (the end of a shutdown)."""
        for rec in self.replicas.values():
            rec.kill()
        self._gangs.remove_all()
        self._actors.kill_all()

    def _on_start_failure(self, rec: ReplicaRecord, exc: BaseException) -> None:
        recovering = rec.state == ReplicaState.RECOVERING
        rec.stop(graceful=False, timeout_s=0)
        if recovering:
            return
        if rec.version_key == self.version_key:
            self.failed_starts += 1
        self.last_error = short_error(exc)
        logger.warning("Replica %s of %s failed to start: %s", rec.replica_id, self.id, self.last_error)

    def _poll_health(self) -> None:
        period, timeout = self.config.health_check_period_s, self.config.health_check_timeout_s
        for rec in self._records(ReplicaState.RUNNING, ReplicaState.UPDATING):
            died = rec.poll_liveness()
            if died:
                self.last_error = f"Replica {rec.replica_id} died: {died}"
                logger.warning("%s; replacing it.", self.last_error)
                rec.stop(graceful=False, timeout_s=0)
        for rec in self._records(ReplicaState.RUNNING):
            ok = rec.poll_health(period, timeout)
            labels = (self.id.name, rec.replica_id, self.id.app_name)
            # A RUNNING replica is healthy until a check fails (so is Ray Serve's gauge); without
            # this its series would be missing for the first health_check_period_s.
            healthy = ok if ok is not None else rec.health_failures == 0
            metrics.REPLICA_HEALTHY.labels(*labels).set(1 if healthy else 0)
            if ok is False:
                metrics.HEALTH_CHECK_FAILURES.labels(*labels).inc()
            if ok is False and rec.health_failures >= HEALTH_CHECK_FAILURE_THRESHOLD:
                self.last_error = f"Replica {rec.replica_id} failed health checks: {rec.last_health_error}"
                logger.warning("%s; replacing it.", self.last_error)
                self.status = DeploymentStatus.UNHEALTHY
                self.trigger = DeploymentStatusTrigger.HEALTH_CHECK_FAILED
                self.message = self.last_error
                rec.stop(graceful=False, timeout_s=0)

    def set_model_ids(self, replica_id: str, model_ids: List[str]) -> None:
        rec = self.replicas.get(replica_id)
        if rec is not None:
            rec.model_ids = tuple(model_ids)

    def set_routing_stats(self, replica_id: str, stats: Dict[str, Any]) -> None:
        """A replica's `record_routing_stats()` result, for its callers' request routers."""
        rec = self.replicas.get(replica_id)
        if rec is not None:
            rec.routing_stats = dict(stats)

    def mark_replica_dead(self, replica_id: str, reason: str) -> None:
        rec = self.replicas.get(replica_id)
        if rec is not None and rec.state not in (ReplicaState.STOPPING, ReplicaState.STARTING):
            self.last_error = f"Replica {replica_id} died: {reason}"
            rec.stop(graceful=False, timeout_s=0)

    def _poll_stopping(self) -> None:
        for rec in self._records(ReplicaState.STOPPING):
            if rec.poll_stopped():
                del self.replicas[rec.replica_id]
                self.ranks.release(rec.replica_id)  # only now: a draining replica keeps its rank
                try:
                    metrics.REPLICA_HEALTHY.remove(self.id.name, rec.replica_id, self.id.app_name)
                except KeyError:
                    pass

    def export_gauges(self) -> None:
        counts = self.replica_state_counts()
        for state in ReplicaState:
            metrics.NUM_REPLICAS.labels(self.id.name, self.id.app_name, state.value).set(counts.get(state.value, 0))
        metrics.TARGET_REPLICAS.labels(self.id.name, self.id.app_name).set(self.target_num_replicas)
        if self.autoscaling is not None:
            metrics.DESIRED_REPLICAS.labels(self.id.name, self.id.app_name).set(self.autoscaling.last_desired)
            metrics.AUTOSCALING_LOAD.labels(self.id.name, self.id.app_name).set(self.autoscaling.last_total)

    # ---- scaling and rollout ----------------------------------------------------------
    def _failure_threshold(self) -> int:
        """Constructor failures in a row that fail the version (Ray Serve's rule)."""
        return min(self.config.max_constructor_retry_count, self.target_num_replicas * MAX_PER_REPLICA_RETRY_COUNT)

    def _deploy_failed(self) -> bool:
        return self.target_num_replicas > 0 and self.failed_starts >= self._failure_threshold()

    def _node_for_new_replica(self, nodes: NodeSnapshot) -> Optional[str]:
        """With max_replicas_per_node: the node with fewest of our replicas that can host one more."""
        limit = self.config.max_replicas_per_node or 0
        req = required_resources(self.config.ray_actor_options)
        counts: Dict[str, int] = {}
        for rec in self._records(*ACTIVE):
            if rec.node_id:  # replicas are pinned when started, so starting ones count too
                counts[rec.node_id] = counts.get(rec.node_id, 0) + 1
        candidates = [n.node_id for n in nodes.nodes_fitting(req) if counts.get(n.node_id, 0) < limit]
        return min(candidates, key=lambda node: counts.get(node, 0)) if candidates else None

    def _start_replica(self, nodes: NodeSnapshot) -> None:
        assert self.spec is not None
        node_id = None
        if self.config.max_replicas_per_node:
            node_id = self._node_for_new_replica(nodes)
            if node_id is None:
                self._unplaced_reason = (
                    f"Deployment '{self.id.name}' cannot place another replica: every node that fits one "
                    f"already runs max_replicas_per_node={self.config.max_replicas_per_node} of them."
                )
                return
        self._unplaced_reason = ""
        rid = uuid.uuid4().hex[:8]
        rec = self._new_record(self.id, rid, self.version_key, self.config.model_dump())
        try:
            rec.start(self.spec, rec.config, self.config.ray_actor_options, node_id=node_id)
        except Exception as exc:
            self.failed_starts += 1
            self.last_error = short_error(exc)
            return
        self.replicas[rid] = rec
        if node_id:
            rec.node_id = node_id

    def _scale(self, nodes: NodeSnapshot) -> None:
        """Start, stop and reconfigure replicas toward the target, a rollout step at a time."""
        if self._records(ReplicaState.RECOVERING):
            return  # a restarted controller first learns what the live replicas run
        if self.config.gang_scheduling_config is not None:
            self._scale_gangs()
            return
        active = self._records(*ACTIVE)
        current = [r for r in active if r.version_key == self.version_key]
        old = [r for r in active if r.version_key != self.version_key]
        target, failed = self.target_num_replicas, self._deploy_failed()
        batch = rollout.rollout_size(self.config.rolling_update_percentage, target)
        surge = rollout.surge_allowance(self.config.max_surge_percent, target)
        stopped: List[ReplicaRecord] = []
        if old and target > 0 and surge == 0 and not failed:
            old_stopping = sum(r.version_key != self.version_key for r in self._records(ReplicaState.STOPPING))
            stopped = rollout.stop_first_old_to_stop(target, current, old, old_stopping, batch)
            if rollout.leaves_none_serving(current, old, stopped):
                # Ray Serve would stop the last serving replicas before their replacements
                # start; here the replacement starts first (a surge of one), so a new version
                # that fails to start never leaves the deployment with nothing serving.
                surge, stopped = 1, []
        can_start = not failed and not self.deleting and self._actors.all_ready()
        if old and target > 0 and surge > 0:
            to_start = rollout.surge_to_start(target, current, old, surge) if can_start else 0
            self._stop_all(rollout.surge_old_to_stop(target, current, old, batch, failed))
        else:
            self._stop_all(stopped)
            old = [r for r in old if r not in stopped]
            delta = target - len(current) - len(old)
            to_start = max(delta, 0) if can_start else 0
            self._stop_all(rollout.excess_to_stop(current, old, -delta))
        for _ in range(to_start):
            self._start_replica(nodes)
        self._reconfigure_in_place(current)

    def _stop_all(self, records: List[ReplicaRecord]) -> None:
        for rec in records:
            rec.stop(graceful=True, timeout_s=self.config.graceful_shutdown_timeout_s)

    # ---- deployment-scoped actors (see deployment_actors.py) --------------------------------
    def _update_deployment_actors(self) -> None:
        """Drive the deployment's actors; one that keeps failing to start fails the deployment."""
        if self.deleting:
            return
        self._actors.update()
        problem = self._actors.failure()
        if problem:
            self.failed_starts = max(self.failed_starts, self._failure_threshold())
            self.last_error = problem

    # ---- gangs (see gang.py) -------------------------------------------------------------
    def _gang_policy(self) -> Any:
        gang = self.config.gang_scheduling_config
        return gang.runtime_failure_policy if gang is not None else None

    def _scale_gangs(self) -> None:
        gang = self.config.gang_scheduling_config
        assert gang is not None
        self.target_num_replicas = round_up_to_gangs(self.target_num_replicas, gang.gang_size)
        self._gangs.scale(
            self.replicas, self.version_key, self.target_num_replicas, gang.gang_size,
            can_start=not self.deleting and not self._deploy_failed() and self._actors.all_ready(),
            keep_all_old=self._deploy_failed() and not self.deleting,
            start_gang=self._start_gang, timeout_s=self.config.graceful_shutdown_timeout_s,
        )
        self._reconfigure_in_place([r for r in self._records(*ACTIVE) if r.version_key == self.version_key])

    def _start_gang(self) -> bool:
        """Start one whole gang; False (and a counted failed start) if it could not be."""
        try:
            self._gangs.start_gang(self.version_key, self.config, self._start_gang_member)
        except Exception as exc:  # noqa: BLE001 - Ray's or the bundles' error: a failed start, reported
            self.failed_starts += 1
            self.last_error = short_error(exc)
            logger.warning("A gang of %s failed to start: %s", self.id, self.last_error)
            return False
        return True

    def _start_gang_member(self, scheduling_strategy: Any) -> ReplicaRecord:
        assert self.spec is not None
        rid = uuid.uuid4().hex[:8]
        rec = self._new_record(self.id, rid, self.version_key, self.config.model_dump())
        rec.start(self.spec, rec.config, self.config.ray_actor_options, scheduling_strategy=scheduling_strategy)
        self.replicas[rid] = rec
        return rec

    def _reconfigure_in_place(self, current: List[ReplicaRecord]) -> None:
        wanted = self.config.model_dump()
        for rec in current:
            if rec.state == ReplicaState.RUNNING and rec.config != wanted:
                rec.reconfigure(wanted)

    # ---- ranks -----------------------------------------------------------------------
    def rank_payload(self, replica_id: str) -> Optional[Dict[str, Any]]:
        """What a replica is told of its place: its rank's fields plus `world_size`
        (the target replica count); None if it holds no rank."""
        rank = self.ranks.get(replica_id)
        if rank is None:
            return None
        return {**rank.model_dump(), "world_size": self.target_num_replicas}

    def assign_rank(self, replica_id: str, node_id: str) -> Optional[Dict[str, Any]]:
        """The rank of a starting replica on `node_id` (the same one if asked again);
        None if this deployment no longer wants that replica."""
        rec = self.replicas.get(replica_id)
        if rec is None or rec.state not in ACTIVE:
            return None
        self.ranks.assign(replica_id, node_id)
        return self.rank_payload(replica_id)

    def _compact_ranks(self) -> None:
        """Once the deployment is settled with every replica running, renumber to close
        the gaps stopped replicas left. Each renumbered replica is told at once; it keeps
        serving meanwhile (no UPDATING state), as its rank is not part of its config."""
        if self.status != DeploymentStatus.HEALTHY or self.deleting:
            return
        if any(r.state != ReplicaState.RUNNING for r in self.replicas.values()):
            return
        membership = frozenset(self.replicas)
        if membership == self._ranked_membership:
            return
        self._ranked_membership = membership
        ordered = sorted(self.replicas.values(), key=lambda r: r.start_time)  # elders keep theirs first
        for replica_id in self.ranks.compact([r.replica_id for r in ordered]):
            logger.info("Replica %s of %s now has rank %s.", replica_id, self.id, self.ranks.get(replica_id))
            self.replicas[replica_id].send_rank(self.rank_payload(replica_id))

    # ---- status ----------------------------------------------------------------------
    def _update_status(self, nodes: NodeSnapshot) -> None:
        if self.deleting:
            self.trigger = DeploymentStatusTrigger.DELETING
            return
        current = [r for r in self._records(*ACTIVE) if r.version_key == self.version_key]
        running = [r for r in current if r.state == ReplicaState.RUNNING]
        settled = (
            len(running) == self.target_num_replicas == len(current)
            and len(self._records(*ACTIVE)) == self.target_num_replicas
        )
        if self._deploy_failed():
            self.status = DeploymentStatus.DEPLOY_FAILED
            self.trigger = DeploymentStatusTrigger.REPLICA_STARTUP_FAILED
            self.message = (
                f"The deployment failed to start {self.failed_starts} times in a row. "
                f"This may be an issue with its constructor or initial health check. "
                f"See logs for details. Last error: {self.last_error}"
            )
        elif settled:
            if self.status != DeploymentStatus.HEALTHY:
                self.trigger = DeploymentStatusTrigger.CONFIG_UPDATE_COMPLETED
            self.status = DeploymentStatus.HEALTHY
            self.message = ""
        elif self.status == DeploymentStatus.UNHEALTHY and running:
            pass  # stays UNHEALTHY until the replacement is RUNNING (settled)
        else:
            if self.status == DeploymentStatus.HEALTHY and self.config.autoscaling_config is not None:
                self.status = DeploymentStatus.UPSCALING if len(current) < self.target_num_replicas else DeploymentStatus.DOWNSCALING
                self.trigger = DeploymentStatusTrigger.AUTOSCALING
            elif self.status not in (DeploymentStatus.UNHEALTHY, DeploymentStatus.UPSCALING, DeploymentStatus.DOWNSCALING):
                self.status = DeploymentStatus.UPDATING
            pending = self._pending_message(nodes)
            self.message = pending or (self.message if self.status == DeploymentStatus.UNHEALTHY else "")

    def _pending_message(self, nodes: NodeSnapshot) -> str:
        waiting = self._actors.not_ready()
        if waiting:
            return f"Deployment '{self.id.name}' is waiting for its deployment actor(s) {waiting} to start."
        if self._unplaced_reason:
            return self._unplaced_reason
        starting = self._records(ReplicaState.STARTING)
        if not starting:
            return ""
        req = required_resources(self.config.ray_actor_options)
        if not nodes.fits_some_node(req):
            return (
                f"Deployment '{self.id.name}' in application '{self.id.app_name}' has {len(starting)} replicas "
                f"that cannot be scheduled: no node in the cluster has the resources one replica requires "
                f"({req}). Total cluster resources: {dict(nodes.total_resources)}."
            )
        slow = [r for r in starting if time.time() - r.start_time > SLOW_STARTUP_WARNING_S]
        if slow:
            return (
                f"Deployment '{self.id.name}' in application '{self.id.app_name}' has {len(slow)} replicas "
                f"that have taken more than {SLOW_STARTUP_WARNING_S:g}s to be scheduled or to start. "
                f"Resources required for each replica: {req}, total resources available: "
                f"{dict(nodes.available_resources)}. Last error: {self.last_error or 'none'}"
            )
        return ""

    # ---- outputs ---------------------------------------------------------------------
    def routable(self) -> List[ReplicaInfo]:
        return [
            ReplicaInfo(r.replica_id, r.actor_name, r.actor, r.node_id, int(r.config.get("max_ongoing_requests", 5)),
                        r.node_ip, r.port, r.token, r.model_ids, r.availability_zone, r.routing_stats)
            for r in self.replicas.values()
            if r.state in (ReplicaState.RUNNING, ReplicaState.UPDATING) and r.actor is not None
        ]

    def target_info(self) -> DeploymentTargetInfo:
        router = self.config.request_router_config
        return DeploymentTargetInfo(
            replicas=self.routable(),
            max_ongoing_requests=self.config.max_ongoing_requests,
            max_queued_requests=self.config.max_queued_requests,
            exists=not self.is_gone(),
            message=self.message,
            backpressure_status_code=self.config.backpressure_config.status_code,
            backpressure_retry_after_s=self.config.backpressure_config.retry_after_s,
            request_router_config=None if router.is_default_request_router() else router,
        )

    def _broadcast_if_changed(self, force: bool = False) -> None:
        if self.recovering:
            if any(r.state == ReplicaState.RECOVERING for r in self.replicas.values()):
                return
            self.recovering, force = False, True
        info = self.target_info()
        signature = (
            tuple(sorted((r.replica_id, r.model_ids, r.routing_stats) for r in info.replicas)),
            info.max_ongoing_requests,
            info.max_queued_requests,
            info.exists,
            info.backpressure_status_code,
            info.backpressure_retry_after_s,
        )
        if force or signature != self._last_broadcast:
            self._last_broadcast = signature
            self._broadcast(self.id, info)

    def replica_state_counts(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for rec in self.replicas.values():
            counts[rec.state.value] = counts.get(rec.state.value, 0) + 1
        return counts

    def status_overview(self) -> DeploymentStatusOverview:
        """This deployment's status as `serve.status()` reports it."""
        return DeploymentStatusOverview(
            status=self.status,
            status_trigger=self.trigger,
            replica_states={ReplicaState(k): v for k, v in self.replica_state_counts().items()},
            message=self.message,
            target_num_replicas=self.target_num_replicas,
            last_error=self.last_error,
        )

    def replica_details(self) -> List[Dict[str, Any]]:
        return [
            {"replica_id": r.replica_id, "state": r.state.value, "pid": r.pid, "node_id": r.node_id,
             "actor_name": r.actor_name, "version": r.version_key, "rank": self.rank_payload(r.replica_id)}
            for r in self.replicas.values()
        ]


class DeploymentStateManager:
    """All deployments of all applications."""

    def __init__(self, broadcast: Callable[[DeploymentID, Any], None],
                 record_factory: RecordFactory = ReplicaRecord) -> None:
        self._broadcast = broadcast
        self._record_factory = record_factory
        self.states: Dict[DeploymentID, DeploymentState] = {}
        self.recovering = False  # new states start quiet (see DeploymentState.recovering)
        self.target_capacity: Optional[float] = None

    def deploy(self, deployment_id: DeploymentID, spec: DeploymentSpec) -> None:
        state = self.states.get(deployment_id)
        if state is None:
            state = DeploymentState(deployment_id, self._broadcast, self._record_factory)
            state.recovering = self.recovering
            self.states[deployment_id] = state
        state.capacity = self.target_capacity
        state.deploy(spec)

    def set_target_capacity(self, target_capacity: Optional[float]) -> None:
        """Scale every deployment's replica count to target_capacity percent (None: 100)."""
        self.target_capacity = target_capacity
        for state in self.states.values():
            state.set_capacity(target_capacity)

    def delete(self, deployment_id: DeploymentID) -> None:
        if deployment_id in self.states:
            self.states[deployment_id].delete()

    def get(self, deployment_id: DeploymentID) -> Optional[DeploymentState]:
        return self.states.get(deployment_id)

    def adopt_recovered(self, deployment_id: DeploymentID, replica_id: str, actor: Any) -> bool:
        """Track a live replica found after a controller restart; False if its
        deployment is unknown (the caller then owns the orphan actor)."""
        state = self.states.get(deployment_id)
        if state is None:
            return False
        state.adopt_recovered(replica_id, actor)
        return True

    def update(self, nodes: NodeSnapshot) -> None:
        """One reconcile step of every deployment, all against the same node snapshot."""
        for deployment_id, state in list(self.states.items()):
            state.update(nodes)
            if state.is_gone():
                del self.states[deployment_id]
                state._broadcast_if_changed(force=True)  # tell routers it no longer exists

    def kill_all_replicas(self) -> None:
        """Kill every replica of every deployment now (the end of a shutdown)."""
        for state in self.states.values():
            state.kill_all_replicas()

    def num_replicas(self) -> int:
        return sum(len(s.replicas) for s in self.states.values())


def scheduling_version_suffix(spec: DeploymentSpec) -> str:
    """The part of a version key for the scheduling options that need new replicas
    (bundle label selectors, gang scheduling, deployment actors); '' when none is set,
    so the keys of deployments without them stay as they were."""
    cfg = spec.config
    extra = {k: cfg.get(k) for k in ("placement_group_bundle_label_selector", "gang_scheduling_config") if cfg.get(k)}
    if cfg.get("deployment_actors"):
        extra["deployment_actors"] = {name: version for name, (version, _) in spec.deployment_actors.items()}
    return "" if not extra else json.dumps(extra, sort_keys=True, default=str)


def _first_bundle_problem(config: DeploymentConfig) -> str:
    """Why a replica cannot run in its placement group's first bundle ('' when it can)."""
    bundles = config.placement_group_bundles
    if not bundles:
        return ""
    req = required_resources(config.ray_actor_options)
    first = bundles[0]
    missing = {k: v for k, v in req.items() if first.get(k, 0) < v}
    if not missing:
        return ""
    return (
        f"The replica's resources {req} must fit in the first placement group bundle {first}; "
        f"short of {missing}. Set ray_actor_options to fit (e.g. num_cpus=0) or enlarge bundle 0."
    )
