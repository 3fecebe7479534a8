"""The replica actor: runs one copy of a deployment's code and serves its requests.

A replica never runs more than `max_ongoing_requests` requests at once; more
wait here in arrival order. The controller drives its life: initialize (user
constructor), reconfigure (user_config), check_health, prepare_for_shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import traceback
from collections import deque
from typing import Any, AsyncIterator, Deque, Dict, List, Optional

import ray

from ray_serving_ext._private.common import RequestMetadata
from ray_serving_ext._private.http_util import BufferedReceive, MessageQueue, plain_response_messages, to_response
from ray_serving_ext._private.logging_utils import configure_component_logger
from ray_serving_ext._private.user_callable import UserCallable
from ray_serving_ext.config import DeploymentConfig
from ray_serving_ext.context import ReplicaContext, RequestContext, _set_replica_context, _set_request_context

logger = logging.getLogger("ray_serving_ext.replica")


class ConcurrencyLimiter:
    """A FIFO semaphore whose capacity can change while requests run."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.running = 0
        self._waiters: Deque[asyncio.Future] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        if self.running < self.capacity and not self._waiters:
            self.running += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # we were handed a slot but are going away
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.running -= 1
        self._wake()

    def set_capacity(self, capacity: int) -> None:
        self.capacity = capacity
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.running < self.capacity:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.running += 1
                waiter.set_result(None)


class ReplicaActor:
    """One replica. Created by the controller, named SERVE_REPLICA::app#deployment#suffix."""

    def __init__(
        self,
        replica_id: str,
        app_name: str,
        deployment_name: str,
        serialized_def: bytes,
        serialized_init_args: bytes,
        config: Dict[str, Any],
        version: str,
    ) -> None:
        self._replica_id = replica_id
        self._app_name = app_name
        self._deployment_name = deployment_name
        self._serialized_def = serialized_def
        self._serialized_init_args = serialized_init_args
        self._config = DeploymentConfig.model_validate(config)
        self._version = version
        self._user: Optional[UserCallable] = None
        self._user_ready = False
        self._init_lock: Optional[asyncio.Lock] = None
        self._limiter: Optional[ConcurrencyLimiter] = None
        self._shutting_down = False
        self._exit_event: Optional[asyncio.Event] = None
        self._num_total = 0
        self._context = ReplicaContext(app_name, deployment_name, replica_id, replica_id)
        _set_replica_context(self._context)
        self._log_path = configure_component_logger("replica", f"{app_name}_{deployment_name}_{replica_id}")

    # ---- lifecycle (called by the controller) -------------------------------------------
    def _get_limiter(self) -> ConcurrencyLimiter:
        if self._limiter is None:
            self._limiter = ConcurrencyLimiter(self._config.max_ongoing_requests)
        return self._limiter

    def _metadata(self) -> Dict[str, Any]:
        ctx = ray.get_runtime_context()
        return {
            "replica_id": self._replica_id,
            "pid": os.getpid(),
            "node_id": ctx.get_node_id(),
            "actor_id": ctx.get_actor_id(),
            "version": self._version,
            "config": self._config.model_dump(),
            "initialized": self._user is not None and self._user_ready,
            "log_path": self._log_path,
        }

    async def initialize_and_get_metadata(self) -> Dict[str, Any]:
        """Run the user constructor (once) and the first reconfigure; raises what they raise."""
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if self._user is None:
                self._user_ready = False
                user = UserCallable(
                    self._serialized_def, self._serialized_init_args, self._config.max_ongoing_requests
                )
                await user.initialize(self._config.user_config)
                self._user = user
                self._user_ready = True
                self._context.servable_object = user.instance
                logger.info("Replica %s initialized (pid %d).", self._replica_id, os.getpid())
        return self._metadata()

    async def get_metadata(self) -> Dict[str, Any]:
        """For a restarted controller: who this replica is and what it runs."""
        return self._metadata()

    async def reconfigure(self, config: Dict[str, Any]) -> Dict[str, Any]:
        """Apply a new config in place: user_config via the user's reconfigure(), limits at once."""
        new = DeploymentConfig.model_validate(config)
        old = self._config
        self._config = new
        self._get_limiter().set_capacity(new.max_ongoing_requests)
        if self._user is not None and new.user_config != old.user_config:
            await self._user.reconfigure(new.user_config)
        return self._metadata()

    async def check_health(self) -> None:
        """Raises when the replica is unhealthy (the user's check_health raised)."""
        if self._user is None:
            raise RuntimeError("Replica is not initialized.")
        await self._user.check_health()

    async def liveness_probe(self) -> bool:
        """Returns only when the replica begins shutting down; fails at once if it dies.

        The controller keeps one of these in flight per replica, so a killed
        replica is noticed immediately rather than at the next health check.
        """
        if self._exit_event is None:
            self._exit_event = asyncio.Event()
        await self._exit_event.wait()
        return True

    async def get_num_ongoing_requests(self) -> int:
        limiter = self._get_limiter()
        return limiter.running + limiter.waiting

    async def prepare_for_shutdown(self) -> bool:
        """Take no new requests, let running ones finish (bounded), run user teardown."""
        self._shutting_down = True
        if self._exit_event is not None:
            self._exit_event.set()
        limiter = self._get_limiter()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.graceful_shutdown_timeout_s
        wait_loop = self._config.graceful_shutdown_wait_loop_s
        # Sleep first: callers that have not yet heard this replica is going
        # away may still send it requests, and those must be served too.
        while loop.time() < deadline:
            await asyncio.sleep(min(wait_loop, max(0.0, deadline - loop.time())))
            if limiter.running + limiter.waiting == 0:
                break
        drained = limiter.running + limiter.waiting == 0
        if self._user is not None:
            try:
                await self._user.shutdown()
            except Exception:
                logger.exception("Deployment teardown raised.")
        return drained

    # ---- requests -----------------------------------------------------------------------
    def _begin(self, meta: RequestMetadata) -> Any:
        self._num_total += 1
        return _set_request_context(
            RequestContext(meta.request_id, meta.app_name, meta.route, meta.multiplexed_model_id)
        )

    def _access_log(self, meta: RequestMetadata, status: str, start: float) -> None:
        method = meta.http_method or meta.call_method
        route = meta.route or "-"
        logger.info(
            "%s %s %s %s %.1fms",
            meta.request_id,
            route,
            method,
            status,
            (time.perf_counter() - start) * 1000,
            extra={
                "request_id": meta.request_id,
                "route": route,
                "method": method,
                "status": status,
                "app": self._app_name,
                "deployment": self._deployment_name,
                "replica": self._replica_id,
            },
        )

    async def _ready_user(self) -> UserCallable:
        if self._user is None:
            await self.initialize_and_get_metadata()
        assert self._user is not None
        return self._user

    async def handle_request(self, meta: RequestMetadata, *args: Any, **kwargs: Any) -> Any:
        """Run one handle call; raises what the user code raised."""
        user = await self._ready_user()
        limiter = self._get_limiter()
        await limiter.acquire()
        start = time.perf_counter()
        token = self._begin(meta)
        status = "OK"
        try:
            return await user.call(meta.call_method, args, kwargs)
        except asyncio.CancelledError:
            status = "CANCELLED"
            raise
        except BaseException:
            status = "ERROR"
            logger.exception("Request %s failed.", meta.request_id)
            raise
        finally:
            _set_request_context(None)
            limiter.release()
            self._access_log(meta, status, start)

    async def handle_request_streaming(self, meta: RequestMetadata, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """Run one streaming handle call, yielding the user generator's items."""
        user = await self._ready_user()
        limiter = self._get_limiter()
        await limiter.acquire()
        start = time.perf_counter()
        self._begin(meta)
        status = "OK"
        try:
            async for item in user.call_streaming(meta.call_method, args, kwargs):
                yield item
        except asyncio.CancelledError:
            status = "CANCELLED"
            raise
        except BaseException:
            status = "ERROR"
            logger.exception("Request %s failed.", meta.request_id)
            raise
        finally:
            limiter.release()
            self._access_log(meta, status, start)

    async def handle_http(self, meta: RequestMetadata, scope: Dict[str, Any], body: bytes) -> AsyncIterator[List[Dict[str, Any]]]:
        """Serve one HTTP request; yields batches of ASGI messages (start, body chunks)."""
        user = await self._ready_user()
        limiter = self._get_limiter()
        await limiter.acquire()
        start = time.perf_counter()
        self._begin(meta)
        queue = MessageQueue()
        receive = BufferedReceive(body)
        status_holder: Dict[str, Any] = {"status": None}

        async def send(message: Dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await queue.send(message)

        task = asyncio.ensure_future(self._run_http(user, meta, scope, receive, send, queue))
        try:
            while True:
                batch = await queue.get_batch()
                if not batch:
                    break
                yield batch
            await task
        finally:
            if not task.done():
                task.cancel()
            receive.disconnect()
            limiter.release()
            self._access_log(meta, str(status_holder["status"] or "CANCELLED"), start)

    async def _run_http(self, user: UserCallable, meta: RequestMetadata, scope: Dict[str, Any],
                        receive: BufferedReceive, send: Any, queue: MessageQueue) -> None:
        started = {"value": False}

        async def tracking_send(message: Dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started["value"] = True
            await send(message)

        try:
            if user.asgi_app is not None:
                await user.asgi_app(scope, receive, tracking_send)
            else:
                from starlette.requests import Request

                request = Request(scope, receive)
                result = await user.call(meta.call_method, (request,), {})
                await to_response(result)(scope, receive, tracking_send)
        except Exception:
            logger.error("Request %s failed:\n%s", meta.request_id, traceback.format_exc())
            if not started["value"]:
                for message in plain_response_messages(
                    500, f"Internal Server Error (request id: {meta.request_id})"
                ):
                    await send(message)
        finally:
            queue.close()
