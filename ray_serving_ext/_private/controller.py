"""The controller actor: owns the goal state and reconciles the cluster toward it.

It is detached, named SERVE_CONTROLLER_ACTOR in namespace "serve", and
restartable. On (re)start it loads the goal state from its checkpoint and
adopts live replicas by name instead of restarting them; proxies and routers
keep routing with what they know meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Dict, List, Optional


from ray_serving_ext._private import admin_server, details
from ray_serving_ext._private.admin_server import AdminServer
from ray_serving_ext._private.proxy_auth import ApiKeys
from ray_serving_ext._private.config_apply import ConfigApplier
from ray_serving_ext._private.application_state import ApplicationStateManager
from ray_serving_ext._private.build import BuiltApplication
from ray_serving_ext._private.checkpoint import CheckpointManager, RayInternalKVStore
from ray_serving_ext._private.cluster import (
    NodeSnapshotSource, actor_id_of, current_actor_id, current_node_id, exit_current_actor, job_is_dead, kill_actor,
    local_node_ip, named_serve_actors,
)
from ray_serving_ext._private.common import DeploymentID, parse_replica_actor_name
from ray_serving_ext._private.constants import (
    ADMIN_API_KEYS_ENV, ADMIN_API_KEYS_FILE, ADMIN_HOST, ADMIN_PORT, CONTROL_LOOP_INTERVAL_S, CONTROLLER_NAME,
)
from ray_serving_ext._private.deployment_state import DeploymentStateManager
from ray_serving_ext._private.logging_utils import configure_component_logger
from ray_serving_ext._private.long_poll import LongPollHost
from ray_serving_ext._private.metrics import MetricsStore
from ray_serving_ext._private.proxy_state import ProxyStateManager
from ray_serving_ext._private.router import replicas_key
from ray_serving_ext.config import HTTPOptions, TracingConfig
from ray_serving_ext.schema import ServeStatus

logger = logging.getLogger("ray_serving_ext.controller")


class ServeController:
    """Goal state, reconcile loop, and the API the client and long-poll clients call."""

    def __init__(
        self,
        http_options: HTTPOptions,
        proxy_location: str = "EveryNode",
        detached: bool = True,
        owner_job_id: Optional[str] = None,
        checkpoint: Optional[CheckpointManager] = None,
        logging_config: Optional[Dict[str, Any]] = None,
        tracing_config: Optional[TracingConfig] = None,
    ) -> None:
        configure_component_logger("controller", "")
        self._http_options = http_options
        self._tracing_config = tracing_config
        self._proxy_location = proxy_location
        self._detached = detached
        self._owner_job_id = owner_job_id
        self._checkpoint = checkpoint or CheckpointManager(RayInternalKVStore())
        self._long_poll = LongPollHost()
        self._metrics = MetricsStore()
        self._nodes = NodeSnapshotSource(min_interval_s=1.0)
        self._deployments = DeploymentStateManager(self._broadcast_deployment)
        self._apps = ApplicationStateManager(self._deployments, self._broadcast_routes)
        self._logging_config = logging_config or {}
        self._proxies = ProxyStateManager(http_options, proxy_location, self._logging_config, tracing_config)
        self._shutting_down = False
        self._dirty = False
        self._save_task: Optional[asyncio.Task] = None
        self._save_lock = asyncio.Lock()
        self._started_at = time.time()
        self._loop_error = ""
        self._target_capacity: Optional[float] = None
        self._recovered = self._recover()
        self._loop_task = asyncio.get_event_loop().create_task(self._run_control_loop())
        self._config_applier = ConfigApplier(self, asyncio.get_event_loop())
        self._admin = AdminServer(admin_server.build_app(self.get_serve_instance_details, self._scale_externally,
                                                         self._config_applier.submit, self._shutdown_from_api),
                                  ADMIN_HOST, ADMIN_PORT,
                                  ApiKeys(ADMIN_API_KEYS_FILE or None, ADMIN_API_KEYS_ENV or None))
        self._admin.start()

    # ---- recovery ----------------------------------------------------------------------
    def _recover(self) -> bool:
        state = self._checkpoint.load()
        if not state:
            return False
        if not self._detached and state.get("owner_job_id") is not None:
            self._owner_job_id = state["owner_job_id"]
        self._deployments.recovering = True
        for app in state.get("applications", []):
            try:
                self._apps.deploy(app["built"], app.get("config"))
                self._apps.apps[app["built"].name].deployed_at = app.get("deployed_at", time.time())
                for name, count in (app.get("external_targets") or {}).items():  # an external scaler's counts
                    self._apps.set_replicas_externally(DeploymentID(name, app["built"].name), count)
            except Exception:  # one bad app must not keep the others from coming back
                logger.exception("Could not restore application %s.", getattr(app.get("built"), "name", "?"))
        self._set_target_capacity(state.get("target_capacity"))
        self._adopt_live_replicas()
        self._deployments.recovering = False
        logger.info("Recovered %d applications from the checkpoint.", len(self._apps.apps))
        return True

    def _adopt_live_replicas(self) -> None:
        for name, actor in named_serve_actors():
            parsed = parse_replica_actor_name(name)
            if parsed is None:
                continue
            dep_id = DeploymentID(parsed["deployment"], parsed["app_name"])
            if not self._deployments.adopt_recovered(dep_id, parsed["suffix"], actor):
                kill_actor(actor)  # belongs to nothing we know: an orphan

    async def _persist(self) -> None:
        """Save the goal state now (off the event loop), so a change is durable when its call returns.

        A failed save is logged and retried by the control loop; the change itself stands.
        """
        self._dirty = True
        await self._save_in_background()

    def _checkpoint_state(self) -> Dict[str, Any]:
        return {
            "owner_job_id": self._owner_job_id,
            "target_capacity": self._target_capacity,
            "applications": [
                {"built": app.built, "config": app.config, "deployed_at": app.deployed_at,
                 "external_targets": self._apps.external_targets(app.name)}
                for app in self._apps.apps.values()
                if not app.deleting
            ],
        }

    # ---- loop --------------------------------------------------------------------------
    async def _run_control_loop(self) -> None:
        while True:
            try:
                self._step()
                self._loop_error = ""
            except Exception as exc:  # never let one bad step kill the loop
                self._loop_error = repr(exc)
                logger.exception("Control loop step failed.")
            await asyncio.sleep(CONTROL_LOOP_INTERVAL_S)

    def _step(self) -> None:
        # One look at the cluster per tick (re-read at most once a second), shared by
        # every manager, so none of them asks Ray itself.
        nodes = self._nodes.refresh(time.monotonic())
        self._apps.autoscale()  # application-level policies decide before the deployments reconcile
        self._deployments.update(nodes)
        self._apps.update()
        if not self._shutting_down:
            self._proxies.update(nodes)
        if self._dirty and not self._shutting_down and (self._save_task is None or self._save_task.done()):
            self._save_task = asyncio.get_event_loop().create_task(self._save_in_background())
        self._check_owner()

    async def _save_in_background(self) -> None:
        """Save the goal state off the event loop; a failed save is retried next step."""
        self._dirty = False
        state = self._checkpoint_state()
        async with self._save_lock:
            if self._shutting_down:
                return
            try:
                await asyncio.get_running_loop().run_in_executor(None, self._checkpoint.save, state)
            except Exception:
                self._dirty = True
                logger.exception("Saving the checkpoint failed; will retry.")
                await asyncio.sleep(1.0)

    def _check_owner(self) -> None:
        """A non-detached instance goes away when the driver that started it has exited."""
        if self._detached or self._owner_job_id is None or self._shutting_down:
            return
        now = time.time()
        if now - getattr(self, "_last_owner_check", 0.0) < 2.0:
            return
        self._last_owner_check = now
        try:
            if job_is_dead(self._owner_job_id):
                logger.info("Owner job %s exited; shutting down.", self._owner_job_id)
                self._begin_shutdown()
                asyncio.get_event_loop().create_task(self._exit_after_shutdown())
        except Exception:
            logger.debug("owner job check failed", exc_info=True)

    # ---- long poll ---------------------------------------------------------------------
    def _broadcast_deployment(self, deployment_id: DeploymentID, info: Any) -> None:
        self._long_poll.notify_changed(replicas_key(deployment_id), info)

    def _broadcast_routes(self, routes: Dict[str, Any]) -> None:
        self._long_poll.notify_changed("routes", routes)

    async def listen_for_change(self, versions: Dict[str, int]) -> Dict[str, Any]:
        return await self._long_poll.listen_for_change(versions)

    # ---- API ---------------------------------------------------------------------------
    async def ready(self) -> Dict[str, Any]:
        # A controller restarted by Ray gets its constructor arguments again, so the
        # HTTP options survive a restart without being in the checkpoint.
        return {"recovered": self._recovered, "detached": self._detached, "http_options": self._http_options}

    async def deploy_application(self, built: BuiltApplication, config: Optional[Dict[str, Any]] = None) -> None:
        """Make `built` the goal of its application (raises on a route-prefix clash)."""
        if self._shutting_down:
            raise RuntimeError("Serve is shutting down.")
        self._apps.deploy(built, config)
        await self._persist()

    async def deploy_applications(
        self, builts: List[BuiltApplication], configs: List[Optional[Dict[str, Any]]], delete_missing: bool,
        target_capacity: Optional[float] = None,
    ) -> None:
        """Apply a whole config at once: all apps change, or (on a route clash) none does."""
        if self._shutting_down:
            raise RuntimeError("Serve is shutting down.")
        self._apps.deploy_all(builts, configs, delete_missing)
        self._set_target_capacity(target_capacity)
        await self._persist()

    def _set_target_capacity(self, target_capacity: Optional[float]) -> None:
        self._target_capacity = target_capacity
        self._deployments.set_target_capacity(target_capacity)

    async def record_build_failures(self, failures: Dict[str, str]) -> None:
        for name, message in failures.items():
            app = self._apps.apps.get(name)
            if app is not None and not app.deleting:
                app.build_error = message
        self._apps.update()  # so status() shows it as soon as this call returns

    async def delete_apps(self, names: List[str]) -> None:
        for name in names:
            self._apps.delete(name)
        await self._persist()

    async def list_app_names(self) -> List[str]:
        return [name for name, app in self._apps.apps.items() if not app.deleting]

    async def get_app_ingress(self, name: str) -> Optional[str]:
        app = self._apps.apps.get(name)
        return None if app is None or app.deleting else app.ingress

    async def get_serve_status(self) -> ServeStatus:
        return ServeStatus(
            proxies=self._proxies.statuses(),
            proxy_messages=self._proxies.messages(),
            applications=self._apps.status_overviews(),
            target_capacity=self._target_capacity,
        )

    async def get_app_configs(self) -> Dict[str, Any]:
        return {name: app.config for name, app in self._apps.apps.items() if not app.deleting}

    async def get_replica_details(self, app_name: str) -> Dict[str, List[Dict[str, Any]]]:
        return {
            dep_id.name: state.replica_details()
            for dep_id, state in self._deployments.states.items()
            if dep_id.app_name == app_name
        }

    async def _scale_externally(self, deployment_id: DeploymentID, target_num_replicas: int) -> None:
        self._apps.set_replicas_externally(deployment_id, target_num_replicas)
        logger.info("External scaler set %s to %d replicas.", deployment_id, target_num_replicas)
        await self._persist()

    async def update_deployment_replicas(self, deployment_id: Any, target_num_replicas: int) -> None:
        """An external scaler sets a deployment's replica count (Ray Serve's controller method).

        `deployment_id` is a DeploymentID or a `(name, app_name)` pair. Raises
        ValueError for an unknown app or deployment, ExternalScalerDisabledError
        when the app does not enable external scaling.
        """
        if not isinstance(deployment_id, DeploymentID):
            name = getattr(deployment_id, "name", None)
            app_name = getattr(deployment_id, "app_name", None)
            if name is None:
                name, app_name = deployment_id
            deployment_id = DeploymentID(name, app_name)
        await self._scale_externally(deployment_id, target_num_replicas)

    async def get_serve_instance_details(self, source: Optional[str] = None) -> Dict[str, Any]:
        """The whole instance as Ray Serve's `ServeInstanceDetails` (JSON-ready dict);
        only the applications of API type `source` ("imperative"/"declarative") if given."""
        return details.instance_details(
            apps=self._apps, deployments=self._deployments, proxies=self._proxies,
            http_options=self._http_options, proxy_location=self._proxy_location,
            target_capacity=self._target_capacity, started_at=self._started_at, actor_id_of=actor_id_of,
            controller_info={"node_id": current_node_id(), "node_ip": local_node_ip(),
                             "actor_id": current_actor_id(), "actor_name": CONTROLLER_NAME},
            source=source,
        )

    async def get_http_options(self) -> HTTPOptions:
        return self._http_options

    async def get_admin_address(self) -> Optional[str]:
        """Where the admin (REST) API listens, `http://host:port`; None when it is off or not bound."""
        return self._admin.address

    async def get_tracing_config(self) -> Optional[TracingConfig]:
        """The instance's tracing config (None: each process follows its RAY_SERVE_TRACING_* variables).

        Replicas ask for it as they start; proxies get it when created.
        """
        return self._tracing_config

    async def set_tracing_config(self, tracing_config: TracingConfig) -> None:
        """A config file's tracing_config: replicas started from now on use it, and so
        do proxies created from now on (running ones keep theirs, as in Ray Serve)."""
        self._tracing_config = tracing_config
        self._proxies.tracing_config = tracing_config

    async def record_metrics(self, report: Dict[str, Any]) -> None:
        """A process's metrics text and its callers' load per deployment (for autoscaling)."""
        source = report.get("source", "")
        if report.get("metrics"):
            self._metrics.record(source, report["metrics"])
        for key, value in report.get("load", {}).items():
            app_name, _, name = key.partition("#")
            state = self._deployments.get(DeploymentID(name, app_name))
            if state is not None:
                state.record_load(source, value)

    async def record_autoscaling_stats(self, app_name: str, deployment: str, replica_id: str,
                                       stats: Dict[str, float], timestamp: float) -> None:
        """A replica's custom autoscaling metrics (its `record_autoscaling_stats()` result)."""
        state = self._deployments.get(DeploymentID(deployment, app_name))
        if state is not None:
            state.record_custom_metrics(replica_id, stats, timestamp)

    async def record_multiplexed_models(self, app_name: str, deployment: str, replica_id: str,
                                        model_ids: List[str]) -> None:
        state = self._deployments.get(DeploymentID(deployment, app_name))
        if state is not None:
            state.set_model_ids(replica_id, model_ids)

    async def record_routing_stats(self, app_name: str, deployment: str, replica_id: str,
                                   stats: Dict[str, Any]) -> None:
        """A replica's `record_routing_stats()` result (callers' routers see it as routing_stats)."""
        state = self._deployments.get(DeploymentID(deployment, app_name))
        if state is not None:
            state.set_routing_stats(replica_id, stats)
    async def assign_replica_rank(self, app_name: str, deployment: str, replica_id: str,
                                  node_id: str) -> Optional[Dict[str, Any]]:
        """A starting replica's rank on `node_id` (ReplicaRank fields plus world_size),
        asked before its constructor runs; None if the replica is no longer wanted."""
        state = self._deployments.get(DeploymentID(deployment, app_name))
        return state.assign_rank(replica_id, node_id) if state is not None else None

    async def get_metrics_text(self) -> str:
        return self._metrics.render()

    async def report_dead_replica(self, app_name: str, deployment: str, replica_id: str, reason: str) -> None:
        state = self._deployments.get(DeploymentID(deployment, app_name))
        if state is not None:
            state.mark_replica_dead(replica_id, reason)

    async def _exit_after_shutdown(self) -> None:
        """For an instance whose owner exited: drain, stop the proxies, then end this actor."""
        await self.graceful_shutdown()
        try:
            exit_current_actor()
        except Exception:
            logger.exception("Could not end the controller actor.")

    def _begin_shutdown(self) -> None:
        self._shutting_down = True
        self._dirty = False
        for name in list(self._apps.apps):
            self._apps.delete(name)
        self._checkpoint.clear()

    def _shutdown_from_api(self) -> None:
        """DELETE /api/serve/applications/: shut down in the background and end this actor
        for good, as `serve.shutdown()` does from a driver."""
        self._config_applier.stop()
        self._api_shutdown = asyncio.get_event_loop().create_task(self._exit_after_shutdown())

    async def graceful_shutdown(self, timeout_s: float = 60.0) -> bool:
        """Delete every application, stop proxies; True when all replicas are gone in time."""
        self._begin_shutdown()
        await self._admin.stop()
        refs = self._proxies.shutdown()
        deadline = time.monotonic() + timeout_s
        while self._deployments.num_replicas() > 0 and time.monotonic() < deadline:
            await asyncio.sleep(CONTROL_LOOP_INTERVAL_S)
        if refs:
            try:
                await asyncio.wait_for(asyncio.gather(*refs, return_exceptions=True), 10)
            except Exception:
                pass
        self._proxies.kill_all()
        self._deployments.kill_all_replicas()
        self._checkpoint.clear()
        return self._deployments.num_replicas() == 0
