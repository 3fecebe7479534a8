"""The public request-router extension surface (Ray Serve 2.60's `ray.serve.request_router`).

A custom router subclasses `RequestRouter` and implements
``async choose_replicas(candidate_replicas, pending_request) -> List[List[RunningReplica]]``;
a deployment uses it with
``@serve.deployment(request_router_config=RequestRouterConfig(request_router_class=MyRouter))``.
The chosen replica is sent the request over the direct data path, like any other.
"""

from typing import Any, Protocol

from ray_serving_ext._private.common import ReplicaID
from ray_serving_ext._private.request_router.common import PendingRequest
from ray_serving_ext._private.request_router.mixins import (
    FIFOMixin,
    LocalityMixin,
    MultiplexMixin,
)
from ray_serving_ext._private.request_router.replica_wrapper import RunningReplica
from ray_serving_ext._private.request_router.request_router import RequestRouter


class ReplicaResult(Protocol):
    """The request in flight that `RequestRouter.on_request_routed` receives."""

    replica_id: str

    def add_done_callback(self, fn: Any) -> None: ...

    def cancel(self) -> None: ...


# As in Ray Serve, ReplicaResult is importable from here but not part of __all__.
__all__ = [
    "FIFOMixin",
    "LocalityMixin",
    "MultiplexMixin",
    "PendingRequest",
    "ReplicaID",
    "RequestRouter",
    "RunningReplica",
]
