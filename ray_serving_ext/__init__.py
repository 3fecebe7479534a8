"""ray_serving_ext: model serving on Ray core, a drop-in for `ray.serve`.

    import ray_serving_ext as serve

Importing has no side effects: nothing starts until `serve.start()` or
`serve.run()`.
"""

from ray_serving_ext import exceptions, metrics
from ray_serving_ext.api import (
    RunTarget,
    delete,
    get_app_handle,
    get_deployment_actor,
    get_deployment_actor_context,
    get_deployment_handle,
    ingress,
    run,
    run_many,
    shutdown,
    shutdown_async,
    start,
    status,
)
from ray_serving_ext.batching import batch
from ray_serving_ext.config import AutoscalingConfig, ControllerOptions, HTTPOptions, ProxyLocation, TracingConfig
from ray_serving_ext.context import ReplicaContext, get_multiplexed_model_id, get_replica_context, get_trace_context
from ray_serving_ext.deployment import Application, Deployment, deployment
from ray_serving_ext.multiplex import multiplexed
from ray_serving_ext.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator
from ray_serving_ext._private.constants import VERSION

__version__ = VERSION

__all__ = [
    "Application",
    "batch",
    "AutoscalingConfig",
    "ControllerOptions",
    "Deployment",
    "DeploymentHandle",
    "DeploymentResponse",
    "DeploymentResponseGenerator",
    "HTTPOptions",
    "ProxyLocation",
    "ReplicaContext",
    "RunTarget",
    "TracingConfig",
    "delete",
    "deployment",
    "exceptions",
    "metrics",
    "get_app_handle",
    "get_deployment_actor",
    "get_deployment_actor_context",
    "get_deployment_handle",
    "get_multiplexed_model_id",
    "get_replica_context",
    "get_trace_context",
    "ingress",
    "multiplexed",
    "run",
    "run_many",
    "shutdown",
    "shutdown_async",
    "start",
    "status",
]
