"""Status types returned by `serve.status()`, in Ray Serve's shape, and (as in
`ray.serve.schema`) the config-file schemas and the option models they use.

Statuses are `str` enums, so `status.applications["app"].status == "RUNNING"` holds
as it does with Ray Serve.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Dict, Optional

from pydantic import BaseModel, Field

# Ray Serve's `schema` module also offers the config-file schemas and the option
# models they are built from; they are declared once, in config.py and config_file.py.
from ray_serving_ext.config import (
    AutoscalingConfig, AutoscalingPolicy, BackpressureConfig, ControllerOptions, LoggingConfig, ProxyLocation,
    RayActorOptionsSchema,
)
from ray_serving_ext.config_file import (
    DeploymentSchema, HTTPOptionsSchema, ServeApplicationSchema, ServeDeploySchema,
)

__all__ = [
    "ApplicationStatus", "ApplicationStatusOverview", "AutoscalingConfig", "AutoscalingPolicy", "BackpressureConfig",
    "ControllerOptions", "DeploymentSchema",
    "DeploymentStatus", "DeploymentStatusOverview", "DeploymentStatusTrigger", "HTTPOptionsSchema",
    "LoggingConfig", "ProxyLocation", "ProxyStatus", "RayActorOptionsSchema", "ReplicaState",
    "ServeApplicationSchema", "ServeDeploySchema", "ServeStatus",
]
__all__.append("ReplicaRank")


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

    def status_view(self) -> Dict[str, Any]:
        """Ray Serve's `serve status` fields of a deployment, as plain data."""
        return {
            "status": self.status.value,
            "status_trigger": self.status_trigger.value,
            "replica_states": {_plain(k): v for k, v in self.replica_states.items()},
            "message": self.message,
        }


@dataclass
class ApplicationStatusOverview:
    """One application's status and its deployments'."""

    status: ApplicationStatus
    message: str
    last_deployed_time_s: float
    deployments: Dict[str, DeploymentStatusOverview] = field(default_factory=dict)
    route_prefix: Optional[str] = None

    def status_view(self) -> Dict[str, Any]:
        """Ray Serve's `serve status` fields of an application, as plain data."""
        return {
            "status": self.status.value,
            "message": self.message,
            "last_deployed_time_s": self.last_deployed_time_s,
            "deployments": {name: dep.status_view() for name, dep in self.deployments.items()},
        }


@dataclass
class ServeStatus:
    """What `serve.status()` returns."""

    proxies: Dict[str, ProxyStatus] = field(default_factory=dict)
    applications: Dict[str, ApplicationStatusOverview] = field(default_factory=dict)
    target_capacity: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        """A plain-data copy of every field (enums as strings)."""
        return _plain(asdict(self))

    def status_view(self) -> Dict[str, Any]:
        """Exactly what Ray Serve's `serve status` prints: proxies, applications
        (status, message, last_deployed_time_s, deployments: status,
        status_trigger, replica_states, message) and target_capacity, as plain data."""
        return {
            "proxies": {node: _plain(s) for node, s in self.proxies.items()},
            "applications": {name: app.status_view() for name, app in self.applications.items()},
            "target_capacity": self.target_capacity,
        }


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class ReplicaRank(BaseModel):
    """Where one replica stands among its deployment's replicas (Ray Serve 2.60's model).

    The controller keeps each number dense: ``rank`` is 0..N-1 over the
    deployment's N replicas, ``node_rank`` 0..M-1 over the M nodes hosting them,
    ``local_rank`` 0..K-1 over the K replicas on the replica's node. A stopped
    replica's numbers go to the next one started; once the deployment is
    healthy again, survivors are renumbered (as few as possible) to close gaps.
    """

    rank: int = Field(description="Global rank of the replica across all nodes scoped to the deployment.")
    node_rank: int = Field(description="Rank of the node in the deployment.")
    local_rank: int = Field(description="Rank of the replica on the node scoped to the deployment.")
