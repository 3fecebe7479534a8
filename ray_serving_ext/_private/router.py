"""Routing of requests from one caller (a handle's process, or a proxy) to replicas.

A Router knows the running replicas of one deployment from the controller's
long poll, counts the requests it has in flight on each, and sends a request
to the less loaded of two random replicas that have room under
`max_ongoing_requests`. When none has room the request waits in the router's
queue; past `max_queued_requests` waiting requests it is refused at once with
BackPressureError. The controller is never on the request path.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import ray

from ray_serving_ext._private.common import DeploymentID, DeploymentTargetInfo, ReplicaInfo, RequestMetadata
from ray_serving_ext._private.constants import CONTROLLER_NAME, SERVE_NAMESPACE
from ray_serving_ext._private.long_poll import LongPollClient
from ray_serving_ext.exceptions import BackPressureError, DeploymentUnavailableError

logger = logging.getLogger("ray_serving_ext")


def _default_controller() -> Any:
    return ray.get_actor(CONTROLLER_NAME, namespace=SERVE_NAMESPACE)


def replicas_key(deployment_id: DeploymentID) -> str:
    return f"replicas:{deployment_id.key}"


class Router:
    """Routes one caller's requests to one deployment's replicas. Lives on one loop."""

    def __init__(
        self,
        deployment_id: DeploymentID,
        loop: asyncio.AbstractEventLoop,
        get_controller: Callable[[], Any] = _default_controller,
        on_dead_replica: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.deployment_id = deployment_id
        self._loop = loop
        self._replicas: Dict[str, ReplicaInfo] = {}
        self._ongoing: Dict[str, int] = {}
        self._suspect: set = set()  # replicas that failed a call since the last update
        self._max_ongoing = 5
        self._max_queued = -1
        self._exists = True
        self._unavailable_reason = ""
        self._updated = asyncio.Event()
        self._waiters: Deque[asyncio.Future] = deque()
        self.num_queued = 0
        self._long_poll = LongPollClient(get_controller, {replicas_key(deployment_id): self.update}, loop)

    # ---- state from the controller -------------------------------------------------
    def update(self, info: DeploymentTargetInfo) -> None:
        """Take the controller's view of the replicas (called on this router's loop)."""
        self._exists = info.exists
        self._unavailable_reason = info.message
        self._max_ongoing = info.max_ongoing_requests
        self._max_queued = info.max_queued_requests
        self._replicas = {r.replica_id: r for r in info.replicas}
        self._ongoing = {rid: self._ongoing.get(rid, 0) for rid in self._replicas}
        self._suspect &= set(self._replicas)
        self._updated.set()
        self._wake(len(self._waiters))

    def mark_dead(self, replica_id: str) -> None:
        """Stop routing to a replica a call found dead, until the controller says otherwise."""
        self._suspect.add(replica_id)

    def stop(self) -> None:
        self._long_poll.stop()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()

    @property
    def num_replicas(self) -> int:
        return len(self._replicas)

    @property
    def num_ongoing(self) -> int:
        return sum(self._ongoing.values())

    # ---- choosing a replica ------------------------------------------------------------
    def _capacity(self, replica: ReplicaInfo) -> int:
        return min(replica.max_ongoing_requests, self._max_ongoing) if self._max_ongoing else replica.max_ongoing_requests

    def _choose(self) -> Optional[ReplicaInfo]:
        candidates = [
            r for rid, r in self._replicas.items()
            if rid not in self._suspect and self._ongoing.get(rid, 0) < self._capacity(r)
        ]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        a, b = random.sample(candidates, 2)
        return a if self._ongoing[a.replica_id] <= self._ongoing[b.replica_id] else b

    def _wake(self, n: int) -> None:
        while n > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                n -= 1

    def _release(self, replica_id: str) -> None:
        if replica_id in self._ongoing and self._ongoing[replica_id] > 0:
            self._ongoing[replica_id] -= 1
        self._wake(1)

    def _check_exists(self) -> None:
        if self._updated.is_set() and not self._exists:
            raise DeploymentUnavailableError(self.deployment_id, self._unavailable_reason or "it does not exist")

    async def _acquire(self) -> ReplicaInfo:
        self._check_exists()
        replica = None if self._waiters else self._choose()
        if replica is not None:
            return replica
        if self._max_queued != -1 and self.num_queued >= self._max_queued:
            logger.warning(
                "Request dropped due to backpressure (num_queued_requests=%d, max_queued_requests=%d).",
                self.num_queued,
                self._max_queued,
            )
            raise BackPressureError(num_queued_requests=self.num_queued, max_queued_requests=self._max_queued)
        self.num_queued += 1
        try:
            while True:
                waiter = self._loop.create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                except asyncio.CancelledError:
                    if waiter.done() and not waiter.cancelled():
                        self._wake(1)  # pass on the wake-up we consumed
                    raise
                self._check_exists()
                replica = self._choose()
                if replica is not None:
                    return replica
        finally:
            self.num_queued -= 1

    # ---- sending ----------------------------------------------------------------------
    async def assign_request(
        self,
        metadata: RequestMetadata,
        args: Tuple[Any, ...],
        kwargs: Dict[str, Any],
        method: str = "handle_request",
    ) -> Tuple[Any, str]:
        """Wait for a replica with room, send the call; returns (ObjectRef or generator, replica_id).

        The slot is released when the call completes, however it completes.
        """
        args, kwargs = await _resolve_responses(args, kwargs)
        replica = await self._acquire()
        rid = replica.replica_id
        self._ongoing[rid] = self._ongoing.get(rid, 0) + 1
        if metadata.is_streaming and method == "handle_request":
            method = "handle_request_streaming"
        try:
            actor_method = getattr(replica.actor_handle, method)
            if method in ("handle_request_streaming", "handle_http"):
                result = actor_method.options(num_returns="streaming").remote(metadata, *args, **kwargs)
                done_ref = result.completed()
            else:
                result = actor_method.remote(metadata, *args, **kwargs)
                done_ref = result
        except Exception:
            self._release(rid)
            raise
        done_ref.future().add_done_callback(lambda _f: self._loop.call_soon_threadsafe(self._release, rid))
        return result, rid


async def _resolve_responses(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """Replace DeploymentResponse arguments by their ObjectRefs (Ray resolves those)."""
    from ray_serving_ext.handle import DeploymentResponse, DeploymentResponseGenerator

    def bad(value: Any) -> bool:
        return isinstance(value, DeploymentResponseGenerator)

    if any(bad(a) for a in args) or any(bad(v) for v in kwargs.values()):
        raise TypeError("A streaming DeploymentResponseGenerator cannot be passed to another handle call.")
    if not any(isinstance(a, DeploymentResponse) for a in args) and not any(
        isinstance(v, DeploymentResponse) for v in kwargs.values()
    ):
        return args, kwargs
    new_args: List[Any] = []
    for a in args:
        new_args.append(await a._to_object_ref() if isinstance(a, DeploymentResponse) else a)
    new_kwargs = {}
    for k, v in kwargs.items():
        new_kwargs[k] = await v._to_object_ref() if isinstance(v, DeploymentResponse) else v
    return tuple(new_args), new_kwargs


class RouterRegistry:
    """One Router per (deployment, loop) in a process."""

    def __init__(self) -> None:
        self._routers: Dict[Tuple[DeploymentID, int], Router] = {}

    def get(self, deployment_id: DeploymentID, loop: asyncio.AbstractEventLoop) -> Router:
        key = (deployment_id, id(loop))
        router = self._routers.get(key)
        if router is None:
            router = Router(deployment_id, loop)
            self._routers[key] = router
        return router

    def clear(self) -> None:
        for router in self._routers.values():
            try:
                router._loop.call_soon_threadsafe(router.stop)
            except RuntimeError:
                pass
        self._routers.clear()


_registry = RouterRegistry()


def get_router_registry() -> RouterRegistry:
    return _registry
