"""The direct data path between callers (proxies, handles) and replicas.

Each replica listens on a TCP port; a caller keeps one connection per replica
and multiplexes its requests over it. Everything on a connection is a frame:

    header  = struct "!IBQ" (13 bytes, network order):
              payload length (uint32), frame type (uint8), request id (uint64)
    payload = `length` bytes

Frame types and payloads (request ids are the caller's, counted from 1 per
connection; HELLO uses 0):

    caller -> replica
      HELLO    the replica's token (utf-8); must be the first frame, else the
               replica closes the connection: the port runs no code for anyone
               who cannot read the token from the controller
      REQUEST  a pickled `Request.to_wire()` tuple (common.Request)
      INBOUND  a pickled message for a running WEBSOCKET request (the client's)
      CANCEL   empty: cancel that request
    replica -> caller
      STARTED  empty: the request began executing (so a request lost with a
               dead replica before this is known not to have run, and may
               safely go elsewhere)
      RESULT   the pickled return value of a UNARY request (ends it)
      ITEM     one pickled item of a STREAM, or a list of ASGI messages of an
               HTTP request, or one ASGI message of a WEBSOCKET request
      END      empty: the STREAM, HTTP or WEBSOCKET request finished
      ERROR    a pickled (exception, traceback text, where) (ends the request)

Pickling is protocol 5, with cloudpickle for what pickle cannot handle. A
header claiming more than the reader's `max_frame` bytes raises
FrameTooLargeError before any of its payload is buffered; either end then
closes the connection (the caller fails its calls as a lost connection).

Ray is still what creates, places and supervises replicas; it is just not on
the request path, which removes the object store and the core worker's task
machinery from every call.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import pickle
import socket
import struct
from typing import Any, Callable, Dict, List, Optional, Tuple

from ray import cloudpickle

from ray_serving_ext._private.common import HTTP, STREAM, UNARY, WEBSOCKET, Request

logger = logging.getLogger("ray_serving_ext.transport")

HEADER = struct.Struct("!IBQ")
HELLO, REQUEST, STARTED, RESULT, ITEM, END, ERROR, CANCEL, INBOUND = range(1, 10)
# Re-exported: callers name request kinds as transport.UNARY etc.
__all__ = ["UNARY", "STREAM", "HTTP", "WEBSOCKET", "Request"]

MAX_FRAME = 2**32 - 1  # the most a "!I" length can say


def _set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Small frames go out at once: Nagle's delay would add to every request's latency."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def encode(frame_type: int, request_id: int, payload: bytes = b"") -> List[bytes]:
    return [HEADER.pack(len(payload), frame_type, request_id), payload]


def dumps(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=5)
    except Exception:  # lambdas, local classes, ...: cloudpickle handles them
        return cloudpickle.dumps(obj, protocol=5)


class FrameTooLargeError(ValueError):
    """A frame header claimed a payload longer than the reader accepts."""

    def __init__(self, length: int, max_frame: int) -> None:
        super().__init__(f"Frame of {length} bytes exceeds the limit of {max_frame} bytes.")
        self.length = length
        self.max_frame = max_frame


class FrameReader:
    """Incremental frame parser: feed bytes, get (type, request id, payload) tuples.

    A header whose length exceeds `max_frame` raises FrameTooLargeError as soon
    as the header is read (its payload is never buffered), and again on every
    later feed: the stream cannot be resynchronised, so the connection must close.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame
        self._error: Optional[FrameTooLargeError] = None

    def feed(self, data: bytes) -> List[Tuple[int, int, bytes]]:
        if self._error is not None:
            raise self._error
        self._buf += data
        frames = []
        buf = self._buf
        offset = 0
        size = HEADER.size
        while len(buf) - offset >= size:
            length, ftype, rid = HEADER.unpack_from(buf, offset)
            if length > self.max_frame:
                self._buf = bytearray()
                self._error = FrameTooLargeError(length, self.max_frame)
                raise self._error
            end = offset + size + length
            if len(buf) < end:
                break
            frames.append((ftype, rid, bytes(buf[offset + size:end])))
            offset = end
        if offset:
            del buf[:offset]
        return frames


from ray_serving_ext.exceptions import ReplicaUnavailableError as _PublicReplicaUnavailableError  # noqa: E402


class ReplicaUnavailableError(_PublicReplicaUnavailableError):
    """The replica died or became unreachable: the public
    `exceptions.ReplicaUnavailableError`, plus `started` (whether the request had
    begun, so whether it may be retried elsewhere) and a message saying how it
    was lost."""

    def __init__(self, message: str, started: bool, replica_id: str = "") -> None:
        super().__init__(replica_id)
        self._detail = message
        self.started = started

    @property
    def message(self) -> str:
        return self._detail

    def __reduce__(self):
        return (type(self), (self._detail, self.started, self.replica_id))


# ---------------------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------------------
_END = object()


class TransportCall:
    """One request on a connection: a future result, or a stream of items."""

    __slots__ = ("request_id", "conn", "started", "_future", "_queue", "_callbacks", "done", "replica_id")

    def __init__(self, conn: "ReplicaConnection", request_id: int, streaming: bool, replica_id: str) -> None:
        self.request_id = request_id
        self.conn = conn
        self.replica_id = replica_id
        self.started = False
        self.done = False
        loop = conn.loop
        self._future: Optional[asyncio.Future] = None if streaming else loop.create_future()
        self._queue: Optional[asyncio.Queue] = asyncio.Queue() if streaming else None
        self._callbacks: List[Callable[[], None]] = []

    def add_done_callback(self, fn: Callable[[], None]) -> None:
        if self.done:
            fn()
        else:
            self._callbacks.append(fn)

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.conn.calls.pop(self.request_id, None)
        for fn in self._callbacks:
            try:
                fn()
            except Exception:
                logger.exception("call completion callback failed")

    # frames from the connection
    def _on_frame(self, ftype: int, payload: bytes) -> None:
        if ftype == STARTED:
            self.started = True
        elif ftype == RESULT:
            value = pickle.loads(payload)
            if self._future is not None and not self._future.done():
                self._future.set_result(value)
            self._finish()
        elif ftype == ITEM:
            if self._queue is not None:
                self._queue.put_nowait(pickle.loads(payload))
        elif ftype == END:
            if self._queue is not None:
                self._queue.put_nowait(_END)
            self._finish()
        elif ftype == ERROR:
            self._fail(_load_error(payload))

    def _fail(self, exc: BaseException) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_exception(exc)
        if self._queue is not None:
            self._queue.put_nowait(exc)
        self._finish()

    # consumer API
    async def result(self) -> Any:
        assert self._future is not None
        try:
            return await self._future
        except asyncio.CancelledError:
            self.cancel()
            raise

    def __aiter__(self) -> "TransportCall":
        return self

    async def __anext__(self) -> Any:
        assert self._queue is not None
        try:
            item = await self._queue.get()
        except asyncio.CancelledError:
            self.cancel()
            raise
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def send_inbound(self, message: Any) -> None:
        """Send one message to the running request (a WebSocket client's message)."""
        if not self.done:
            self.conn.send(INBOUND, self.request_id, dumps(message))

    def cancel(self) -> None:
        if self.done:
            return
        self.conn.send(CANCEL, self.request_id)
        from ray_serving_ext.exceptions import RequestCancelledError

        if self._future is not None and not self._future.done():
            self._future.cancel()
        if self._queue is not None:
            self._queue.put_nowait(RequestCancelledError())
        self._finish()


def _load_error(payload: bytes) -> BaseException:
    """The replica's exception, wrapped as Ray wraps task errors (still an instance of its type)."""
    from ray_serving_ext.exceptions import RayServeException

    try:
        cause, tb_text, where = pickle.loads(payload)
    except Exception as err:  # the exception itself did not survive pickling
        return RayServeException(f"A replica raised an exception that could not be unpickled: {err}")
    if not isinstance(cause, Exception) or isinstance(cause, RayServeException):
        return cause if isinstance(cause, BaseException) else RuntimeError(str(cause))
    try:
        import ray

        return ray.exceptions.RayTaskError(where, tb_text, cause).as_instanceof_cause()
    except Exception:
        return cause


class ReplicaConnection(asyncio.Protocol):
    """A multiplexed connection from this process to one replica, on one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, replica_id: str) -> None:
        self.loop = loop
        self.replica_id = replica_id
        self.calls: Dict[int, TransportCall] = {}
        self.closed = False
        self._transport: Optional[asyncio.Transport] = None
        self._reader = FrameReader()
        self._ids = itertools.count(1)

    @classmethod
    async def open(cls, host: str, port: int, token: str, replica_id: str) -> "ReplicaConnection":
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: cls(loop, replica_id), host, port)
        conn.send(HELLO, 0, token.encode())
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        _set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._reader.feed(data)
        except FrameTooLargeError as exc:
            logger.error("Replica %s sent a bad frame (%s); closing the connection.", self.replica_id, exc)
            self._lose()
            self.close()
            return
        for ftype, rid, payload in frames:
            call = self.calls.get(rid)
            if call is not None:
                call._on_frame(ftype, payload)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._lose()

    def _lose(self) -> None:
        """The connection is gone: fail every call in flight as ReplicaUnavailableError."""
        self.closed = True
        for call in list(self.calls.values()):
            call._fail(
                ReplicaUnavailableError(
                    f"Lost the connection to replica {self.replica_id}"
                    + (" after the request started" if call.started else " before the request started"),
                    started=call.started,
                    replica_id=self.replica_id,
                )
            )
        self.calls.clear()

    def send(self, ftype: int, rid: int, payload: bytes = b"") -> None:
        if self._transport is not None and not self.closed:
            self._transport.writelines(encode(ftype, rid, payload))

    def request(self, request: Request) -> TransportCall:
        """Send a request (pickled here); returns the call in flight.

        Raises what pickling the request raises, or ReplicaUnavailableError
        when the connection is closed; no call is left registered either way.
        """
        if self.closed:
            raise ReplicaUnavailableError(
                f"The connection to replica {self.replica_id} is closed.", started=False, replica_id=self.replica_id
            )
        payload = dumps(request.to_wire())
        rid = next(self._ids)
        call = TransportCall(self, rid, request.kind != UNARY, self.replica_id)
        self.calls[rid] = call
        self.send(REQUEST, rid, payload)
        return call

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def close_when_idle(self) -> None:
        """Close now if no request is in flight, else after the last one completes."""
        if not self.calls:
            self.close()
            return
        remaining = list(self.calls.values())

        def maybe_close() -> None:
            if not self.calls:
                self.close()

        for call in remaining:
            call.add_done_callback(maybe_close)


# ---------------------------------------------------------------------------------------
# Replica side
# ---------------------------------------------------------------------------------------
# The replica's request handler: called with each Request and the stream to answer on.
Handler = Callable[[Request, "ServerStream"], Any]


class ServerStream:
    """What a request handler uses to answer: started(), item(), result(), error(), end()."""

    __slots__ = ("_proto", "rid", "inbound")

    def __init__(self, proto: "ReplicaServerProtocol", rid: int) -> None:
        self._proto = proto
        self.rid = rid
        self.inbound: asyncio.Queue = asyncio.Queue()  # the caller's INBOUND messages

    def started(self) -> None:
        self._proto.send(STARTED, self.rid)

    def item(self, value: Any) -> None:
        self._proto.send(ITEM, self.rid, dumps(value))

    def result(self, value: Any) -> None:
        self._proto.send(RESULT, self.rid, dumps(value))

    def end(self) -> None:
        self._proto.send(END, self.rid)

    def error(self, exc: BaseException, where: str = "") -> None:
        import traceback

        tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        try:
            payload = dumps((exc, tb_text, where))
            pickle.loads(payload)  # an exception that pickles but cannot be rebuilt is no use
        except Exception:
            from ray_serving_ext.exceptions import RayServeException

            payload = dumps((RayServeException(f"{type(exc).__name__}: {exc}\n{tb_text}"), tb_text, where))
        self._proto.send(ERROR, self.rid, payload)


class ReplicaServerProtocol(asyncio.Protocol):
    """Replica end of one caller's connection."""

    def __init__(self, token: str, handler: Handler) -> None:
        self._token = token.encode()
        self._handler = handler
        self._authed = False
        self._reader = FrameReader()
        self._tasks: Dict[int, asyncio.Task] = {}
        self._streams: Dict[int, ServerStream] = {}
        self._transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        _set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._reader.feed(data)
        except FrameTooLargeError as exc:
            logger.warning("Closing a connection that sent a bad frame: %s", exc)
            if self._transport is not None:
                self._transport.close()
            return
        for ftype, rid, payload in frames:
            if not self._authed:
                if ftype == HELLO and hmac.compare_digest(payload, self._token):
                    self._authed = True
                    continue
                logger.warning("Rejected a connection that did not authenticate.")
                if self._transport is not None:
                    self._transport.close()
                return
            if ftype == REQUEST:
                self._start(rid, payload)
            elif ftype == INBOUND:
                stream = self._streams.get(rid)
                if stream is not None:
                    stream.inbound.put_nowait(pickle.loads(payload))
            elif ftype == CANCEL:
                task = self._tasks.get(rid)
                if task is not None:
                    task.cancel()

    def _start(self, rid: int, payload: bytes) -> None:
        stream = ServerStream(self, rid)
        try:
            request = Request.from_wire(pickle.loads(payload))
        except Exception as exc:
            stream.error(exc)
            return
        task = asyncio.ensure_future(self._handler(request, stream))
        self._tasks[rid] = task
        self._streams[rid] = stream

        def forget(_task: asyncio.Task) -> None:
            self._tasks.pop(rid, None)
            self._streams.pop(rid, None)

        task.add_done_callback(forget)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        # The caller is gone (proxy restarted, client process exited): stop its work.
        for task in list(self._tasks.values()):
            task.cancel()
        self._transport = None

    def send(self, ftype: int, rid: int, payload: bytes = b"") -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.writelines(encode(ftype, rid, payload))


async def start_server(token: str, handler: Handler, host: str = "0.0.0.0") -> Tuple[asyncio.AbstractServer, int]:
    """Listen on a free port; returns the server and the port."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ReplicaServerProtocol(token, handler), host, 0, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    return server, port
