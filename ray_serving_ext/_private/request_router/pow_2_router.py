"""`PowerOfTwoChoicesRequestRouter`: Ray Serve's default policy as a RequestRouter.

Deployments that do not configure a router never build this class: the
caller's Router runs the same policy inline, without the routing tasks
(`_private/router.py`). It is here as the documented default and as a base
for routers that adjust it.
"""

from __future__ import annotations

import random

from ray_serving_ext._private.request_router.common import PendingRequest
from ray_serving_ext._private.request_router.mixins import (
    FIFOMixin,
    LocalityMixin,
    MultiplexMixin,
)
from ray_serving_ext._private.request_router.replica_wrapper import RunningReplica
from ray_serving_ext._private.request_router.request_router import RequestRouter


class PowerOfTwoChoicesRequestRouter(FIFOMixin, LocalityMixin, MultiplexMixin, RequestRouter):
    """Two random candidates per round (replicas holding the request's model, or
    local ones, first); the less loaded one with room wins; FIFO assignment."""

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        if pending_request is not None and pending_request.metadata.multiplexed_model_id:
            candidate_ids = self.apply_multiplex_routing(pending_request=pending_request)
        else:
            candidate_ids = self.apply_locality_routing(pending_request=pending_request)
        if not candidate_ids:
            return []
        chosen = random.sample(tuple(candidate_ids), min(2, len(candidate_ids)))
        return [[self._replicas[rid] for rid in chosen if rid in self._replicas]]
