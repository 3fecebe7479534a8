"""Per-process context: the replica a piece of user code runs in, and the current request."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any, Optional

from ray_serving_ext._private import tracing as _tracing
from ray_serving_ext._private.common import ReplicaID
from ray_serving_ext.exceptions import RayServeException
from ray_serving_ext.schema import ReplicaRank


@dataclass
class ReplicaContext:
    """What `serve.get_replica_context()` returns inside a replica (Ray Serve 2.60's shape).

    `replica_id` is a `ReplicaID` (`unique_id`, `deployment_id`, `to_full_id_str()`);
    `app_name`, `deployment` and `replica_tag` (the unique id) are read from it.
    `rank` (a `ReplicaRank`) and `world_size` are set before the constructor
    runs, as in Ray Serve 2.60; `world_size` is the deployment's `num_replicas`
    (with autoscaling, the target replica count when the rank was given). The
    controller may later renumber a replica to keep ranks dense: `rank` then
    changes, and a `reconfigure` method with a `rank` parameter is called with
    the user_config and the new rank.
    """

    replica_id: ReplicaID
    servable_object: Any = None
    rank: Optional[ReplicaRank] = None
    world_size: int = 0

    @property
    def app_name(self) -> str:
        return self.replica_id.deployment_id.app_name

    @property
    def deployment(self) -> str:
        return self.replica_id.deployment_id.name

    @property
    def replica_tag(self) -> str:
        return self.replica_id.unique_id

    @property
    def request_id(self) -> Optional[str]:
        """The id of the request the calling code is handling, if any."""
        ctx = _get_request_context()
        return ctx.request_id if ctx else None


@dataclass
class DeploymentActorContext:
    """What `serve.get_deployment_actor_context()` returns inside a deployment-scoped
    actor: the deployment it belongs to, its declared name and the deployment's code
    version when it was created (Ray Serve 2.60's fields; `deployment_id` has
    `name` and `app_name`)."""

    deployment_id: Any
    actor_name: str
    code_version: str | None = None

    @property
    def app_name(self) -> str:
        return self.deployment_id.app_name

    @property
    def deployment(self) -> str:
        return self.deployment_id.name


@dataclass
class RequestContext:
    request_id: str
    app_name: str = ""
    route: str = ""
    multiplexed_model_id: str = ""


_replica_context: Optional[ReplicaContext] = None
_request_context: contextvars.ContextVar[Optional[RequestContext]] = contextvars.ContextVar(
    "serve_request_context", default=None
)


def _set_replica_context(ctx: Optional[ReplicaContext]) -> None:
    global _replica_context
    _replica_context = ctx


def _get_replica_context_or_none() -> Optional[ReplicaContext]:
    return _replica_context


def get_replica_context() -> ReplicaContext:
    """The context of the replica this code runs in.

    Raises RayServeException outside a replica, as Ray Serve does.
    """
    if _replica_context is None:
        raise RayServeException(
            "`serve.get_replica_context()` may only be called from within a Ray Serve deployment."
        )
    return _replica_context


def _get_request_context() -> Optional[RequestContext]:
    return _request_context.get()


def _set_request_context(ctx: Optional[RequestContext]) -> contextvars.Token:
    return _request_context.set(ctx)


def get_multiplexed_model_id() -> str:
    """The multiplexed model id of the current request ('' when none)."""
    ctx = _get_request_context()
    return ctx.multiplexed_model_id if ctx else ""


def get_trace_context() -> Optional[Any]:
    """The current OpenTelemetry context, or None when tracing has set none.

    Inside a replica serving a request with tracing enabled, it holds the
    request's `replica_handle_request` span: pass it as `context=` to
    `tracer.start_as_current_span(...)` (or just start spans: they nest under it)
    to put your spans in the request's trace. As `ray.serve.get_trace_context`.
    """
    return _tracing.get_trace_context()
