"""`RequestRouter`: the base class of custom request routers (Ray Serve 2.60's contract).

A subclass implements `choose_replicas(candidate_replicas, pending_request)`,
returning ranks of replicas (best first). The base class runs the routing
loop: it queues pending requests, runs up to `max_num_routing_tasks` routing
tasks, takes each rank in turn and assigns the replica with the fewest
requests in flight among those with room under `max_ongoing_requests`. When
no chosen replica has room it calls `choose_replicas` again after a backoff
(`initial_backoff_s`, times `backoff_multiplier` per attempt, at most
`max_backoff_s`), as Ray Serve does; a request of this caller finishing ends
the wait early, since it frees a slot.

By default a replica goes to the request whose routing task found it;
`FIFOMixin` gives it to the oldest waiting request instead.

Pure asyncio: no Ray here. The caller's `Router` (`_private/custom_routing.py`)
feeds replicas in, reads assignments out, and sends requests itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections import defaultdict, deque
from collections.abc import AsyncGenerator, Callable
from typing import (
    Any,
)

from ray_serving_ext._private.common import (
    DeploymentHandleSource,
    DeploymentID,
    ReplicaID,
    RequestMetadata,
)
from ray_serving_ext._private.constants import (
    ROUTER_RETRY_BACKOFF_MULTIPLIER,
    ROUTER_RETRY_INITIAL_BACKOFF_S,
    ROUTER_RETRY_MAX_BACKOFF_S,
)
from ray_serving_ext._private.request_router.common import (
    PendingRequest,
    ReplicaQueueLengthCache,
)
from ray_serving_ext._private.request_router.replica_wrapper import RunningReplica

logger = logging.getLogger("ray_serving_ext.router")


class RequestRouter(ABC):
    """Abstract interface for a request router (how the router calls it)."""

    # Ray Serve's deadlines for replica queue-length probes. Queue lengths are
    # known locally here, so they bound nothing; kept for subclasses that read them.
    queue_len_response_deadline_s = 0.1
    max_queue_len_response_deadline_s = 1.0

    max_num_routing_tasks_cap = 50
    """Hard limit on the number of routing tasks running at once."""

    def __init__(
        self,
        deployment_id: DeploymentID,
        handle_source: DeploymentHandleSource = DeploymentHandleSource.UNKNOWN,
        self_actor_id: str | None = None,
        self_actor_handle: Any | None = None,
        use_replica_queue_len_cache: bool = True,
        get_curr_time_s: Callable[[], float] | None = None,
        create_replica_wrapper_func: Callable[[Any], RunningReplica] | None = None,
        initial_backoff_s: float = ROUTER_RETRY_INITIAL_BACKOFF_S,
        backoff_multiplier: float = ROUTER_RETRY_BACKOFF_MULTIPLIER,
        max_backoff_s: float = ROUTER_RETRY_MAX_BACKOFF_S,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self._deployment_id = deployment_id
        self._handle_source = handle_source
        self._self_actor_id = self_actor_id
        self._self_actor_handle = self_actor_handle
        self._use_replica_queue_len_cache = use_replica_queue_len_cache
        self._create_replica_wrapper_func = create_replica_wrapper_func
        self._get_curr_time_s = get_curr_time_s or time.time
        self.initial_backoff_s = initial_backoff_s
        self.backoff_multiplier = backoff_multiplier
        self.max_backoff_s = max_backoff_s

        self._replica_id_set: set[ReplicaID] = set()
        self._replicas: dict[ReplicaID, RunningReplica] = {}
        self._replicas_list: list[RunningReplica] = []
        self._replica_queue_len_cache = ReplicaQueueLengthCache(get_curr_time_s=self._get_curr_time_s)

        # Created on first use: the router may be built off the loop it routes on.
        self._lazily_fetched_loop: asyncio.AbstractEventLoop | None = None
        self._lazily_constructed_replicas_updated_event: asyncio.Event | None = None
        self._slot_waiters: list[asyncio.Future] = []

        self._routing_tasks: set[asyncio.Task] = set()
        self._routing_task_by_pending_request_future: dict[asyncio.Future, asyncio.Task] = {}
        # Requests in arrival order: the first queue is what replicas are given to,
        # the second what routing tasks pick up next (each request is in both).
        self._pending_requests_to_fulfill: deque[PendingRequest] = deque()
        self._pending_requests_to_route: deque[PendingRequest] = deque()
        self._pending_requests_by_id: dict[str, PendingRequest] = {}
        self._pending_requests_by_model_id: defaultdict[str, deque[PendingRequest]] = defaultdict(deque)
        # Set by the caller's Router: told of every assignment, at once, so that the
        # replica's slot is taken before any other routing task looks at it.
        self._on_assigned: Callable[[RunningReplica], None] | None = None

    # ---- hooks a subclass implements or overrides ---------------------------------------
    def initialize_state(self, **kwargs: Any) -> None:
        """Called once after construction with `RequestRouterConfig.request_router_kwargs`."""

    @abstractmethod
    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        """One round of choosing replicas for `pending_request`: ranks, most preferred first.

        The replica given to the request is the one with the fewest requests in
        flight among those of the first rank that has any with room. Returning
        no replica with room means: try again after a backoff.
        """

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        """Called once the request has been sent to the replica (`result` is the call in flight)."""

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        """Called when a request sent to a replica has finished, however it ended."""

    # ---- replicas ---------------------------------------------------------------------
    def create_replica_wrapper(self, replica_info: Any) -> RunningReplica:
        assert self._create_replica_wrapper_func is not None
        return self._create_replica_wrapper_func(replica_info)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        """Replace the set of replicas to route to; starts routing tasks if requests wait."""
        if hasattr(self, "_update_colocated_replica_ids_with_replicas"):
            self._update_colocated_replica_ids_with_replicas(replicas)
        if hasattr(self, "_update_multiplexed_model_ids_with_replicas"):
            self._update_multiplexed_model_ids_with_replicas(replicas)
        self._replicas = {r.replica_id: r for r in replicas}
        self._replicas_list = list(self._replicas.values())
        self._replica_id_set = set(self._replicas)
        self._replica_queue_len_cache.remove_inactive_replicas(active_replica_ids=self._replica_id_set)
        for r in replicas:
            self._replica_queue_len_cache.update(r.replica_id, r._queue_len())
        self._replicas_updated_event.set()
        self._maybe_start_routing_tasks()

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        """Drop a replica found dead, until the next `update_replicas` says otherwise."""
        self._replicas.pop(replica_id, None)
        self._replicas_list = list(self._replicas.values())
        self._replica_id_set.discard(replica_id)
        if hasattr(self, "_discard_colocated_replica_ids_on_replica_actor_died"):
            self._discard_colocated_replica_ids_on_replica_actor_died(replica_id)
        if hasattr(self, "_discard_multiplexed_replica_ids_on_replica_actor_died"):
            self._discard_multiplexed_replica_ids_on_replica_actor_died(replica_id)

    def on_replica_actor_unavailable(self, replica_id: ReplicaID) -> None:
        """Forget the cached queue length of a replica that could not be reached."""
        self._replica_queue_len_cache.invalidate_key(replica_id)

    def on_new_queue_len_info(self, replica_id: ReplicaID, num_ongoing_requests: int) -> None:
        """Record a replica's queue length in `replica_queue_len_cache`."""
        if self._use_replica_queue_len_cache:
            self._replica_queue_len_cache.update(replica_id, num_ongoing_requests)

    def on_send_request(self, replica_id: ReplicaID) -> None:
        """Count one more request on the replica in `replica_queue_len_cache`."""
        if self._use_replica_queue_len_cache:
            current = self._replica_queue_len_cache.get(replica_id) or 0
            self._replica_queue_len_cache.update(replica_id, current + 1)

    def decrement_queue_len_cache(self, replica_id: ReplicaID) -> None:
        """Count one request fewer on the replica in `replica_queue_len_cache`."""
        if self._use_replica_queue_len_cache:
            current = self._replica_queue_len_cache.get(replica_id)
            if current is not None:
                self._replica_queue_len_cache.update(replica_id, max(0, current - 1))

    def select_available_replicas(self, candidates: list[RunningReplica] | None = None) -> list[RunningReplica]:
        """The candidates (default: all replicas) with room for one more request."""
        if candidates is None:
            candidates = self._replicas_list
        return [r for r in candidates if r._queue_len() < r.max_ongoing_requests]

    # ---- properties ---------------------------------------------------------------------
    @property
    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._lazily_fetched_loop is None:
            self._lazily_fetched_loop = asyncio.get_running_loop()
        return self._lazily_fetched_loop

    @property
    def _replicas_updated_event(self) -> asyncio.Event:
        if self._lazily_constructed_replicas_updated_event is None:
            self._lazily_constructed_replicas_updated_event = asyncio.Event()
        return self._lazily_constructed_replicas_updated_event

    @property
    def num_pending_requests(self) -> int:
        """Requests waiting for a replica (cancelled ones leave the queue lazily)."""
        return len(self._pending_requests_to_fulfill)

    @property
    def curr_num_routing_tasks(self) -> int:
        return len(self._routing_tasks)

    @property
    def max_num_routing_tasks(self) -> int:
        return min(self.max_num_routing_tasks_cap, 2 * len(self._replicas))

    @property
    def target_num_routing_tasks(self) -> int:
        return min(self.num_pending_requests, self.max_num_routing_tasks)

    @property
    def curr_replicas(self) -> dict[ReplicaID, RunningReplica]:
        """Replicas currently considered for routing."""
        return self._replicas

    @property
    def app_name(self) -> str:
        return self._deployment_id.app_name

    @property
    def replica_queue_len_cache(self) -> ReplicaQueueLengthCache:
        return self._replica_queue_len_cache

    # ---- backoff ------------------------------------------------------------------------
    def _compute_backoff_s(self, attempt: int) -> float:
        try:
            return min(self.initial_backoff_s * (self.backoff_multiplier ** attempt), self.max_backoff_s)
        except OverflowError:
            return self.max_backoff_s

    def update_backoff_params(self, initial_backoff_s: float | None, backoff_multiplier: float | None,
                              max_backoff_s: float | None) -> None:
        """Change the backoff settings (None keeps a setting)."""
        if initial_backoff_s is not None:
            self.initial_backoff_s = initial_backoff_s
        if backoff_multiplier is not None:
            self.backoff_multiplier = backoff_multiplier
        if max_backoff_s is not None:
            self.max_backoff_s = max_backoff_s

    async def _backoff(self, attempt: int) -> None:
        """Sleep the attempt's backoff, or less if a slot frees up meanwhile."""
        waiter = self._event_loop.create_future()
        self._slot_waiters.append(waiter)
        timer = self._event_loop.call_later(self._compute_backoff_s(attempt), _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()

    def _on_slot_freed(self) -> None:
        """A request of this caller finished: routing tasks in backoff look again now."""
        waiters, self._slot_waiters = self._slot_waiters, []
        for waiter in waiters:
            _resolve(waiter)

    # ---- the routing loop ---------------------------------------------------------------
    async def _choose_replica_for_request(self, pending_request: PendingRequest, *, is_retry: bool = False) -> RunningReplica:
        """Queue the request and wait for a replica; a cancelled wait gives up its place."""
        try:
            if is_retry:
                pending_request.reset_future()
                _insert_sorted(self._pending_requests_to_fulfill, pending_request)
                _insert_sorted(self._pending_requests_to_route, pending_request)
            else:
                self._pending_requests_to_fulfill.append(pending_request)
                self._pending_requests_to_route.append(pending_request)
            self._add_pending_request_to_indices(pending_request)
            self._maybe_start_routing_tasks()
            return await pending_request.future
        except asyncio.CancelledError:
            pending_request.future.cancel()
            self._cancel_routing_task_for_pending_request(pending_request)
            self._remove_pending_request_from_indices(pending_request)
            raise

    def _maybe_start_routing_tasks(self) -> None:
        for _ in range(self.target_num_routing_tasks - self.curr_num_routing_tasks):
            self._routing_tasks.add(self._event_loop.create_task(self._fulfill_pending_requests()))

    async def _fulfill_pending_requests(self) -> None:
        """One routing task: route waiting requests until there are fewer than tasks."""
        task = asyncio.current_task()
        try:
            while len(self._routing_tasks) <= self.target_num_routing_tasks:
                pending_request = self._get_next_pending_request_to_route()
                if pending_request is None:
                    break
                self._routing_task_by_pending_request_future[pending_request.future] = task
                try:
                    await self._route_one(pending_request)
                except Exception as exc:  # the router's own code raised: that request fails with it
                    logger.exception("Request router for %s raised while routing request %s.",
                                     self._deployment_id, pending_request.metadata.request_id)
                    if not pending_request.future.done():
                        pending_request.future.set_exception(exc)
                    self._remove_pending_request_from_indices(pending_request)
                finally:
                    if self._routing_task_by_pending_request_future.get(pending_request.future) is task:
                        del self._routing_task_by_pending_request_future[pending_request.future]
        except asyncio.CancelledError:
            pass  # its request was given a replica by another task, or was cancelled
        except Exception:
            logger.exception("Unexpected error while routing requests for %s.", self._deployment_id)
        finally:
            self._drop_done_heads()
            self._routing_tasks.discard(task)
            if self._pending_requests_to_route:
                self._maybe_start_routing_tasks()

    async def _route_one(self, pending_request: PendingRequest) -> None:
        """Take ranks from `choose_replicas` (with backoff) until the request has a replica."""
        attempts = 0
        gen = self._choose_replicas_with_backoff(pending_request)
        try:
            async for candidates in gen:
                self._drop_done_heads()
                if pending_request.future.done():
                    return
                replica = self._select_from_candidate_replicas(candidates)
                if replica is not None:
                    self._fulfill_next_pending_request(replica, pending_request.metadata)
                    if pending_request.future.done():
                        return
                    continue
                attempts += 1
                if attempts % 50 == 0:
                    logger.warning("Failed to route request %s after %d attempts; retrying.",
                                   pending_request.metadata.request_id, attempts)
        finally:
            await gen.aclose()

    async def _choose_replicas_with_backoff(
        self, pending_request: PendingRequest | None = None
    ) -> AsyncGenerator[list[RunningReplica], None]:
        """Yield each non-empty rank `choose_replicas` returns, round after round;
        from the second full round on, back off before each round."""
        attempt = 0
        backing_off = False
        ctx = pending_request.routing_context if pending_request is not None else None
        while True:
            while not self._replicas:
                self._replicas_updated_event.clear()
                await self._replicas_updated_event.wait()
            steps = (ctx.tried_same_node, ctx.tried_same_az) if ctx is not None else None
            ranks = await self.choose_replicas(candidate_replicas=self._replicas_list, pending_request=pending_request)
            for rank in ranks:
                if rank:
                    yield rank
            # A locality step (same node, then same zone) that found no room widens at
            # once, as in Ray Serve. Only such a step skips the backoff: a router that
            # never sets should_backoff must still wait rather than spin on the loop.
            if ctx is not None and not ctx.should_backoff and steps != (ctx.tried_same_node, ctx.tried_same_az):
                continue
            if backing_off:
                await self._backoff(attempt)
                attempt += 1
            backing_off = True

    def _select_from_candidate_replicas(self, candidates: list[RunningReplica]) -> RunningReplica | None:
        """The candidate with the fewest requests in flight among those with room, or None."""
        chosen: RunningReplica | None = None
        lowest = None
        for r in candidates:
            if r.replica_id not in self._replicas:
                continue  # removed since choose_replicas looked
            queue_len = r._queue_len()
            self.on_new_queue_len_info(r.replica_id, queue_len)
            if queue_len < r.max_ongoing_requests and (lowest is None or queue_len < lowest):
                chosen, lowest = r, queue_len
        return chosen

    def _fulfill_next_pending_request(self, replica: RunningReplica,
                                      request_metadata: RequestMetadata | None = None) -> None:
        """Give `replica` to the request it was found for (FIFOMixin overrides this)."""
        matched = self._get_pending_request_matching_internal_request_id(request_metadata)
        if matched is not None:
            self._assign(matched, replica)

    def _assign(self, pending_request: PendingRequest, replica: RunningReplica) -> None:
        """Give `replica` to the request: its slot is taken now, then the waiter is woken."""
        self._cancel_routing_task_for_pending_request(pending_request)
        if self._on_assigned is not None:
            self._on_assigned(replica)
        self.on_send_request(replica.replica_id)
        pending_request.future.set_result(replica)
        self._remove_pending_request_from_indices(pending_request)

    # ---- queue bookkeeping --------------------------------------------------------------
    def _get_next_pending_request_to_route(self) -> PendingRequest | None:
        while self._pending_requests_to_route:
            pr = self._pending_requests_to_route.popleft()
            if not pr.future.done():
                return pr
        return None

    def _get_pending_request_matching_internal_request_id(
        self, request_metadata: RequestMetadata | None = None
    ) -> PendingRequest | None:
        if request_metadata is None:
            return None
        pr = self._pending_requests_by_id.get(request_metadata.internal_request_id)
        return pr if pr is not None and not pr.future.done() else None

    def _add_pending_request_to_indices(self, pending_request: PendingRequest) -> None:
        internal_id = pending_request.metadata.internal_request_id
        if internal_id in self._pending_requests_by_id:
            return  # a retry: already indexed
        self._pending_requests_by_id[internal_id] = pending_request
        model_id = pending_request.metadata.multiplexed_model_id
        if model_id:
            self._pending_requests_by_model_id[model_id].append(pending_request)

    def _remove_pending_request_from_indices(self, pending_request: PendingRequest) -> None:
        # The per-model deques are cleaned lazily, when they are looked up.
        self._pending_requests_by_id.pop(pending_request.metadata.internal_request_id, None)

    def _drop_done_heads(self) -> None:
        queue = self._pending_requests_to_fulfill
        while queue and queue[0].future.done():
            queue.popleft()

    def _cancel_routing_task_for_pending_request(self, pending_request: PendingRequest) -> None:
        """Stop the task routing a request that needs no replica any more (not the caller's own)."""
        task = self._routing_task_by_pending_request_future.get(pending_request.future)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _fail_pending_requests(self, exc: BaseException | None) -> None:
        """End every waiting request with `exc`, or cancel them (None): the deployment is
        gone, its router was replaced, or the caller stops."""
        for pr in list(self._pending_requests_to_fulfill):
            if pr.future.done():
                pass
            elif exc is None:
                pr.future.cancel()
            else:
                pr.future.set_exception(exc)
            self._remove_pending_request_from_indices(pr)
        self._pending_requests_to_fulfill.clear()
        self._pending_requests_to_route.clear()
        for task in list(self._routing_tasks):
            task.cancel()


def _resolve(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _insert_sorted(queue: deque[PendingRequest], pending_request: PendingRequest) -> None:
    """Put a retried request back at its arrival position (usually the end)."""
    if not queue or pending_request.created_at >= queue[-1].created_at:
        queue.append(pending_request)
        return
    index = 0
    for pr in queue:
        if pending_request.created_at < pr.created_at:
            break
        index += 1
    queue.insert(index, pending_request)
