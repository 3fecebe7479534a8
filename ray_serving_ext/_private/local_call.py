"""Requests from a replica's own HTTP ingress to the replica itself, without a socket.

A `LocalConnection` stands where a router keeps a `transport.ReplicaConnection`
and a `LocalCall` is a `transport.TransportCall` whose frames are handed over
in-process: the replica's request handler answers on a `LocalStream`, which has
the `transport.ServerStream` methods. Nothing is pickled or copied; what stays
is the data path's contract: STARTED, items under the stream's window (the
handler waits while the caller has not taken them), inbound credit, CANCEL
cancelling the handler, and a replica's exception raised as its caller sees it.
"""

from __future__ import annotations

import asyncio
import itertools
import traceback
from typing import Any, Dict, Optional, Tuple

from ray_serving_ext._private.common import HTTP, UNARY, WEBSOCKET, Request
from ray_serving_ext._private.constants import INBOUND_WINDOW_BYTES, STREAM_WINDOW_BYTES
from ray_serving_ext._private.framing import CANCEL, END, ITEM, RESULT, STARTED, _Sized
from ray_serving_ext._private.transport import (
    Handler, ReplicaUnavailableError, ServerStream, TransportCall, wrap_error,
)

_OVERHEAD = 64  # what an item counts against a window beyond its bodies (a frame's header, roughly)


def _size(value: Any) -> int:
    """What an item weighs against a window: its bodies' bytes (ASGI messages) or its length."""
    if isinstance(value, list):
        return sum(_size(v) for v in value) + _OVERHEAD
    if isinstance(value, dict):
        body = value.get("body") or value.get("bytes") or value.get("text") or b""
        return len(body) + _OVERHEAD
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        return len(value) + _OVERHEAD
    return _OVERHEAD


class LocalConnection:
    """The router's connection to the replica it runs in."""

    def __init__(self, loop: asyncio.AbstractEventLoop, replica_id: str, handler: Handler) -> None:
        self.loop = loop
        self.replica_id = replica_id
        self.calls: Dict[int, LocalCall] = {}
        self.closed = False
        self._handler = handler
        self._ids = itertools.count(1)

    def request(self, request: Request, window: int = STREAM_WINDOW_BYTES) -> "LocalCall":
        """Start the handler on `request`; returns the call in flight (as ReplicaConnection.request)."""
        if self.closed:
            raise ReplicaUnavailableError(
                f"The connection to replica {self.replica_id} is closed.", started=False, replica_id=self.replica_id)
        rid = next(self._ids)
        streaming = request.kind != UNARY
        call = LocalCall(self, rid, streaming, self.replica_id, window if streaming else 0)
        stream = LocalStream(call, window if streaming else 0)
        call._stream = stream
        self.calls[rid] = call
        if request.kind == WEBSOCKET or (request.kind == HTTP and request.body is None):
            stream.grant_inbound()
        if request.scope is not None:  # the app may add to its scope; a retry elsewhere must not see that
            request = Request(request.kind, request.metadata, request.args, request.kwargs,
                              scope=dict(request.scope), body=request.body)
        task = asyncio.ensure_future(self._handler(request, stream))
        call._task = task
        task.add_done_callback(call._handler_done)
        return call

    def send(self, ftype: int, rid: int, payload: bytes = b"") -> None:
        """TransportCall.cancel's CANCEL frame: cancel the handler."""
        call = self.calls.get(rid)
        if ftype == CANCEL and call is not None and call._task is not None:
            call._task.cancel()

    def close(self) -> None:
        self.closed = True  # calls in flight finish; new ones go through a new connection

    def close_when_idle(self) -> None:
        self.close()


class LocalCall(TransportCall):
    """A TransportCall whose answer is handed over by a LocalStream."""

    __slots__ = ("_task", "_stream")

    def __init__(self, conn: LocalConnection, request_id: int, streaming: bool, replica_id: str,
                 window: int = 0) -> None:
        super().__init__(conn, request_id, streaming, replica_id, window)  # type: ignore[arg-type]
        self._task: Optional[asyncio.Future] = None
        self._stream: Optional[LocalStream] = None

    def _return_credit(self, amount: int) -> None:
        if self._stream is not None:
            self._stream.add_credit(amount)

    def _inbound_payload(self, message: Any) -> Tuple[Any, int]:
        return message, _size(message)

    def _send_inbound(self, payload: Any, size: int) -> None:
        if self._stream is not None:
            self._stream.inbound.put_nowait(_Sized(payload, size))

    def _handler_done(self, _task: asyncio.Future) -> None:
        if not self.done:  # the handler ended without an answer (it was cancelled)
            self._fail(ReplicaUnavailableError(
                f"Replica {self.replica_id} stopped the request", started=self.started, replica_id=self.replica_id))


class LocalStream(ServerStream):
    """The handler's side of a LocalCall: a transport.ServerStream (its windows, inbound
    queue and credit bookkeeping) whose frames go to the call in-process."""

    __slots__ = ("_call",)

    def __init__(self, call: LocalCall, window: int) -> None:
        super().__init__(None, call.request_id)  # type: ignore[arg-type]
        self._call = call
        self.credit = window

    def started(self) -> None:
        self._call._on_value(STARTED, None, 0)

    async def item(self, value: Any) -> None:
        size = _size(value)
        while self.credit <= 0:  # the caller has not taken what it was given: wait until it does
            if self._call.done:
                raise asyncio.CancelledError()
            if self._room is None:
                self._room = asyncio.Event()
            self._room.clear()
            await self._room.wait()
        self.credit -= size
        self._call._on_value(ITEM, value, size)

    def grant_inbound(self, window: int = INBOUND_WINDOW_BYTES) -> None:
        self._call._add_inbound_credit(window)

    def result(self, value: Any) -> None:
        self._call._on_value(RESULT, value, 0)

    def end(self) -> None:
        self._call._on_value(END, None, 0)

    def error(self, exc: BaseException, where: str = "") -> None:
        tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self._call._fail(wrap_error(exc, tb_text, where))
