"""The replica actor: runs one copy of a deployment's code and serves its requests.

A replica never runs more than `max_ongoing_requests` requests at once; more
wait here in arrival order. The controller drives its life: initialize (user
constructor), reconfigure (user_config), check_health, prepare_for_shutdown.

Requests arrive over the direct transport (`transport.py`) or, as a fallback,
as Ray actor calls; both run on the process's serving loop (a uvloop thread
shared with the routers of handles this replica's code uses), so user code,
routing for composition and the transport never hop between threads.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import time
import types
import traceback
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional


from ray_serving_ext._private import metrics, ray_metrics_bridge, tracing, transport
from ray_serving_ext._private.cluster import (
    current_actor_id, current_availability_zone, current_node_id, get_controller, local_node_ip,
)
from ray_serving_ext._private.common import DeploymentID, ReplicaID, Request, RequestMetadata
from ray_serving_ext._private.constants import RECORD_AUTOSCALING_STATS_TIMEOUT_S
from ray_serving_ext._private.concurrency import ConcurrencyLimiter
from ray_serving_ext._private.event_loop import get_router_loop
from ray_serving_ext._private.http_util import BufferedReceive, StreamedReceive, plain_response_messages, to_response
from ray_serving_ext._private.logging_utils import configure_component_logger, flush_logs, log_access
from ray_serving_ext._private.routing_stats import start_routing_stats
from ray_serving_ext._private.user_callable import UserCallable
from ray_serving_ext.multiplex import _set_models_listener as set_models_listener
from starlette.responses import Response as _StarletteResponse

_PLAIN_CALL = _StarletteResponse.__call__
from ray_serving_ext.config import DeploymentConfig
from ray_serving_ext.context import (
    ReplicaContext, RequestContext, _request_context, _set_replica_context, _set_request_context,
)
from ray_serving_ext.schema import ReplicaRank

logger = logging.getLogger("ray_serving_ext.replica")

# Bound on asking the controller for this replica's rank before the constructor runs.
_RANK_REQUEST_TIMEOUT_S = 60.0


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
        self._init_future: Optional[Any] = None
        self._limiter: Optional[ConcurrencyLimiter] = None
        self._shutting_down = False
        self._exit_event: Optional[asyncio.Event] = None
        self._num_total = 0
        self._token = secrets.token_hex(16)
        self._model_ids: List[str] = []
        self._port: Optional[int] = None
        self._server: Any = None
        self._loop = get_router_loop()
        self._context = ReplicaContext(ReplicaID(replica_id, DeploymentID(deployment_name, app_name)))
        self._rank_world_size = 0  # world_size the controller sent with the rank (used when autoscaling)
        self._ingress: Optional[Any] = None  # direct_ingress.ReplicaIngress, with direct ingress
        _set_replica_context(self._context)
        ray_metrics_bridge.install()  # ray.util.metrics recorded by user code show up at /-/metrics too
        logging_config = self._config.logging_config
        self._access_log_enabled = logging_config is None or logging_config.enable_access_log
        self._log_path = configure_component_logger(
            "replica", f"{app_name}_{deployment_name}_{replica_id}",
            encoding=logging_config.encoding if logging_config else "TEXT",
            level=logging_config.log_level if logging_config else "INFO",
            logs_dir=logging_config.logs_dir if logging_config else None,
        )

    # ---- running things on the serving loop ------------------------------------------------
    async def _on_loop(self, coro: Any) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def _get_limiter(self) -> ConcurrencyLimiter:
        if self._limiter is None:
            self._limiter = ConcurrencyLimiter(self._config.max_ongoing_requests)
        return self._limiter

    # ---- lifecycle (called by the controller) -------------------------------------------
    def _metadata(self) -> Dict[str, Any]:
        return {
            "replica_id": self._replica_id,
            "pid": os.getpid(),
            "node_id": current_node_id(),
            "node_ip": local_node_ip(),
            "actor_id": current_actor_id(),
            "version": self._version,
            "config": self._config.model_dump(),
            "initialized": self._user is not None,
            "log_path": self._log_path,
            "port": self._port,
            "token": self._token,
            "model_ids": list(self._model_ids),
            "availability_zone": current_availability_zone(),
            "rank": self._context.rank.model_dump() if self._context.rank is not None else None,
        }

    async def initialize_and_get_metadata(self) -> Dict[str, Any]:
        """Run the user constructor (once) and the first reconfigure; raises what they raise."""
        if self._init_future is None:
            self._init_future = asyncio.run_coroutine_threadsafe(self._initialize(), self._loop)
        await asyncio.wrap_future(self._init_future)
        return self._metadata()

    async def _initialize(self) -> None:
        await self._request_rank()
        # Unpickling code and arguments (which may be large) runs off the loop; the constructor then runs on it.
        user = await asyncio.get_running_loop().run_in_executor(
            None, UserCallable, self._serialized_def, self._serialized_init_args, self._config.max_ongoing_requests)
        await user.initialize(self._config.user_config, self._context.rank)
        self._user = user
        self._context.servable_object = user.instance
        # Before the first request can arrive: spans need the tracer in place.
        tracing.setup_tracing("replica", f"{self._app_name}_{self._deployment_name}_{self._replica_id}",
                              await get_controller().get_tracing_config.remote())
        _bypass_actor_wrappers(self)
        self._server, self._port = await transport.start_server(self._token, self._handle_transport, local_node_ip())
        await self._start_direct_ingress()
        set_models_listener(self._models_changed)
        gc.freeze()  # the user's model and our modules are long-lived: shorter GC pauses per request
        pusher = metrics.get_pusher(asyncio.get_running_loop(), get_controller)
        ongoing = metrics.REPLICA_ONGOING.labels(self._deployment_name, self._replica_id, self._app_name)
        limiter = self._get_limiter()
        pusher.add_flusher(lambda: ongoing.set(limiter.running + limiter.waiting))
        pusher.add_flusher(flush_logs)
        self._stats_task = _start_autoscaling_stats(self)
        self._routing_stats_task = start_routing_stats(self)
        logger.info("Replica %s initialized (pid %d, port %d).", self._replica_id, os.getpid(), self._port)

    async def _start_direct_ingress(self) -> None:
        """With http_options.direct_ingress, serve the node's HTTP connections while this
        replica is its application's ingress (see direct_ingress.py)."""
        http_options = await get_controller().get_http_options.remote()
        if not http_options.direct_ingress or http_options.host is None:
            return
        from ray_serving_ext._private.direct_ingress import ReplicaIngress

        logging_config = self._config.logging_config
        self._ingress = ReplicaIngress(self._replica_id, DeploymentID(self._deployment_name, self._app_name),
                                       current_node_id(), self._handle_transport, self._access_log_enabled,
                                       logging_config.encoding if logging_config else "TEXT",
                                       logging_config.logs_dir if logging_config else None)
        self._ingress.start()

    async def _request_rank(self) -> None:
        """Take this replica's rank from the controller (it numbers replicas by node)."""
        ref = get_controller().assign_replica_rank.remote(
            self._app_name, self._deployment_name, self._replica_id, current_node_id())
        payload = await asyncio.wait_for(ref, _RANK_REQUEST_TIMEOUT_S)
        if payload is None:
            raise RuntimeError(f"Replica {self._replica_id} is no longer part of its deployment.")
        self._set_rank(payload)

    def _set_rank(self, payload: Dict[str, Any]) -> None:
        """Put a rank from the controller (ReplicaRank fields plus world_size) in the context."""
        self._context.rank = ReplicaRank.model_validate(payload)
        self._rank_world_size = int(payload.get("world_size") or 0)
        self._refresh_world_size()

    def _refresh_world_size(self) -> None:
        # num_replicas when fixed; with autoscaling the controller's target when the rank came.
        fixed = self._config.num_replicas
        self._context.world_size = fixed if fixed is not None else self._rank_world_size

    async def update_rank(self, payload: Dict[str, Any]) -> None:
        """A new rank from the controller: into the context, then to the user's
        `reconfigure(user_config, rank=...)` if it takes one (what it raises is logged)."""
        old = self._context.rank
        self._set_rank(payload)
        if self._user is None or self._context.rank == old or not self._user.reconfigure_takes_rank():
            return
        try:
            await self._on_loop(self._user.reconfigure(self._config.user_config, self._context.rank))
        except Exception:
            logger.exception("reconfigure() raised for the new rank %s.", self._context.rank)

    def _models_changed(self, model_ids: List[str]) -> None:
        """Tell the controller which multiplexed models this replica holds (routing prefers it)."""
        self._model_ids = list(model_ids)
        try:
            get_controller().record_multiplexed_models.remote(
                self._app_name, self._deployment_name, self._replica_id, self._model_ids
            )
        except Exception:
            logger.warning("Could not report multiplexed models to the controller.", exc_info=True)

    async def get_metadata(self) -> Dict[str, Any]:
        """For a restarted controller: who this replica is and what it runs."""
        return self._metadata()

    async def reconfigure(self, config: Dict[str, Any]) -> Dict[str, Any]:
        """Apply a new config in place: user_config via the user's reconfigure(), limits at once."""
        new = DeploymentConfig.model_validate(config)
        old = self._config
        self._config = new
        self._refresh_world_size()
        self._loop.call_soon_threadsafe(self._get_limiter().set_capacity, new.max_ongoing_requests)
        if self._user is not None and new.user_config != old.user_config:
            await self._on_loop(self._user.reconfigure(new.user_config, self._context.rank))
        return self._metadata()

    async def check_health(self) -> None:
        """Raises when the replica is unhealthy (the user's check_health raised)."""
        if self._user is None:
            raise RuntimeError("Replica is not initialized.")
        await self._on_loop(self._user.check_health())

    async def liveness_probe(self) -> bool:
        """Returns only when the replica begins shutting down; fails at once if it dies.

        The controller keeps one of these in flight per replica, so a killed
        replica is noticed immediately rather than at the next health check.
        """
        if self._exit_event is None:
            self._exit_event = asyncio.Event()
        await self._exit_event.wait()
        return True

    async def prepare_for_shutdown(self) -> bool:
        """Take no new requests, let running ones finish (bounded), run user teardown."""
        self._shutting_down = True
        if self._exit_event is not None:
            self._exit_event.set()
        limiter = self._get_limiter()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.graceful_shutdown_timeout_s
        # Its HTTP connections go back to the proxy now; their requests in flight finish meanwhile.
        ingress_stopped = asyncio.ensure_future(self._on_loop(
            self._ingress.stop(self._config.graceful_shutdown_timeout_s))) if self._ingress is not None else None
        wait_loop = self._config.graceful_shutdown_wait_loop_s
        # Sleep first: callers that have not yet heard this replica is going
        # away may still send it requests, and those must be served too.
        while loop.time() < deadline:
            await asyncio.sleep(min(wait_loop, max(0.0, deadline - loop.time())))
            if limiter.running + limiter.waiting == 0:
                break
        if ingress_stopped is not None:
            await asyncio.wait({ingress_stopped}, timeout=max(0.0, deadline - loop.time()) + 1)
        drained = limiter.running + limiter.waiting == 0
        if self._user is not None:
            try:
                await self._on_loop(self._user.shutdown())
            except Exception:
                logger.exception("Deployment teardown raised.")
        tracing.flush()
        return drained

    # ---- request bookkeeping -------------------------------------------------------------
    def _access_log(self, meta: RequestMetadata, status: str, start: float) -> None:
        method = meta.http_method or meta.call_method
        route = meta.route or "-"
        log_access(
            logger, __file__, _ACCESS_LINE, "%s %s %s %s %.1fms",
            (meta.request_id, route, method, status, (time.perf_counter() - start) * 1000),
            {
                "request_id": meta.request_id, "route": route, "method": method, "status": status,
                "app": self._app_name, "deployment": self._deployment_name, "replica": self._replica_id,
            },
        )

    async def _run_request(self, meta: RequestMetadata, on_started: Callable[[], None],
                           work: Callable[[UserCallable], Awaitable[Any]], outcome: Optional["_Outcome"] = None) -> Any:
        """Admit under the limiter, set the request context, run `work`, record metrics and one
        access line (with `outcome.status`, which HTTP and WebSocket work set, when given)."""
        if self._user is None and self._init_future is not None:
            await asyncio.wrap_future(self._init_future)
        user = self._user
        if user is None:
            raise RuntimeError("Replica is not initialized.")
        limiter = self._get_limiter()
        await limiter.acquire()
        self._num_total += 1
        on_started()
        start = time.perf_counter()
        token = _set_request_context(
            RequestContext(meta.request_id, meta.app_name, meta.route, meta.multiplexed_model_id)
        )
        span = tracing.start_replica_span(meta, self._deployment_name, self._app_name,
                                          self._replica_id) if tracing.enabled else None
        status = "OK"
        failed = False
        try:
            result = await work(user)
            if outcome is not None and outcome.status is not None:
                status = str(outcome.status)
                failed = isinstance(outcome.status, int) and outcome.status >= 500
            return result
        except asyncio.CancelledError:
            status = "CANCELLED"
            raise
        except BaseException:
            status = "ERROR"
            failed = True
            logger.exception("Request %s failed.", meta.request_id)
            raise
        finally:
            if span is not None:
                tracing.end_replica_span(span, meta, self._deployment_name, status,
                                         outcome.status if outcome is not None else None)
            _request_context.reset(token)
            limiter.release()
            self._record(meta, status, start, failed)

    def _record(self, meta: RequestMetadata, status: str, start: float, failed: bool) -> None:
        labels = (self._deployment_name, self._replica_id, meta.route or "", self._app_name)
        metrics.child(metrics.REPLICA_REQUESTS, *labels).inc()
        metrics.child(metrics.REPLICA_LATENCY, *labels).observe((time.perf_counter() - start) * 1000)
        if failed:
            metrics.child(metrics.REPLICA_ERRORS, *labels).inc()
        if self._access_log_enabled:
            self._access_log(meta, status, start)

    # ---- the direct transport ------------------------------------------------------------
    async def _handle_transport(self, request: Request, stream: transport.ServerStream) -> None:
        """Serve one request from the direct transport, answering on `stream`."""
        # One flat branch rather than a coroutine per kind: this runs for every request.
        meta = request.metadata
        kind = request.kind
        try:
            if kind == transport.UNARY:
                value = await self._run_request(
                    meta, stream.started, lambda u: u.call(meta.call_method, request.args, request.kwargs)
                )
                stream.result(value)
            elif kind == transport.STREAM:
                await self._run_request(meta, stream.started, lambda u: _drain(
                    u.call_streaming(meta.call_method, request.args, request.kwargs), stream.item))
                stream.end()
            elif kind == transport.WEBSOCKET:
                outcome = _Outcome()
                await self._run_request(meta, stream.started,
                                        lambda u: self._serve_websocket(u, request.scope, stream, outcome), outcome)
                stream.end()
            elif kind == transport.HTTP:
                outcome = _Outcome()
                body = request.body
                receive = BufferedReceive(body) if body is not None else StreamedReceive(stream.receive)
                await self._run_request(meta, stream.started, lambda u: self._serve_http(
                    u, meta, request.scope, receive, stream.item, outcome), outcome)
                stream.end()
            else:
                raise ValueError(f"Unknown request kind {kind!r}")
        except asyncio.CancelledError:
            pass  # the caller cancelled or went away; there is no one to answer
        except BaseException as exc:  # the user's exception goes back to the caller
            stream.error(exc, f"{self._deployment_name}.{meta.call_method}")

    # ---- Ray actor-call entry points (fallback transport) ------------------------------------
    async def handle_request(self, meta: RequestMetadata, *args: Any, **kwargs: Any) -> Any:
        """Run one handle call; raises what the user code raised."""
        return await self._on_loop(self._run_request(meta, _noop, lambda u: u.call(meta.call_method, args, kwargs)))

    async def handle_request_streaming(self, meta: RequestMetadata, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """Run one streaming handle call, yielding the user generator's items."""
        async for item in self._bridge(meta, lambda u, emit: _drain(u.call_streaming(meta.call_method, args, kwargs), emit)):
            yield item

    async def handle_http(self, meta: RequestMetadata, scope: Dict[str, Any], body: bytes) -> AsyncIterator[List[Dict[str, Any]]]:
        """Serve one HTTP request; yields batches of ASGI messages (start, body chunks)."""
        outcome = _Outcome()
        async for batch in self._bridge(
                meta, lambda u, emit: self._serve_http(u, meta, scope, BufferedReceive(body), emit, outcome), outcome):
            yield batch

    async def _bridge(self, meta: RequestMetadata, work: Callable[[UserCallable, Callable[[Any], None]], Awaitable[Any]],
                      outcome: Optional["_Outcome"] = None) -> AsyncIterator[Any]:
        """Run `work` on the serving loop, handing what it emits to this (actor) loop."""
        actor_loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        async def emit(item: Any) -> None:
            # The fallback path has no flow control: Ray's streaming generator buffers what is emitted.
            actor_loop.call_soon_threadsafe(queue.put_nowait, item)

        future = asyncio.run_coroutine_threadsafe(self._run_request(meta, _noop, lambda u: work(u, emit), outcome), self._loop)
        future.add_done_callback(lambda _f: actor_loop.call_soon_threadsafe(queue.put_nowait, done))
        try:
            while True:
                item = await queue.get()
                if item is done:
                    break
                yield item
            future.result()
        finally:
            if not future.done():
                future.cancel()

    # ---- WebSocket ---------------------------------------------------------------------------
    async def _serve_websocket(self, user: UserCallable, scope: Dict[str, Any], stream: transport.ServerStream,
                               outcome: "_Outcome") -> None:
        """Run the ingress app on a WebSocket: client messages arrive as INBOUND frames, ours go as ITEMs."""
        if user.asgi_app is None:  # as Ray Serve: WebSockets need an ASGI (FastAPI) ingress
            await stream.item({"type": "websocket.close", "code": 1003})
            outcome.status = "WS-UNSUPPORTED"
            return
        outcome.status = "WS"
        await user.asgi_app(scope, stream.receive, stream.item)

    # ---- HTTP ------------------------------------------------------------------------------
    async def _serve_http(self, user: UserCallable, meta: RequestMetadata, scope: Dict[str, Any], receive: Any,
                          emit: Callable[[List[Dict[str, Any]]], Awaitable[None]], outcome: "_Outcome") -> None:
        """Run the user's ASGI app or callable; emits message batches (a whole small response at once).

        `emit` waits while the caller's window is full, so a streamed response
        is produced no faster than it is read.
        """
        pending: List[Dict[str, Any]] = []

        async def send(message: Dict[str, Any]) -> None:
            pending.append(message)
            if message["type"] == "http.response.start":
                outcome.status = message["status"]
                return
            batch = pending[:]
            pending.clear()
            await emit(batch)

        try:
            if user.asgi_app is not None:
                await user.asgi_app(scope, receive, send)
            else:
                from starlette.requests import Request

                args = (Request(scope, receive),) if user.takes_request(meta.call_method) else ()
                result = await user.call(meta.call_method, args, {})
                response = to_response(result)
                if _is_plain(response):  # the whole body is in hand: no ASGI round of sends
                    outcome.status = response.status_code
                    await emit([
                        {"type": "http.response.start", "status": response.status_code,
                         "headers": response.raw_headers},
                        {"type": "http.response.body", "body": response.body, "more_body": False},
                    ])
                else:
                    try:
                        await response(scope, receive, send)
                    finally:  # a StreamingResponse's generator, when its stream ends early
                        await _close_quietly(getattr(response, "body_iterator", None))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.error("Request %s failed:\n%s", meta.request_id, traceback.format_exc())
            if tracing.enabled:  # answered as a 500, so it never reaches end_replica_span: record it here
                tracing.record_exception(exc)
            if outcome.status is None:
                outcome.status = 500
                await emit(plain_response_messages(500, f"Internal Server Error (request id: {meta.request_id})"))
        finally:
            receive.disconnect()
        if pending:
            await emit(pending[:])




_ACCESS_LINE = ReplicaActor._access_log.__code__.co_firstlineno + 3  # where its log line is

# Methods run for every request. Ray wraps each method of an actor class for
# its tracing (an extra call, and an extra coroutine for async methods, on every
# call even with tracing off); requests arrive on the direct transport, never as
# actor calls, so the replica calls these as plain functions.
_HOT_PATH = ("_handle_transport", "_run_request", "_record", "_access_log", "_serve_http", "_get_limiter")


def _bypass_actor_wrappers(replica: ReplicaActor) -> None:
    for name in _HOT_PATH:
        setattr(replica, name, types.MethodType(getattr(ReplicaActor, name), replica))


def _start_autoscaling_stats(replica: ReplicaActor) -> Optional[asyncio.Task]:
    """Start reporting the user's `record_autoscaling_stats()` (sync or async) every
    `metrics_interval_s`, if the deployment autoscales and its class defines it."""
    fn = getattr(replica._user.instance if replica._user else None, "record_autoscaling_stats", None)
    if replica._config.autoscaling_config is None or not callable(fn):
        return None
    return asyncio.get_running_loop().create_task(_report_autoscaling_stats(replica, fn))


def _valid_stats(result: Any) -> bool:
    return isinstance(result, dict) and all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in result.items())


async def _report_autoscaling_stats(replica: ReplicaActor, fn: Callable[[], Any]) -> None:
    """The loop: call (bounded by RECORD_AUTOSCALING_STATS_TIMEOUT_S), check the result is
    a dict of metric name -> number (else log and stop: as Ray Serve, a wrong type
    disables custom metrics), send it to the controller; errors and timeouts are logged
    and retried at the next interval. Ends when the replica shuts down."""
    user = replica._user
    while not replica._shutting_down and user is not None:
        auto = replica._config.autoscaling_config
        await asyncio.sleep(auto.metrics_interval_s if auto is not None else 10.0)
        try:
            result = await asyncio.wait_for(user.call_maybe_async(fn, control=True),
                                            RECORD_AUTOSCALING_STATS_TIMEOUT_S)
        except asyncio.TimeoutError:
            logger.error("Replica autoscaling stats timed out after %ss.", RECORD_AUTOSCALING_STATS_TIMEOUT_S)
            continue
        except Exception as exc:
            logger.error("Replica autoscaling stats failed. %s", exc)
            continue
        if not _valid_stats(result):
            logger.error("record_autoscaling_stats returned %r, expected Dict[str, Union[int, float]]. "
                         "Disabling autoscaling stats.", type(result).__name__)
            return
        try:
            get_controller().record_autoscaling_stats.remote(
                replica._app_name, replica._deployment_name, replica._replica_id, dict(result), time.time())
        except Exception:
            logger.debug("Could not send autoscaling stats to the controller.", exc_info=True)


def _noop() -> None:
    return None


def _is_plain(response: Any) -> bool:
    """A response whose ASGI messages are just its status, headers and body."""
    return (
        type(response).__call__ is _PLAIN_CALL
        and getattr(response, "background", None) is None
        and isinstance(getattr(response, "body", None), (bytes, bytearray))
    )


async def _drain(agen: AsyncIterator[Any], emit: Callable[[Any], Awaitable[None]]) -> None:
    """Send each item of `agen`; awaiting `emit` (flow control) holds the generator back.
    However it ends (cancelled by a caller gone away, too), the generator is closed now."""
    try:
        async for item in agen:
            await emit(item)
    finally:
        await _close_quietly(agen)


async def _close_quietly(agen: Any) -> None:
    """Close an async generator now, so its `finally` runs at once rather than whenever
    the collector finds it (a cancelled stream's generator is left suspended at a yield)."""
    aclose = getattr(agen, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # already running elsewhere, or raising on close: nothing to add
            pass


class _Outcome:
    """How an HTTP or WebSocket request ended (its status), for metrics and the access line."""

    __slots__ = ("status",)

    def __init__(self) -> None:
        self.status: Any = None
