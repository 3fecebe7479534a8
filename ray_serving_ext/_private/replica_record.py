"""The controller's record of one replica actor, and the calls it makes on it.

This is the only place the controller talks to replica actors. Every call is
non-blocking: it stores an ObjectRef and later steps poll it.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, Optional

import ray

from ray_serving_ext._private.cluster import (
    PendingCall,
    create_placement_group,
    in_placement_group,
    kill_actor,
    remote_class,
    remove_placement_group,
)
from ray_serving_ext._private.common import DeploymentID, replica_actor_name
from ray_serving_ext._private.constants import DEFAULT_REPLICA_NUM_CPUS, SERVE_NAMESPACE
from ray_serving_ext._private.replica import ReplicaActor
from ray_serving_ext._private.scheduling_config import bundle_label_selectors
from ray_serving_ext.schema import ReplicaState

logger = logging.getLogger("ray_serving_ext.controller")


def actor_options(ray_actor_options: Dict[str, Any], max_ongoing_requests: int) -> Dict[str, Any]:
    """Ray actor options for a replica: the user's resources plus Serve's fixed ones."""
    opts: Dict[str, Any] = {}
    for key in ("num_cpus", "num_gpus", "memory", "object_store_memory", "resources", "accelerator_type", "runtime_env", "label_selector"):
        if ray_actor_options.get(key) not in (None, {}, ""):
            opts[key] = ray_actor_options[key]
    opts.setdefault("num_cpus", DEFAULT_REPLICA_NUM_CPUS)
    opts["max_concurrency"] = max(1000, 2 * max_ongoing_requests + 100)
    return opts


class ReplicaRecord:
    """A replica as the controller tracks it through STARTING → RUNNING → STOPPING."""

    def __init__(self, deployment_id: DeploymentID, replica_id: str, version_key: str, config: Dict[str, Any]) -> None:
        self.deployment_id = deployment_id
        self.replica_id = replica_id
        self.actor_name = replica_actor_name(deployment_id, replica_id)
        self.version_key = version_key
        self.config = config
        self.state = ReplicaState.STARTING
        self.actor: Any = None
        self.pending_ref: Any = None  # initialize / recover / reconfigure call in flight
        self.start_time = time.time()
        self.pid: Optional[int] = None
        self.node_id: str = ""
        self.node_ip: str = ""
        self.port: Optional[int] = None
        self.token: str = ""
        self.model_ids: tuple = ()
        self.availability_zone: Optional[str] = None
        self.routing_stats: Dict[str, Any] = {}  # its latest record_routing_stats() result
        self.health_ref: Any = None
        self.health_sent_at = 0.0
        self.last_health_check = time.time()
        self.health_failures = 0
        self.last_health_error = ""
        self.stop_ref: Any = None
        self.stop_deadline = 0.0
        self.liveness: Optional[PendingCall] = None
        self.placement_group: Any = None
        self.actor_id: str = ""
        self.log_path: str = ""

    # ---- starting ------------------------------------------------------------------
    def start(self, spec: Any, config: Dict[str, Any], ray_actor_options: Dict[str, Any],
              node_id: Optional[str] = None, scheduling_strategy: Any = None) -> None:
        """Create the actor (placed by Ray: by `scheduling_strategy` if given, e.g. into
        its gang's placement group, which the caller owns; else in a placement group of
        its own if the deployment asks for bundles; else on `node_id` if given) and
        begin running the user constructor."""
        opts = actor_options(ray_actor_options, config["max_ongoing_requests"])
        bundles = config.get("placement_group_bundles")
        if scheduling_strategy is not None:
            opts["scheduling_strategy"] = scheduling_strategy
        elif bundles:
            # The replica itself runs in the first bundle; tasks and actors it starts
            # land in the group's other bundles.
            self.placement_group = create_placement_group(
                bundles, config.get("placement_group_strategy") or "PACK",
                bundle_label_selector=bundle_label_selectors(config.get("placement_group_bundle_label_selector"),
                                                             len(bundles)),
            )
            opts["scheduling_strategy"] = in_placement_group(self.placement_group, 0)
        elif node_id:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
        self.actor = remote_class(ReplicaActor).options(
            name=self.actor_name,
            namespace=SERVE_NAMESPACE,
            lifetime="detached",
            max_restarts=0,
            **opts,
        ).remote(
            self.replica_id,
            self.deployment_id.app_name,
            self.deployment_id.name,
            spec.serialized_def,
            spec.serialized_init_args,
            config,
            self.version_key,
        )
        self.pending_ref = PendingCall(self.actor.initialize_and_get_metadata.remote())
        self.start_time = time.time()

    def recover(self, actor: Any) -> None:
        """Adopt a live replica found after a controller restart."""
        self.actor = actor
        self.state = ReplicaState.RECOVERING
        self.pending_ref = PendingCall(actor.get_metadata.remote())
        self.start_time = time.time()

    def poll_pending(self) -> Optional[Dict[str, Any]]:
        """None while the pending call runs; its result when done; raises what it raised."""
        if self.pending_ref is None or not self.pending_ref.done():
            return None
        ref, self.pending_ref = self.pending_ref, None
        meta = ref.result()
        self.pid = meta.get("pid")
        self.node_id = meta.get("node_id", "")
        self.node_ip = meta.get("node_ip", "")
        self.port = meta.get("port")
        self.token = meta.get("token", "")
        self.model_ids = tuple(meta.get("model_ids", ()))
        self.actor_id = meta.get("actor_id") or ""
        self.log_path = meta.get("log_path") or ""
        self.availability_zone = meta.get("availability_zone")
        return meta

    def mark_running(self) -> None:
        """STARTING/UPDATING/RECOVERING -> RUNNING, once its pending call succeeded;
        the health-check period counts from now."""
        self.state = ReplicaState.RUNNING
        self.last_health_check = time.time()

    def finish_recovery(self, meta: Dict[str, Any]) -> bool:
        """Take the version and config a recovered replica reports; RUNNING if its
        constructor had finished (True), else stopped at once (False)."""
        self.version_key = meta.get("version", "")
        self.config = meta.get("config", {})
        if meta.get("initialized"):
            self.mark_running()
            return True
        self.stop(graceful=False, timeout_s=0)
        return False

    def reconfigure(self, config: Dict[str, Any]) -> None:
        self.config = config
        self.state = ReplicaState.UPDATING
        self.pending_ref = PendingCall(self.actor.reconfigure.remote(config))

    def send_rank(self, rank: Optional[Dict[str, Any]]) -> None:
        """Tell the replica its new rank (fields of ReplicaRank plus world_size).

        Not awaited: the replica takes the rank into its context before running
        the user's `reconfigure(..., rank=...)`, and logs what that raises.
        """
        if self.actor is not None and rank is not None:
            self.actor.update_rank.remote(rank)

    # ---- health ----------------------------------------------------------------------
    def poll_liveness(self) -> Optional[str]:
        """A reason when the replica actor has died, else None (keeps a probe in flight)."""
        if self.liveness is None:
            self.liveness = PendingCall(self.actor.liveness_probe.remote())
            return None
        if not self.liveness.done():
            return None
        call, self.liveness = self.liveness, None
        try:
            call.result()
        except ray.exceptions.RayActorError as exc:
            return f"replica actor died: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
        except Exception:
            return None
        return None

    def poll_health(self, period_s: float, timeout_s: float) -> Optional[bool]:
        """Drive the periodic health check: True/False when one finished, None otherwise."""
        now = time.time()
        if self.health_ref is None:
            if now - self.last_health_check >= period_s:
                self.health_ref = PendingCall(self.actor.check_health.remote())
                self.health_sent_at = now
            return None
        if self.health_ref.done():
            ref, self.health_ref = self.health_ref, None
            self.last_health_check = now
            try:
                ref.result()
                self.health_failures = 0
                return True
            except ray.exceptions.RayActorError as exc:
                self.health_failures = 1 << 20  # dead: no point in retrying
                self.last_health_error = f"replica actor died: {exc}"
                return False
            except Exception as exc:
                self.health_failures += 1
                self.last_health_error = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
                return False
        if now - self.health_sent_at > timeout_s:
            self.health_ref = None
            self.last_health_check = now
            self.health_failures += 1
            self.last_health_error = f"health check timed out after {timeout_s}s"
            return False
        return None

    # ---- stopping --------------------------------------------------------------------
    def stop(self, graceful: bool, timeout_s: float) -> None:
        if self.state == ReplicaState.STOPPING:
            return
        if self.state in (ReplicaState.STARTING, ReplicaState.RECOVERING):
            graceful = False  # it has taken no request: nothing to drain
        self.state = ReplicaState.STOPPING
        self.pending_ref = None
        self.health_ref = None
        self.stop_deadline = time.time() + (timeout_s + 5.0 if graceful else 0.0)
        if graceful and self.actor is not None:
            try:
                self.stop_ref = PendingCall(self.actor.prepare_for_shutdown.remote())
            except Exception:
                self.stop_ref = None

    def poll_stopped(self) -> bool:
        """Kill the actor once it has drained (or the deadline passed); True when gone."""
        if self.stop_ref is not None and not self.stop_ref.done() and time.time() < self.stop_deadline:
            return False
        self.kill()
        return True

    def kill(self) -> None:
        if self.actor is not None:
            kill_actor(self.actor)
        if self.placement_group is not None:
            remove_placement_group(self.placement_group)
            self.placement_group = None


def short_error(exc: BaseException) -> str:
    """One line saying why a replica call failed: the user exception's type and
    message for an error raised in the replica, else the last line of the error."""
    text = str(exc).strip()
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        if cause is not None:
            return f"{type(cause).__name__}: {cause}"
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else repr(exc)
