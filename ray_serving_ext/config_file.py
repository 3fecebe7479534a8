"""The Serve config file (YAML) schema: Ray Serve's `ServeDeploySchema` and its parts.

`load_config_file` reads and validates a file; `format_validation_error`
turns pydantic errors into one `field.path: reason` line each, for the CLI.
The option objects these schemas build on live in `config.py`. Pure pydantic
and stdlib (PyYAML imported lazily), no Ray.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo,
    create_model, field_validator, model_validator,
)
from pydantic.fields import FieldInfo

from ray_serving_ext._private.config_types import (
    DEFAULT_KEEP_ALIVE_TIMEOUT_S, NUM_REPLICAS_AND_AUTOSCALING_ERROR, check_json_serializable,
    DirectIngressOption, ProxyAuthOptions, ProxyLimitOptions, SSLOptions, check_num_replicas, check_replicas_per_node, parse_import_path,
    route_prefix_clashes,
)
from ray_serving_ext._private.scheduling_config import check_scheduling_options
from ray_serving_ext.config import (
    DEFAULT_GRPC_PORT, AutoscalingConfig, AutoscalingPolicy, ControllerOptions, DeploymentConfig, HTTPOptions, LoggingConfig, ProxyLocation,
    RayActorOptionsSchema, TracingConfig,
    format_validation_error,
)

__all__ = [
    "ConfigError", "DeploymentSchema", "HTTPOptionsSchema", "gRPCOptionsSchema", "ServeApplicationSchema", "ServeDeploySchema",
    "load_config_file", "validate_route_prefix",
]


class ConfigError(ValueError):
    """A Serve config file could not be read or is invalid.

    ``str(err)`` names the file and, for schema errors, lists one problem per line
    (see :func:`format_validation_error`). ``err.path`` is the file's path.
    """

    def __init__(self, message: str, path: Optional[str] = None) -> None:
        super().__init__(message)
        self.path = path


class gRPCOptionsSchema(BaseModel):
    """The ``grpc_options`` block of a Serve config file (Ray Serve 2.60's fields and defaults).

    Validated and kept; no gRPC proxy is run (see :class:`~ray_serving_ext.config.gRPCOptions`).
    Unknown keys are rejected.
    """

    model_config = ConfigDict(extra="forbid")

    port: int = Field(default=DEFAULT_GRPC_PORT, ge=0, le=65535)
    grpc_servicer_functions: list[str] = Field(default_factory=list)
    request_timeout_s: Optional[float] = None
    enable_reflection: bool = True


class HTTPOptionsSchema(SSLOptions, ProxyAuthOptions, ProxyLimitOptions, DirectIngressOption):
    """The ``http_options`` block of a Serve config file.

    Ray Serve ignores unknown keys here; this schema rejects them rather than
    silently dropping them. The ``ssl_*`` fields are :class:`HTTPOptions`'s
    (``ssl_keyfile`` and ``ssl_certfile`` together or not at all).
    """

    model_config = ConfigDict(extra="forbid")

    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=0, le=65535)
    root_path: str = ""
    request_timeout_s: Optional[float] = Field(default=None, gt=0)
    keep_alive_timeout_s: int = Field(default=DEFAULT_KEEP_ALIVE_TIMEOUT_S, ge=0)
    def to_http_options(self) -> HTTPOptions:
        """The equivalent runtime :class:`HTTPOptions` (other fields at defaults)."""
        return HTTPOptions(**self.model_dump())


_NULLABLE_OVERRIDES = frozenset(
    {"num_replicas", "user_config", "autoscaling_config", "max_replicas_per_node",
     # Null turns the option off for this deployment (Ray Serve types them Optional).
     "gang_scheduling_config", "deployment_actors", "placement_group_bundle_label_selector"}
)


class _DeploymentOverrides(BaseModel):
    """Behaviour of :class:`DeploymentSchema`; its fields are added by `_file_fields`."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _null_only_where_allowed(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name not in _NULLABLE_OVERRIDES:
            raise ValueError("may not be null; omit the field to keep the value set in code")
        return value

    @field_validator("autoscaling_config", mode="before", check_fields=False)
    @classmethod
    def _autoscaling(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, AutoscalingConfig):
            value = value.model_dump(exclude_unset=True)
        if not isinstance(value, dict):
            return value  # None, or a wrong type that pydantic reports
        auto = info.data.get("num_replicas") == "auto"
        try:
            AutoscalingConfig.model_validate(AutoscalingConfig.for_auto(value) if auto else value)
        except ValidationError as e:
            raise ValueError(format_validation_error(e).replace("\n", "; ")) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "_DeploymentOverrides":
        if isinstance(self.num_replicas, int) and self.autoscaling_config is not None:
            raise ValueError(NUM_REPLICAS_AND_AUTOSCALING_ERROR)
        check_replicas_per_node(self.max_replicas_per_node, self.placement_group_bundles)
        check_scheduling_options({name: getattr(self, name) for name in self.model_fields_set})
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


# Where the file's type differs from DeploymentConfig's: num_replicas may be
# "auto"; autoscaling_config stays the user's dict (validated by _autoscaling);
# user_config must be a mapping; ray_actor_options reports errors by nested path.
_FILE_TYPES: dict[str, Any] = {
    "num_replicas": Annotated[Union[int, Literal["auto"]], BeforeValidator(check_num_replicas)],
    "autoscaling_config": dict[str, Any],
    "user_config": Annotated[dict[str, Any], AfterValidator(check_json_serializable)],
    "ray_actor_options": RayActorOptionsSchema,
}


def _optional(name: str, info: FieldInfo) -> tuple[Any, Any]:
    """The file field for model field *name*: its type and constraints (or the
    file's own type), made optional with default None."""
    if name in _FILE_TYPES:
        return Optional[_FILE_TYPES[name]], None
    annotated = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return Optional[annotated], None


def _file_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {"name": (str, Field(min_length=1))}
    for name, info in DeploymentConfig.model_fields.items():
        fields[name] = _optional(name, info)
    return fields


DeploymentSchema = create_model(  # noqa: N816 - a class, built from the model's fields
    "DeploymentSchema", __base__=_DeploymentOverrides, __module__=__name__, **_file_fields()
)
DeploymentSchema.__doc__ = """Per-deployment overrides in a Serve config file.

    Its fields are :class:`DeploymentConfig`'s, each optional (a field not written
    in the file does not override the option set in code), plus the required
    ``name``. Only ``num_replicas``, ``user_config``, ``autoscaling_config``,
    ``max_replicas_per_node`` and the scheduling options ``gang_scheduling_config``,
    ``deployment_actors`` and ``placement_group_bundle_label_selector`` may be null
    (null turns the option off). ``num_replicas`` is a positive int or
    ``"auto"``; an int cannot be combined with ``autoscaling_config``.
    ``autoscaling_config`` is kept as the user's dict but validated (over the
    ``"auto"`` defaults when ``num_replicas: auto``). Unlike Ray Serve, unknown
    keys are rejected.
    """


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


def _duplicates(values: list[str]) -> list[str]:
    """The values occurring more than once, in first-seen order."""
    return [v for v, n in Counter(values).items() if n > 1]


class ServeApplicationSchema(BaseModel):
    """One application in a Serve config file (or a whole single-app file).

    ``host``/``port`` are deprecated single-app fields, rejected inside a
    multi-app file (see :class:`ServeDeploySchema`). Deployment names are unique.
    With ``external_scaler_enabled`` no deployment may configure autoscaling.
    ``autoscaling_policy`` is an application-level policy (an AutoscalingPolicy
    or its dict): it decides for every deployment of the app that configures
    autoscaling, seeing all of their contexts at once. Unlike Ray Serve, unknown
    keys are rejected and ``runtime_env`` URIs are not required to be remote.
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
    autoscaling_policy: Optional[dict[str, Any]] = None

    @field_validator("autoscaling_policy", mode="before")
    @classmethod
    def _app_policy(cls, value: Any) -> Any:
        if value is None:
            return None
        policy = value if isinstance(value, AutoscalingPolicy) else AutoscalingPolicy.model_validate(value)
        if policy.is_default_policy_function():
            raise ValueError("autoscaling_policy of an application must name a policy_function.")
        return policy.model_dump(mode="json")

    @field_validator("route_prefix")
    @classmethod
    def _route_prefix(cls, value: Optional[str]) -> Optional[str]:
        return validate_route_prefix(value)

    @field_validator("import_path")
    @classmethod
    def _import_path(cls, value: str) -> str:
        parse_import_path(value)
        return value

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
    ``grpc_options`` is validated and kept (no gRPC proxy runs). ``controller_options`` is validated as
    ``ControllerOptions``, ``tracing_config`` as ``TracingConfig`` (it starts a new
    instance with that tracing, and replicas started afterwards use it). Unlike
    Ray Serve, unknown keys are rejected.
    """

    model_config = ConfigDict(extra="forbid")

    proxy_location: ProxyLocation = ProxyLocation.EveryNode
    http_options: HTTPOptionsSchema = Field(default_factory=HTTPOptionsSchema)
    grpc_options: Optional[gRPCOptionsSchema] = None
    logging_config: Optional[LoggingConfig] = None
    applications: list[ServeApplicationSchema]
    target_capacity: Optional[float] = Field(default=None, ge=0, le=100)
    controller_options: Optional[ControllerOptions] = None
    tracing_config: Optional[TracingConfig] = None

    @field_validator("applications")
    @classmethod
    def _unique_apps(cls, value: list[ServeApplicationSchema]) -> list[ServeApplicationSchema]:
        dup_names = _duplicates([a.name for a in value])
        if dup_names:
            raise ValueError(
                f"Found multiple configs for application(s) {dup_names}. "
                "Please remove all duplicates."
            )
        clashes = route_prefix_clashes((a.name, a.route_prefix) for a in value)
        dup_routes = list(dict.fromkeys(prefix for prefix, _, _ in clashes))
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
