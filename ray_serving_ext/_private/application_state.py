"""Applications: named groups of deployments with a route prefix and an ingress.

An application's status is derived from its deployments': DEPLOYING while any
is updating, RUNNING when all are healthy, DEPLOY_FAILED or UNHEALTHY with the
failing deployment's message, DELETING until every replica is gone.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ray_serving_ext._private.autoscaling import AppAutoscaler
from ray_serving_ext._private.build import BuiltApplication
from ray_serving_ext._private.common import DeploymentID
from ray_serving_ext._private.config_types import route_prefix_clashes
from ray_serving_ext._private.deployment_state import DeploymentState, DeploymentStateManager
from ray_serving_ext.config import AutoscalingPolicy
from ray_serving_ext.exceptions import DeploymentIsBeingDeletedError, ExternalScalerDisabledError, RayServeException
from ray_serving_ext.schema import ApplicationStatus, ApplicationStatusOverview, DeploymentStatus


class ApplicationState:
    def __init__(self, built: BuiltApplication, config: Optional[Dict[str, Any]]) -> None:
        self.name = built.name
        self.built = built
        self.config = config
        self.deployed_at = time.time()
        self.deleting = False
        self.status = ApplicationStatus.DEPLOYING
        self.message = ""
        self.build_error = ""  # the last deploy's code failed to import; this version still serves
        self.autoscaler: Optional[AppAutoscaler] = None  # the config's application-level autoscaling_policy
        policy = (config or {}).get("autoscaling_policy")
        if policy is not None:
            self.autoscaler = AppAutoscaler(AutoscalingPolicy.model_validate(policy), self.name)

    @property
    def route_prefix(self) -> Optional[str]:
        return self.built.route_prefix

    @property
    def ingress(self) -> str:
        return self.built.ingress

    @property
    def external_scaler_enabled(self) -> bool:
        return bool(self.built.external_scaler_enabled)

    def deployment_ids(self) -> List[DeploymentID]:
        return [DeploymentID(spec.name, self.name) for spec in self.built.deployments]


class ApplicationStateManager:
    """Deploys, deletes and reports applications; keeps the route table."""

    def __init__(self, deployments: DeploymentStateManager, on_routes_changed: Callable[[Dict[str, Any]], None]) -> None:
        self._deployments = deployments
        self._on_routes_changed = on_routes_changed
        self.apps: Dict[str, ApplicationState] = {}
        self._last_routes: Optional[Dict[str, Any]] = None

    def check_routes(self, builts: Sequence[BuiltApplication], keep_others: bool = True) -> None:
        """Raise RayServeException if deploying `builts` (alongside the other live
        applications, with `keep_others`) would give one route prefix to two
        applications. Changes nothing: callers check before they change anything."""
        wanted = {b.name for b in builts}
        others = [
            (name, app.route_prefix) for name, app in self.apps.items()
            if keep_others and name not in wanted and not app.deleting
        ]
        clashes = route_prefix_clashes(others + [(b.name, b.route_prefix) for b in builts])
        if not clashes:
            return
        prefix, holder, newcomer = clashes[0]
        if holder in wanted:  # two of the applications being deployed
            raise RayServeException(f"Prefix {prefix} is used by both application \"{holder}\" and \"{newcomer}\".")
        raise RayServeException(
            f"Prefix {prefix} is being used by application \"{holder}\". "
            f"Failed to deploy application \"{newcomer}\"."
        )

    def deploy(self, built: BuiltApplication, config: Optional[Dict[str, Any]] = None) -> None:
        """Make `built` the goal of application `built.name` (raises on a route clash, changing nothing)."""
        self.check_routes([built])
        self._apply(built, config)

    def deploy_all(self, builts: Sequence[BuiltApplication], configs: Sequence[Optional[Dict[str, Any]]],
                   delete_missing: bool) -> None:
        """Make all of `builts` the goal in one step (with `delete_missing`, only them):
        on a route clash nothing changes."""
        self.check_routes(builts, keep_others=not delete_missing)
        if delete_missing:
            wanted = {b.name for b in builts}
            for name in [n for n in self.apps if n not in wanted]:
                self.delete(name)
        for built, config in zip(builts, configs):
            self._apply(built, config)

    def _apply(self, built: BuiltApplication, config: Optional[Dict[str, Any]]) -> None:
        old = self.apps.get(built.name)
        new_state = ApplicationState(built, config)
        new_ids = set(new_state.deployment_ids())
        if old is not None:
            for dep_id in old.deployment_ids():
                if dep_id not in new_ids:
                    self._deployments.delete(dep_id)
        for spec in built.deployments:
            self._deployments.deploy(DeploymentID(spec.name, built.name), spec)
        self.apps[built.name] = new_state
        self._publish_routes()

    def delete(self, name: str) -> bool:
        app = self.apps.get(name)
        if app is None:
            return False
        app.deleting = True
        app.status = ApplicationStatus.DELETING
        for dep_id in app.deployment_ids():
            self._deployments.delete(dep_id)
        self._publish_routes()
        return True

    def set_replicas_externally(self, deployment_id: DeploymentID, num_replicas: int) -> None:
        """An external scaler's count for one deployment (Ray Serve's `update_deployment_replicas`).

        Raises ValueError ("... not found") for an unknown application or
        deployment, ExternalScalerDisabledError if the application does not
        enable external scaling, DeploymentIsBeingDeletedError while it is deleted.
        """
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 0:
            raise ValueError(f"target_num_replicas must be a non-negative integer, got {num_replicas!r}.")
        app = self.apps.get(deployment_id.app_name)
        if app is None:
            raise ValueError(f"Application '{deployment_id.app_name}' not found")
        if not app.external_scaler_enabled:
            raise ExternalScalerDisabledError(
                f"Cannot update replicas for deployment '{deployment_id.name}' in application "
                f"'{deployment_id.app_name}'. The external scaling API can only be used when "
                "'external_scaler_enabled' is set to true in the application configuration. Current value: "
                "external_scaler_enabled=false. To use this API, redeploy your application with "
                "'external_scaler_enabled: true' in the config."
            )
        state = self._deployments.get(deployment_id)
        if state is None or deployment_id not in app.deployment_ids():
            raise ValueError(f"Deployment '{deployment_id.name}' in application '{deployment_id.app_name}' not found")
        if app.deleting or state.deleting:
            raise DeploymentIsBeingDeletedError(f"Deployment '{deployment_id.name}' is being deleted.")
        state.set_external_target(num_replicas)

    def external_targets(self, name: str) -> Dict[str, int]:
        """Deployment name -> the count an external scaler set, for the app's deployments that have one."""
        app = self.apps.get(name)
        if app is None:
            return {}
        out = {}
        for dep_id in app.deployment_ids():
            state = self._deployments.get(dep_id)
            if state is not None and state.external_target is not None:
                out[dep_id.name] = state.external_target
        return out

    def routes(self) -> Dict[str, Dict[str, str]]:
        return {
            app.route_prefix: {"app_name": app.name, "deployment": app.ingress}
            for app in self.apps.values()
            if app.route_prefix is not None and not app.deleting
        }

    def _publish_routes(self, force: bool = False) -> None:
        routes = self.routes()
        if force or routes != self._last_routes:
            self._last_routes = routes
            self._on_routes_changed(routes)

    def autoscale(self) -> None:
        """One decision of each application-level policy, for the app's autoscaling deployments;
        those deployments' own policies stand aside while it decides (call before their update)."""
        for app in self.apps.values():
            states = [(d, self._deployments.get(d)) for d in app.deployment_ids()]
            owned = app.autoscaler is not None and app.autoscaler.loaded and not app.deleting
            members = {}
            for dep_id, state in states:
                if state is None:
                    continue
                state.app_autoscaled = owned
                inputs = state.autoscaling_inputs() if owned else None
                if inputs is not None:
                    members[dep_id] = inputs
            if members:
                for dep_id, target in app.autoscaler.decide(members).items():
                    self._deployments.get(dep_id).target_num_replicas = target

    def update(self) -> None:
        for name, app in list(self.apps.items()):
            states = [self._deployments.get(d) for d in app.deployment_ids()]
            if app.deleting:
                if all(s is None for s in states):
                    del self.apps[name]
                continue
            app.status, app.message = _app_status([s for s in states if s is not None])
            if app.build_error:
                app.status = ApplicationStatus.DEPLOY_FAILED
                app.message = (
                    f"Deploying the new version failed, the previous version keeps serving: {app.build_error}"
                )
        self._publish_routes()

    def status_overviews(self) -> Dict[str, ApplicationStatusOverview]:
        """Every application's status (with its deployments') as `serve.status()` reports it."""
        out = {}
        for name, app in self.apps.items():
            deployments = {}
            for dep_id in app.deployment_ids():
                state = self._deployments.get(dep_id)
                if state is not None:
                    deployments[dep_id.name] = state.status_overview()
            out[name] = ApplicationStatusOverview(
                status=app.status,
                message=app.message,
                last_deployed_time_s=app.deployed_at,
                deployments=deployments,
                route_prefix=app.route_prefix,
            )
        return out


def _app_status(states: List[DeploymentState]) -> Tuple[ApplicationStatus, str]:
    failed = [s for s in states if s.status == DeploymentStatus.DEPLOY_FAILED]
    if failed:
        msgs = "; ".join(f"Deployment '{s.id.name}': {s.message}" for s in failed)
        return ApplicationStatus.DEPLOY_FAILED, f"Failed to deploy the application: {msgs}"
    unhealthy = [s for s in states if s.status == DeploymentStatus.UNHEALTHY]
    if unhealthy:
        msgs = "; ".join(f"Deployment '{s.id.name}': {s.message}" for s in unhealthy)
        return ApplicationStatus.UNHEALTHY, f"The application is unhealthy: {msgs}"
    updating = [s for s in states if s.status == DeploymentStatus.UPDATING]
    if updating:
        msgs = "; ".join(f"Deployment '{s.id.name}': {s.message}" for s in updating if s.message)
        return ApplicationStatus.DEPLOYING, msgs
    return ApplicationStatus.RUNNING, ""
