"""Status types returned by `serve.status()`, in Ray Serve's shape.

Statuses are `str` enums, so `status.applications["app"].status == "RUNNING"` holds
as it does with Ray Serve.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Dict, Optional


class ApplicationStatus(str, Enum):
    NOT_STARTED = "NOT_STARTED"
    DEPLOYING = "DEPLOYING"
    DEPLOY_FAILED = "DEPLOY_FAILED"
    RUNNING = "RUNNING"
    UNHEALTHY = "UNHEALTHY"
    DELETING = "DELETING"

    def __str__(self) -> str:
        return self.value


class DeploymentStatus(str, Enum):
    UPDATING = "UPDATING"
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    DEPLOY_FAILED = "DEPLOY_FAILED"
    UPSCALING = "UPSCALING"
    DOWNSCALING = "DOWNSCALING"

    def __str__(self) -> str:
        return self.value


class DeploymentStatusTrigger(str, Enum):
    UNSPECIFIED = "UNSPECIFIED"
    CONFIG_UPDATE_STARTED = "CONFIG_UPDATE_STARTED"
    CONFIG_UPDATE_COMPLETED = "CONFIG_UPDATE_COMPLETED"
    UPSCALE_COMPLETED = "UPSCALE_COMPLETED"
    DOWNSCALE_COMPLETED = "DOWNSCALE_COMPLETED"
    AUTOSCALING = "AUTOSCALING"
    REPLICA_STARTUP_FAILED = "REPLICA_STARTUP_FAILED"
    HEALTH_CHECK_FAILED = "HEALTH_CHECK_FAILED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    DELETING = "DELETING"

    def __str__(self) -> str:
        return self.value


class ReplicaState(str, Enum):
    STARTING = "STARTING"
    UPDATING = "UPDATING"
    RECOVERING = "RECOVERING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    PENDING_MIGRATION = "PENDING_MIGRATION"

    def __str__(self) -> str:
        return self.value


class ProxyStatus(str, Enum):
    STARTING = "STARTING"
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    DRAINING = "DRAINING"
    DRAINED = "DRAINED"

    def __str__(self) -> str:
        return self.value


@dataclass
class DeploymentStatusOverview:
    """One deployment's status: replica counts by state and why it is not HEALTHY."""

    status: DeploymentStatus
    status_trigger: DeploymentStatusTrigger
    replica_states: Dict[ReplicaState, int]
    message: str = ""
    target_num_replicas: Optional[int] = None
    last_error: str = ""


@dataclass
class ApplicationStatusOverview:
    """One application's status and its deployments'."""

    status: ApplicationStatus
    message: str
    last_deployed_time_s: float
    deployments: Dict[str, DeploymentStatusOverview] = field(default_factory=dict)
    route_prefix: Optional[str] = None


@dataclass
class ServeStatus:
    """What `serve.status()` returns."""

    proxies: Dict[str, ProxyStatus] = field(default_factory=dict)
    applications: Dict[str, ApplicationStatusOverview] = field(default_factory=dict)
    target_capacity: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        """A plain-data copy (enums as strings), e.g. for YAML output."""
        return _plain(asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def status_from_dict(data: Dict[str, Any]) -> ServeStatus:
    """Rebuild a `ServeStatus` from the plain dict the controller sends."""
    apps = {}
    for name, app in data.get("applications", {}).items():
        deps = {
            dname: DeploymentStatusOverview(
                status=DeploymentStatus(d["status"]),
                status_trigger=DeploymentStatusTrigger(d["status_trigger"]),
                replica_states={ReplicaState(k): v for k, v in d["replica_states"].items()},
                message=d.get("message", ""),
                target_num_replicas=d.get("target_num_replicas"),
                last_error=d.get("last_error", ""),
            )
            for dname, d in app.get("deployments", {}).items()
        }
        apps[name] = ApplicationStatusOverview(
            status=ApplicationStatus(app["status"]),
            message=app.get("message", ""),
            last_deployed_time_s=app.get("last_deployed_time_s", 0.0),
            deployments=deps,
            route_prefix=app.get("route_prefix"),
        )
    proxies = {k: ProxyStatus(v) for k, v in data.get("proxies", {}).items()}
    return ServeStatus(proxies=proxies, applications=apps, target_capacity=data.get("target_capacity"))
