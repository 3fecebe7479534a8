"""Routing of requests from one caller (a handle's process, or a proxy) to replicas.

A Router knows the running replicas of one deployment from the controller's
long poll, counts the requests it has in flight on each, and sends a request
to the less loaded of two random replicas that have room under
`max_ongoing_requests`. When none has room the request waits in the router's
queue; past `max_queued_requests` waiting requests it is refused at once with
BackPressureError. The controller is never on the request path.

A deployment whose `request_router_config` names a custom RequestRouter has
its replicas chosen by that router instead (`custom_routing.py`), under the
same limits; the request then travels the same way.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from typing import Any, Awaitable, Callable, Deque, Dict, List, Optional, Tuple

import ray

from ray_serving_ext._private import metrics, transport
from ray_serving_ext._private.cluster import get_controller, local_node_ip
from ray_serving_ext._private.constants import USE_DIRECT_TRANSPORT
from ray_serving_ext._private.common import DeploymentID, DeploymentTargetInfo, ReplicaInfo, Request
from ray_serving_ext._private.custom_routing import CustomRouting, config_identity
from ray_serving_ext._private.long_poll import LongPollClient
from ray_serving_ext.exceptions import BackPressureError, DeploymentUnavailableError

logger = logging.getLogger("ray_serving_ext")


def replicas_key(deployment_id: DeploymentID) -> str:
    return f"replicas:{deployment_id.key}"


class Router:
    """Routes one caller's requests to one deployment's replicas. Lives on one loop."""

    def __init__(
        self,
        deployment_id: DeploymentID,
        loop: asyncio.AbstractEventLoop,
        get_controller: Callable[[], Any] = get_controller,
        on_dead_replica: Optional[Callable[[str], None]] = None,
        local: Optional[Tuple[str, Callable[[], Awaitable[Any]]]] = None,
    ) -> None:
        self.deployment_id = deployment_id
        # (replica id, connect): the replica this router runs inside (a replica's own HTTP
        # ingress). It is chosen as any other (requests are spread per request, not per
        # connection), and reached in-process when it is.
        self._local = local
        self._loop = loop
        self._replicas: Dict[str, ReplicaInfo] = {}
        self._ongoing: Dict[str, int] = {}
        self._suspect: set = set()  # replicas that failed a call since the last update
        self._max_ongoing = 5
        self._max_queued = -1
        self._backpressure: Tuple[int, Optional[float]] = (503, None)  # status code, Retry-After seconds
        self._exists = True
        self._unavailable_reason = ""
        self._updated = asyncio.Event()
        self._waiters: Deque[asyncio.Future] = deque()
        self._conns: Dict[str, transport.ReplicaConnection] = {}
        self._stopped = False
        self._connecting: Dict[str, asyncio.Future] = {}
        self._custom: Optional[CustomRouting] = None  # the deployment's custom request router, if any
        self.num_queued = 0
        self._long_poll = LongPollClient(get_controller, {replicas_key(deployment_id): self.update}, loop)
        self._pusher = metrics.get_pusher(loop, get_controller)
        self._pusher.add_load_provider(self.load)
        self._queued_gauge = metrics.QUEUED.labels(deployment_id.name, deployment_id.app_name)

    def load(self) -> Dict[str, float]:
        """What this caller asks of the deployment now: queued plus in-flight requests."""
        self._queued_gauge.set(self.num_queued)
        if self._stopped:
            return {}
        return {self.deployment_id.key: float(self.num_queued + self.num_ongoing)}

    # ---- state from the controller -------------------------------------------------
    def update(self, info: DeploymentTargetInfo) -> None:
        """Take the controller's view of the replicas (called on this router's loop)."""
        self._exists = info.exists
        self._unavailable_reason = info.message
        self._max_ongoing = info.max_ongoing_requests
        self._max_queued = info.max_queued_requests
        self._backpressure = (info.backpressure_status_code, info.backpressure_retry_after_s)
        self._replicas = {r.replica_id: r for r in info.replicas}
        self._ongoing = {rid: self._ongoing.get(rid, 0) for rid in self._replicas}
        self._suspect &= set(self._replicas)
        for rid in list(self._conns):
            if rid not in self._replicas:
                self._conns.pop(rid).close_when_idle()
        self._sync_custom(info)
        self._updated.set()
        self._wake(len(self._waiters))

    def _sync_custom(self, info: DeploymentTargetInfo) -> None:
        """(Re)build the custom request router the deployment names, or drop it; give it the replicas."""
        config = info.request_router_config
        old = self._custom
        if config is None or config.is_default_request_router():
            self._custom = None
        elif old is None or old.identity != config_identity(config):
            self._custom = CustomRouting(self.deployment_id, config, self._queue_len, self._take_slot, self._release)
        else:
            old.update_backoff(config)
        if old is not None and old is not self._custom:
            old.fail_all(_RouterReplaced())  # their callers start over with the new one
        if self._custom is not None:
            self._custom.sync_replicas(self._replicas, self._capacity, self._suspect)
            if not info.exists:
                self._custom.fail_all(DeploymentUnavailableError(self.deployment_id, info.message or "it does not exist"))

    def mark_dead(self, replica_id: str) -> None:
        """Stop routing to a replica a call found dead, until the controller says otherwise."""
        self._suspect.add(replica_id)
        if self._custom is not None:
            self._custom.replica_died(replica_id)

    def stop(self) -> None:
        self._stopped = True
        self._long_poll.stop()
        for conn in self._conns.values():
            conn.close_when_idle()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        if self._custom is not None:
            self._custom.fail_all(None)

    @property
    def num_replicas(self) -> int:
        return len(self._replicas)

    @property
    def num_ongoing(self) -> int:
        return sum(self._ongoing.values())

    # ---- choosing a replica ------------------------------------------------------------
    def _capacity(self, replica: ReplicaInfo) -> int:
        return min(replica.max_ongoing_requests, self._max_ongoing) if self._max_ongoing else replica.max_ongoing_requests

    def _choose(self, model_id: str = "") -> Optional[ReplicaInfo]:
        candidates = [
            r for rid, r in self._replicas.items()
            if rid not in self._suspect and self._ongoing.get(rid, 0) < self._capacity(r)
        ]
        if not candidates:
            return None
        if model_id:  # a replica that already holds the model saves a load
            holding = [r for r in candidates if model_id in r.model_ids]
            if holding:
                candidates = holding
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
        if self._custom is not None:
            self._custom.slot_freed()

    def _queue_len(self, replica_id: str) -> int:
        return self._ongoing.get(replica_id, 0)

    def _take_slot(self, replica_id: str) -> None:
        self._ongoing[replica_id] = self._ongoing.get(replica_id, 0) + 1

    def _backpressure_error(self) -> BackPressureError:
        logger.warning(
            "Request dropped due to backpressure (num_queued_requests=%d, max_queued_requests=%d).",
            self.num_queued,
            self._max_queued,
        )
        metrics.BACKPRESSURE.labels(self.deployment_id.name, self.deployment_id.app_name).inc()
        status_code, retry_after_s = self._backpressure
        return BackPressureError(self.num_queued, self._max_queued, status_code, retry_after_s)

    def _check_exists(self) -> None:
        if self._updated.is_set() and not self._exists:
            raise DeploymentUnavailableError(self.deployment_id, self._unavailable_reason or "it does not exist")

    async def _acquire(self, model_id: str = "") -> ReplicaInfo:
        self._check_exists()
        replica = None if self._waiters else self._choose(model_id)
        if replica is not None:
            return replica
        if self._max_queued != -1 and self.num_queued >= self._max_queued:
            raise self._backpressure_error()
        self.num_queued += 1
        if not self._replicas:
            self._pusher.push_soon()  # no replica at all (scaled to zero): tell the controller now
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
                if self._custom is not None:  # the first update named a custom request router
                    raise _RouterReplaced()
                replica = self._choose(model_id)
                if replica is not None:
                    return replica
        finally:
            self.num_queued -= 1

    # ---- sending ----------------------------------------------------------------------
    async def _connection(self, replica: ReplicaInfo) -> transport.ReplicaConnection:
        rid = replica.replica_id
        conn = self._conns.get(rid)
        if conn is not None and not conn.closed:
            return conn
        pending = self._connecting.get(rid)
        if pending is None:
            if self._local is not None and rid == self._local[0]:
                pending = asyncio.ensure_future(self._local[1]())
            else:
                # Replicas listen on their node's IP only (a local one is reached through loopback routing).
                host = replica.node_ip or local_node_ip()
                pending = asyncio.ensure_future(
                    transport.ReplicaConnection.open(host, replica.port, replica.token, rid)
                )
            self._connecting[rid] = pending
            pending.add_done_callback(lambda _f: self._connecting.pop(rid, None))
        conn = await asyncio.shield(pending)
        self._conns[rid] = conn
        return conn

    async def assign_request(self, request: Request) -> Any:
        """Wait for a replica with room and send the request; returns the call in flight.

        The call (a TransportCall, or a RayCall on the fallback path) has
        `result()` for unary requests and async iteration for the others. The
        replica's slot is released when the call completes, however it ends.
        A replica that cannot be reached is skipped for another one.
        """
        if self._custom is not None:
            return await self._assign_custom(request)
        for _attempt in range(10):
            try:
                replica = await self._acquire(request.metadata.multiplexed_model_id)
            except _RouterReplaced:
                return await self._assign_custom(request)
            try:
                return await self._send_counted(replica, request)
            except (OSError, transport.ReplicaUnavailableError) as exc:
                logger.warning("Replica %s unreachable (%s); trying another.", replica.replica_id, exc)
        raise DeploymentUnavailableError(self.deployment_id, "no replica could be reached")

    async def _send_counted(self, replica: Any, request: Request) -> Any:
        """Send holding one of the replica's slots until the call completes. A replica that
        cannot be reached is marked dead and its slot freed before the error propagates."""
        rid = replica.replica_id
        self._ongoing[rid] = self._ongoing.get(rid, 0) + 1
        try:
            call = await self._send(replica, request)
        except (OSError, transport.ReplicaUnavailableError):
            self._release(rid)
            self.mark_dead(rid)
            raise
        except BaseException:
            self._release(rid)
            raise
        call.add_done_callback(lambda rid=rid: self._release(rid))
        return call

    def assign_nowait(self, request: Request) -> Optional[transport.TransportCall]:
        """assign_request without waiting, for the common case; None when it would have to wait.

        Sends at once when a replica has room and its connection is open, no
        request is queued before this one, and the built-in router chooses.
        Otherwise (queueing, connecting, a custom router, the Ray-call fallback,
        a deployment that is gone) returns None having done nothing, and the
        caller uses assign_request, which then decides as it always does.
        """
        if self._custom is not None or self._waiters or not self._updated.is_set() or not self._exists:
            return None
        replica = self._choose(request.metadata.multiplexed_model_id)
        if replica is None or not replica.port or not USE_DIRECT_TRANSPORT:
            return None
        rid = replica.replica_id
        conn = self._conns.get(rid)
        if conn is None or conn.closed:
            return None
        self._ongoing[rid] = self._ongoing.get(rid, 0) + 1
        try:
            call = conn.request(request)
        except transport.ReplicaUnavailableError:
            self._release(rid)
            self.mark_dead(rid)
            return None
        except BaseException:
            self._release(rid)
            raise
        call.add_done_callback(lambda: self._release(rid))
        return call

    async def _assign_custom(self, request: Request) -> Any:
        """assign_request with the custom request router choosing (same limits, retries and sending)."""
        custom = self._custom
        pending = None
        is_retry = False
        internal_id = request.metadata.internal_request_id
        for _attempt in range(10):
            if self._custom is None:  # the deployment went back to the built-in router
                return await self.assign_request(request)
            if custom is not self._custom or pending is None:
                custom, pending, is_retry = self._custom, self._custom.pending_request(request), False
            try:
                rid = await self._acquire_custom(custom, pending, is_retry)
            except _RouterReplaced:
                pending = None
                continue
            is_retry = True
            replica = self._replicas.get(rid)
            if replica is None:  # removed between the assignment and now
                self._give_back(custom, rid, internal_id)
                continue
            try:
                call = await self._send(replica, _as_routed(request, pending))
            except (OSError, transport.ReplicaUnavailableError) as exc:
                self._give_back(custom, rid, internal_id)
                self.mark_dead(rid)
                logger.warning("Replica %s unreachable (%s); trying another.", rid, exc)
                continue
            except BaseException:
                self._give_back(custom, rid, internal_id)
                raise
            custom.routed(pending, rid, call)
            call.add_done_callback(lambda rid=rid, custom=custom: self._give_back(custom, rid, internal_id))
            return call
        raise DeploymentUnavailableError(self.deployment_id, "no replica could be reached")

    def _give_back(self, custom: CustomRouting, rid: str, internal_id: str) -> None:
        self._release(rid)
        custom.completed(rid, internal_id)

    async def _acquire_custom(self, custom: CustomRouting, pending: Any, is_retry: bool) -> str:
        """Wait for the custom router to assign a replica (its slot taken); as _acquire, a
        request that must wait counts as queued, and past max_queued_requests is refused."""
        self._check_exists()
        if self._max_queued != -1 and self.num_queued >= self._max_queued:
            raise self._backpressure_error()
        self.num_queued += 1
        if not self._replicas:
            self._pusher.push_soon()  # no replica at all (scaled to zero): tell the controller now
        try:
            return await custom.choose(pending, is_retry)
        finally:
            self.num_queued -= 1

    async def _send(self, replica: ReplicaInfo, request: Request) -> Any:
        if USE_DIRECT_TRANSPORT and replica.port:
            conn = await self._connection(replica)
            return conn.request(request)
        if request.kind == transport.WEBSOCKET:
            raise DeploymentUnavailableError(self.deployment_id, "WebSockets need the direct transport")
        if request.kind == transport.HTTP and request.body is None:
            raise DeploymentUnavailableError(self.deployment_id, "A streamed request body needs the direct transport")
        return RayCall.send(replica, request, self._loop)

    async def broadcast(self, request: Request) -> List[Any]:
        """Send `request` to every running replica now known, at once; returns the calls in flight.

        For control-plane calls (cache resets, reloads): it waits for no room
        under max_ongoing_requests and max_queued_requests does not apply, as
        in Ray Serve. A replica that cannot be reached gets a failed call
        (ReplicaUnavailableError) in its place. Replicas that start later are
        not called.
        """
        self._check_exists()
        if not self._updated.is_set():  # a new router: learn the replicas first
            await self._updated.wait()
            self._check_exists()
        calls = []
        for replica in list(self._replicas.values()):
            try:
                calls.append(await self._send_counted(replica, request))
            except (OSError, transport.ReplicaUnavailableError) as exc:
                calls.append(_FailedCall(transport.ReplicaUnavailableError(
                    str(exc), started=False, replica_id=replica.replica_id)))
        return calls

    async def call_unary(self, request: Request, assign: Optional[Callable[[Request], Any]] = None) -> Any:
        """Send a unary request and wait for its result; a request lost before it started is retried.

        `assign` (default: `assign_request`) routes each attempt; tracing passes
        it wrapped in a span.
        """
        assign = assign or self.assign_request
        for attempt in range(3):
            call = await assign(request)
            try:
                return await call.result()
            except transport.ReplicaUnavailableError as exc:
                self.mark_dead(call.replica_id)
                if exc.started or attempt == 2:
                    raise
                logger.warning("Request %s lost before it started; retrying.", request.metadata.request_id)
        raise AssertionError("unreachable")


class _FailedCall:
    """A call that could not be sent: its result raises the error."""

    def __init__(self, error: BaseException) -> None:
        self._error = error

    async def result(self) -> Any:
        raise self._error


class RayCall:
    """The fallback path: a request sent as a Ray actor call, with TransportCall's interface."""

    def __init__(self, result: Any, streaming: bool, loop: asyncio.AbstractEventLoop, replica_id: str) -> None:
        self._result = result
        self._streaming = streaming
        self._loop = loop
        self.replica_id = replica_id
        self.started = True  # unknowable on this path: assume the worst

    @classmethod
    def send(cls, replica: ReplicaInfo, request: Request, loop: asyncio.AbstractEventLoop) -> "RayCall":
        """Call the replica's actor method for the request's kind.

        Arguments go as the actor call's own arguments (not inside the
        Request), so Ray resolves ObjectRefs among them as it does for any call.
        """
        handle = replica.actor_handle
        meta = request.metadata
        if request.kind == transport.UNARY:
            ref = handle.handle_request.remote(meta, *request.args, **request.kwargs)
            return cls(ref, False, loop, replica.replica_id)
        if request.kind == transport.HTTP:
            gen = handle.handle_http.options(num_returns="streaming").remote(meta, request.scope, request.body)
        else:
            gen = handle.handle_request_streaming.options(num_returns="streaming").remote(
                meta, *request.args, **request.kwargs
            )
        return cls(gen, True, loop, replica.replica_id)

    def add_done_callback(self, fn: Callable[[], None]) -> None:
        done_ref = self._result.completed() if self._streaming else self._result
        done_ref.future().add_done_callback(lambda _f: self._loop.call_soon_threadsafe(fn))

    async def result(self) -> Any:
        try:
            return await self._result
        except _RAY_DEATH as exc:
            raise transport.ReplicaUnavailableError(str(exc), started=True, replica_id=self.replica_id) from exc
        except asyncio.CancelledError:
            self.cancel()
            raise

    def __aiter__(self) -> "RayCall":
        return self

    async def __anext__(self) -> Any:
        try:
            ref = await self._result.__anext__()
            return await ref
        except _RAY_DEATH as exc:
            raise transport.ReplicaUnavailableError(str(exc), started=True, replica_id=self.replica_id) from exc
        except asyncio.CancelledError:
            self.cancel()
            raise

    def cancel(self) -> None:
        try:
            ray.cancel(self._result)
        except Exception:
            pass


_RAY_DEATH = (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnavailableError)


def _as_routed(request: Request, pending: Any) -> Request:
    """The request with the arguments the request router left in its PendingRequest
    (as in Ray Serve, a router may adjust them); HTTP requests go unchanged."""
    if request.kind in (transport.UNARY, transport.STREAM):
        return Request(request.kind, request.metadata, tuple(pending.args), pending.kwargs)
    return request


class _RouterReplaced(Exception):
    """The deployment's request router changed while a request waited: route it again."""


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
        metrics.stop_pusher()


_registry = RouterRegistry()


def get_router_registry() -> RouterRegistry:
    return _registry
