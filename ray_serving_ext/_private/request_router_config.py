"""`RequestRouterConfig`: which request router a deployment's callers use, and its settings.

Re-exported as `ray_serving_ext.config.RequestRouterConfig`. Pure pydantic
and stdlib, like the other option schemas.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PrivateAttr,
    field_serializer,
    field_validator,
    model_validator,
)

from ray_serving_ext._private.config_types import json_serializable, parse_import_path
from ray_serving_ext._private.constants import (
    DEFAULT_REQUEST_ROUTING_STATS_PERIOD_S,
    DEFAULT_REQUEST_ROUTING_STATS_TIMEOUT_S,
    ROUTER_RETRY_BACKOFF_MULTIPLIER,
    ROUTER_RETRY_INITIAL_BACKOFF_S,
    ROUTER_RETRY_MAX_BACKOFF_S,
)
from ray_serving_ext._private.request_router import PowerOfTwoChoicesRequestRouter
from ray_serving_ext._private.request_router.request_router import RequestRouter

DEFAULT_REQUEST_ROUTER_PATH = "ray_serving_ext._private.request_router:PowerOfTwoChoicesRequestRouter"
# Other names of the default router: where the class is defined, and Ray Serve's names.
_DEFAULT_ROUTER_ALIASES = frozenset({
    "ray_serving_ext._private.request_router.pow_2_router:PowerOfTwoChoicesRequestRouter",
    "ray.serve._private.request_router:PowerOfTwoChoicesRequestRouter",
    "ray.serve._private.request_router.pow_2_router:PowerOfTwoChoicesRequestRouter",
    "ray.serve._private.request_router.pow_2_router.PowerOfTwoChoicesRequestRouter",
})
# The key under which a dumped config carries the router class pickled by value.
SERIALIZED_CLASS_KEY = "_serialized_request_router_cls"


def class_import_path(cls: Any) -> str:
    """``module:QualName`` of a class."""
    return f"{cls.__module__}:{cls.__qualname__}"


class RequestRouterConfig(BaseModel):
    """How a deployment's callers choose replicas (Ray Serve 2.60's fields and defaults).

    ``request_router_class`` is a :class:`~ray_serving_ext.request_router.RequestRouter`
    subclass or its import path (``"pkg.mod:Router"`` or ``"pkg.mod.Router"``);
    the default is Serve's power-of-two-choices router, which callers run inline
    (no routing tasks). ``request_router_kwargs`` (JSON-serializable) are passed
    to the router's ``initialize_state``. A replica calls its deployment's
    ``record_routing_stats()`` every ``request_routing_stats_period_s`` (bounded by
    ``request_routing_stats_timeout_s``); routers see the result as
    ``RunningReplica.routing_stats``. While no replica a custom router chose has
    room, it chooses again after ``initial_backoff_s``, multiplied by
    ``backoff_multiplier`` per attempt up to ``max_backoff_s``.

    Unlike Ray Serve, a class must subclass ``RequestRouter``, unknown fields are
    rejected, and a class is kept as given until the application is built
    (then pickled by value, so proxies need not import its module).
    Equality compares the public fields.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    _serialized_request_router_cls: bytes = PrivateAttr(default=b"")

    request_router_class: str | Any = Field(default=DEFAULT_REQUEST_ROUTER_PATH)
    request_router_kwargs: dict[str, Any] = Field(default_factory=dict)
    request_routing_stats_period_s: PositiveFloat = DEFAULT_REQUEST_ROUTING_STATS_PERIOD_S
    request_routing_stats_timeout_s: PositiveFloat = DEFAULT_REQUEST_ROUTING_STATS_TIMEOUT_S
    initial_backoff_s: PositiveFloat = ROUTER_RETRY_INITIAL_BACKOFF_S
    backoff_multiplier: PositiveFloat = ROUTER_RETRY_BACKOFF_MULTIPLIER
    max_backoff_s: PositiveFloat = ROUTER_RETRY_MAX_BACKOFF_S

    @model_validator(mode="wrap")
    @classmethod
    def _keep_serialized_class(cls, data: Any, handler: Any) -> RequestRouterConfig:
        blob = b""
        if isinstance(data, dict) and SERIALIZED_CLASS_KEY in data:
            data = dict(data)
            blob = data.pop(SERIALIZED_CLASS_KEY) or b""
        config = handler(data)
        if blob:
            config._serialized_request_router_cls = blob
        return config

    @field_validator("request_router_class")
    @classmethod
    def _class_or_path(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v in _DEFAULT_ROUTER_ALIASES:
                return DEFAULT_REQUEST_ROUTER_PATH
            parse_import_path(v)  # raises ValueError naming what is wrong
            return v
        if not inspect.isclass(v) or not issubclass(v, RequestRouter):
            raise ValueError(
                "request_router_class must be a RequestRouter subclass or its import path, "
                f"got {v!r}"
            )
        if v is PowerOfTwoChoicesRequestRouter:
            return DEFAULT_REQUEST_ROUTER_PATH
        return v

    _kwargs_json = field_validator("request_router_kwargs")(json_serializable("request_router_kwargs"))

    @field_serializer("request_router_class", when_used="json")
    def _path_in_json(self, v: Any) -> str:
        return v if isinstance(v, str) else class_import_path(v)

    def is_default_request_router(self) -> bool:
        """Whether this is Serve's built-in power-of-two-choices router."""
        return self.request_router_class == DEFAULT_REQUEST_ROUTER_PATH

    def get_serialized_request_router_cls(self) -> bytes | None:
        """The router class pickled by value when the application was built (else None)."""
        return self._serialized_request_router_cls or None

    def get_request_router_class(self) -> type:
        """The router class: unpickled if it was built, else the class given or imported
        from its path. Raises ImportError if it cannot be loaded."""
        if self._serialized_request_router_cls:
            return pickle.loads(self._serialized_request_router_cls)
        value = self.request_router_class
        if not isinstance(value, str):
            return value
        module, attr = parse_import_path(value)
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RequestRouterConfig):
            return False
        return all(getattr(self, name) == getattr(other, name) for name in type(self).model_fields)

    __hash__ = None  # type: ignore[assignment]
