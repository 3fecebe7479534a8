"""The client side of the controller: the one module that calls the controller actor.

`api.py` and the CLI go through a ServeControllerClient; it starts or finds the
controller, sends goal-state changes and waits for them to take effect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Dict, List, Optional

import ray

from ray_serving_ext._private.build import BuiltApplication
from ray_serving_ext._private.cluster import current_node_id, find_controller, kill_actor, remote_class, system_actor_options
from ray_serving_ext._private.constants import CONTROLLER_NAME
from ray_serving_ext.config import HTTPOptions, TracingConfig
from ray_serving_ext.exceptions import RayServeException
from ray_serving_ext.schema import ApplicationStatus, ServeStatus

logger = logging.getLogger("ray_serving_ext")


def create_controller(
    http_options: HTTPOptions,
    proxy_location: str,
    detached: bool,
    checkpoint: Any = None,
    logging_config: Optional[Dict[str, Any]] = None,
    runtime_env: Optional[Dict[str, Any]] = None,
    tracing_config: Optional[TracingConfig] = None,
) -> Any:
    """Start the controller actor (detached, restartable) and wait until it answers.

    `runtime_env` (from `ControllerOptions`, already validated) becomes the
    controller actor's runtime_env; `tracing_config` reaches every proxy and replica.
    """
    from ray_serving_ext._private.controller import ServeController

    owner_job_id = None if detached else ray.get_runtime_context().get_job_id()
    # On this (the driver's) node, softly: the controller may move if the node goes.
    options = system_actor_options(CONTROLLER_NAME, current_node_id(), soft=True)
    if runtime_env:
        options["runtime_env"] = runtime_env
    controller = remote_class(ServeController).options(**options).remote(
        http_options, proxy_location, detached, owner_job_id, checkpoint, logging_config, tracing_config)
    ray.get(controller.ready.remote(), timeout=120)
    return controller


class ServeControllerClient:
    """Calls on the controller, and the waiting that turns them into promises."""

    def __init__(self, controller: Any) -> None:
        self._controller = controller

    @property
    def controller(self) -> Any:
        return self._controller

    def _get(self, ref: Any, timeout: Optional[float] = 60.0) -> Any:
        return ray.get(ref, timeout=timeout)

    def deploy_application(self, built: BuiltApplication, config: Optional[Dict[str, Any]] = None) -> None:
        self._get(self._controller.deploy_application.remote(built, config))

    def deploy_applications(
        self, builts: List[BuiltApplication], configs: List[Optional[Dict[str, Any]]], delete_missing: bool,
        target_capacity: Optional[float] = None,
    ) -> None:
        """Make these applications the goal in one step (and, with delete_missing, only these).

        `target_capacity` (0-100, None for 100) scales every deployment's replica count.
        """
        self._get(self._controller.deploy_applications.remote(builts, configs, delete_missing, target_capacity))

    def record_build_failures(self, failures: Dict[str, str]) -> None:
        """Mark running apps whose new version failed to build as DEPLOY_FAILED (they keep serving)."""
        self._get(self._controller.record_build_failures.remote(failures))

    def wait_for_application_running(self, name: str, timeout_s: float = -1) -> None:
        """Return when `name` is RUNNING; raise RuntimeError with the reason on DEPLOY_FAILED."""
        start = time.monotonic()
        while timeout_s < 0 or time.monotonic() - start < timeout_s:
            status = self.get_serve_status().applications.get(name)
            if status is not None:
                if status.status == ApplicationStatus.RUNNING:
                    return
                if status.status == ApplicationStatus.DEPLOY_FAILED:
                    raise RuntimeError(f"Deploying application {name} failed: {status.message}")
            time.sleep(0.05)
        raise TimeoutError(f"Application {name} did not become RUNNING within {timeout_s}s.")

    def delete_apps(self, names: List[str], blocking: bool = True, timeout_s: float = 120.0) -> None:
        self._get(self._controller.delete_apps.remote(names))
        if not blocking:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            remaining = set(self.get_serve_status().applications) & set(names)
            if not remaining:
                return
            time.sleep(0.05)
        raise TimeoutError(f"Applications {names} were not deleted within {timeout_s}s.")

    def get_serve_status(self) -> ServeStatus:
        """The controller's `ServeStatus`, as it built it."""
        return self._get(self._controller.get_serve_status.remote())

    def get_serve_details(self, source: Optional[str] = None) -> Dict[str, Any]:
        """The instance as Ray Serve's `ServeInstanceDetails`, a JSON-ready dict."""
        return self._get(self._controller.get_serve_instance_details.remote(source))

    def get_app_ingress(self, name: str) -> Optional[str]:
        return self._get(self._controller.get_app_ingress.remote(name))

    def list_app_names(self) -> List[str]:
        return self._get(self._controller.list_app_names.remote())

    def get_app_configs(self) -> Dict[str, Any]:
        return self._get(self._controller.get_app_configs.remote())

    def get_replica_details(self, app_name: str) -> Dict[str, List[Dict[str, Any]]]:
        return self._get(self._controller.get_replica_details.remote(app_name))

    def get_http_options(self) -> HTTPOptions:
        """The HTTP options the running instance was started with."""
        return self._get(self._controller.get_http_options.remote())

    def get_admin_address(self) -> Optional[str]:
        """The admin (REST) API's `http://host:port`, or None when the instance serves none."""
        return self._get(self._controller.get_admin_address.remote())

    def set_tracing_config(self, tracing_config: TracingConfig) -> None:
        """Trace with `tracing_config` in replicas started from now on (proxies keep theirs)."""
        self._get(self._controller.set_tracing_config.remote(tracing_config))

    def get_http_config(self) -> Dict[str, Any]:
        """`get_http_options()` as plain data (location as its string value)."""
        return self.get_http_options().model_dump(mode="json", exclude={"middlewares"})

    def shutdown(self, timeout_s: float = 60.0) -> None:
        """Delete everything and kill the controller; returns when nothing is left."""
        try:
            self._get(self._controller.graceful_shutdown.remote(timeout_s), timeout=timeout_s + 30)
        except ray.exceptions.RayActorError:
            pass
        except ray.exceptions.GetTimeoutError:
            logger.warning("Serve did not shut down gracefully within %ss; killing it.", timeout_s)
        kill_actor(self._controller)
        _wait_until_gone(timeout_s=30)


    async def shutdown_async(self, timeout_s: float = 60.0) -> None:
        """`shutdown()` without blocking the caller's event loop: returns when nothing is left."""
        try:
            await asyncio.wait_for(self._controller.graceful_shutdown.remote(timeout_s), timeout=timeout_s + 30)
        except ray.exceptions.RayActorError:
            pass
        except asyncio.TimeoutError:
            logger.warning("Serve did not shut down gracefully within %ss; killing it.", timeout_s)
        kill_actor(self._controller)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if find_controller() is None:
                return
            await asyncio.sleep(0.05)
        raise RayServeException("The Serve controller did not exit.")


def _wait_until_gone(timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if find_controller() is None:
            return
        time.sleep(0.05)
    raise RayServeException("The Serve controller did not exit.")
