"""`@serve.deployment`, `Deployment` and `Application` (bound graphs).

Nothing here talks to Ray: a Deployment is a description, an Application a
description with constructor arguments bound, possibly nesting other
Applications. `_private/build.py` turns one into what the controller deploys.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional, Tuple, Union

from ray_serving_ext.config import NON_CONFIG_OPTIONS, DeploymentConfig, deployment_option_names

# The options `@serve.deployment` and `Deployment.options()` accept.
DEPLOYMENT_OPTIONS = deployment_option_names()

# Options that only affect Serve bookkeeping, not DeploymentConfig.
_NOT_CONFIG = frozenset(NON_CONFIG_OPTIONS)


def _check_options(options: Dict[str, Any]) -> Dict[str, Any]:
    if "max_concurrent_queries" in options:  # pre-2.10 name of max_ongoing_requests
        options = dict(options)
        options.setdefault("max_ongoing_requests", options.pop("max_concurrent_queries"))
    unknown = set(options) - set(DEPLOYMENT_OPTIONS)
    if unknown:
        raise TypeError(
            f"Unknown deployment option(s): {sorted(unknown)}. Valid options: {list(DEPLOYMENT_OPTIONS)}"
        )
    if "name" in options and (not isinstance(options["name"], str) or not options["name"]):
        raise TypeError("Deployment name must be a non-empty string.")
    # Validate now so mistakes surface at decoration time, not at deploy time.
    DeploymentConfig.from_options({k: v for k, v in options.items() if k not in _NOT_CONFIG})
    return options


class Deployment:
    """A class or function to be served, with its deployment options.

    Create one with `@serve.deployment`; change options with `.options()`;
    bind constructor arguments with `.bind()` to get an `Application`.
    """

    def __init__(self, func_or_class: Union[Callable, type], options: Optional[Dict[str, Any]] = None) -> None:
        if not (inspect.isfunction(func_or_class) or inspect.isclass(func_or_class) or callable(func_or_class)):
            raise TypeError("@serve.deployment must decorate a function or a class.")
        self._func_or_class = func_or_class
        self._options: Dict[str, Any] = _check_options(dict(options or {}))

    # Read-only views of the options, as Ray Serve's Deployment offers.
    @property
    def name(self) -> str:
        return self._options.get("name") or getattr(self._func_or_class, "__name__", "Deployment")

    @property
    def func_or_class(self) -> Union[Callable, type]:
        return self._func_or_class

    @property
    def config(self) -> DeploymentConfig:
        return DeploymentConfig.from_options({k: v for k, v in self._options.items() if k not in _NOT_CONFIG})

    @property
    def num_replicas(self) -> Optional[int]:
        return self.config.num_replicas

    @property
    def user_config(self) -> Any:
        return self.config.user_config

    @property
    def max_ongoing_requests(self) -> int:
        return self.config.max_ongoing_requests

    @property
    def max_queued_requests(self) -> int:
        return self.config.max_queued_requests

    @property
    def ray_actor_options(self) -> Dict[str, Any]:
        return dict(self.config.ray_actor_options)

    @property
    def route_prefix(self) -> Optional[str]:
        return self._options.get("route_prefix")

    @property
    def explicit_options(self) -> Dict[str, Any]:
        """The options set by the user (decorator or `.options()`), nothing defaulted."""
        return dict(self._options)

    def options(self, **kwargs: Any) -> "Deployment":
        """A copy of this deployment with the given options changed."""
        merged = dict(self._options)
        merged.update(kwargs)
        return Deployment(self._func_or_class, merged)

    def bind(self, *args: Any, **kwargs: Any) -> "Application":
        """Bind constructor (or, for functions, nothing) arguments; returns an Application."""
        if inspect.isfunction(self._func_or_class) and (args or kwargs):
            raise ValueError("Function deployments take no bind() arguments.")
        return Application(self, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            "Deployments cannot be constructed directly. Use `deployment.bind()` and `serve.run()`."
        )

    def __repr__(self) -> str:
        return f"Deployment(name={self.name})"


class Application:
    """A deployment with bound arguments: the unit `serve.run` deploys.

    Applications nested in the arguments become deployments of the same
    application; the replica receives a `DeploymentHandle` in their place.
    """

    def __init__(self, deployment: Deployment, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
        self._deployment = deployment
        self._args = tuple(args)
        self._kwargs = dict(kwargs)

    @property
    def deployment(self) -> Deployment:
        return self._deployment

    @property
    def args(self) -> Tuple[Any, ...]:
        return self._args

    @property
    def kwargs(self) -> Dict[str, Any]:
        return dict(self._kwargs)

    def __repr__(self) -> str:
        return f"Application(deployment={self._deployment.name})"


def deployment(
    _func_or_class: Optional[Union[Callable, type]] = None,
    **options: Any,
) -> Union[Deployment, Callable[[Union[Callable, type]], Deployment]]:
    """Turn a function or class into a `Deployment`.

    Works bare (`@serve.deployment`) or with options
    (`@serve.deployment(num_replicas=2, ray_actor_options={"num_gpus": 0.5})`).
    Options are validated here; defaults are Ray Serve's (max_ongoing_requests=5,
    max_queued_requests=-1, health checks every 10 s with a 30 s timeout, ...).
    """
    if _func_or_class is not None:
        return Deployment(_func_or_class, options)

    def decorator(func_or_class: Union[Callable, type]) -> Deployment:
        return Deployment(func_or_class, options)

    _check_options(options)
    return decorator
