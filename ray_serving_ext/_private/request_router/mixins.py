"""Mixins for custom request routers: FIFO assignment, locality, multiplexed models.

Put them before `RequestRouter` among a router's bases, e.g.
``class MyRouter(FIFOMixin, LocalityMixin, MultiplexMixin, RequestRouter)``;
each takes its own keyword arguments and passes the rest on.
"""

from __future__ import annotations

import enum
import math
import random
import time
from collections import defaultdict, deque
from typing import Any

from ray_serving_ext._private.common import ReplicaID, RequestMetadata
from ray_serving_ext._private.constants import MULTIPLEXED_MODEL_ID_MATCHING_TIMEOUT_S
from ray_serving_ext._private.request_router.common import PendingRequest
from ray_serving_ext._private.request_router.replica_wrapper import RunningReplica


class LocalityScope(str, enum.Enum):
    NODE = "NODE"
    AVAILABILITY_ZONE = "AVAILABILITY_ZONE"


class LocalityMixin:
    """Prefer replicas on the caller's node, then in its availability zone.

    `apply_locality_routing(pending_request)` returns the candidate ids for
    one attempt: the same-node replicas once (if `prefer_local_node_routing`
    and there are any), then the same-zone ones once (if
    `prefer_local_az_routing`), then all. `rank_replicas_via_locality` sorts
    replicas into those three ranks.
    """

    def __init__(self, self_node_id: str | None = None, prefer_local_node_routing: bool = False,
                 prefer_local_az_routing: bool = False, self_availability_zone: str | None = None,
                 *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._self_node_id = self_node_id
        self._prefer_local_node_routing = prefer_local_node_routing
        self._prefer_local_az_routing = prefer_local_az_routing
        self._self_availability_zone = self_availability_zone
        self._colocated_replica_ids: defaultdict[LocalityScope, set[ReplicaID]] = defaultdict(set)
        self._replica_id_set: set[ReplicaID] = set()

    def _discard_colocated_replica_ids_on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        for ids in self._colocated_replica_ids.values():
            ids.discard(replica_id)

    def _update_colocated_replica_ids_with_replicas(self, replicas: list[RunningReplica]) -> None:
        colocated: defaultdict[LocalityScope, set[ReplicaID]] = defaultdict(set)
        for r in replicas:
            if self._self_node_id is not None and r.node_id == self._self_node_id:
                colocated[LocalityScope.NODE].add(r.replica_id)
            if self._self_availability_zone is not None and r.availability_zone == self._self_availability_zone:
                colocated[LocalityScope.AVAILABILITY_ZONE].add(r.replica_id)
        self._colocated_replica_ids = colocated

    def apply_locality_routing(self, pending_request: PendingRequest | None = None) -> set[ReplicaID]:
        """Candidate replica ids for this attempt by locality (all of them without a request)."""
        if not pending_request:
            return self._replica_id_set
        ctx = pending_request.routing_context
        same_node = self._colocated_replica_ids[LocalityScope.NODE]
        same_az = self._colocated_replica_ids[LocalityScope.AVAILABILITY_ZONE]
        if self._prefer_local_node_routing and not ctx.tried_same_node and same_node:
            ctx.tried_same_node, ctx.should_backoff = True, False
            return same_node
        if self._prefer_local_az_routing and not ctx.tried_same_az and same_az:
            ctx.tried_same_az, ctx.should_backoff = True, False
            return same_az
        ctx.should_backoff = True
        return self._replica_id_set

    def rank_replicas_via_locality(self, replicas: list[RunningReplica]) -> list[list[RunningReplica]]:
        """Three ranks: same node, same availability zone, the rest."""
        ranks: list[list[RunningReplica]] = [[], [], []]
        for r in replicas:
            if r.replica_id in self._colocated_replica_ids[LocalityScope.NODE]:
                ranks[0].append(r)
            elif r.replica_id in self._colocated_replica_ids[LocalityScope.AVAILABILITY_ZONE]:
                ranks[1].append(r)
            else:
                ranks[2].append(r)
        return ranks


class MultiplexMixin:
    """Prefer replicas that hold the request's multiplexed model.

    `apply_multiplex_routing(pending_request)` returns, while the matching
    timeout runs (1 s, randomised up to 2 s), the replicas holding the model
    (or, if none does or they were tried, those holding the fewest models);
    after it, the fewest-models replicas once, then all.
    `rank_replicas_via_multiplex` sorts replicas into those three ranks.
    """

    _pending_requests_by_model_id: defaultdict[str, deque[PendingRequest]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._multiplexed_model_id_to_replica_ids: defaultdict[str, set[ReplicaID]] = defaultdict(set)
        # Model ids for which concurrent requests already fell back to the fewest-models
        # replicas, so that only one of them does so while no replica holds the model.
        self._multiplexed_model_id_fallback_match: set[str] = set()
        self._replica_id_set: set[ReplicaID] = set()
        self._replicas: dict[ReplicaID, RunningReplica] = {}

    def _get_pending_request_matching_multiplexed_model_id(
        self, request_metadata: RequestMetadata | None = None
    ) -> PendingRequest | None:
        """The oldest waiting request for the same model (None without a model id)."""
        if request_metadata is None or not request_metadata.multiplexed_model_id:
            return None
        model_id = request_metadata.multiplexed_model_id
        waiting = self._pending_requests_by_model_id.get(model_id)
        while waiting:
            if not waiting[0].future.done():
                return waiting[0]
            waiting.popleft()
        self._pending_requests_by_model_id.pop(model_id, None)
        return None

    def _discard_multiplexed_replica_ids_on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        for ids in self._multiplexed_model_id_to_replica_ids.values():
            ids.discard(replica_id)

    def _update_multiplexed_model_ids_with_replicas(self, replicas: list[RunningReplica]) -> None:
        by_model: defaultdict[str, set[ReplicaID]] = defaultdict(set)
        for r in replicas:
            for model_id in r.multiplexed_model_ids:
                by_model[model_id].add(r.replica_id)
        self._multiplexed_model_id_to_replica_ids = by_model

    def _get_replica_ids_with_fewest_multiplexed_models(self) -> set[ReplicaID]:
        fewest = min((len(r.multiplexed_model_ids) for r in self._replicas.values()), default=math.inf)
        return {rid for rid, r in self._replicas.items() if len(r.multiplexed_model_ids) == fewest}

    @property
    def _multiplexed_matching_timeout(self) -> float:
        return random.uniform(MULTIPLEXED_MODEL_ID_MATCHING_TIMEOUT_S, MULTIPLEXED_MODEL_ID_MATCHING_TIMEOUT_S * 2)

    def apply_multiplex_routing(self, pending_request: PendingRequest | None = None) -> set[ReplicaID]:
        """Candidate replica ids for this attempt by model (all of them without a request)."""
        if not pending_request:
            return self._replica_id_set
        ctx = pending_request.routing_context
        if not ctx.multiplexed_start_matching_time:
            ctx.multiplexed_start_matching_time = time.time()
        model_id = pending_request.metadata.multiplexed_model_id
        ctx.should_backoff = True
        if time.time() - ctx.multiplexed_start_matching_time < self._multiplexed_matching_timeout:
            candidates = self._multiplexed_model_id_to_replica_ids.get(model_id, set())
            no_match_yet = not candidates and model_id not in self._multiplexed_model_id_fallback_match
            if no_match_yet or ctx.tried_first_multiplexed_models:
                candidates = self._get_replica_ids_with_fewest_multiplexed_models()
                self._multiplexed_model_id_fallback_match.add(model_id)
            elif candidates:
                self._multiplexed_model_id_fallback_match.discard(model_id)
            ctx.tried_first_multiplexed_models = True
            return candidates
        if not ctx.tried_fewest_multiplexed_models:
            ctx.tried_fewest_multiplexed_models = True
            return self._get_replica_ids_with_fewest_multiplexed_models()
        return self._replica_id_set

    def rank_replicas_via_multiplex(self, replicas: list[RunningReplica],
                                    multiplexed_model_id: str) -> list[list[RunningReplica]]:
        """Three ranks: holding the model, holding the fewest models, the rest."""
        holding = self._multiplexed_model_id_to_replica_ids.get(multiplexed_model_id, set())
        fewest = self._get_replica_ids_with_fewest_multiplexed_models()
        ranks: list[list[RunningReplica]] = [[], [], []]
        for r in replicas:
            ranks[0 if r.replica_id in holding else 1 if r.replica_id in fewest else 2].append(r)
        return ranks


class FIFOMixin:
    """Give each replica found to the oldest waiting request.

    Without it a replica goes to the request whose routing task found it.
    With it, a replica goes to the oldest request for the same multiplexed
    model if there is one (with MultiplexMixin), else to the oldest request.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

    def _get_pending_request_matching_metadata(
        self, request_metadata: RequestMetadata | None = None
    ) -> PendingRequest | None:
        if hasattr(self, "_get_pending_request_matching_multiplexed_model_id"):
            return self._get_pending_request_matching_multiplexed_model_id(request_metadata)
        return None

    def _fulfill_next_pending_request(self, replica: RunningReplica,
                                      request_metadata: RequestMetadata | None = None) -> None:
        matched = self._get_pending_request_matching_metadata(request_metadata)
        if matched is not None:
            self._assign(matched, replica)  # type: ignore[attr-defined]
            return
        queue = self._pending_requests_to_fulfill  # type: ignore[attr-defined]
        while queue:
            pr = queue.popleft()
            if not pr.future.done():
                self._assign(pr, replica)  # type: ignore[attr-defined]
                return
