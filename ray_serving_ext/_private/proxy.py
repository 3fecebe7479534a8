"""The HTTP proxy actor: one per node, uvicorn serving an ASGI router.

Routes come from the controller by long poll; each request goes straight to a
replica through the proxy's own Router (power of two choices on the requests
this proxy has in flight), never through the controller.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from ray_serving_ext._private import metrics, tracing, transport
from ray_serving_ext._private.cluster import get_controller, local_node_ip
from ray_serving_ext._private.common import DeploymentID, Request, RequestMetadata, new_request_id
from ray_serving_ext._private.event_loop import get_router_loop
from ray_serving_ext._private.constants import HTTP_FAST_PATH, REQUEST_ID_HEADER, USE_DIRECT_TRANSPORT
from ray_serving_ext._private.http_util import (
    forwardable_scope, match_route, retry_after_headers, route_path, send_plain, uvicorn_ssl_kwargs,
)
from ray_serving_ext._private.logging_utils import (
    configure_component_logger, flush_logs, log_access, route_uvicorn_logs,
)
from ray_serving_ext._private.request_body import BodyPump, read_body_head
from ray_serving_ext._private.long_poll import LongPollClient
from ray_serving_ext._private.proxy_auth import OPEN_PATHS, ApiKeys, authorization_header, unauthorized_messages
from ray_serving_ext._private.proxy_bind import bind_sockets, describe_bind_error
from ray_serving_ext._private.router import Router
from ray_serving_ext.config import HTTPOptions, TracingConfig
from ray_serving_ext.exceptions import BackPressureError, DeploymentUnavailableError

logger = logging.getLogger("ray_serving_ext.proxy")

# Ray Serve's texts for a proxy that is not ready for traffic.
DRAINING_MESSAGE = "This node is being drained."
NO_ROUTES_MESSAGE = "Route table is not populated yet."
NO_REPLICAS_MESSAGE = "No replicas are available yet."


class ProxyASGIApp:
    """The ASGI app uvicorn runs: health, routes, and forwarding to replicas."""

    def __init__(self, request_timeout_s: Optional[float], node_id: str, api_keys: Optional[ApiKeys] = None,
                 is_head: bool = True, router_factory: Optional[Callable[[DeploymentID], Router]] = None) -> None:
        self.request_timeout_s = request_timeout_s
        # How a deployment's router is made: a replica's own ingress makes its deployment's local-first.
        self._make_router = router_factory or (
            lambda dep_id: Router(dep_id, asyncio.get_running_loop(), get_controller))
        self.node_id = node_id
        self.is_head = is_head
        self.api_keys = api_keys or ApiKeys(None, None)
        self.metrics_endpoint = True  # http_options.metrics_endpoint: False makes /-/metrics a 404
        self.routes: List[Tuple[str, str, str]] = []
        self.routers: Dict[DeploymentID, Router] = {}
        self.draining = False
        self.access_log = True
        self.access_logger = logger  # a replica's direct ingress writes these lines to a proxy log file
        # False until the controller's first route table arrives: a proxy that Ray
        # has just restarted answers 503 (retryable) then, not 404 for a live route.
        self.routes_received = False

    def update_routes(self, routes: Dict[str, Dict[str, str]]) -> None:
        entries = [(prefix, r["app_name"], r["deployment"]) for prefix, r in routes.items()]
        self.routes = sorted(entries, key=lambda e: len(e[0]), reverse=True)
        self.routes_received = True
        live = {DeploymentID(d, a) for _, a, d in entries}
        for dep_id in list(self.routers):
            if dep_id not in live:
                self.routers.pop(dep_id).stop()
        if not self.is_head:  # readiness needs the replica sets, before any request asks for them
            for dep_id in live:
                self._router(dep_id)

    def not_ready_reason(self) -> str:
        """Why this proxy should get no traffic yet ("" when it should), as Ray Serve's
        readiness: draining; no route yet; or, off the head node, no replica known yet
        (the head's proxy stays ready so that a deployment scaled to zero can wake up)."""
        if self.draining:
            return DRAINING_MESSAGE
        if not self.routes:
            return NO_ROUTES_MESSAGE
        if not self.is_head and not any(router.num_replicas for router in self.routers.values()):
            return NO_REPLICAS_MESSAGE
        return ""

    def _router(self, dep_id: DeploymentID) -> Router:
        router = self.routers.get(dep_id)
        if router is None:
            router = self._make_router(dep_id)
            self.routers[dep_id] = router
        return router

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        if self.api_keys.enabled and not await self._authorized(scope, send):
            return
        if scope["type"] == "websocket":
            await self._proxy_websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        path = route_path(scope)
        if path == "/-/healthz":
            reason = self.not_ready_reason()
            await send_plain(send, 503 if reason else 200, reason or "success")
            return
        if path == "/-/metrics":
            if self.metrics_endpoint:
                await self._serve_metrics(send)
            else:
                await send_plain(send, 404, "The metrics endpoint is turned off (http_options.metrics_endpoint).")
            return
        if path == "/-/routes":
            body = json.dumps({prefix: app for prefix, app, _ in self.routes})
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body.encode()})
            return
        await self._proxy_request(scope, receive, send)

    async def _authorized(self, scope: Dict[str, Any], send: Any) -> bool:
        """Whether the request may go on (probes always may); if not, it has been answered:
        401 with WWW-Authenticate for HTTP, a policy-violation close for a WebSocket."""
        if scope["type"] not in ("http", "websocket") or route_path(scope) in OPEN_PATHS:
            return True
        reason = self.api_keys.check(authorization_header(scope.get("headers", [])))
        if reason is None:
            return True
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # refused before accept: HTTP 403
            return False
        start = time.perf_counter()
        request_id = _header(scope, REQUEST_ID_HEADER) or new_request_id()
        for message in unauthorized_messages(reason, request_id):
            await send(message)
        self._record(scope, request_id, "", "", 401, start)
        return False

    async def _proxy_websocket(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        """Relay a WebSocket between the client and one replica's ingress app, both ways."""
        match = match_route(self.routes, route_path(scope))
        if match is None:  # before the first route table, "try again later", as HTTP's 503
            await send({"type": "websocket.close", "code": 1008 if self.routes_received else 1013})
            return
        prefix, app_name, deployment = match
        meta = RequestMetadata(
            request_id=_header(scope, REQUEST_ID_HEADER) or new_request_id(), app_name=app_name,
            route=prefix, http_method="WEBSOCKET", is_http_request=True,
        )
        router = self._router(DeploymentID(deployment, app_name))
        try:
            call = await router.assign_request(Request(transport.WEBSOCKET, meta, scope=forwardable_scope(scope, prefix)))
        except (BackPressureError, DeploymentUnavailableError):
            await send({"type": "websocket.close", "code": 1013})  # try again later
            return
        pump = asyncio.ensure_future(_pump_client_messages(receive, call))
        try:
            async for message in call:
                await send(message)
        except transport.ReplicaUnavailableError:
            try:
                await send({"type": "websocket.close", "code": 1011})
            except Exception:
                pass
        finally:
            pump.cancel()
            call.cancel()

    async def _serve_metrics(self, send: Any) -> None:
        """Prometheus text of the whole instance (every proxy, replica and handle)."""
        try:
            text = await asyncio.wait_for(get_controller().get_metrics_text.remote(), 10)
            status = 200
        except Exception as exc:
            text, status = f"# metrics unavailable: {exc}\n", 503
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]})
        await send({"type": "http.response.body", "body": text.encode()})

    async def _proxy_request(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        start = time.perf_counter()
        status_box = [0]
        app_box = ["", ""]  # application, route prefix: filled in once the route is matched

        async def tracking_send(message: Dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            try:
                await send(message)
            except RuntimeError as exc:  # uvloop refuses writes once the client's socket closed
                if "closed" in str(exc):
                    status_box[0] = 0
                    raise _ClientGone() from None
                raise

        request_id = _header(scope, REQUEST_ID_HEADER) or new_request_id()
        try:
            await self._handle_request(scope, receive, tracking_send, request_id, app_box)
        except _ClientGone:
            pass  # recorded as 499 below
        finally:
            self._record(scope, request_id, app_box[0], app_box[1], status_box[0], start)

    def _record(self, scope: Dict[str, Any], request_id: str, app_name: str, route: str, status: int,
                start: float) -> None:
        elapsed_ms = (time.perf_counter() - start) * 1000
        method = scope.get("method", "")
        code = str(status or 499)  # 499: the client went away before an answer
        metrics.child(metrics.HTTP_REQUESTS, route, method, app_name, code).inc()
        metrics.child(metrics.HTTP_LATENCY, route, app_name, method, code).observe(elapsed_ms)
        if not status or status >= 400:
            metrics.child(metrics.HTTP_ERRORS, route, code, method, app_name).inc()
        if self.access_log:
            log_access(self.access_logger, __file__, _ACCESS_LINE, "%s %s %s %s %.1fms",
                       (request_id, method, scope["path"], code, elapsed_ms),
                       {"request_id": request_id, "route": route, "method": method,
                        "status": code, "app": app_name, "duration_ms": round(elapsed_ms, 3)})

    async def _handle_request(self, scope: Dict[str, Any], receive: Any, send: Any, request_id: str,
                              app_box: List[str]) -> None:
        rid_header = [(REQUEST_ID_HEADER, request_id)]
        match = match_route(self.routes, route_path(scope))
        if match is None and not self.routes_received:
            await send_plain(send, 503, NO_ROUTES_MESSAGE, rid_header)
            return
        if match is None:
            await send_plain(
                send, 404,
                f"Path '{scope['path']}' not found. Ping http://.../-/routes for available routes.",
                rid_header,
            )
            return
        prefix, app_name, deployment = match
        app_box[0], app_box[1] = app_name, prefix
        if tracing.enabled:
            await tracing.trace_proxy_request(
                scope, request_id, app_name, deployment, route_path(scope), send,
                lambda traced_send: self._forward_matched(scope, receive, traced_send, request_id, match, True))
        else:
            await self._forward_matched(scope, receive, send, request_id, match, False)

    async def _forward_matched(self, scope: Dict[str, Any], receive: Any, send: Any, request_id: str,
                               match: Tuple[str, str, str], traced: bool) -> None:
        """Forward a request whose route matched to a replica and relay the answer (or
        answer 408/503/... itself); with `traced`, each routing gets its own span."""
        prefix, app_name, deployment = match
        rid_header = [(REQUEST_ID_HEADER, request_id)]
        if USE_DIRECT_TRANSPORT:  # a long body is streamed to the replica under flow control
            body, more, gone = await read_body_head(receive)
        else:  # Ray actor calls take the whole body
            body, more, gone = await _read_body(receive), False, False
        pump = BodyPump(receive, body if more else None, gone)
        meta = RequestMetadata(
            request_id=request_id, app_name=app_name, route=prefix,
            http_method=scope.get("method", ""), is_http_request=True,
            multiplexed_model_id=_header(scope, MULTIPLEXED_MODEL_ID_HEADER) or "",
        )
        router = self._router(DeploymentID(deployment, app_name))
        assign = tracing.traced_routing(router.assign_request, deployment, app_name) if traced \
            else router.assign_request
        state = _RequestState(Request(transport.HTTP, meta, scope=forwardable_scope(scope, prefix),
                                      body=None if more else body), pump, assign)
        forward = asyncio.ensure_future(self._forward_with_retry(router, state, send))
        disconnect = asyncio.ensure_future(pump.run())
        try:
            done, _ = await asyncio.wait(
                {forward, disconnect}, timeout=self.request_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            if forward in done or (disconnect in done and state.finished):
                # uvicorn reports a disconnect as soon as the response is complete.
                await self._finish(forward, state, send, rid_header)
            elif disconnect in done:
                forward.cancel()
                logger.info("Client disconnected; request %s cancelled.", request_id)
            else:
                forward.cancel()
                if not state.started:
                    await send_plain(
                        send, 408, f"Request {request_id} timed out after {self.request_timeout_s}s.", rid_header
                    )
        finally:
            disconnect.cancel()
            if not forward.done():
                forward.cancel()

    async def _finish(self, forward: asyncio.Future, state: "_RequestState", send: Any, rid_header: list) -> None:
        try:
            await forward
        except BackPressureError as exc:
            await send_plain(send, exc.status_code, exc.message, rid_header + retry_after_headers(exc.retry_after_s))
        except DeploymentUnavailableError as exc:
            await send_plain(send, 503, str(exc), rid_header)
        except _ReplicaDied as exc:
            if not state.started:
                await send_plain(send, 502, f"Replica died while handling request {state.meta.request_id}: {exc}",
                                 rid_header)

    async def _forward_with_retry(self, router: Router, state: "_RequestState", send: Any) -> None:
        """Send to a replica; a request lost with its replica before it started goes to another one.

        On the direct transport the replica says when a request starts, so any
        request that had not started is retried; on the Ray-call fallback that
        is unknowable, so only idempotent methods are.
        """
        for attempt in range(3):
            try:
                await self._forward(router, state, send)
                return
            except _ReplicaDied as exc:
                retryable = not exc.request_started or state.request.scope.get("method", "GET") in _IDEMPOTENT
                # A streamed body went (in part) to the lost replica and cannot be sent again.
                if state.started or not retryable or attempt == 2 or state.pump.streams_body:
                    raise
                logger.warning("Replica died before answering request %s; retrying.", state.meta.request_id)

    async def _forward(self, router: Router, state: "_RequestState", send: Any) -> None:
        call = await state.assign(state.request)
        state.pump.attach(call)
        try:
            async for messages in call:
                for message in messages:
                    if message["type"] == "http.response.start":
                        message = _with_request_id(message, state.meta.request_id)
                        state.started = True
                    elif not message.get("more_body", False):
                        state.finished = True
                    await send(message)
        except transport.ReplicaUnavailableError as exc:
            self.replica_died(router, call.replica_id, exc)
            raise _ReplicaDied(str(exc), exc.started) from exc

    @staticmethod
    def replica_died(router: Router, replica_id: str, exc: BaseException) -> None:
        """A call found its replica dead: route around it, and tell the controller."""
        router.mark_dead(replica_id)
        _report_dead(router, replica_id, exc)


MULTIPLEXED_MODEL_ID_HEADER = "serve_multiplexed_model_id"
# A proxy whose port is taken tries again after 0.5 s, 1 s, then every 2 s: it
# serves within 2 s of the port being freed.
BIND_RETRY_INITIAL_S = 0.5
BIND_RETRY_MAX_S = 2.0
_ACCESS_LINE = ProxyASGIApp._record.__code__.co_firstlineno + 10  # where its log line is

_IDEMPOTENT = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}


class _RequestState:
    """One HTTP request being forwarded (over retries): the request, and how far its answer got."""

    __slots__ = ("request", "meta", "assign", "started", "finished", "pump")

    def __init__(self, request: Request, pump: BodyPump, assign: Any) -> None:
        self.request = request
        self.assign = assign  # the router's assign_request, or it inside a routing span
        self.meta = request.metadata
        self.started = False
        self.finished = False
        self.pump = pump


class _ClientGone(Exception):
    """The client's connection closed while its answer was being written."""


class _ReplicaDied(Exception):
    def __init__(self, message: str, request_started: bool) -> None:
        super().__init__(message)
        self.request_started = request_started


def _report_dead(router: Router, replica_id: str, exc: BaseException) -> None:
    try:
        get_controller().report_dead_replica.remote(
            router.deployment_id.app_name, router.deployment_id.name, replica_id, type(exc).__name__
        )
    except Exception:
        pass


async def _pump_client_messages(receive: Any, call: Any) -> None:
    """Forward the WebSocket client's messages to the replica until it disconnects, as
    fast as the replica reads them (while its credit is spent, the client is not read)."""
    while True:
        message = await receive()
        disconnect = message["type"] == "websocket.disconnect"
        await call.send_inbound(message, force=disconnect)
        if disconnect:
            return


def _header(scope: Dict[str, Any], name: str) -> Optional[str]:
    key = name.encode()
    for k, v in scope.get("headers", []):
        if k.lower() == key:
            return v.decode("latin-1")
    return None


def _with_request_id(message: Dict[str, Any], request_id: str) -> Dict[str, Any]:
    headers = list(message.get("headers", []))
    if not any(k.lower() == REQUEST_ID_HEADER.encode() for k, _ in headers):
        headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
    return {**message, "headers": headers}


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _http_protocol(app: ProxyASGIApp, http_options: HTTPOptions, fast: bool) -> Any:
    """uvicorn's httptools protocol with the proxy's limits, forwarding plain requests without
    the ASGI round when `fast`; plain uvicorn if the installed uvicorn lacks what the
    subclass builds on (then no limits, and a warning says so)."""
    from ray_serving_ext._private import fast_http
    from ray_serving_ext._private.http_limits import Limits

    if fast_http.supported():
        return fast_http.protocol_class(app, Limits(http_options), fast=fast)
    logger.warning("This uvicorn lacks what the proxy's protocol builds on: no request limits, no fast path.")
    return "httptools"


def make_server(app: ProxyASGIApp, http_options: HTTPOptions, host: str) -> Any:
    """The uvicorn server a proxy (or a replica's direct ingress) runs `app` with; it is
    started with sockets bound beforehand (`serve(sockets=...)`). Middlewares configured
    (proxy_middlewares.py) wrap `app` and turn the fast path off."""
    import uvicorn

    from ray_serving_ext._private.proxy_middlewares import apply_middlewares, proxy_middlewares

    middlewares = proxy_middlewares(http_options.middlewares)
    config = uvicorn.Config(
        apply_middlewares(app, middlewares),
        # host is None only with an explicit proxy_location overriding the
        # "no host, no proxy" rule; serve on localhost then, as before.
        host=host,
        port=http_options.port,
        lifespan="off",
        access_log=False,
        log_level="warning",
        # No dictConfig: it would close every logging handler in the process, ours included.
        log_config=None,
        http=_http_protocol(app, http_options, fast=HTTP_FAST_PATH and not middlewares),
        loop="none",
        timeout_keep_alive=http_options.keep_alive_timeout_s,
        root_path=http_options.root_path,
        **uvicorn_ssl_kwargs(http_options),
    )
    return uvicorn.Server(config)


async def start_listening(server: Any, sock: Any) -> Any:
    """One more listener for a running uvicorn `server`: its protocol, its connections'
    bookkeeping; `sock` is a listening socket (closed when the listener is)."""
    import functools

    config = server.config
    factory = functools.partial(config.http_protocol_class, config=config, server_state=server.server_state,
                                app_state=server.lifespan.state)
    listener = await asyncio.get_running_loop().create_server(factory, sock=sock, ssl=config.ssl,
                                                              backlog=config.backlog)
    server.servers.append(listener)
    return listener


class ProxyActor:
    """Actor wrapper: starts uvicorn on its node and follows the controller's routes.

    The server, its routers and the long poll run on a uvloop thread of their
    own (the actor's loop is plain asyncio); actor methods reach it through
    run_coroutine_threadsafe.
    """

    def __init__(self, node_id: str, http_options: HTTPOptions, logging_config: Optional[Dict[str, Any]] = None,
                 tracing_config: Optional[TracingConfig] = None, index: int = 0, reuse_port: bool = False,
                 is_head: bool = True) -> None:
        self._node_id = node_id
        # Direct ingress: the node's ingress replicas accept from this proxy's sockets. They keep
        # them when this process restarts, so the port is bound with SO_REUSEPORT then.
        self._direct = http_options.direct_ingress and index == 0
        self._reuse_port = reuse_port or self._direct
        self._share: Optional[Any] = None  # ingress_share.ListenerShare, with direct ingress
        self._listen: List[Any] = []  # the listening sockets themselves, with direct ingress
        self._accept_lock: Optional[asyncio.Lock] = None
        component_id = node_id[:16] + (f"-{index}" if index else "")  # each proxy of a node logs to its own file
        self._http_options = http_options
        self._app = ProxyASGIApp(http_options.request_timeout_s, node_id,
                                 ApiKeys(http_options.api_keys_file, http_options.api_keys_env), is_head)
        logging_config = logging_config or {}
        self._app.access_log = logging_config.get("enable_access_log", True)
        self._app.metrics_endpoint = http_options.metrics_endpoint
        self._server: Any = None
        self._serve_task: Optional[asyncio.Task] = None
        self._long_poll: Optional[LongPollClient] = None
        self._started_at = time.time()
        self._host = http_options.host or "127.0.0.1"
        self._bind_error = ""  # why the port could not be bound, while it cannot
        configure_component_logger(
            "proxy", component_id, encoding=logging_config.get("encoding", "TEXT"),
            level=logging_config.get("log_level", "INFO"), logs_dir=logging_config.get("logs_dir"),
        )
        route_uvicorn_logs()
        tracing.setup_tracing("proxy", component_id, tracing_config)
        self._loop = get_router_loop()
        # Start serving right away, so a proxy restarted by Ray serves again
        # without waiting for the controller to notice.
        asyncio.run_coroutine_threadsafe(self._start(), self._loop)

    async def _on_loop(self, coro: Any) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def ready(self) -> Dict[str, Any]:
        """Start serving (once); returns where. Raises if the port cannot be bound."""
        return await self._on_loop(self._ready())

    async def _ready(self) -> Dict[str, Any]:
        await self._start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if self._bind_error:  # the proxy keeps trying; until then it is unhealthy, and says why
                raise RuntimeError(f"HTTP proxy cannot serve: {self._bind_error}")
            if self._serve_task is not None and self._serve_task.done():
                exc = self._serve_task.exception()
                raise RuntimeError(
                    f"HTTP proxy failed to start on {self._http_options.host}:{self._http_options.port}: "
                    f"{exc or 'the server exited'}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError("HTTP proxy did not start within 30s.")
            await asyncio.sleep(0.02)
        return {"node_id": self._node_id, "pid": os.getpid(), "port": self._http_options.port}

    async def _start(self) -> None:
        if self._serve_task is not None:
            return
        loop = asyncio.get_running_loop()
        self._long_poll = LongPollClient(get_controller, {"routes": self._app.update_routes}, loop)
        metrics.get_pusher(loop, get_controller).add_flusher(flush_logs)
        self._server = make_server(self._app, self._http_options, self._host)
        self._serve_task = loop.create_task(self._bind_and_serve())
        # Everything loaded so far lives as long as the process: keep it out of
        # the collector's way, which shortens GC pauses on the request path.
        gc.freeze()

    async def _bind_and_serve(self) -> None:
        """Bind the port (retrying with backoff while it is taken), then serve until shut down."""
        port = self._http_options.port
        delay = BIND_RETRY_INITIAL_S
        while True:
            try:
                sockets = bind_sockets(self._host, port, reuse_port=self._reuse_port)
                break
            except OSError as exc:
                error = describe_bind_error(exc, self._host, port, local_node_ip())
                if error != self._bind_error:
                    logger.error("HTTP proxy on node %s: %s.", self._node_id, error)
                self._bind_error = error
                if self._server.should_exit:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, BIND_RETRY_MAX_S)
        if self._bind_error:
            logger.info("HTTP proxy on node %s bound %s:%d; serving.", self._node_id, self._host, port)
        self._bind_error = ""
        if self._direct:  # uvicorn gets copies: it closes them to stop accepting, the originals stay
            self._listen, sockets = sockets, [sock.dup() for sock in sockets]
            asyncio.get_running_loop().create_task(self._share_listeners())
        try:
            await self._server.serve(sockets=sockets)
        except SystemExit as exc:  # uvicorn exits on start-up errors; that must not end this loop
            raise RuntimeError(f"uvicorn stopped while starting (exit status {exc.code})") from None

    # ---- direct ingress ---------------------------------------------------------------------
    async def _share_listeners(self) -> None:
        """Once serving, hand the listening sockets to the node's ingress replicas that ask."""
        from ray_serving_ext._private.ingress_share import ListenerShare

        deadline = time.monotonic() + 60
        while not self._server.started:
            if self._server.should_exit or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.02)
        self._accept_lock = asyncio.Lock()
        self._share = ListenerShare(self._listen, self._holders_changed)
        self._share.start()

    def _holders_changed(self, holders: int) -> None:
        asyncio.get_running_loop().create_task(self._set_accepting(holders == 0))

    async def _set_accepting(self, accept: bool) -> None:
        """Accept connections only while no ingress replica does (the queue is theirs then)."""
        assert self._accept_lock is not None
        async with self._accept_lock:
            servers = self._server.servers
            if not accept and servers:
                for listener in servers:
                    listener.close()
                servers.clear()
                logger.info("Ingress replicas accept this node's connections; the proxy stopped accepting.")
            elif accept and not servers and not self._server.should_exit:
                for sock in self._listen:
                    await start_listening(self._server, sock.dup())
                logger.info("No ingress replica accepts connections; the proxy accepts them again.")

    async def direct_ingress_info(self) -> Optional[Dict[str, Any]]:
        """Where an ingress replica of this node takes the listening sockets from, with the
        HTTP options to serve them with; None without direct ingress or before serving."""
        return await self._on_loop(self._direct_ingress_info())

    async def _direct_ingress_info(self) -> Optional[Dict[str, Any]]:
        if self._share is None or self._app.draining:
            return None
        return {"path": self._share.path, "http_options": self._http_options, "is_head": self._app.is_head,
                "pid": os.getpid()}

    async def check_health(self) -> None:
        await self.ready()

    async def prepare_for_shutdown(self) -> None:
        await self._on_loop(self._shutdown())

    async def _shutdown(self) -> None:
        self._app.draining = True
        tracing.flush()
        if self._long_poll is not None:
            self._long_poll.stop()
        if self._share is not None:
            self._share.close()
        if self._server is not None:
            self._server.should_exit = True
            if self._serve_task is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._serve_task), 10)
                except Exception:
                    pass
        for sock in self._listen:
            sock.close()
