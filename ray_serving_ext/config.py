"""Pydantic v2 schemas for every user-facing option of ``ray_serving_ext``.

Names, fields, defaults and validation follow Ray Serve's ``ray.serve.config`` and
``ray.serve.schema`` so existing Serve YAML files and keyword options keep working;
class docstrings state every deliberate difference. The module is pure pydantic +
stdlib (PyYAML is imported lazily by :func:`load_config_file`) and never imports
``ray``, so it works without a Ray cluster.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections import Counter
from enum import Enum
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
    ValidationInfo, field_validator, model_validator,
)

__all__ = [
    "AutoscalingConfig", "ConfigError", "DeploymentConfig", "DeploymentSchema",
    "HTTPOptions", "HTTPOptionsSchema", "LoggingConfig", "ProxyLocation",
    "RayActorOptionsSchema", "ServeApplicationSchema", "ServeDeploySchema",
    "format_validation_error", "load_config_file", "validate_ray_actor_options",
    "validate_route_prefix",
]

_MAX_REPLICAS_PER_NODE_MAX_VALUE = 100  # Ray Serve's upper bound.
_DEFAULT_KEEP_ALIVE_TIMEOUT_S = 90  # Ray Serve's uvicorn keep-alive default.
_PLACEMENT_GROUP_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
# ``logging.LogRecord`` attributes that may be added to every Serve log record.
_LOGRECORD_STANDARD_ATTRS = frozenset({
    "args", "asctime", "created", "exc_info", "exc_text", "filename", "funcName",
    "levelname", "levelno", "lineno", "message", "module", "msecs", "msg", "name",
    "pathname", "process", "processName", "relativeCreated", "stack_info", "thread",
    "threadName", "taskName",
})
_NUM_REPLICAS_AND_AUTOSCALING_ERROR = (
    "Manually setting num_replicas is not allowed when autoscaling_config is provided."
)


def _reject_bool(value: Any) -> Any:
    """Refuse ``True``/``False`` where a count is expected (bool is an int subclass)."""
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got the boolean {value}")
    return value


# An ``int`` that does not silently accept booleans (``num_replicas: yes`` in YAML).
_Int = Annotated[int, BeforeValidator(_reject_bool)]


class ConfigError(ValueError):
    """A Serve config file could not be read or is invalid.

    ``str(err)`` names the file and, for schema errors, lists one problem per line
    (see :func:`format_validation_error`). ``err.path`` is the file's path.
    """

    def __init__(self, message: str, path: Optional[str] = None) -> None:
        super().__init__(message)
        self.path = path


class ProxyLocation(str, Enum):
    """Where HTTP proxies run: nowhere, only on the head node, or on every node."""

    Disabled = "Disabled"
    HeadOnly = "HeadOnly"
    EveryNode = "EveryNode"


class AutoscalingConfig(BaseModel):
    """Autoscaling settings of one deployment (Ray Serve's fields and defaults).

    Guarantees ``min_replicas <= max_replicas`` and, when ``initial_replicas`` is
    set, ``min_replicas <= initial_replicas <= max_replicas``. Ray Serve's newer
    ``downscale_to_zero_delay_s``, ``aggregation_function`` and ``policy`` are not
    supported and are rejected as unknown fields.
    """

    model_config = ConfigDict(extra="forbid")

    min_replicas: _Int = Field(default=1, ge=0)
    initial_replicas: Optional[_Int] = Field(default=None, ge=0)
    max_replicas: _Int = Field(default=1, ge=1)
    target_ongoing_requests: float = Field(default=2.0, gt=0)
    metrics_interval_s: float = Field(default=10.0, gt=0)
    look_back_period_s: float = Field(default=30.0, gt=0)
    smoothing_factor: float = Field(default=1.0, gt=0)
    upscale_smoothing_factor: Optional[float] = Field(default=None, gt=0)
    downscale_smoothing_factor: Optional[float] = Field(default=None, gt=0)
    upscaling_factor: Optional[float] = Field(default=None, gt=0)
    downscaling_factor: Optional[float] = Field(default=None, gt=0)
    downscale_delay_s: float = Field(default=600.0, ge=0)
    upscale_delay_s: float = Field(default=30.0, ge=0)

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


def _default_log_encoding() -> Literal["TEXT", "JSON"]:
    """``$RAY_SERVE_LOG_ENCODING`` if it is ``JSON`` (as in Ray Serve), else TEXT."""
    return "JSON" if os.environ.get("RAY_SERVE_LOG_ENCODING") == "JSON" else "TEXT"


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


class HTTPOptions(BaseModel):
    """HTTP proxy options as passed to ``serve.start(http_options=...)``.

    A dict with the same keys is accepted wherever an ``HTTPOptions`` is; unknown
    keys are rejected and assignments are validated. ``location`` is deprecated
    (use ``proxy_location``): setting it warns, and ``"NoServer"`` means
    ``Disabled``. ``host=None`` means no proxy, so ``location`` becomes
    ``Disabled``. Unlike current Ray Serve, a non-empty ``middlewares`` list
    (Starlette middleware) and a non-zero ``num_cpus`` are accepted; Ray Serve's
    ``ssl_*`` options are not supported.
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
    keep_alive_timeout_s: int = Field(default=_DEFAULT_KEEP_ALIVE_TIMEOUT_S, ge=0)

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

    @model_validator(mode="after")
    def _no_host_means_no_proxy(self) -> HTTPOptions:
        if self.host is None:
            self.__dict__["location"] = ProxyLocation.Disabled  # skip re-validation
        return self


class HTTPOptionsSchema(BaseModel):
    """The ``http_options`` block of a Serve config file.

    Ray Serve ignores unknown keys here; this schema rejects them (for example the
    unsupported ``ssl_*`` options) rather than silently dropping them.
    """

    model_config = ConfigDict(extra="forbid")

    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=0, le=65535)
    root_path: str = ""
    request_timeout_s: Optional[float] = Field(default=None, gt=0)
    keep_alive_timeout_s: int = Field(default=_DEFAULT_KEEP_ALIVE_TIMEOUT_S, ge=0)

    def to_http_options(self) -> HTTPOptions:
        """The equivalent runtime :class:`HTTPOptions` (other fields at defaults)."""
        return HTTPOptions(**self.model_dump())


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


def _check_queue_limit(value: int) -> int:
    if value < 1 and value != -1:
        raise ValueError("max_queued_requests must be -1 (no limit) or a positive integer")
    return value


def _check_bundles(value: list[dict[str, float]]) -> list[dict[str, float]]:
    if not value:
        raise ValueError("placement_group_bundles must contain at least one bundle")
    for i, bundle in enumerate(value):
        if any(v < 0 for v in bundle.values()):
            raise ValueError(f"bundle {i} has a negative resource: {bundle}")
    return value


def _check_strategy(value: str) -> str:
    if value not in _PLACEMENT_GROUP_STRATEGIES:
        raise ValueError(
            f"placement_group_strategy must be one of {list(_PLACEMENT_GROUP_STRATEGIES)}, "
            f"got {value!r}"
        )
    return value


def _check_json_serializable(value: Any) -> Any:
    if value is not None:
        try:
            json.dumps(value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"user_config is not JSON-serializable: {e}") from None
    return value


_QueueLimit = Annotated[_Int, AfterValidator(_check_queue_limit)]
_Bundles = Annotated[list[dict[str, float]], AfterValidator(_check_bundles)]
_Strategy = Annotated[str, AfterValidator(_check_strategy)]
_ReplicasPerNode = Annotated[_Int, Field(ge=1, le=_MAX_REPLICAS_PER_NODE_MAX_VALUE)]

# Options whose change needs new replicas; any other change is applied in place
# (to running replicas or by the controller).
_RESTART_FIELDS = frozenset({
    "ray_actor_options", "max_replicas_per_node", "placement_group_bundles",
    "placement_group_strategy",
})


class DeploymentConfig(BaseModel):
    """The full, merged options of one deployment as the controller sees them.

    Invariant: ``num_replicas is None`` exactly when ``autoscaling_config`` is set.
    Giving ``autoscaling_config`` without ``num_replicas`` makes ``num_replicas``
    None; giving both is an error. Also guaranteed: ``placement_group_strategy``
    only with ``placement_group_bundles``, and ``max_replicas_per_node`` never with
    them. Validation runs at construction only: treat instances as immutable
    values and build changed ones with :meth:`from_options` or ``model_validate``.

    Beyond Ray Serve's ``DeploymentConfig`` this also holds the replica placement
    options (``ray_actor_options``, ``max_replicas_per_node``, ``placement_group_*``)
    and ``logging_config``.
    """

    model_config = ConfigDict(extra="forbid")

    num_replicas: Optional[_Int] = Field(default=1, ge=0)
    max_ongoing_requests: _Int = Field(default=5, gt=0)
    max_queued_requests: _QueueLimit = -1
    user_config: Annotated[Any, AfterValidator(_check_json_serializable)] = None
    autoscaling_config: Optional[AutoscalingConfig] = None
    graceful_shutdown_wait_loop_s: float = Field(default=2.0, ge=0)
    graceful_shutdown_timeout_s: float = Field(default=20.0, ge=0)
    health_check_period_s: float = Field(default=10.0, gt=0)
    health_check_timeout_s: float = Field(default=30.0, gt=0)
    ray_actor_options: dict[str, Any] = Field(default_factory=dict)
    max_replicas_per_node: Optional[_ReplicasPerNode] = None
    placement_group_bundles: Optional[_Bundles] = None
    placement_group_strategy: Optional[_Strategy] = None
    logging_config: Optional[LoggingConfig] = None

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
                raise ValueError(_NUM_REPLICAS_AND_AUTOSCALING_ERROR)
            self.num_replicas = None
        if self.autoscaling_config is None and self.num_replicas is None:
            raise ValueError("num_replicas may only be None when autoscaling_config is set")
        if self.placement_group_strategy is not None and not self.placement_group_bundles:
            raise ValueError("placement_group_strategy requires placement_group_bundles")
        if self.max_replicas_per_node is not None and self.placement_group_bundles:
            raise ValueError(
                "Setting max_replicas_per_node is not allowed when "
                "placement_group_bundles is provided."
            )
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
        num_replicas = opts.pop("num_replicas", None)
        autoscaling = opts.get("autoscaling_config")
        if num_replicas == "auto":
            if isinstance(autoscaling, AutoscalingConfig):
                autoscaling = autoscaling.model_dump(exclude_unset=True)
            elif autoscaling is not None and not isinstance(autoscaling, dict):
                raise ValueError(
                    "autoscaling_config must be a dict or AutoscalingConfig, "
                    f"got {type(autoscaling).__name__}"
                )
            merged = AutoscalingConfig.default().model_dump(exclude_unset=True)
            opts["autoscaling_config"] = {**merged, **(autoscaling or {})}
        elif num_replicas is not None:
            if isinstance(num_replicas, bool) or not isinstance(num_replicas, int):
                raise ValueError(f'num_replicas must be an int or "auto", got {num_replicas!r}')
            if num_replicas == 0:
                raise ValueError("num_replicas is expected to be larger than 0")
            if autoscaling is not None:
                raise ValueError(_NUM_REPLICAS_AND_AUTOSCALING_ERROR)
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


# DeploymentSchema fields that may be written as null in a config file.
_NULLABLE_OVERRIDES = frozenset(
    {"num_replicas", "user_config", "autoscaling_config", "max_replicas_per_node"}
)


class DeploymentSchema(BaseModel):
    """Per-deployment overrides in a Serve config file.

    Every field except ``name`` is optional: a field not written in the file does
    not override the option set in code. Only ``num_replicas``, ``user_config``,
    ``autoscaling_config`` and ``max_replicas_per_node`` may be null.
    ``num_replicas`` is a positive int or ``"auto"``; an int cannot be combined
    with ``autoscaling_config``. ``autoscaling_config`` is kept as the user's dict
    but validated (over the ``"auto"`` defaults when ``num_replicas: auto``).
    Unlike Ray Serve, unknown keys are rejected.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    num_replicas: Optional[Union[int, Literal["auto"]]] = None
    max_ongoing_requests: Optional[_Int] = Field(default=None, gt=0)
    max_queued_requests: Optional[_QueueLimit] = None
    user_config: Optional[
        Annotated[dict[str, Any], AfterValidator(_check_json_serializable)]
    ] = None
    autoscaling_config: Optional[dict[str, Any]] = None
    graceful_shutdown_wait_loop_s: Optional[float] = Field(default=None, ge=0)
    graceful_shutdown_timeout_s: Optional[float] = Field(default=None, ge=0)
    health_check_period_s: Optional[float] = Field(default=None, gt=0)
    health_check_timeout_s: Optional[float] = Field(default=None, gt=0)
    ray_actor_options: Optional[RayActorOptionsSchema] = None
    placement_group_bundles: Optional[_Bundles] = None
    placement_group_strategy: Optional[_Strategy] = None
    max_replicas_per_node: Optional[_ReplicasPerNode] = None
    logging_config: Optional[LoggingConfig] = None

    @field_validator("*", mode="before")
    @classmethod
    def _null_only_where_allowed(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name not in _NULLABLE_OVERRIDES:
            raise ValueError("may not be null; omit the field to keep the value set in code")
        return value

    @field_validator("num_replicas", mode="before")
    @classmethod
    def _num_replicas(cls, value: Any) -> Any:
        if value is None or value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f'num_replicas must be an int or "auto", got {value!r}')
        if value < 1:
            raise ValueError(f"num_replicas must be at least 1, got {value}")
        return value

    @field_validator("autoscaling_config", mode="before")
    @classmethod
    def _autoscaling(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, AutoscalingConfig):
            value = value.model_dump(exclude_unset=True)
        if not isinstance(value, dict):
            return value  # None, or a wrong type that pydantic reports
        effective = dict(value)
        if info.data.get("num_replicas") == "auto":
            effective = {**AutoscalingConfig.default().model_dump(exclude_unset=True), **value}
        try:
            AutoscalingConfig.model_validate(effective)
        except ValidationError as e:
            raise ValueError(format_validation_error(e).replace("\n", "; ")) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentSchema:
        if isinstance(self.num_replicas, int) and self.autoscaling_config is not None:
            raise ValueError(_NUM_REPLICAS_AND_AUTOSCALING_ERROR)
        if self.max_replicas_per_node is not None and self.placement_group_bundles:
            raise ValueError(
                "Setting max_replicas_per_node is not allowed when "
                "placement_group_bundles is provided."
            )
        return self

    def is_autoscaling_configured(self) -> bool:
        """True if these overrides turn autoscaling on."""
        return self.num_replicas == "auto" or self.autoscaling_config is not None

    def overrides(self) -> dict[str, Any]:
        """The options written in the file, ready to merge over the code's options.

        Holds only the explicitly set fields except ``name``; nested models are
        dumped to dicts of their set fields. So that a plain
        ``{**code_options, **overrides}`` never holds both an int ``num_replicas``
        and an ``autoscaling_config``, two fields are added: an int
        ``num_replicas`` also yields ``autoscaling_config: None``, and an
        ``autoscaling_config`` without ``num_replicas`` yields ``num_replicas: None``.
        """
        result: dict[str, Any] = {}
        for name in sorted(self.model_fields_set - {"name"}):
            value = getattr(self, name)
            if isinstance(value, BaseModel):
                value = value.model_dump(exclude_unset=True)
            result[name] = value
        if isinstance(result.get("num_replicas"), int):
            result["autoscaling_config"] = None
        elif result.get("autoscaling_config") is not None and "num_replicas" not in result:
            result["num_replicas"] = None
        return result


def validate_route_prefix(value: Optional[str]) -> Optional[str]:
    """Return *value* if it is a valid route prefix, else raise ``ValueError``.

    None is valid (no HTTP route). Otherwise the prefix must start with "/", must
    not end with "/" unless it is exactly "/", and must not contain "{" or "}".
    """
    if value is None:
        return value
    if not isinstance(value, str):
        raise ValueError(f"route_prefix must be a string or None, got {value!r}")
    problem = None
    if not value.startswith("/"):
        problem = 'must start with "/"'
    elif len(value) > 1 and value.endswith("/"):
        problem = 'cannot end with "/" unless the entire prefix is just "/"'
    elif "{" in value or "}" in value:
        problem = 'cannot contain wildcards, so it cannot contain "{" or "}"'
    if problem:
        raise ValueError(f'Got "{value}" for route_prefix. Route prefix {problem}.')
    return value


def _validate_import_path(value: str) -> str:
    """Accept ``"module.sub:attr"`` or ``"module.sub.attr"`` (Ray Serve's rules)."""
    sep = ":" if ":" in value else "."
    problem = None
    if value.count(":") > 1:
        problem = "may have at most one colon"
    elif sep == "." and "." not in value:
        problem = (
            "must contain a dot or colon separating the module from the attribute, "
            'e.g. "module.app" or "module:app"'
        )
    elif value.startswith(sep) or value.endswith(sep):
        problem = f"may not start or end with a {'colon' if sep == ':' else 'dot'}"
    if problem:
        raise ValueError(f'Got invalid import path "{value}". An import path {problem}.')
    return value


def _duplicates(values: list[str]) -> list[str]:
    """The values occurring more than once, in first-seen order."""
    return [v for v, n in Counter(values).items() if n > 1]


class ServeApplicationSchema(BaseModel):
    """One application in a Serve config file (or a whole single-app file).

    ``host``/``port`` are deprecated single-app fields, rejected inside a
    multi-app file (see :class:`ServeDeploySchema`). Deployment names are unique.
    With ``external_scaler_enabled`` no deployment may configure autoscaling.
    Unlike Ray Serve, unknown keys are rejected, ``runtime_env`` URIs are not
    required to be remote, and ``autoscaling_policy`` is not supported.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="default", min_length=1)
    route_prefix: Optional[str] = "/"
    import_path: str
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=0, le=65535)
    deployments: list[DeploymentSchema] = Field(default_factory=list)
    args: dict[str, Any] = Field(default_factory=dict)
    logging_config: Optional[LoggingConfig] = None
    external_scaler_enabled: bool = False

    @field_validator("route_prefix")
    @classmethod
    def _route_prefix(cls, value: Optional[str]) -> Optional[str]:
        return validate_route_prefix(value)

    @field_validator("import_path")
    @classmethod
    def _import_path(cls, value: str) -> str:
        return _validate_import_path(value)

    @field_validator("deployments")
    @classmethod
    def _unique_deployments(cls, value: list[DeploymentSchema]) -> list[DeploymentSchema]:
        dups = _duplicates([d.name for d in value])
        if dups:
            raise ValueError(
                f"Found multiple configs for deployment(s) {dups}. Each deployment "
                "name may appear only once."
            )
        return value

    @model_validator(mode="after")
    def _external_scaler(self) -> ServeApplicationSchema:
        autoscaled = [d.name for d in self.deployments if d.is_autoscaling_configured()]
        if self.external_scaler_enabled and autoscaled:
            raise ValueError(
                f"external_scaler_enabled is True, but deployment(s) {autoscaled} "
                "configure autoscaling; Serve's autoscaling must be off for all of them."
            )
        return self

    @property
    def deployment_names(self) -> list[str]:
        """Names of the deployments this config overrides, in file order."""
        return [d.name for d in self.deployments]


class ServeDeploySchema(BaseModel):
    """A whole multi-application Serve config file.

    Application names are unique and non-empty, non-null route prefixes are
    unique, and applications may not set ``host``/``port`` (use ``http_options``).
    ``grpc_options`` is kept as a plain dict. Unlike Ray Serve, unknown keys (e.g.
    ``tracing_config``, ``controller_options``) are rejected.
    """

    model_config = ConfigDict(extra="forbid")

    proxy_location: ProxyLocation = ProxyLocation.EveryNode
    http_options: HTTPOptionsSchema = Field(default_factory=HTTPOptionsSchema)
    grpc_options: Optional[dict[str, Any]] = None
    logging_config: Optional[LoggingConfig] = None
    applications: list[ServeApplicationSchema]
    target_capacity: Optional[float] = Field(default=None, ge=0, le=100)

    @field_validator("applications")
    @classmethod
    def _unique_apps(cls, value: list[ServeApplicationSchema]) -> list[ServeApplicationSchema]:
        dup_names = _duplicates([a.name for a in value])
        if dup_names:
            raise ValueError(
                f"Found multiple configs for application(s) {dup_names}. "
                "Please remove all duplicates."
            )
        dup_routes = _duplicates([a.route_prefix for a in value if a.route_prefix is not None])
        if dup_routes:
            raise ValueError(
                f"Found duplicate applications for route prefix(es) {dup_routes}. "
                "Please ensure each application's route_prefix is unique."
            )
        for app in value:
            for key in sorted({"host", "port"} & app.model_fields_set):
                raise ValueError(
                    f"{key} is set in the config for application '{app.name}'. Remove "
                    "it and set it in the top-level http_options instead."
                )
        return value


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


def load_config_file(path: str) -> ServeDeploySchema:
    """Read and validate a Serve YAML config file.

    Accepts a multi-application file (``applications: [...]``) or a
    single-application file (an application mapping with ``import_path`` at the
    top level; its ``host``/``port`` move to ``http_options``). Raises
    :class:`ConfigError` naming *path* if the file cannot be read, is not YAML,
    is not a mapping at the top level, or fails validation (one error per line).
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"Could not read config file {path!r}: {e}", path) from e
    except yaml.YAMLError as e:
        raise ConfigError(f"Config file {path!r} is not valid YAML: {e}", path) from e
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else f"a {type(raw).__name__}"
        raise ConfigError(
            f"Config file {path!r} must hold a mapping at the top level, but it is {kind}.",
            path,
        )
    if "import_path" in raw and "applications" not in raw:
        app = dict(raw)
        http_options = {k: app.pop(k) for k in ("host", "port") if k in app}
        raw = {"applications": [app], **({"http_options": http_options} if http_options else {})}
    try:
        return ServeDeploySchema.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(
            f"Invalid config file {path!r}:\n{format_validation_error(e)}", path
        ) from e
