"""A deployment's custom `RequestRouter`, driven by one caller's `Router`.

The Router owns the facts (replicas, requests in flight per replica, the
limits); this keeps the request router's view of them current, turns each
request into a `PendingRequest`, and returns the replica the request router
assigned. The slot on that replica is taken at the moment of assignment (the
`_on_assigned` hook), so concurrent routing tasks never overfill a replica.
Sending stays with the Router, on the direct data path.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections.abc import Callable
from typing import Any

from ray_serving_ext._private.cluster import CallerIdentity, caller_identity
from ray_serving_ext._private.common import (
    HTTP,
    WEBSOCKET,
    DeploymentHandleSource,
    DeploymentID,
    ReplicaID,
    ReplicaInfo,
    Request,
)
from ray_serving_ext._private.constants import (
    PROXY_NAME_PREFIX,
    PROXY_PREFER_LOCAL_AZ_ROUTING,
    PROXY_PREFER_LOCAL_NODE_ROUTING,
    REPLICA_NAME_PREFIX,
)
from ray_serving_ext._private.request_router.common import (
    PendingRequest,
    StreamingHTTPRequest,
)
from ray_serving_ext._private.request_router.replica_wrapper import RunningReplica
from ray_serving_ext._private.request_router.request_router import RequestRouter
from ray_serving_ext.config import RequestRouterConfig

logger = logging.getLogger("ray_serving_ext.router")


def _handle_source(me: CallerIdentity) -> DeploymentHandleSource:
    name = me.actor_name
    if name.startswith(PROXY_NAME_PREFIX):
        return DeploymentHandleSource.PROXY
    if name.startswith(REPLICA_NAME_PREFIX):
        return DeploymentHandleSource.REPLICA
    return DeploymentHandleSource.UNKNOWN


def config_identity(config: RequestRouterConfig) -> tuple:
    """What makes a new request router necessary when it changes (not the backoff)."""
    return (config.request_router_class, repr(sorted(config.request_router_kwargs.items())),
            config.get_serialized_request_router_cls())


class CustomRouting:
    """One RequestRouter instance for one (deployment, caller loop)."""

    def __init__(self, deployment_id: DeploymentID, config: RequestRouterConfig, queue_len: Callable[[str], int],
                 reserve: Callable[[str], None], release: Callable[[str], None]) -> None:
        """`queue_len(rid)` is the caller's requests in flight on a replica; `reserve(rid)`
        takes a slot on it and `release(rid)` gives one back."""
        self.deployment_id = deployment_id
        self.identity = config_identity(config)
        self._queue_len = queue_len
        self._reserve = reserve
        self._release = release
        self._wrappers: dict[str, RunningReplica] = {}
        self.error: BaseException | None = None
        self.router: RequestRouter | None = None
        try:
            self.router = self._build(config)
        except Exception as exc:  # the user's class or initialize_state failed: requests say why
            logger.exception("Could not create request router %r for %s.", config.request_router_class, deployment_id)
            self.error = exc

    def _build(self, config: RequestRouterConfig) -> RequestRouter:
        cls = config.get_request_router_class()
        me = caller_identity()
        source = _handle_source(me)
        prefer_node = source == DeploymentHandleSource.PROXY and PROXY_PREFER_LOCAL_NODE_ROUTING
        router = cls(
            deployment_id=self.deployment_id,
            handle_source=source,
            self_node_id=me.node_id,
            self_actor_id=me.actor_id,
            self_actor_handle=None,
            use_replica_queue_len_cache=True,
            create_replica_wrapper_func=self._wrap,
            prefer_local_node_routing=prefer_node,
            prefer_local_az_routing=PROXY_PREFER_LOCAL_AZ_ROUTING,
            self_availability_zone=me.availability_zone,
            initial_backoff_s=config.initial_backoff_s,
            backoff_multiplier=config.backoff_multiplier,
            max_backoff_s=config.max_backoff_s,
        )
        router.initialize_state(**config.request_router_kwargs)
        router._on_assigned = lambda replica: self._reserve(replica._unique_id)
        return router

    def _wrap(self, info: ReplicaInfo) -> RunningReplica:
        return RunningReplica(info, self.deployment_id, queue_len_fn=self._queue_len)

    # ---- from the Router ----------------------------------------------------------------
    def update_backoff(self, config: RequestRouterConfig) -> None:
        if self.router is not None:
            self.router.update_backoff_params(config.initial_backoff_s, config.backoff_multiplier, config.max_backoff_s)

    def sync_replicas(self, replicas: dict[str, ReplicaInfo], capacity: Callable[[ReplicaInfo], int],
                      excluded: set[str]) -> None:
        """Give the request router the routable replicas (wrappers are kept per replica)."""
        if self.router is None:
            return
        wrappers: dict[str, RunningReplica] = {}
        for rid, info in replicas.items():
            if rid in excluded:
                continue
            wrapper = self._wrappers.get(rid)
            if wrapper is None:
                wrapper = self.router.create_replica_wrapper(info)
            wrapper.update_replica_info(info, capacity(info))
            wrappers[rid] = wrapper
        self._wrappers = wrappers
        self.router.update_replicas(list(wrappers.values()))

    def pending_request(self, request: Request) -> PendingRequest:
        """The PendingRequest for one request; HTTP ones carry their scope as Ray Serve's proxy does."""
        if request.kind in (HTTP, WEBSOCKET):
            args = [pickle.dumps(StreamingHTTPRequest(request.scope or {}))]
            return PendingRequest(args=args, kwargs={}, metadata=request.metadata)
        return PendingRequest(args=list(request.args), kwargs=dict(request.kwargs), metadata=request.metadata)

    async def choose(self, pending: PendingRequest, is_retry: bool) -> str:
        """Wait for the request router to assign a replica; returns its id, its slot taken.

        A wait cancelled just after the assignment gives the slot back.
        """
        if self.router is None:
            assert self.error is not None
            raise self.error
        try:
            replica = await self.router._choose_replica_for_request(pending, is_retry=is_retry)
        except asyncio.CancelledError:
            future = pending.future
            if future.done() and not future.cancelled() and future.exception() is None:
                rid = future.result()._unique_id
                self._release(rid)
                self.completed(rid, pending.metadata.internal_request_id)
            raise
        return replica._unique_id

    def replica_id(self, rid: str) -> ReplicaID:
        return ReplicaID(rid, self.deployment_id)

    def slot_freed(self) -> None:
        if self.router is not None:
            self.router._on_slot_freed()

    def replica_died(self, rid: str) -> None:
        self._wrappers.pop(rid, None)
        if self.router is not None:
            self.router.on_replica_actor_died(self.replica_id(rid))

    def routed(self, pending: PendingRequest, rid: str, call: Any) -> None:
        if self.router is not None:
            _guard(self.router.on_request_routed, pending, self.replica_id(rid), call)

    def completed(self, rid: str, internal_request_id: str) -> None:
        if self.router is not None:
            self.router.decrement_queue_len_cache(self.replica_id(rid))
            _guard(self.router.on_request_completed, self.replica_id(rid), internal_request_id)

    def fail_all(self, exc: BaseException | None) -> None:
        """End every waiting request with `exc`, or cancel them (None)."""
        if self.router is not None:
            self.router._fail_pending_requests(exc)


def _guard(fn: Callable[..., Any], *args: Any) -> None:
    """Run a user callback; its exception is logged, never the request's failure."""
    try:
        fn(*args)
    except Exception:
        logger.exception("Request router callback %s raised.", getattr(fn, "__name__", fn))
