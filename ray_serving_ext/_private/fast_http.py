"""The proxy's HTTP fast path: plain requests forwarded from the parser's callbacks.

uvicorn's httptools protocol still parses every request, keeps connections
alive, pipelines, times idle connections out and shuts down gracefully. What
this subclass skips, for most requests, is the ASGI round: no task, no
receive/send coroutines, no queue per request. When a request's message is
complete it goes to a replica from the parser's callback (when a replica has
room at once; otherwise one task waits for one, as the ASGI path would), and
the replica's answer is written to the client from the transport's callback,
headers and body in one write.

A request takes this path when the proxy's ASGI app would only forward it:
a route matched, not a `/-/` endpoint, a body of declared length up to
BODY_STREAM_THRESHOLD_BYTES (no chunked upload, no `Expect: 100-continue`),
no `X-Forwarded-*` headers for uvicorn's proxy-headers middleware, tracing
off, the direct transport on. Everything else (WebSockets, streamed uploads,
health and metrics endpoints, 404s) runs the ASGI app exactly as before.

The semantics are the ASGI path's: the router's limits and queueing, 503 on
backpressure with Retry-After, 408 after `request_timeout_s`, cancellation
when the client disconnects, the request id header, retries of requests lost
with their replica before they started, metrics and the access line. A
streamed response whose client cannot keep up continues in a task that waits
on the client's socket, so the stream's credit is only given back as the
client reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, List, Optional, Tuple

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ray_serving_ext._private.http_limits import LimitedHttpToolsProtocol, Limits

from ray_serving_ext._private import tracing, transport
from ray_serving_ext._private.common import DeploymentID, Request, RequestMetadata, new_request_id
from ray_serving_ext._private.constants import BODY_STREAM_THRESHOLD_BYTES, REQUEST_ID_HEADER, USE_DIRECT_TRANSPORT
from ray_serving_ext._private.proxy_auth import authorization_header
from ray_serving_ext._private.http_util import (
    forwardable_scope, match_route, plain_response_messages, retry_after_headers, route_path,
)
from ray_serving_ext.exceptions import BackPressureError, DeploymentUnavailableError

logger = logging.getLogger("ray_serving_ext.proxy")

_REQUEST_ID = REQUEST_ID_HEADER.encode()
_MODEL_ID = b"serve_multiplexed_model_id"
_IDEMPOTENT = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}
_MAX_ATTEMPTS = 3


def supported() -> bool:
    """Whether the installed uvicorn has the protocol internals this subclass builds on."""
    needed = ("_start_asgi_task", "on_response_complete", "on_body", "on_message_complete", "connection_lost")
    return all(hasattr(HttpToolsProtocol, name) for name in needed)


def protocol_class(app: Any, limits: Limits, fast: bool = True) -> type:
    """The proxy's uvicorn protocol for `app` (a proxy.ProxyASGIApp): `limits` enforced,
    and plain requests forwarded without the ASGI round unless `fast` is False."""
    return type("FastHTTPProtocol", (FastHTTPProtocol,), {"proxy_app": app, "limits": limits, "fast": fast})


class _Fast:
    """One request on the fast path: what is forwarded, and how far its answer got."""

    __slots__ = ("match", "request_id", "model_id", "start", "request", "router", "call", "task", "timer",
                 "attempts", "started", "status", "done", "armed", "chunks")

    def __init__(self, match: Tuple[str, str, str], request_id: str, model_id: str) -> None:
        self.match = match
        self.request_id = request_id
        self.model_id = model_id
        self.start = time.perf_counter()
        self.request: Optional[Request] = None
        self.router: Any = None
        self.call: Any = None
        self.task: Optional[asyncio.Task] = None
        self.timer: Optional[asyncio.TimerHandle] = None
        self.attempts = 0
        self.started = False  # the response's start line went out
        self.status = 0
        self.done = False
        self.armed = False  # its turn came (pipelined requests wait for the one before)
        self.chunks: List[bytes] = []  # the body as it arrived


def _plan(app: Any, scope: dict) -> Optional[_Fast]:
    """The fast-path plan for a request whose headers are in, or None for the ASGI path."""
    if tracing.enabled or not USE_DIRECT_TRANSPORT:
        return None
    path = route_path(scope)
    if path.startswith("/-/"):
        return None
    if app.api_keys.enabled and app.api_keys.check(authorization_header(scope["headers"])) is not None:
        return None  # the ASGI app answers 401
    request_id = model_id = ""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                if int(value) > BODY_STREAM_THRESHOLD_BYTES:
                    return None
            except ValueError:
                return None
        elif name in (b"transfer-encoding", b"expect", b"x-forwarded-for", b"x-forwarded-proto"):
            return None
        elif name == _REQUEST_ID:
            request_id = value.decode("latin-1")
        elif name == _MODEL_ID:
            model_id = value.decode("latin-1")
    match = match_route(app.routes, path)
    return None if match is None else _Fast(match, request_id or new_request_id(), model_id)


def _drive(coro: Any) -> None:
    """Run a coroutine that completes without suspending (uvicorn's send while the
    client's socket is not paused) to its end, here and now."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("a response write had to wait")


class FastHTTPProtocol(LimitedHttpToolsProtocol):
    """uvicorn's httptools protocol, forwarding plain requests without the ASGI round."""

    proxy_app: Any = None
    fast = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._active: Optional[Tuple[Any, _Fast]] = None  # the (cycle, request) being answered

    # ---- uvicorn's hooks --------------------------------------------------------------
    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        fast = getattr(cycle, "fast", None)
        if fast is None and app is self.app and self.fast:  # not limit_concurrency's 503 app
            fast = _plan(self.proxy_app, cycle.scope)
            cycle.fast = fast
        if fast is None:
            super()._start_asgi_task(cycle, app)
            return
        fast.armed = True
        if not cycle.more_body:  # a pipelined request whose body is already in
            self._dispatch(cycle, fast)

    def on_body(self, body: bytes) -> None:
        fast = getattr(self.cycle, "fast", None)
        if fast is None:
            super().on_body(body)
            return
        # A fast request's body is bounded by its declared length: its pieces are kept
        # and joined once (uvicorn's bytearray would copy it twice), and reading is not
        # paused past 64 KiB as uvicorn does until an app receives.
        if self._account_body(body):
            fast.chunks.append(body)

    def on_message_complete(self) -> None:
        cycle = self.cycle
        super().on_message_complete()
        fast = getattr(cycle, "fast", None)
        if fast is not None and fast.armed and fast.request is None:
            self._dispatch(cycle, fast)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        super().connection_lost(exc)
        active = self._active
        if active is not None and not active[1].done:
            fast = active[1]
            self._stop(fast)
            logger.info("Client disconnected; request %s cancelled.", fast.request_id)
            self._finish(active[0], fast)

    # ---- forwarding -------------------------------------------------------------------
    def _dispatch(self, cycle: Any, fast: _Fast) -> None:
        prefix, app_name, deployment = fast.match
        scope = cycle.scope
        meta = RequestMetadata(
            request_id=fast.request_id, app_name=app_name, route=prefix, http_method=scope["method"],
            is_http_request=True, multiplexed_model_id=fast.model_id,
        )
        chunks = fast.chunks
        if cycle.body:  # a pipelined request's body began arriving before its turn came
            chunks.insert(0, bytes(cycle.body))
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        fast.chunks = []
        fast.request = Request(transport.HTTP, meta, scope=forwardable_scope(scope, prefix), body=body)
        fast.router = self.proxy_app._router(DeploymentID(deployment, app_name))
        self._active = (cycle, fast)
        timeout = self.proxy_app.request_timeout_s
        if timeout:
            fast.timer = self.loop.call_later(timeout, self._timed_out, cycle, fast)
        self._send(cycle, fast)

    def _send(self, cycle: Any, fast: _Fast) -> None:
        fast.attempts += 1
        try:
            call = fast.router.assign_nowait(fast.request)
        except Exception as exc:  # the request could not be pickled, ...
            self._internal_error(cycle, fast, exc)
            return
        if call is None:  # it must wait for a replica (or fail as the router says): one task
            fast.task = self.loop.create_task(self._assign(cycle, fast))
        else:
            self._attach(cycle, fast, call)

    async def _assign(self, cycle: Any, fast: _Fast) -> None:
        try:
            call = await fast.router.assign_request(fast.request)
        except BackPressureError as exc:
            headers = [(REQUEST_ID_HEADER, fast.request_id)] + retry_after_headers(exc.retry_after_s)
            self._respond(cycle, fast, exc.status_code, exc.message, headers)
            return
        except DeploymentUnavailableError as exc:
            self._respond(cycle, fast, 503, str(exc))
            return
        except asyncio.CancelledError:
            return
        except Exception as exc:
            self._internal_error(cycle, fast, exc)
            return
        finally:
            fast.task = None
        if fast.done or cycle.disconnected:
            call.cancel()
            return
        self._attach(cycle, fast, call)

    def _attach(self, cycle: Any, fast: _Fast, call: Any) -> None:
        fast.call = call
        call.listener = lambda item: self._on_item(cycle, fast, call, item)

    def _on_item(self, cycle: Any, fast: _Fast, call: Any, item: Any) -> bool:
        """A frame of the replica's answer (see TransportCall.listener)."""
        if fast.done:
            return True
        if item is transport.END_OF_STREAM:
            if not cycle.response_complete:  # as uvicorn does for an app that stopped short
                self._truncated(cycle, fast)
            return True
        if isinstance(item, BaseException):
            self._failed(cycle, fast, call, item)
            return True
        if cycle.disconnected or self.transport.is_closing():  # the client is gone (or being closed)
            self._stop(fast)
            self._finish(cycle, fast)
            return True
        if cycle.flow.write_paused:  # the client is slow: the answer waits for it, in a task
            call.listener = None
            fast.task = self.loop.create_task(self._write_slowly(cycle, fast, call, item))
            return True
        # uvicorn's send writes the head and the body separately: gather them into one write.
        real = cycle.transport
        cycle.transport = collector = _Collector(real)
        try:
            for message in item:
                self._write(cycle, fast, message)
        finally:
            cycle.transport = real
            collector.release()
        if cycle.response_complete:
            self._finish(cycle, fast)
        return True

    def _write(self, cycle: Any, fast: _Fast, message: dict) -> None:
        _drive(cycle.send(_noted(fast, message)))

    async def _write_slowly(self, cycle: Any, fast: _Fast, call: Any, first: List[dict]) -> None:
        """The rest of a response, written as the client reads (its credit given back as it goes)."""
        try:
            for message in first:
                await self._write_async(cycle, fast, message)
            async for messages in call:
                for message in messages:
                    await self._write_async(cycle, fast, message)
        except asyncio.CancelledError:
            return
        except transport.ReplicaUnavailableError as exc:
            self._failed(cycle, fast, call, exc)
            return
        except Exception as exc:
            self._internal_error(cycle, fast, exc)
            return
        finally:
            fast.task = None
        if not cycle.response_complete:
            self._truncated(cycle, fast)
        elif not fast.done:
            self._finish(cycle, fast)

    async def _write_async(self, cycle: Any, fast: _Fast, message: dict) -> None:
        await cycle.send(_noted(fast, message))

    # ---- endings ----------------------------------------------------------------------
    def _failed(self, cycle: Any, fast: _Fast, call: Any, exc: BaseException) -> None:
        if isinstance(exc, transport.ReplicaUnavailableError):
            self.proxy_app.replica_died(fast.router, call.replica_id, exc)
            retryable = not exc.started or cycle.scope["method"] in _IDEMPOTENT
            if not fast.started and retryable and fast.attempts < _MAX_ATTEMPTS and not cycle.disconnected:
                logger.warning("Replica died before answering request %s; retrying.", fast.request_id)
                self._send(cycle, fast)
                return
            if not fast.started:
                self._respond(cycle, fast, 502,
                              f"Replica died while handling request {fast.request_id}: {exc}")
                return
            self._truncated(cycle, fast)
            return
        self._internal_error(cycle, fast, exc)

    def _internal_error(self, cycle: Any, fast: _Fast, exc: BaseException) -> None:
        logger.error("Request %s failed: %s: %s", fast.request_id, type(exc).__name__, exc)
        if fast.started:
            self._truncated(cycle, fast)
        else:
            self._respond(cycle, fast, 500, f"Internal Server Error (request id: {fast.request_id})")

    def _truncated(self, cycle: Any, fast: _Fast) -> None:
        """The answer cannot be completed: a started response is cut (the connection closes)."""
        if not fast.started:
            self._respond(cycle, fast, 500, f"Internal Server Error (request id: {fast.request_id})")
            return
        self.transport.close()
        self._finish(cycle, fast)

    def _timed_out(self, cycle: Any, fast: _Fast) -> None:
        fast.timer = None
        if fast.done:
            return
        self._stop(fast)
        if fast.started:
            self._truncated(cycle, fast)
        else:
            self._respond(cycle, fast, 408,
                          f"Request {fast.request_id} timed out after {self.proxy_app.request_timeout_s}s.")

    def _respond(self, cycle: Any, fast: _Fast, status: int, text: str,
                 headers: Optional[List[tuple]] = None) -> None:
        """Answer the request ourselves (an error the proxy decided on)."""
        if fast.done:
            return
        if cycle.disconnected:
            self._finish(cycle, fast)
            return
        fast.status = status
        fast.started = True
        messages = plain_response_messages(status, text, headers or [(REQUEST_ID_HEADER, fast.request_id)])
        if cycle.flow.write_paused:
            fast.task = self.loop.create_task(self._respond_slowly(cycle, fast, messages))
            return
        for message in messages:
            _drive(cycle.send(message))
        self._finish(cycle, fast)

    async def _respond_slowly(self, cycle: Any, fast: _Fast, messages: List[dict]) -> None:
        try:
            for message in messages:
                await cycle.send(message)
        finally:
            fast.task = None
            self._finish(cycle, fast)

    def _stop(self, fast: _Fast) -> None:
        """Cancel what is in flight for the request (its call, its waiting task)."""
        if fast.call is not None:
            fast.call.cancel()
        if fast.task is not None:
            fast.task.cancel()
            fast.task = None

    def _finish(self, cycle: Any, fast: _Fast) -> None:
        if fast.done:
            return
        fast.done = True
        if fast.timer is not None:
            fast.timer.cancel()
            fast.timer = None
        if self._active is not None and self._active[1] is fast:
            self._active = None
        prefix, app_name, _ = fast.match
        status = fast.status if cycle.response_complete or not cycle.disconnected else 0
        self.proxy_app._record(cycle.scope, fast.request_id, app_name, prefix, status, fast.start)


class _Collector:
    """Stands in for a client's transport while one batch of messages is written,
    so that the batch leaves in one write (and a close requested meanwhile follows it)."""

    __slots__ = ("_real", "_parts", "_close")

    def __init__(self, real: Any) -> None:
        self._real = real
        self._parts: List[bytes] = []
        self._close = False

    def write(self, data: bytes) -> None:
        self._parts.append(data)

    def close(self) -> None:
        self._close = True

    def is_closing(self) -> bool:
        return self._close or self._real.is_closing()

    def release(self) -> None:
        parts = self._parts
        if self._real.is_closing():  # closed meanwhile: nothing can be written any more
            return
        if len(parts) == 1:
            self._real.write(parts[0])
        elif parts:
            self._real.writelines(parts)  # one writev, the body not copied
        if self._close:
            self._real.close()


def _noted(fast: _Fast, message: dict) -> dict:
    """`message`, with the request id header added when it starts the response (then noted on `fast`)."""
    if message["type"] == "http.response.start":
        message = _with_request_id(message, fast.request_id)
        fast.started = True
        fast.status = message["status"]
    return message


def _with_request_id(message: dict, request_id: str) -> dict:
    headers = message.get("headers", [])
    for name, _ in headers:
        if name.lower() == _REQUEST_ID:
            return message
    return {**message, "headers": [*headers, (_REQUEST_ID, request_id.encode())]}
