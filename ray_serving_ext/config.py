"""Pydantic v2 schemas for every user-facing option of ``ray_serving_ext``.

Names, fields, defaults and validation follow Ray Serve's ``ray.serve.config`` and
``ray.serve.schema`` so existing Serve YAML files and keyword options keep working;
class docstrings state every deliberate difference. The module is pure pydantic +
stdlib and never imports ``ray``, so it works without a Ray cluster. The YAML
file schema (``ServeDeploySchema`` and friends) is in ``config_file.py``.
"""

from __future__ import annotations

import logging
import warnings
from enum import Enum
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator,
    model_validator,
)

from ray_serving_ext._private.config_types import (
    DEFAULT_KEEP_ALIVE_TIMEOUT_S, NUM_REPLICAS_AND_AUTOSCALING_ERROR, Bundles, Int, QueueLimit,
    DirectIngressOption, ProxyAuthOptions, ProxyLimitOptions, ReplicasPerNode, SSLOptions, Strategy, check_json_serializable,
    check_num_replicas, check_replicas_per_node, json_serializable,
)
from ray_serving_ext._private.common import ReplicaID
from ray_serving_ext._private.constants import (
    DEFAULT_CONSTRUCTOR_RETRY_COUNT, DEFAULT_ROLLING_UPDATE_PERCENTAGE, TRACING_EXPORTER_IMPORT_PATH,
    TRACING_SAMPLING_RATIO, default_log_encoding,
)
from ray_serving_ext._private.request_router_config import RequestRouterConfig
from ray_serving_ext._private.scheduling_config import (
    DeploymentActorConfig, GangPlacementStrategy, GangRuntimeFailurePolicy, GangSchedulingConfig, LabelSelectors,
    check_scheduling_options,
)

__all__ = [
    "AggregationFunction", "AutoscalingConfig", "AutoscalingContext", "AutoscalingPolicy", "BackpressureConfig", "DeploymentConfig", "HTTPOptions", "LoggingConfig", "NON_CONFIG_OPTIONS",
    "ProxyLocation", "RayActorOptionsSchema", "ReplicaID", "RequestRouterConfig", "TracingConfig", "deployment_option_names", "format_validation_error",
    "validate_ray_actor_options",
]

# ``logging.LogRecord`` attributes that may be added to every Serve log record.
_LOGRECORD_STANDARD_ATTRS = frozenset({
    "args", "asctime", "created", "exc_info", "exc_text", "filename", "funcName",
    "levelname", "levelno", "lineno", "message", "module", "msecs", "msg", "name",
    "pathname", "process", "processName", "relativeCreated", "stack_info", "thread",
    "threadName", "taskName",
})


class ProxyLocation(str, Enum):
    """Where HTTP proxies run: nowhere, only on the head node, or on every node."""

    Disabled = "Disabled"
    HeadOnly = "HeadOnly"
    EveryNode = "EveryNode"


DEFAULT_AUTOSCALING_POLICY_NAME = "ray_serving_ext.autoscaling_policy:default_autoscaling_policy"
# Ray Serve's own name for its default policy: a config written for Ray Serve means ours.
_RAY_SERVE_DEFAULT_POLICY_NAMES = frozenset({
    "ray.serve.autoscaling_policy:default_autoscaling_policy",
    "ray.serve.autoscaling_policy.default_autoscaling_policy",
    "ray.serve.autoscaling_policy:replica_queue_length_autoscaling_policy",
    "ray.serve.autoscaling_policy.replica_queue_length_autoscaling_policy",
})


class AggregationFunction(str, Enum):
    """How each replica's metric samples within ``look_back_period_s`` are reduced."""

    MEAN = "mean"
    MAX = "max"
    MIN = "min"


def policy_import_path(fn: Any) -> str:
    """``module.name`` of a function or class (how Ray Serve names a callable policy)."""
    return f"{fn.__module__}.{getattr(fn, '__qualname__', fn.__name__)}"


class AutoscalingPolicy(BaseModel):
    """The policy that turns an :class:`AutoscalingContext` into a replica count.

    ``policy_function`` is an import path (``"pkg.module:func"`` or
    ``"pkg.module.func"``), a function, or a class (instantiated once with
    ``policy_kwargs``, then called with the context each decision). Either way
    it is called as ``policy(ctx) -> (num_replicas, policy_state)``; Serve then
    applies the up/down-scaling factors, delays and min/max bounds to the
    decision, as Ray Serve does. A callable travels to the controller by pickle
    and is dumped as its import path in JSON mode. ``policy_kwargs`` must be
    JSON-serializable. Equality compares the public fields only.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    policy_function: Union[str, Any] = Field(default=DEFAULT_AUTOSCALING_POLICY_NAME)
    policy_kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("policy_function")
    @classmethod
    def _callable_or_path(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v in _RAY_SERVE_DEFAULT_POLICY_NAMES:
                return DEFAULT_AUTOSCALING_POLICY_NAME
            if not v.strip() or ("." not in v and ":" not in v):
                raise ValueError(f"policy_function must be an import path like 'module:function', got {v!r}")
            return v
        if not callable(v):
            raise ValueError(f"policy_function must be a callable or an import path, got {type(v).__name__}")
        return v

    _kwargs_json = field_validator("policy_kwargs")(json_serializable("policy_kwargs"))

    @field_serializer("policy_function", when_used="json")
    def _path_in_json(self, v: Any) -> str:
        return v if isinstance(v, str) else policy_import_path(v)

    def is_default_policy_function(self) -> bool:
        """Whether this is Serve's built-in request-based policy."""
        return self.policy_function == DEFAULT_AUTOSCALING_POLICY_NAME

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AutoscalingPolicy):
            return False
        return (self.policy_function, self.policy_kwargs) == (other.policy_function, other.policy_kwargs)

    __hash__ = None  # type: ignore[assignment]


class AutoscalingContext:
    """What a policy sees at each decision (Ray Serve 2.60's fields).

    ``total_num_requests`` (queued plus running, averaged over
    ``look_back_period_s`` per source and summed), ``total_queued_requests``,
    ``aggregated_metrics`` (custom metric name -> replica id -> the replica's
    samples in the window reduced by ``aggregation_function``) and
    ``raw_metrics`` (name -> replica id -> list of ``TimeStampedValue``) may be
    given as callables: they are evaluated on first access and cached.
    ``total_running_requests`` is total minus queued, never below 0.
    """

    def __init__(self, deployment_id: Any, deployment_name: str, app_name: Optional[str],
                 current_num_replicas: int, target_num_replicas: int, running_replicas: list,
                 total_num_requests: Any, total_queued_requests: Any, aggregated_metrics: Any,
                 raw_metrics: Any, capacity_adjusted_min_replicas: int, capacity_adjusted_max_replicas: int,
                 policy_state: dict[str, Any], last_scale_up_time: Optional[float],
                 last_scale_down_time: Optional[float], current_time: Optional[float],
                 config: Optional[Any]) -> None:
        self.deployment_id = deployment_id
        self.deployment_name = deployment_name
        self.app_name = app_name
        self.current_num_replicas = current_num_replicas
        self.target_num_replicas = target_num_replicas
        self.running_replicas = running_replicas
        self._lazy = {"total_num_requests": total_num_requests, "total_queued_requests": total_queued_requests,
                      "aggregated_metrics": aggregated_metrics, "raw_metrics": raw_metrics}
        self.capacity_adjusted_min_replicas = capacity_adjusted_min_replicas
        self.capacity_adjusted_max_replicas = capacity_adjusted_max_replicas
        self.policy_state = policy_state
        self.last_scale_up_time = last_scale_up_time
        self.last_scale_down_time = last_scale_down_time
        self.current_time = current_time
        self.config = config

    def _get(self, name: str) -> Any:
        value = self._lazy[name]
        if callable(value):
            value = self._lazy[name] = value()
        return value

    @property
    def total_num_requests(self) -> float:
        return self._get("total_num_requests")

    @property
    def total_queued_requests(self) -> float:
        return self._get("total_queued_requests")

    @property
    def aggregated_metrics(self) -> Optional[dict]:
        return self._get("aggregated_metrics")

    @property
    def raw_metrics(self) -> Optional[dict]:
        return self._get("raw_metrics")

    @property
    def total_running_requests(self) -> float:
        return max(0.0, (self.total_num_requests or 0.0) - (self.total_queued_requests or 0.0))


class AutoscalingConfig(BaseModel):
    """Autoscaling settings of one deployment (Ray Serve 2.60's fields and defaults).

    Guarantees ``min_replicas <= max_replicas`` and, when ``initial_replicas`` is
    set, ``min_replicas <= initial_replicas <= max_replicas``. ``policy`` is the
    deployment's :class:`AutoscalingPolicy` (default: the request-based one);
    ``downscale_to_zero_delay_s`` (None: ``downscale_delay_s``) is the delay of
    the 1 -> 0 step; ``aggregation_function`` reduces custom metrics over the
    window. Unknown fields are rejected.
    """

    model_config = ConfigDict(extra="forbid")

    min_replicas: Int = Field(default=1, ge=0)
    initial_replicas: Optional[Int] = Field(default=None, ge=0)
    max_replicas: Int = Field(default=1, ge=1)
    target_ongoing_requests: float = Field(default=2.0, gt=0)
    metrics_interval_s: float = Field(default=10.0, gt=0)
    look_back_period_s: float = Field(default=30.0, gt=0)
    smoothing_factor: float = Field(default=1.0, gt=0)
    upscale_smoothing_factor: Optional[float] = Field(default=None, gt=0)
    downscale_smoothing_factor: Optional[float] = Field(default=None, gt=0)
    upscaling_factor: Optional[float] = Field(default=None, gt=0)
    downscaling_factor: Optional[float] = Field(default=None, gt=0)
    downscale_delay_s: float = Field(default=600.0, ge=0)
    downscale_to_zero_delay_s: Optional[float] = Field(default=None, ge=0)
    upscale_delay_s: float = Field(default=30.0, ge=0)
    aggregation_function: AggregationFunction = AggregationFunction.MEAN
    policy: AutoscalingPolicy = Field(default_factory=AutoscalingPolicy)

    @field_validator("aggregation_function", mode="before")
    @classmethod
    def _aggregation_lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) and not isinstance(v, AggregationFunction) else v

    @model_validator(mode="after")
    def _replica_bounds_consistent(self) -> AutoscalingConfig:
        lo, hi, init = self.min_replicas, self.max_replicas, self.initial_replicas
        if hi < lo:
            raise ValueError(
                f"max_replicas ({hi}) must be greater than or equal to min_replicas ({lo})"
            )
        if init is not None and init < lo:
            raise ValueError(f"initial_replicas ({init}) must be >= min_replicas ({lo})")
        if init is not None and init > hi:
            raise ValueError(f"initial_replicas ({init}) must be <= max_replicas ({hi})")
        return self

    @classmethod
    def default(cls) -> AutoscalingConfig:
        """The config Ray Serve uses for ``num_replicas="auto"``.

        Exactly ``min_replicas=1``, ``max_replicas=100`` and
        ``target_ongoing_requests=2`` count as set (``model_fields_set``), so a
        user's fields can be merged over it.
        """
        return cls(min_replicas=1, max_replicas=100, target_ongoing_requests=2.0)

    @classmethod
    def for_auto(cls, given: Any) -> dict[str, Any]:
        """The autoscaling fields ``num_replicas="auto"`` stands for: the set
        fields of *given* (a dict, an AutoscalingConfig or None) merged over
        those of :meth:`default`. Not validated; raises ``ValueError`` if *given*
        is of another type."""
        if isinstance(given, AutoscalingConfig):
            given = given.model_dump(exclude_unset=True)
        elif given is not None and not isinstance(given, dict):
            raise ValueError(
                f"autoscaling_config must be a dict or AutoscalingConfig, got {type(given).__name__}"
            )
        return {**cls.default().model_dump(exclude_unset=True), **(given or {})}

    def get_upscaling_factor(self) -> float:
        """Effective upscaling gain: ``upscaling_factor``, else the deprecated
        ``upscale_smoothing_factor``, else ``smoothing_factor``."""
        if self.upscaling_factor:
            return self.upscaling_factor
        return self.upscale_smoothing_factor or self.smoothing_factor

    def get_downscaling_factor(self) -> float:
        """Effective downscaling gain: ``downscaling_factor``, else the deprecated
        ``downscale_smoothing_factor``, else ``smoothing_factor``."""
        if self.downscaling_factor:
            return self.downscaling_factor
        return self.downscale_smoothing_factor or self.smoothing_factor


class BackpressureConfig(BaseModel):
    """The HTTP answer to a request rejected for backpressure (the deployment's
    ``max_queued_requests`` exceeded), as in Ray Serve 2.60.

    ``status_code`` is 503 (default) or 429. ``retry_after_s``, when set, adds a
    ``Retry-After`` header with that many seconds rounded up to an integer; by
    default (None) there is no such header. Unknown keys are rejected. Requests
    rejected because the deployment is unavailable always get 503, and handle
    callers get a ``BackPressureError`` carrying both values.
    """

    model_config = ConfigDict(extra="forbid")

    status_code: Literal[503, 429] = 503
    retry_after_s: Optional[float] = Field(default=None, ge=0, allow_inf_nan=False)


def _default_log_encoding() -> Literal["TEXT", "JSON"]:
    """``$RAY_SERVE_LOG_ENCODING`` if it is ``JSON`` (as in Ray Serve), else TEXT."""
    return "JSON" if default_log_encoding() == "JSON" else "TEXT"


class LoggingConfig(BaseModel):
    """Logging settings for Serve components, applications or deployments.

    ``log_level`` is always stored as an upper-case level name such as ``"INFO"``;
    an int level (``20``) or a lower-case name is accepted and normalised (Ray Serve
    only accepts exact names). ``encoding`` defaults to ``"JSON"`` when
    ``$RAY_SERVE_LOG_ENCODING`` is ``JSON``, else ``"TEXT"``.
    ``additional_log_standard_attrs`` must name ``logging.LogRecord`` attributes;
    duplicates are dropped, order is kept.
    """

    model_config = ConfigDict(extra="forbid")

    encoding: Literal["TEXT", "JSON"] = Field(default_factory=_default_log_encoding)
    log_level: Union[str, int] = "INFO"
    logs_dir: Optional[str] = None
    enable_access_log: bool = True
    additional_log_standard_attrs: list[str] = Field(default_factory=list)

    @field_validator("log_level", mode="before")
    @classmethod
    def _normalise_log_level(cls, value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"log_level must be a level name or int, got {value!r}")
        if isinstance(value, int):
            name = logging.getLevelName(value)
            if not isinstance(name, str) or name.startswith("Level "):
                raise ValueError(f"unknown log_level {value}")
            return name
        if not isinstance(logging.getLevelName(value.upper()), int):
            raise ValueError(
                f"unknown log_level {value!r}; expected one of DEBUG, INFO, WARNING, "
                "ERROR, CRITICAL (or a logging int level)"
            )
        return value.upper()

    @field_validator("additional_log_standard_attrs")
    @classmethod
    def _known_record_attrs(cls, value: list[str]) -> list[str]:
        unknown = [a for a in value if a not in _LOGRECORD_STANDARD_ATTRS]
        if unknown:
            raise ValueError(
                f"unknown LogRecord attribute(s) {unknown}; allowed: "
                f"{sorted(_LOGRECORD_STANDARD_ATTRS)}"
            )
        return list(dict.fromkeys(value))


class TracingConfig(BaseModel):
    """Distributed tracing of proxies and replicas: ``serve.start(tracing_config=...)``.

    As Ray Serve 2.60: ``enabled`` defaults to whether
    ``$RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH`` is set, ``exporter_import_path``
    to that variable (empty means the built-in exporter, which writes spans as
    JSON under the Serve logs directory, ``spans/``), ``sampling_ratio`` to
    ``$RAY_SERVE_TRACING_SAMPLING_RATIO`` (0.01) and must lie in [0, 1]. The
    exporter path names a function taking no arguments that returns a list of
    OpenTelemetry ``SpanProcessor``s; every proxy and replica calls it once.
    Unknown keys are rejected.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default_factory=lambda: TRACING_EXPORTER_IMPORT_PATH != "")
    exporter_import_path: str = Field(default_factory=lambda: TRACING_EXPORTER_IMPORT_PATH)
    sampling_ratio: float = Field(default_factory=lambda: TRACING_SAMPLING_RATIO)

    @field_validator("sampling_ratio")
    @classmethod
    def _ratio_in_unit_interval(cls, value: float) -> float:
        if value < 0.0 or value > 1.0:
            raise ValueError(f"sampling_ratio must be between 0.0 and 1.0, got {value}.")
        return value


def _normalise_proxy_location(value: Any) -> Optional[ProxyLocation]:
    """Map a deprecated ``HTTPOptions.location`` value onto :class:`ProxyLocation`."""
    if value is None or isinstance(value, ProxyLocation):
        return value
    if value == "NoServer":
        return ProxyLocation.Disabled
    if isinstance(value, str) and value in ProxyLocation.__members__:
        return ProxyLocation(value)
    raise ValueError(
        "location must be 'HeadOnly', 'EveryNode', 'Disabled', 'NoServer' or None, "
        f"got {value!r}"
    )


class HTTPOptions(SSLOptions, ProxyAuthOptions, ProxyLimitOptions, DirectIngressOption):
    """HTTP proxy options as passed to ``serve.start(http_options=...)``.

    A dict with the same keys is accepted wherever an ``HTTPOptions`` is; unknown
    keys are rejected and assignments are validated. ``location`` is deprecated
    (use ``proxy_location``): setting it warns, and ``"NoServer"`` means
    ``Disabled``. ``host=None`` means no proxy, so ``location`` becomes
    ``Disabled``. Unlike current Ray Serve, which refuses them, a non-empty
    ``middlewares`` list (``starlette.middleware.Middleware`` objects) wraps every
    proxy's ASGI app (the last one outermost, as Ray Serve applied them and still
    applies those of ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``), and a non-zero
    ``num_cpus`` is accepted.

    ``ssl_keyfile`` and ``ssl_certfile`` (paths on the proxies' nodes) must be
    given together; with them the proxies serve HTTPS only (uvicorn's TLS), the
    key decrypted with ``ssl_keyfile_password`` if set and ``ssl_ca_certs``
    loaded as the CA file, as Ray Serve passes them to uvicorn.
    """

    model_config = ConfigDict(
        extra="forbid", arbitrary_types_allowed=True, validate_assignment=True
    )

    host: Optional[str] = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    middlewares: list[Any] = Field(default_factory=list)
    location: Optional[ProxyLocation] = None
    num_cpus: int = Field(default=0, ge=0)
    root_url: str = ""
    root_path: str = ""
    request_timeout_s: Optional[float] = Field(default=None, gt=0)
    keep_alive_timeout_s: int = Field(default=DEFAULT_KEEP_ALIVE_TIMEOUT_S, ge=0)
    @field_validator("location", mode="before")
    @classmethod
    def _deprecated_location(cls, value: Any) -> Optional[ProxyLocation]:
        location = _normalise_proxy_location(value)
        if location is not None:
            warnings.warn(
                "HTTPOptions.location is deprecated; use proxy_location instead.",
                DeprecationWarning,
                stacklevel=2,
            )
        return location

    @field_validator("middlewares")
    @classmethod
    def _starlette_middlewares(cls, value: list[Any]) -> list[Any]:
        from ray_serving_ext._private.proxy_middlewares import check_middlewares

        return check_middlewares(value, "http_options.middlewares")

    @model_validator(mode="after")
    def _no_host_means_no_proxy(self) -> HTTPOptions:
        if self.host is None:
            self.__dict__["location"] = ProxyLocation.Disabled  # skip re-validation
        return self


class RayActorOptionsSchema(BaseModel):
    """The ``ray_actor_options`` a replica actor may be started with.

    Differences from Ray Serve: ``object_store_memory`` is accepted,
    ``fallback_strategy`` is not, and ``runtime_env`` URIs are not required to be
    remote (a local ``working_dir`` is allowed).
    """

    model_config = ConfigDict(extra="forbid")

    runtime_env: dict[str, Any] = Field(default_factory=dict)
    num_cpus: Optional[float] = Field(default=None, ge=0)
    num_gpus: Optional[float] = Field(default=None, ge=0)
    memory: Optional[float] = Field(default=None, ge=0)
    object_store_memory: Optional[float] = Field(default=None, ge=0)
    resources: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    accelerator_type: Optional[str] = None
    label_selector: Optional[dict[str, str]] = None


def validate_ray_actor_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Validate ``ray_actor_options`` and return a cleaned copy.

    Raises ``TypeError`` if *opts* is not a dict, ``ValueError`` naming the unknown
    key(s) and listing the allowed ones, and ``pydantic.ValidationError`` for a bad
    value. The result holds exactly the keys given (no defaults are added), with
    values coerced by :class:`RayActorOptionsSchema` (e.g. ``num_cpus`` as float).
    """
    if not isinstance(opts, dict):
        raise TypeError(f"ray_actor_options must be a dict, got {type(opts).__name__}")
    fields = RayActorOptionsSchema.model_fields
    unknown = sorted(str(k) for k in opts if k not in fields)
    if unknown:
        raise ValueError(
            f"Specifying {', '.join(repr(k) for k in unknown)} in ray_actor_options is "
            f"not allowed. Allowed options: {sorted(fields)}"
        )
    return RayActorOptionsSchema.model_validate(opts).model_dump(include=set(opts))


# Options whose change needs new replicas; any other change is applied in place
# (to running replicas or by the controller).
_RESTART_FIELDS = frozenset({
    "ray_actor_options", "max_replicas_per_node", "placement_group_bundles",
    "placement_group_strategy", "placement_group_bundle_label_selector", "gang_scheduling_config",
    "deployment_actors",
})


# The fields `check_scheduling_options` looks at.
_SCHEDULING_CHECKED = (
    "num_replicas", "autoscaling_config", "max_replicas_per_node", "placement_group_bundles",
    "placement_group_strategy", "placement_group_bundle_label_selector", "gang_scheduling_config",
    "deployment_actors",
)


class DeploymentConfig(BaseModel):
    """The full, merged options of one deployment as the controller sees them.

    Invariant: ``num_replicas is None`` exactly when ``autoscaling_config`` is set.
    Giving ``autoscaling_config`` without ``num_replicas`` makes ``num_replicas``
    None; giving both is an error. Also guaranteed: ``placement_group_strategy``
    only with ``placement_group_bundles``, and ``max_replicas_per_node`` never with
    them. The scheduling options follow Ray Serve 2.60's rules (see
    ``check_scheduling_options``): an int ``num_replicas`` is a multiple of the
    gang size, a gang excludes ``max_replicas_per_node`` and
    ``placement_group_strategy``, ``placement_group_bundle_label_selector`` needs
    ``placement_group_bundles`` (one selector, or one per bundle), and deployment
    actor names are unique. Validation runs at construction only: treat instances as immutable
    values and build changed ones with :meth:`from_options` or ``model_validate``.

    Beyond Ray Serve's ``DeploymentConfig`` this also holds the replica placement
    options (``ray_actor_options``, ``max_replicas_per_node``, ``placement_group_*``)
    and ``logging_config``. ``request_router_config`` (a :class:`RequestRouterConfig`
    or a dict of its fields) picks the callers' request router; changing it is
    applied in place.

    Rollout options, as in Ray Serve 2.60: a new version replaces at most
    ``rolling_update_percentage`` (in (0, 1], default 0.2) of the target replicas
    per step (at least one); with ``max_surge_percent`` (0..100, default 0) that
    percentage of the target (rounded up) may run as extra new replicas, and old
    ones stop only once the running count exceeds the target; with 0 old replicas
    stop before their replacements start. A version is DEPLOY_FAILED after
    ``min(max_constructor_retry_count, 3 * target replicas)`` constructor
    failures in a row (default count 20).
    """

    model_config = ConfigDict(extra="forbid")

    num_replicas: Optional[Int] = Field(default=1, ge=0)
    max_ongoing_requests: Int = Field(default=5, gt=0)
    max_queued_requests: QueueLimit = -1
    backpressure_config: BackpressureConfig = Field(default_factory=BackpressureConfig)
    user_config: Annotated[Any, AfterValidator(check_json_serializable)] = None
    autoscaling_config: Optional[AutoscalingConfig] = None
    graceful_shutdown_wait_loop_s: float = Field(default=2.0, ge=0)
    graceful_shutdown_timeout_s: float = Field(default=20.0, ge=0)
    health_check_period_s: float = Field(default=10.0, gt=0)
    health_check_timeout_s: float = Field(default=30.0, gt=0)
    ray_actor_options: dict[str, Any] = Field(default_factory=dict)
    max_replicas_per_node: Optional[ReplicasPerNode] = None
    placement_group_bundles: Optional[Bundles] = None
    placement_group_strategy: Optional[Strategy] = None
    placement_group_bundle_label_selector: LabelSelectors | None = None
    gang_scheduling_config: GangSchedulingConfig | None = None
    deployment_actors: list[DeploymentActorConfig] | None = None

    logging_config: Optional[LoggingConfig] = None
    request_router_config: RequestRouterConfig = Field(default_factory=RequestRouterConfig)
    # Rollout and startup-retry options (Ray Serve 2.60's names, defaults and bounds).
    # The controller alone reads them, so changing one never restarts a replica.
    max_constructor_retry_count: Int = Field(default=DEFAULT_CONSTRUCTOR_RETRY_COUNT, gt=0)
    rolling_update_percentage: float = Field(default=DEFAULT_ROLLING_UPDATE_PERCENTAGE, gt=0.0, le=1.0)
    max_surge_percent: Int = Field(default=0, ge=0, le=100)

    @field_validator("ray_actor_options", mode="before")
    @classmethod
    def _actor_options(cls, value: Any) -> dict[str, Any]:
        try:
            return validate_ray_actor_options({} if value is None else value)
        except ValidationError as e:
            raise ValueError(format_validation_error(e).replace("\n", "; ")) from None
        except TypeError as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentConfig:
        if self.autoscaling_config is not None and self.num_replicas is not None:
            if "num_replicas" in self.model_fields_set:
                raise ValueError(NUM_REPLICAS_AND_AUTOSCALING_ERROR)
            self.num_replicas = None
        if self.autoscaling_config is None and self.num_replicas is None:
            raise ValueError("num_replicas may only be None when autoscaling_config is set")
        if self.placement_group_strategy is not None and not self.placement_group_bundles:
            raise ValueError("placement_group_strategy requires placement_group_bundles")
        check_replicas_per_node(self.max_replicas_per_node, self.placement_group_bundles)
        return self

    @model_validator(mode="after")
    def _scheduling_consistent(self) -> DeploymentConfig:
        check_scheduling_options({name: getattr(self, name) for name in _SCHEDULING_CHECKED})
        return self

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> DeploymentConfig:
        """Build a config from ``@serve.deployment``-style keyword options.

        ``name`` is ignored and ``num_replicas=None`` means "not given".
        ``num_replicas="auto"`` enables autoscaling: the given ``autoscaling_config``
        (dict or AutoscalingConfig; only its set fields count) is merged over
        :meth:`AutoscalingConfig.default`. Raises ``ValueError`` for unknown
        options (listing the allowed ones), ``num_replicas=0`` or a non-int other
        than ``"auto"``, ``max_ongoing_requests=None``, or an int ``num_replicas``
        together with an ``autoscaling_config``; invalid values raise
        ``pydantic.ValidationError`` (also a ``ValueError``).
        """
        allowed = set(cls.model_fields) | {"name"}
        unknown = sorted(str(k) for k in options if k not in allowed)
        if unknown:
            raise ValueError(
                f"Unknown deployment option(s) {unknown}. Allowed options: {sorted(allowed)}"
            )
        opts = {k: v for k, v in options.items() if k != "name"}
        if "max_ongoing_requests" in opts and opts["max_ongoing_requests"] is None:
            raise ValueError("`max_ongoing_requests` must be non-null, got None.")
        if opts.get("ray_actor_options", {}) is None:
            del opts["ray_actor_options"]
        num_replicas = check_num_replicas(opts.pop("num_replicas", None))
        if num_replicas == "auto":
            opts["autoscaling_config"] = AutoscalingConfig.for_auto(opts.get("autoscaling_config"))
        elif num_replicas is not None:
            if opts.get("autoscaling_config") is not None:
                raise ValueError(NUM_REPLICAS_AND_AUTOSCALING_ERROR)
            opts["num_replicas"] = num_replicas
        return cls.model_validate(opts)

    def initial_num_replicas(self) -> int:
        """Replicas to start with: ``num_replicas``, or when autoscaling the
        autoscaling ``initial_replicas`` if set, else its ``min_replicas``."""
        auto = self.autoscaling_config
        if auto is not None:
            return auto.initial_replicas if auto.initial_replicas is not None else auto.min_replicas
        assert self.num_replicas is not None  # guaranteed by validation
        return self.num_replicas

    def _changed_fields(self, other: DeploymentConfig) -> set[str]:
        return {n for n in type(self).model_fields if getattr(self, n) != getattr(other, n)}

    def needs_restart(self, other: DeploymentConfig) -> bool:
        """True if going from ``self`` to ``other`` needs new replicas, i.e. if
        ``ray_actor_options``, ``max_replicas_per_node`` or a ``placement_group_*``
        option differ."""
        return bool(self._changed_fields(other) & _RESTART_FIELDS)

    def in_place_fields_changed(self, other: DeploymentConfig) -> set[str]:
        """Names of the differing fields that can be applied without new replicas
        (every field outside those checked by :meth:`needs_restart`)."""
        return self._changed_fields(other) - _RESTART_FIELDS


# Deployment options that are Serve bookkeeping rather than DeploymentConfig fields.
NON_CONFIG_OPTIONS = ("name", "version", "route_prefix")


def deployment_option_names() -> tuple[str, ...]:
    """Every option ``@serve.deployment`` and ``Deployment.options()`` accept:
    the :class:`DeploymentConfig` fields, then :data:`NON_CONFIG_OPTIONS`."""
    return (*DeploymentConfig.model_fields, *NON_CONFIG_OPTIONS)


_MESSAGE_PREFIXES = ("Value error, ", "Assertion failed, ")


def format_validation_error(err: ValidationError) -> str:
    """Render *err* as one line per error: ``dotted.path: message``.

    The path joins field names and list indices with dots, e.g.
    ``applications.0.deployments.1.num_replicas``; an error about the whole input
    uses ``<root>``. pydantic's ``Value error, `` prefix is dropped, and for
    type/constraint errors on a scalar input the value is appended as
    ``(got ...)``.
    """
    lines: list[str] = []
    for e in err.errors(include_url=False):
        path = ".".join(str(part) for part in e["loc"]) or "<root>"
        msg = e["msg"]
        for prefix in _MESSAGE_PREFIXES:
            msg = msg[len(prefix):] if msg.startswith(prefix) else msg
        value = e.get("input")
        if e["type"] not in ("value_error", "assertion_error", "missing") and isinstance(
            value, (str, int, float, type(None))
        ):
            msg = f"{msg} (got {value!r})"
        lines.append(f"{path}: {msg}")
    return "\n".join(lines)


_CONTROLLER_RUNTIME_ENV_KEYS = frozenset({"env_vars"})


class ControllerOptions(BaseModel):
    """Options for the Serve controller actor, as in Ray Serve 2.60.

    Given to ``serve.start(controller_options=...)``, ``serve.run`` /
    ``serve.run_many``, or a config file's top-level ``controller_options``.
    Like ``HTTPOptions`` they take effect only when the controller is created:
    if Serve is already running they are ignored (with a warning).

    ``runtime_env`` may hold only ``env_vars`` (a dict of non-empty str keys to
    str values); every other ``runtime_env`` key is rejected, as in Ray Serve
    (per-replica environments belong on the deployment). Here the env vars are
    set on the controller actor's process, as in Ray Serve; it reads its own
    settings from them (``RAY_SERVE_EXT_ADMIN_PORT``/``_HOST``/``_API_KEYS_FILE``/
    ``_API_KEYS_ENV`` for the REST API, ``RAY_SERVE_EXT_PROXIES_PER_NODE``).
    """

    model_config = ConfigDict(extra="forbid")

    runtime_env: Optional[dict[str, Any]] = Field(
        default=None,
        description="Runtime environment for the controller actor. Only the ``env_vars`` key is supported.",
    )

    @field_validator("runtime_env")
    @classmethod
    def _check_runtime_env(cls, value: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        if value is None:
            return value
        disallowed = sorted(set(value) - _CONTROLLER_RUNTIME_ENV_KEYS)
        if disallowed:
            raise ValueError(
                f"ControllerOptions.runtime_env only supports {sorted(_CONTROLLER_RUNTIME_ENV_KEYS)} in this "
                f"version; got disallowed keys {disallowed}. Per-replica runtime_env belongs on the deployment "
                "(``serve.deployment(runtime_env=...)``), not on the controller actor."
            )
        if "env_vars" not in value:
            return value
        env_vars = value["env_vars"]
        if not isinstance(env_vars, dict):
            raise ValueError(f"runtime_env.env_vars must be a dict[str, str], got {type(env_vars).__name__}.")
        for key, val in env_vars.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"env_vars key must be a non-empty str, got {key!r}.")
            if not isinstance(val, str):
                raise ValueError(f"env_vars[{key!r}] must be str (got {type(val).__name__}); coerce explicitly.")
        return value


__all__.append("ControllerOptions")

DEFAULT_GRPC_PORT = 9000


class gRPCOptions(BaseModel):
    """gRPC options for the proxies, with Ray Serve 2.60's fields and defaults.

    Accepted and validated so code and config files written for Ray Serve run
    unchanged. ray_serving_ext does not run a gRPC proxy: with
    ``grpc_servicer_functions`` given, ``serve.start`` logs that no gRPC server
    is started (Ray Serve starts none either when the list is empty, the default).
    """

    port: int = Field(default=DEFAULT_GRPC_PORT, ge=0, le=65535)
    grpc_servicer_functions: list[str] = Field(default_factory=list)
    request_timeout_s: Optional[float] = None
    enable_reflection: bool = True


__all__.append("gRPCOptions")


def __getattr__(name: str) -> Any:
    # Ray Serve's config module re-exports Ray core's ActorClass (the type of a
    # @ray.remote class, e.g. for DeploymentActorConfig.actor_class). It is looked
    # up on first use so this module still imports without loading Ray.
    if name == "ActorClass":
        from ray.actor import ActorClass

        return ActorClass
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
# The scheduling options (declared in _private/scheduling_config.py) are public here, as in ray.serve.config.
__all__ += [
    "DeploymentActorConfig", "GangPlacementStrategy", "GangRuntimeFailurePolicy", "GangSchedulingConfig",
]
