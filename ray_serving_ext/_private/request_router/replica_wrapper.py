"""`RunningReplica`: what a request router knows about one routable replica."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray_serving_ext._private.common import DeploymentID, ReplicaID, ReplicaInfo


class RunningReplica:
    """A running replica as request routers see it (Ray Serve's ``RunningReplica``).

    ``max_ongoing_requests`` is the number of requests this caller may have
    in flight on it; ``get_queue_len()`` is how many it has now. As with the
    built-in router, both count this caller's requests only (each proxy and
    handle process routes on its own view), which is what keeps
    ``max_ongoing_requests`` without asking the replica.
    """

    def __init__(
        self,
        replica_info: ReplicaInfo,
        deployment_id: DeploymentID,
        max_ongoing_requests: int | None = None,
        queue_len_fn: Callable[[str], int] | None = None,
    ) -> None:
        self._deployment_id = deployment_id
        self._queue_len_fn = queue_len_fn or (lambda _rid: 0)
        self.update_replica_info(replica_info, max_ongoing_requests)

    def update_replica_info(self, replica_info: ReplicaInfo, max_ongoing_requests: int | None = None) -> None:
        """Take the controller's latest view of this replica (models held, routing stats, limit)."""
        self._info = replica_info
        self._unique_id = replica_info.replica_id
        self._replica_id = ReplicaID(replica_info.replica_id, self._deployment_id)
        self._multiplexed_model_ids = set(replica_info.model_ids)
        self._max_ongoing = replica_info.max_ongoing_requests if max_ongoing_requests is None else max_ongoing_requests

    @property
    def replica_id(self) -> ReplicaID:
        """ID of this replica."""
        return self._replica_id

    @property
    def actor_id(self) -> str | None:
        """Hex id of the replica's Ray actor (None if unknown)."""
        actor_id = getattr(self._info.actor_handle, "_actor_id", None)
        return actor_id.hex() if hasattr(actor_id, "hex") else actor_id

    @property
    def node_id(self) -> str:
        """Ray node ID of the node this replica runs on."""
        return self._info.node_id

    @property
    def availability_zone(self) -> str | None:
        """The ``ray.io/availability-zone`` label of the replica's node, if it has one."""
        return self._info.availability_zone

    @property
    def multiplexed_model_ids(self) -> set[str]:
        """The multiplexed model ids the replica holds."""
        return self._multiplexed_model_ids

    @property
    def routing_stats(self) -> dict[str, Any]:
        """The replica's latest ``record_routing_stats()`` result ({} before the first)."""
        return self._info.routing_stats

    @property
    def max_ongoing_requests(self) -> int:
        """Max requests this caller may have running on the replica at once."""
        return self._max_ongoing

    @property
    def is_cross_language(self) -> bool:
        """Always False: only Python replicas exist here."""
        return False

    def _queue_len(self) -> int:
        return self._queue_len_fn(self._unique_id)

    async def get_queue_len(self, *, deadline_s: float = 0.0) -> int:
        """Requests this caller has in flight on the replica (answered locally: `deadline_s` is unused)."""
        return self._queue_len()

    def __repr__(self) -> str:
        return f"RunningReplica({self._replica_id})"
