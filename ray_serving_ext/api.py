"""The public API: start, run, run_many, delete, shutdown, status, handles, ingress.

Thin by design: each call validates its input, then asks the controller
through `_private/client.py`. The same names, arguments and defaults as
`ray.serve`.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import ray

from ray_serving_ext._private.build import build_app
from ray_serving_ext._private.client import ServeControllerClient, create_controller
from ray_serving_ext._private.cluster import find_controller, get_serve_actor, stale_bootstrap_address
from ray_serving_ext._private.common import DeploymentID, deployment_actor_name
from ray_serving_ext._private.constants import DEFAULT_APP_NAME, SERVE_NAMESPACE, deployment_actor_context_env
from ray_serving_ext._private.router import get_router_registry
from ray_serving_ext.config import (
    ControllerOptions, HTTPOptions, LoggingConfig, ProxyLocation, TracingConfig, gRPCOptions,
)
from ray_serving_ext.config_file import validate_route_prefix
from ray_serving_ext.context import DeploymentActorContext, _get_replica_context_or_none
from ray_serving_ext.deployment import Application
from ray_serving_ext.exceptions import RayServeException
from ray_serving_ext.handle import DeploymentHandle
from ray_serving_ext.schema import ProxyStatus, ServeStatus

logger = logging.getLogger("ray_serving_ext")

_client: Optional[ServeControllerClient] = None
_client_lock = threading.RLock()


class _DefaultRoutePrefix:
    def __repr__(self) -> str:
        return "DEFAULT"


_DEFAULT: Any = _DefaultRoutePrefix()


def _ensure_ray() -> None:
    """Join the cluster Ray would join, or start a local one (the embedded default); a local
    one too when Ray's last `ray start` address no longer answers."""
    if ray.is_initialized():
        return
    stale = stale_bootstrap_address()
    if stale:
        logger.warning("Ray's last cluster address %s (its ray_current_cluster file) does not answer: its head "
                       "was stopped without cleaning up. Starting a local Ray instead.", stale)
    ray.init(address="local" if stale else None, namespace=SERVE_NAMESPACE)


def _http_options_model(http_options: Union[None, Dict[str, Any], HTTPOptions]) -> HTTPOptions:
    """`http_options` as the validated model the controller and proxies use as is
    (its `middlewares` too: every proxy applies them, so their classes must pickle)."""
    if http_options is None:
        options = HTTPOptions()
    elif isinstance(http_options, HTTPOptions):
        options = http_options
    elif isinstance(http_options, dict):
        options = HTTPOptions(**http_options)
    else:
        raise TypeError(f"http_options must be a dict or HTTPOptions, got {type(http_options).__name__}.")
    return options


def _proxy_location(proxy_location: Any, http: HTTPOptions) -> str:
    """The explicit `proxy_location`, else the (deprecated, already normalised)
    `http_options.location`, else EveryNode."""
    if proxy_location is None:
        return (http.location or ProxyLocation.EveryNode).value
    return ProxyLocation(getattr(proxy_location, "value", proxy_location)).value


def _connected_client() -> Optional[ServeControllerClient]:
    """The client of this process, reconnecting to a running instance when there is one."""
    global _client
    with _client_lock:
        if _client is not None:
            if find_controller() is not None:
                return _client
            _client = None
        if not ray.is_initialized():
            return None
        controller = find_controller()
        if controller is None:
            return None
        _client = ServeControllerClient(controller)
        return _client


def _get_client() -> ServeControllerClient:
    _ensure_ray()
    client = _connected_client()
    if client is None:
        raise RayServeException("There is no Serve instance running on this Ray cluster. Call serve.start() first.")
    return client


def start(
    proxy_location: Union[None, str, ProxyLocation] = None,
    http_options: Union[None, Dict[str, Any], HTTPOptions] = None,
    grpc_options: Union[None, Dict[str, Any], gRPCOptions] = None,
    logging_config: Any = None,
    detached: bool = False,
    checkpoint_path: Optional[str] = None,
    controller_options: Union[None, Dict[str, Any], ControllerOptions] = None,
    tracing_config: Union[None, Dict[str, Any], TracingConfig] = None,
    **kwargs: Any,
) -> None:
    """Start Serve on the Ray cluster, or connect to the instance already running.

    With `detached=True` the instance outlives this driver; otherwise it goes
    away when the driver that started it exits. Starts a local Ray when none
    is connected. Proxies listen on `http_options` (default 127.0.0.1:8000).
    With `checkpoint_path` (file://, s3://, gs:// or custom://module.Class/path)
    the goal state is saved there on every change, and an instance started on
    a new cluster with the same path restores every application from it.
    `controller_options` (a `ControllerOptions` or its dict) apply only when
    this call creates the controller, as in Ray Serve. `tracing_config` (a
    `TracingConfig` or its dict) turns on OpenTelemetry spans in every proxy and
    replica of the new instance; ImportError if OpenTelemetry is not installed.
    """
    global _client
    ctrl_options = _controller_options_model(controller_options)
    tracing_model = _tracing_config_model(tracing_config)
    _check_grpc_options(grpc_options)
    _ensure_ray()
    kwargs.pop("_checkpoint", None)
    if kwargs:
        raise TypeError(f"Unexpected arguments to serve.start: {sorted(kwargs)}")
    with _client_lock:
        existing = _connected_client()
        if existing is not None:
            logger.info("Connecting to the existing Serve instance in namespace '%s'.", SERVE_NAMESPACE)
            if checkpoint_path or http_options is not None or controller_options is not None \
                    or tracing_model is not None:
                logger.warning(
                    "Serve is already running; the http_options/checkpoint_path/controller_options/tracing_config "
                    "given to serve.start() "
                    "are ignored. Shut it down first to change them."
                )
            return
        http = _http_options_model(http_options)
        location = _proxy_location(proxy_location, http)
        checkpoint = None
        if checkpoint_path:
            from ray_serving_ext._private.checkpoint import make_checkpoint_manager, preflight_checkpoint

            checkpoint = make_checkpoint_manager(checkpoint_path)
            preflight_checkpoint(checkpoint)  # a corrupt checkpoint fails here, before anything starts
        handle = create_controller(
            http, location, detached, checkpoint, _logging_config_dict(logging_config), ctrl_options.runtime_env,
            tracing_model,
        )
        _client = ServeControllerClient(handle)
        if location != "Disabled":
            _wait_for_proxies(_client, timeout_s=60)


def _controller_options_model(options: Union[None, Dict[str, Any], ControllerOptions]) -> ControllerOptions:
    """`controller_options` validated (a dict goes through `ControllerOptions`)."""
    if options is None:
        return ControllerOptions()
    if isinstance(options, ControllerOptions):
        return options
    if isinstance(options, dict):
        return ControllerOptions(**options)
    raise TypeError(f"controller_options must be a dict or ControllerOptions, got {type(options).__name__}.")


def _tracing_config_model(config: Union[None, Dict[str, Any], TracingConfig]) -> Optional[TracingConfig]:
    """`tracing_config` validated; ImportError now, rather than in every proxy and
    replica, when it enables tracing and OpenTelemetry is missing."""
    if config is None:
        return None
    if isinstance(config, dict):
        config = TracingConfig(**config)
    elif not isinstance(config, TracingConfig):
        raise TypeError(f"tracing_config must be a dict or TracingConfig, got {type(config).__name__}.")
    if config.enabled:
        from ray_serving_ext._private.tracing import require_opentelemetry

        require_opentelemetry()
    return config


def _logging_config_dict(logging_config: Any) -> Optional[Dict[str, Any]]:
    if logging_config is None:
        return None
    from ray_serving_ext.config import LoggingConfig

    if isinstance(logging_config, dict):
        logging_config = LoggingConfig(**logging_config)
    return logging_config.model_dump()


def _wait_for_proxies(client: ServeControllerClient, timeout_s: float) -> None:
    """Return once every proxy has started (or failed to: status() then says so, and a
    warning is logged here with the reason, e.g. a port in use), bounded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get_serve_status()
        proxies = status.proxies
        if proxies and all(s in (ProxyStatus.HEALTHY, ProxyStatus.UNHEALTHY) for s in proxies.values()):
            for node_id, state in proxies.items():
                if state == ProxyStatus.UNHEALTHY:
                    logger.warning("The HTTP proxy on node %s is not serving: %s. `serve.status()` shows it "
                                   "UNHEALTHY until it is.", node_id,
                                   status.proxy_messages.get(node_id, "see its log under logs/serve/"))
            return
        time.sleep(0.05)


def run(
    target: Application,
    blocking: bool = False,
    name: str = DEFAULT_APP_NAME,
    route_prefix: Optional[str] = _DEFAULT,
    logging_config: Any = None,
    _local_testing_mode: bool = False,
    external_scaler_enabled: bool = False,
    controller_options: Union[None, Dict[str, Any], ControllerOptions] = None,
    **kwargs: Any,
) -> DeploymentHandle:
    """Deploy an application and return a handle to its ingress once it is RUNNING.

    Redeploying under the same name updates it: option-only changes in place,
    code or argument changes by a rolling update. Raises RuntimeError with the
    reason if the application fails to deploy. `controller_options` apply only
    if this call starts Serve. With `external_scaler_enabled=True` Serve's
    autoscaler stays off for the app (ValueError if a deployment configures
    it) and an external scaler sets replica counts (`update_deployment_replicas`).
    """
    if not isinstance(name, str) or not name:
        raise ValueError("Application name must be a non-empty string.")
    if route_prefix is _DEFAULT:
        route_prefix = getattr(target, "deployment", None) and target.deployment.route_prefix or "/"
    validate_route_prefix(route_prefix)
    client = _client_for_run(controller_options)
    built = build_app(
        target, name, route_prefix, runtime_env=_job_runtime_env(), logging_config=_logging_config_dict(logging_config),
        external_scaler_enabled=external_scaler_enabled,
    )
    client.deploy_application(built, None)
    client.wait_for_application_running(name)
    handle = DeploymentHandle(built.ingress, name)
    if blocking:
        _print_deployed(client, [(name, route_prefix)])
        _block_until_interrupted()
    return handle


def _print_deployed(client: ServeControllerClient, apps: List[Any]) -> None:
    """One line per `(name, route_prefix)` deployed, with its URL when it has a route."""
    http = client.get_http_config()
    scheme = "https" if http.get("ssl_keyfile") and http.get("ssl_certfile") else "http"
    for name, route_prefix in apps:
        where = ""
        if route_prefix is not None:
            where = f" at {scheme}://{http.get('host') or '127.0.0.1'}:{http.get('port')}{route_prefix}"
        print(f"Deployed app '{name}' successfully{where}. Press Ctrl-C to stop.", flush=True)


def _check_grpc_options(grpc_options: Union[None, Dict[str, Any], gRPCOptions]) -> None:
    """Validate Ray Serve's gRPC options; say so when they ask for a gRPC server, which is not run here."""
    if grpc_options is None:
        return
    options = grpc_options if isinstance(grpc_options, gRPCOptions) else gRPCOptions.model_validate(grpc_options)
    if options.grpc_servicer_functions:
        logger.warning(
            "grpc_options.grpc_servicer_functions is set, but ray_serving_ext has no gRPC proxy: no gRPC "
            "server is started on port %d. Serve the model over HTTP, or call it through a DeploymentHandle.",
            options.port,
        )


def _client_for_run(controller_options: Union[None, Dict[str, Any], ControllerOptions]) -> ServeControllerClient:
    """The connected client, starting Serve (with `controller_options`) when none runs."""
    _controller_options_model(controller_options)  # invalid options fail even when Serve runs
    _ensure_ray()
    if _connected_client() is None:
        start(controller_options=controller_options)
    elif controller_options is not None:
        logger.warning("Serve is already running; the controller_options given are ignored.")
    return _get_client()


@dataclass
class RunTarget:
    """One application for `serve.run_many`: the same fields and defaults as Ray Serve 2.60's."""

    target: Application
    name: str = DEFAULT_APP_NAME
    route_prefix: Optional[str] = "/"
    logging_config: Optional[Union[Dict[str, Any], LoggingConfig]] = None
    external_scaler_enabled: bool = False


def _check_targets(targets: Sequence[RunTarget]) -> None:
    """Ray Serve's checks on `run_many` targets, all before anything is built or sent."""
    if not targets:
        raise ValueError("No applications provided.")
    seen = set()
    for t in targets:
        if not isinstance(t, RunTarget):
            raise TypeError(f"serve.run_many expects RunTarget objects, got {type(t).__name__}.")
        if not isinstance(t.name, str) or not t.name:
            raise RayServeException("Application name must be a non-empty string.")
        if not isinstance(t.target, Application):
            raise TypeError("`serve.run` expects an `Application` returned by `Deployment.bind()`.")
        if t.name in seen:
            raise ValueError(f"Application '{t.name}' is given more than once to serve.run_many.")
        seen.add(t.name)
        validate_route_prefix(t.route_prefix)


def run_many(
    targets: Sequence[RunTarget],
    blocking: bool = False,
    wait_for_ingress_deployment_creation: bool = True,
    wait_for_applications_running: bool = True,
    _local_testing_mode: bool = False,
    controller_options: Union[None, Dict[str, Any], ControllerOptions] = None,
) -> List[DeploymentHandle]:
    """Deploy several applications in one step; return their ingress handles, in order.

    The controller takes all of them as one goal: on a route-prefix clash none
    changes. Other running applications stay. With `wait_for_applications_running`
    (default) it returns once every one is RUNNING (RuntimeError if one fails to
    deploy); else with `wait_for_ingress_deployment_creation` once each ingress
    deployment exists; else at once. `blocking=True` then waits until Ctrl-C.
    """
    _check_targets(targets)
    client = _client_for_run(controller_options)
    runtime_env = _job_runtime_env()
    builts = [
        build_app(t.target, t.name, t.route_prefix, runtime_env=runtime_env,
                  logging_config=_logging_config_dict(t.logging_config),
                  external_scaler_enabled=t.external_scaler_enabled)
        for t in targets
    ]
    # The config path's target capacity stays as it is: run_many only adds or replaces apps.
    capacity = client.get_serve_status().target_capacity
    client.deploy_applications(builts, [None] * len(builts), delete_missing=False, target_capacity=capacity)
    for built in builts:
        if wait_for_applications_running:
            client.wait_for_application_running(built.name)
        elif wait_for_ingress_deployment_creation:
            _wait_for_deployment_created(client, built.name, built.ingress)
    if blocking:
        _print_deployed(client, [(t.name, t.route_prefix) for t in targets])
        _block_until_interrupted()
    return [DeploymentHandle(built.ingress, built.name) for built in builts]


def _wait_for_deployment_created(client: ServeControllerClient, app: str, deployment: str,
                                 timeout_s: float = 60.0) -> None:
    """Return once `status()` lists `deployment` in application `app` (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get_serve_status().applications.get(app)
        if status is not None and deployment in status.deployments:
            return
        time.sleep(0.05)
    raise TimeoutError(f"Deployment {deployment} of application {app} was not created within {timeout_s}s.")


def _job_runtime_env() -> Dict[str, Any]:
    """The driver's runtime_env ({} if none or unknown): replicas of `run()`
    get it unless a deployment sets its own (as in Ray Serve)."""
    try:
        return dict(ray.get_runtime_context().runtime_env or {})
    except Exception:  # noqa: BLE001 - no usable runtime context: no default env
        return {}


def _block_until_interrupted() -> None:
    try:
        while True:
            time.sleep(10)
    except KeyboardInterrupt:
        logger.info("Got KeyboardInterrupt, shutting down...")
        shutdown()


def delete(name: str, _blocking: bool = True) -> None:
    """Delete an application: its replicas drain and stop. No error if it does not exist."""
    _get_client().delete_apps([name], blocking=_blocking)


def _client_to_shut_down() -> Optional[ServeControllerClient]:
    """The running instance's client, or None (logged) when there is nothing to shut down."""
    global _client
    if not ray.is_initialized():
        _client = None
        return None
    client = _connected_client()
    if client is None:
        logger.info("Nothing to shut down. There's no Serve application running on this Ray cluster.")
    return client


def _forget_client(client: ServeControllerClient) -> None:
    global _client
    with _client_lock:
        if _client is client:
            _client = None
    get_router_registry().clear()


def shutdown() -> None:
    """Tear down the Serve instance: every application, proxy and the controller."""
    with _client_lock:
        client = _client_to_shut_down()
        if client is None:
            return
        client.shutdown()
        _forget_client(client)


async def shutdown_async() -> None:
    """`shutdown()` as a coroutine: awaitable from a running event loop (an async
    function, a replica or another Ray actor) without blocking it."""
    client = _client_to_shut_down()
    if client is None:
        return
    await client.shutdown_async()
    _forget_client(client)


def status() -> ServeStatus:
    """Applications, their deployments and replica counts by state, and proxies."""
    client = _connected_client() if ray.is_initialized() else None
    if client is None:
        return ServeStatus()
    return client.get_serve_status()


def get_app_handle(name: str) -> DeploymentHandle:
    """A handle to the ingress deployment of application `name`."""
    ingress = _get_client().get_app_ingress(name)
    if ingress is None:
        raise RayServeException(f"Application '{name}' does not exist.")
    return DeploymentHandle(ingress, name)


def get_deployment_handle(deployment_name: str, app_name: Optional[str] = None) -> DeploymentHandle:
    """A handle to a deployment; app_name defaults to the caller's application."""
    client = _get_client()
    if app_name is None:
        ctx = _get_replica_context_or_none()
        if ctx is not None:
            app_name = ctx.app_name
        else:
            names = client.list_app_names()
            app_name = names[0] if len(names) == 1 else DEFAULT_APP_NAME
    details = client.get_replica_details(app_name)
    if deployment_name not in details:
        raise RayServeException(f"Deployment '{deployment_name}' in application '{app_name}' does not exist.")
    return DeploymentHandle(deployment_name, app_name)


def get_deployment_actor(actor_name: str) -> Any:
    """A Ray actor handle to the deployment-scoped actor `actor_name` of the deployment
    this replica belongs to (declared in its `deployment_actors`).

    Raises RayServeException outside a replica, and ValueError (from Ray) when no
    such actor is live: not declared, or being recreated after it died. A handle
    kept across a recreation points at the dead instance (calls raise
    RayActorError): call this again for the new one, as with Ray Serve.
    """
    ctx = _get_replica_context_or_none()
    if ctx is None:
        raise RayServeException("`serve.get_deployment_actor()` may only be called from within a Ray Serve deployment replica.")
    return get_serve_actor(deployment_actor_name(DeploymentID(ctx.deployment, ctx.app_name), actor_name))


def get_deployment_actor_context() -> DeploymentActorContext:
    """The context of the deployment-scoped actor this code runs in: its deployment,
    declared name and the deployment's code version. Raises RayServeException
    anywhere else (in a replica too), as Ray Serve does."""
    env = deployment_actor_context_env()
    if not {"app_name", "deployment", "actor_name"} <= set(env):
        raise RayServeException(
            "`serve.get_deployment_actor_context()` may only be called from within a Ray Serve deployment actor."
        )
    return DeploymentActorContext(DeploymentID(env["deployment"], env["app_name"]), env["actor_name"],
                                  env.get("code_version"))


def ingress(app: Any = None) -> Callable[..., type]:
    """Serve a FastAPI (or any ASGI) app from a deployment class.

    `app` is the app itself, or a function (a builder) that returns it: the
    builder runs on each replica after the user constructor, as in Ray Serve.
    With no app, the class must define `__serve_build_asgi_app__(self)`, which
    returns the app (it may be async). Routes declared on the class's methods
    get `self`, the replica's instance. `serve.ingress(app)()` (no class)
    gives a deployment class that serves the app alone.
    """
    if app is not None and not callable(app):
        raise TypeError("serve.ingress expects an ASGI app, such as a FastAPI() instance, or a function returning one.")

    def decorator(cls: Optional[type] = None) -> type:
        if cls is None:
            cls = _plain_ingress_class()
        if not isinstance(cls, type):
            raise TypeError("@serve.ingress must decorate a class.")
        if hasattr(cls, "__call__") and "__call__" in cls.__dict__:
            raise ValueError("A class with @serve.ingress cannot define __call__; the ASGI app handles HTTP.")
        if app is None:
            if not hasattr(cls, "__serve_build_asgi_app__"):
                raise ValueError(
                    "serve.ingress() called without an app argument requires "
                    f"{cls.__name__} to define `__serve_build_asgi_app__`."
                )
            return cls
        if inspect.isfunction(app):
            cls._serve_asgi_app_builder = staticmethod(app)
            return cls
        from ray_serving_ext._private.ingress import bind_class_routes

        bind_class_routes(app, cls)
        cls._serve_asgi_app = app
        return cls

    return decorator


def _plain_ingress_class() -> type:
    """The class `serve.ingress(app)()` wraps: it keeps its arguments, nothing more."""

    class ASGIIngressDeployment:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.args = args
            self.kwargs = kwargs

    return ASGIIngressDeployment
