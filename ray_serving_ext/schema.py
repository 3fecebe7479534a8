"""Status types returned by `serve.status()`, in Ray Serve's shape, and (as in
`ray.serve.schema`) the config-file schemas and the option models they use.

Statuses are `str` enums, so `status.applications["app"].status == "RUNNING"` holds
as it does with Ray Serve.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt


# Ray Serve's `schema` module also offers the config-file schemas and the option
# models they are built from; they are declared once, in config.py and config_file.py.
from ray_serving_ext.config import (
    AutoscalingConfig, AutoscalingPolicy, BackpressureConfig, ControllerOptions, DeploymentActorConfig,
    GangSchedulingConfig, LoggingConfig, ProxyLocation, RayActorOptionsSchema, RequestRouterConfig,
    TracingConfig,
)
from ray_serving_ext.config_file import (
    DeploymentSchema, HTTPOptionsSchema, ServeApplicationSchema, ServeDeploySchema, gRPCOptionsSchema,
)

__all__ = [
    "ApplicationStatus", "ApplicationStatusOverview", "AutoscalingConfig", "AutoscalingPolicy", "BackpressureConfig",
    "ControllerOptions", "DeploymentActorConfig", "DeploymentSchema", "GangSchedulingConfig",
    "DeploymentStatus", "DeploymentStatusOverview", "DeploymentStatusTrigger", "HTTPOptionsSchema",
    "LoggingConfig", "ProxyLocation", "ProxyStatus", "RayActorOptionsSchema", "ReplicaState", "RequestRouterConfig",
    "ServeApplicationSchema", "ServeDeploySchema", "ServeStatus", "TracingConfig", "gRPCOptionsSchema", "EncodingType",
    "ServeActorDetails", "ReplicaDetails", "AutoscalingMetricsHealth", "AutoscalingStatus", "ScalingDecision",
    "DeploymentAutoscalingDetail", "DeploymentDetails", "APIType", "DeploymentNode", "DeploymentTopology",
    "ApplicationDetails", "ProxyDetails", "Target", "TargetGroup", "DurationStats", "ControllerHealthMetrics",
    "ServeInstanceDetails", "ScaleDeploymentRequest",
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
    # Why a proxy is not healthy, by node id (e.g. its port is in use); only
    # unhealthy proxies with a known reason appear. Not in Ray Serve's ServeStatus.
    proxy_messages: Dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        """A plain-data copy of every field (enums as strings)."""
        return _plain(asdict(self))

    def status_view(self) -> Dict[str, Any]:
        """Exactly what Ray Serve's `serve status` prints: proxies, applications
        (status, message, last_deployed_time_s, deployments: status,
        status_trigger, replica_states, message) and target_capacity, as plain data."""
        view = {
            "proxies": {node: _plain(s) for node, s in self.proxies.items()},
            "applications": {name: app.status_view() for name, app in self.applications.items()},
            "target_capacity": self.target_capacity,
        }
        if self.proxy_messages:  # only when a proxy is unhealthy for a known reason
            view["proxy_messages"] = dict(self.proxy_messages)
        return view


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class EncodingType(str, Enum):
    """Encoding of Serve's log lines (``LoggingConfig.encoding``)."""

    TEXT = "TEXT"
    JSON = "JSON"


# ---- the REST API's detail schemas (`GET /api/serve/applications/`), Ray Serve 2.60's shapes ----

class ServeActorDetails(BaseModel):
    """Where a Serve actor runs and what it is; every field may be unknown (None)."""

    model_config = ConfigDict(frozen=True)

    node_id: Optional[str] = None
    node_ip: Optional[str] = None
    node_instance_id: Optional[str] = None
    actor_id: Optional[str] = None
    actor_name: Optional[str] = None
    worker_id: Optional[str] = None
    log_file_path: Optional[str] = None


class ReplicaDetails(ServeActorDetails):
    """One replica: its id, state, process id and when its actor started."""

    model_config = ConfigDict(frozen=True)

    replica_id: str
    state: ReplicaState
    pid: Optional[int] = None
    start_time_s: float


class AutoscalingMetricsHealth(str, Enum):
    HEALTHY = "healthy"
    DELAYED = "delayed"
    UNAVAILABLE = "unavailable"


class AutoscalingStatus(str, Enum):
    UPSCALING = "UPSCALING"
    DOWNSCALING = "DOWNSCALING"
    STABLE = "STABLE"


class ScalingDecision(BaseModel):
    """One autoscaling decision: when, why, and the replica counts before and after."""

    timestamp_s: float
    reason: str
    prev_num_replicas: int = Field(ge=0)
    curr_num_replicas: int = Field(ge=0)
    policy: Optional[str] = None


class DeploymentAutoscalingDetail(BaseModel):
    """What the autoscaler of one deployment is doing and has decided lately."""

    scaling_status: AutoscalingStatus
    decisions: List[ScalingDecision] = Field(default_factory=list)
    metrics: Optional[Dict[str, Any]] = None
    metrics_health: AutoscalingMetricsHealth = AutoscalingMetricsHealth.HEALTHY
    errors: List[str] = Field(default_factory=list)


class DeploymentDetails(BaseModel):
    """One deployment of an application: status, applied options, target and replicas."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    status: DeploymentStatus
    status_trigger: DeploymentStatusTrigger
    message: str
    deployment_config: DeploymentSchema
    target_num_replicas: NonNegativeInt
    required_resources: Dict
    replicas: List[ReplicaDetails]
    recent_dead_replicas: List[ReplicaDetails] = Field(default_factory=list)
    autoscaling_detail: Optional[DeploymentAutoscalingDetail] = None


class APIType(str, Enum):
    """Which API an application came from: a config file (declarative) or serve.run (imperative)."""

    UNKNOWN = "unknown"
    IMPERATIVE = "imperative"
    DECLARATIVE = "declarative"

    @classmethod
    def get_valid_user_values(cls) -> List[str]:
        """The values a user may ask for (``unknown`` is internal)."""
        return [cls.IMPERATIVE.value, cls.DECLARATIVE.value]


class DeploymentNode(BaseModel):
    """One deployment in an application's call graph, with the deployments it calls."""

    name: str
    app_name: str
    outbound_deployments: List[dict] = Field(default_factory=list)
    is_ingress: bool = False


class DeploymentTopology(BaseModel):
    """An application's call graph: deployment name -> node, and its ingress."""

    app_name: str
    nodes: Dict[str, DeploymentNode]
    ingress_deployment: Optional[str] = None


class ApplicationDetails(BaseModel):
    """One application: route, status, the config it was deployed with, and its deployments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    route_prefix: Optional[str]
    docs_path: Optional[str]
    status: ApplicationStatus
    message: str
    last_deployed_time_s: float
    deployed_app_config: Optional[ServeApplicationSchema] = None
    source: APIType
    deployments: Dict[str, DeploymentDetails]
    external_scaler_enabled: bool
    deployment_topology: Optional[DeploymentTopology] = None


class ProxyDetails(ServeActorDetails):
    """One proxy actor and its status."""

    model_config = ConfigDict(frozen=True)

    status: ProxyStatus


class Target(BaseModel):
    """One address that serves a route (a proxy)."""

    model_config = ConfigDict(frozen=True)

    ip: str
    port: int
    instance_id: str
    name: str


class TargetGroup(BaseModel):
    """The addresses that serve one route prefix over one protocol."""

    model_config = ConfigDict(frozen=True)

    targets: List[Target]
    route_prefix: str
    protocol: str = Field(description="'HTTP' or 'gRPC'.")
    app_name: str = ""
    ingress_request_router_targets: List[Target] = Field(default_factory=list)
    ingress_deployment_name: str = ""


class DurationStats(BaseModel):
    """Mean, standard deviation, min and max of a window of durations."""

    mean: float = 0.0
    std: float = 0.0
    min: float = 0.0
    max: float = 0.0

    @classmethod
    def from_values(cls, values: List[float]) -> "DurationStats":
        """The statistics of *values* (all zero for none)."""
        if not values:
            return cls()
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) if len(values) > 1 else 0.0
        return cls(mean=mean, std=std, min=min(values), max=max(values))


class ControllerHealthMetrics(BaseModel):
    """How the controller's loop is doing (Ray Serve 2.60's fields; unknown ones stay at 0/None)."""

    timestamp: float = 0.0
    controller_start_time: float = 0.0
    uptime_s: float = 0.0
    last_control_loop_time: float = 0.0
    num_control_loops: int = 0
    loop_duration_s: Optional[DurationStats] = None
    loops_per_second: float = 0.0
    last_sleep_duration_s: float = 0.0
    expected_sleep_duration_s: float = 0.0
    event_loop_delay_s: float = 0.0
    num_asyncio_tasks: int = 0
    handle_ingest_duration_ms: Optional[DurationStats] = None
    replica_ingest_duration_ms: Optional[DurationStats] = None
    metrics_decompress_duration_ms: Optional[DurationStats] = None
    columnar_decode_duration_ms: Optional[DurationStats] = None
    handle_reports_received: int = 0
    replica_reports_received: int = 0
    ingest_reports_received: int = 0
    ingest_cpu_fraction: float = 0.0
    deployment_state_update_duration_s: Optional[DurationStats] = None
    application_state_update_duration_s: Optional[DurationStats] = None
    proxy_state_update_duration_s: Optional[DurationStats] = None
    node_update_duration_s: Optional[DurationStats] = None
    handle_metrics_delay_ms: Optional[DurationStats] = None
    replica_metrics_delay_ms: Optional[DurationStats] = None
    process_memory_mb: float = 0.0


class ServeInstanceDetails(BaseModel):
    """The whole instance: controller, proxies, options and every application (the REST API's GET body)."""

    model_config = ConfigDict(extra="forbid")

    controller_info: ServeActorDetails = Field(default_factory=ServeActorDetails)
    proxy_location: Optional[ProxyLocation] = None
    http_options: Optional[HTTPOptionsSchema] = None
    grpc_options: Optional[gRPCOptionsSchema] = None
    proxies: Dict[str, ProxyDetails]
    applications: Dict[str, ApplicationDetails]
    target_capacity: Optional[float] = Field(default=None, ge=0, le=100)
    target_groups: List[TargetGroup] = Field(default_factory=list)
    controller_health_metrics: ControllerHealthMetrics = Field(default_factory=ControllerHealthMetrics)
    restores_unset_config_options: bool = False

    @staticmethod
    def get_empty_schema_dict() -> Dict[str, Any]:
        """The details of a cluster with no Serve instance."""
        return {"controller_info": {}, "proxies": {}, "applications": {}, "target_capacity": None}

    def _get_status(self) -> ServeStatus:
        return ServeStatus(
            target_capacity=self.target_capacity,
            proxies={node: proxy.status for node, proxy in self.proxies.items()},
            applications={
                name: ApplicationStatusOverview(
                    status=app.status, message=app.message, last_deployed_time_s=app.last_deployed_time_s,
                    route_prefix=app.route_prefix,
                    deployments={
                        dep_name: DeploymentStatusOverview(
                            status=dep.status, status_trigger=dep.status_trigger, message=dep.message,
                            replica_states=_count_states(dep.replicas), target_num_replicas=dep.target_num_replicas,
                        )
                        for dep_name, dep in app.deployments.items()
                    },
                )
                for name, app in self.applications.items()
            },
        )

    def _get_user_facing_json_serializable_dict(self, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        """The details as JSON-ready data, as the REST API returns them."""
        return self.model_dump(*args, **{"mode": "json", **kwargs})


def _count_states(replicas: List[ReplicaDetails]) -> Dict[ReplicaState, int]:
    counts: Dict[ReplicaState, int] = {}
    for replica in replicas:
        counts[replica.state] = counts.get(replica.state, 0) + 1
    return counts


class ScaleDeploymentRequest(BaseModel):
    """The body of an external scaler's request: the deployment's new replica count."""

    target_num_replicas: NonNegativeInt


# =====================================================================================
# Asynchronous inference (task consumers), as in Ray Serve 2.60's `ray.serve.schema`.
# Self-contained: the imports and the `__all__` entries of this section live here.
# =====================================================================================

from abc import ABC, abstractmethod  # noqa: E402
from typing import Callable, Union  # noqa: E402

from ray_serving_ext.config import DeploymentConfig  # noqa: E402

__all__ += ["CeleryAdapterConfig", "TaskProcessorConfig", "TaskResult", "TaskProcessorAdapter"]

# A task consumer started without an explicit concurrency runs as many tasks at once
# as a replica with the default max_ongoing_requests serves requests (Ray Serve's rule).
DEFAULT_CONSUMER_CONCURRENCY: int = DeploymentConfig.model_fields["max_ongoing_requests"].default


class CeleryAdapterConfig(BaseModel):
    """How the Celery adapter reaches its broker and result backend, and extra Celery settings.

    `app_custom_config` is applied to the Celery app (except the keys the adapter
    manages itself); `task_custom_config` to every registered task.
    """

    app_custom_config: Optional[Dict[str, Any]] = Field(
        default=None, description="Custom configuration for the Celery app.")
    task_custom_config: Optional[Dict[str, Any]] = Field(
        default=None, description="Custom options applied to every Celery task.")
    broker_url: str = Field(..., description="The URL of the Celery broker.")
    backend_url: str = Field(..., description="The URL of the Celery result backend.")
    broker_transport_options: Optional[Dict[str, Any]] = Field(
        default=None, description="Broker transport options passed to Celery.")


class TaskProcessorConfig(BaseModel):
    """Which task processor a task consumer uses and how tasks are queued and retried.

    `adapter` is a `TaskProcessorAdapter` subclass or its import path (default: this
    package's Celery adapter); `adapter_config` is the adapter's own config (for
    Celery, a `CeleryAdapterConfig`). A task that still fails after `max_retries`
    retries goes to `failed_task_queue_name`; a task no handler is registered for goes
    to `unprocessable_task_queue_name` (each only when set).
    """

    queue_name: str = Field(..., description="The queue the consumer takes tasks from.")
    adapter: Union[str, Callable] = Field(
        default="ray_serving_ext.task_processor.CeleryTaskProcessorAdapter",
        description="The adapter class, or its import path. Celery by default.")
    adapter_config: Any = Field(..., description="The adapter's config.")
    max_retries: Optional[int] = Field(
        default=3, description="How many times a failing task is retried before it counts as failed.")
    failed_task_queue_name: Optional[str] = Field(
        default=None, description="Dead-letter queue for tasks that failed after all retries.")
    unprocessable_task_queue_name: Optional[str] = Field(
        default=None, description="Dead-letter queue for tasks that cannot be processed (e.g. no handler).")


class TaskResult(BaseModel):
    """A task's id, status (the adapter's status string, e.g. Celery's "SUCCESS") and result."""

    id: str = Field(..., description="The ID of the task.")
    status: str = Field(..., description="The status of the task.")
    created_at: Optional[float] = Field(default=None, description="When the task was created (Unix time).")
    result: Any = Field(..., description="The task's result (or its error, once it failed).")


class TaskProcessorAdapter(ABC):
    """What a task consumer needs from a task queue: register handlers, run a consumer,
    enqueue tasks and look them up.

    The `*_sync` methods and the consumer lifecycle are abstract. The `*_async`
    methods are optional: by default they raise NotImplementedError.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    @abstractmethod
    def initialize(self, consumer_concurrency: int = DEFAULT_CONSUMER_CONCURRENCY) -> None:
        """Set up the processor; the consumer will run up to `consumer_concurrency` tasks at once."""

    @abstractmethod
    def register_task_handle(self, func: Callable, name: Optional[str] = None) -> None:
        """Make `func` the handler of tasks named `name` (default: the function's name)."""

    @abstractmethod
    def enqueue_task_sync(self, task_name: str, args: Optional[Any] = None, kwargs: Optional[Any] = None,
                          **options: Any) -> TaskResult:
        """Queue a task named `task_name` with these arguments; returns its id and status."""

    @abstractmethod
    def get_task_status_sync(self, task_id: str) -> TaskResult:
        """The task's current status and, once it finished, its result."""

    @abstractmethod
    def start_consumer(self, **kwargs: Any) -> None:
        """Start consuming tasks (in the background)."""

    @abstractmethod
    def stop_consumer(self, timeout: float = 10.0) -> None:
        """Stop consuming, waiting up to `timeout` seconds for the consumer to end."""

    @abstractmethod
    def cancel_task_sync(self, task_id: str) -> None:
        """Ask for the task to be cancelled."""

    @abstractmethod
    def get_metrics_sync(self) -> Dict[str, Any]:
        """Adapter-specific metrics of the consumers."""

    @abstractmethod
    def health_check_sync(self) -> List[Dict]:
        """Health of the consumers, one entry per consumer that answered."""

    async def enqueue_task_async(self, task_name: str, args: Optional[Any] = None, kwargs: Optional[Any] = None,
                                 **options: Any) -> TaskResult:
        """`enqueue_task_sync` without blocking the loop, if the adapter supports it."""
        raise NotImplementedError("Subclass must implement enqueue_task_async function")

    async def get_task_status_async(self, task_id: str) -> TaskResult:
        """`get_task_status_sync` without blocking the loop, if the adapter supports it."""
        raise NotImplementedError("Subclass must implement get_task_status_async function")

    async def cancel_task_async(self, task_id: str) -> None:
        """`cancel_task_sync` without blocking the loop, if the adapter supports it."""
        raise NotImplementedError("Subclass must implement cancel_task_async function")

    async def get_metrics_async(self) -> Dict[str, Any]:
        """`get_metrics_sync` without blocking the loop, if the adapter supports it."""
        raise NotImplementedError("Subclass must implement get_metrics_async function")

    async def health_check_async(self) -> List[Dict]:
        """`health_check_sync` without blocking the loop, if the adapter supports it."""
        raise NotImplementedError("Subclass must implement health_check_async function")

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
