"""The direct data path between callers (proxies, handles) and replicas.

Each replica listens on a TCP port; a caller keeps one connection per replica
and multiplexes its requests over it. Everything on a connection is a frame:

    header  = struct "!IBQ" (13 bytes, network order):
              payload length (uint32), frame type (uint8), request id (uint64)
    payload = `length` bytes

Frame types and payloads (request ids are the caller's, counted from 1 per
connection; HELLO uses 0):

    caller -> replica
      HELLO    the replica's token (utf-8); must be the first frame, at most
               HELLO_MAX_BYTES long and within HELLO_TIMEOUT_S, else the replica
               closes the connection having buffered at most that much: the port
               runs no code, and holds no memory, for anyone who cannot read the
               token from the controller. Later frames may be MAX_FRAME_BYTES.
      REQUEST  a pickled `Request.to_wire()` tuple (common.Request)
      INBOUND  a pickled message for a running request: a WebSocket client's,
               or an `http.request` chunk of a streamed HTTP body
      CANCEL   empty: cancel that request
      CREDIT   "!I": the caller took that many more bytes of the request's ITEMs
    replica -> caller
      STARTED  empty: the request began executing (so a request lost with a
               dead replica before this is known not to have run, and may
               safely go elsewhere)
      RESULT   the pickled return value of a UNARY request (ends it)
      ITEM     one pickled item of a STREAM, or a list of ASGI messages of an
               HTTP request, or one ASGI message of a WEBSOCKET request
      END      empty: the STREAM, HTTP or WEBSOCKET request finished
      ERROR    a pickled (exception, traceback text, where) (ends the request)
      CREDIT   "!I": the replica read that many more bytes of the request's INBOUNDs

Flow control: every stream has a window in each direction. A caller sends
CREDIT with its window right after a non-UNARY REQUEST, and more CREDIT as
its consumer takes ITEMs; the replica sends an ITEM only while it has credit
left (so an item larger than what is left still goes, then it waits). The
replica likewise grants credit for INBOUND messages (its window at the start
of a WEBSOCKET request or a streamed-body HTTP request, more as the app reads
them), and the caller sends INBOUND only while it has credit. A producer that
waits awaits: a replica's generator then stops being advanced, and a proxy
stops reading its client. What one stream may buffer is so bounded by its
windows, whatever the reader's speed.

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
from typing import Any, Callable, Dict, List, Optional, Tuple

from ray_serving_ext._private.common import HTTP, STREAM, UNARY, WEBSOCKET, Request
from ray_serving_ext._private.framing import (  # noqa: F401 - re-exported: callers name them transport.X
    CANCEL, CREDIT, CREDIT_AMOUNT, END, ERROR, HEADER, HELLO, INBOUND, ITEM, MAX_FRAME, REQUEST, RESULT, STARTED,
    FrameReader, FrameTooLargeError, _FrameWriter, _set_nodelay, _Sized, credit_frame, dumps, encode,
)
from ray_serving_ext._private.constants import (
    HELLO_MAX_BYTES, HELLO_TIMEOUT_S, INBOUND_WINDOW_BYTES, MAX_FRAME_BYTES, STREAM_WINDOW_BYTES,
)

logger = logging.getLogger("ray_serving_ext.transport")

# Re-exported: callers name request kinds as transport.UNARY etc.
__all__ = ["UNARY", "STREAM", "HTTP", "WEBSOCKET", "Request"]

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
END_OF_STREAM = _END  # what a TransportCall's listener gets when the stream ends


class TransportCall:
    """One request on a connection: a future result, or a stream of items.

    A stream's items are queued as they arrive; taking them gives the replica
    credit back (a quarter of the window at a time), so at most `window`
    bytes of items wait here. Messages to the running request go out through
    `send_inbound`, which waits while the replica's inbound credit is spent.
    """

    __slots__ = ("request_id", "conn", "started", "_future", "_streaming", "_queue_", "_callbacks", "done",
                 "replica_id", "_window", "_taken", "_inbound_credit", "_inbound_ok", "listener")

    def __init__(self, conn: "ReplicaConnection", request_id: int, streaming: bool, replica_id: str,
                 window: int = 0) -> None:
        self.request_id = request_id
        self.conn = conn
        self.replica_id = replica_id
        self.started = False
        self.done = False
        loop = conn.loop
        self._future: Optional[asyncio.Future] = None if streaming else loop.create_future()
        self._streaming = streaming
        self._queue_: Optional[asyncio.Queue] = None  # made when first needed (a listener may take all)
        self._callbacks: List[Callable[[], None]] = []
        self._window = window
        self._taken = 0  # bytes taken since credit was last given back
        self._inbound_credit = 0
        self._inbound_ok: Optional[asyncio.Event] = None
        # A stream's consumer may take its items as callbacks instead (the proxy's
        # fast path): listener(item) returns True when it took the item, and False
        # to have it (and what follows, once it set `listener` to None) queued.
        # listener(END) and listener(exception) end the call.
        self.listener: Optional[Callable[[Any], bool]] = None

    @property
    def _queue(self) -> Optional[asyncio.Queue]:
        """A stream's queue of items not yet taken (None for a unary call)."""
        if self._queue_ is None and self._streaming:
            self._queue_ = asyncio.Queue()
        return self._queue_

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
        if self._inbound_ok is not None:
            self._inbound_ok.set()  # a sender waiting for credit gives up
        for fn in self._callbacks:
            try:
                fn()
            except Exception:
                logger.exception("call completion callback failed")

    # frames from the connection
    def _on_frame(self, ftype: int, payload: bytes) -> None:
        if ftype == ITEM or ftype == RESULT:
            self._on_value(ftype, pickle.loads(payload), len(payload))
        elif ftype == ERROR:
            self._fail(_load_error(payload))
        elif ftype == CREDIT:
            self._add_inbound_credit(CREDIT_AMOUNT.unpack(payload)[0])
        else:  # STARTED, END
            self._on_value(ftype, None, 0)

    def _on_value(self, ftype: int, value: Any, size: int) -> None:
        """What the replica answered (unpickled here, or handed over in-process: local_call)."""
        if ftype == ITEM:
            listener = self.listener
            if listener is not None and self._tell(listener, value):
                self._give_credit(size)
            elif self._queue is not None and not self.done:
                self._queue.put_nowait(_Sized(value, size))
        elif ftype == STARTED:
            self.started = True
        elif ftype == RESULT:
            if self._future is not None and not self._future.done():
                self._future.set_result(value)
            self._finish()
        elif ftype == END:
            listener = self.listener
            if listener is not None:
                self._tell(listener, _END)
            elif self._queue is not None:
                self._queue.put_nowait(_END)
            self._finish()

    def _add_inbound_credit(self, amount: int) -> None:
        self._inbound_credit += amount
        if self._inbound_ok is not None and self._inbound_credit > 0:
            self._inbound_ok.set()

    def _tell(self, listener: Callable[[Any], bool], item: Any) -> bool:
        """Hand `item` to the listener. Whatever it raises stays with this call (it is
        cancelled): it must never reach the connection, which other calls share."""
        try:
            return listener(item)
        except Exception:
            logger.exception("A stream's listener failed; cancelling request %d.", self.request_id)
            self.cancel()
            return True

    def _fail(self, exc: BaseException) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_exception(exc)
        listener = self.listener
        if listener is not None and not self.done:
            self.listener = None
            self._tell(listener, exc)
        elif self._queue is not None:
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
        if item.__class__ is _Sized:
            self._give_credit(item.size)
            return item.value
        if item is _END:
            raise StopAsyncIteration
        raise item

    def _give_credit(self, size: int) -> None:
        self._taken += size
        if self._taken >= self._window >> 2 and not self.done:
            self._return_credit(self._taken)
            self._taken = 0

    def _return_credit(self, amount: int) -> None:
        self.conn.send_frames(credit_frame(self.request_id, amount))

    async def send_inbound(self, message: Any, force: bool = False) -> None:
        """Send one message to the running request (a WebSocket client's message, a body chunk).

        Waits while the replica's inbound credit is spent; returns at once, sending
        nothing, once the call is done. `force` sends without credit (a disconnect:
        it must get through even to an app that stopped reading).
        """
        payload, size = self._inbound_payload(message)
        while not force and self._inbound_credit <= 0 and not self.done:
            if self._inbound_ok is None:
                self._inbound_ok = asyncio.Event()
            self._inbound_ok.clear()
            await self._inbound_ok.wait()
        if not self.done:
            self._inbound_credit -= size
            self._send_inbound(payload, size)

    def _inbound_payload(self, message: Any) -> Tuple[Any, int]:
        payload = dumps(message)
        return payload, len(payload)

    def _send_inbound(self, payload: Any, size: int) -> None:
        self.conn.send(INBOUND, self.request_id, payload)

    def cancel(self) -> None:
        if self.done:
            return
        self.listener = None  # whoever cancels has stopped listening
        self.conn.send(CANCEL, self.request_id)
        from ray_serving_ext.exceptions import RequestCancelledError

        if self._future is not None and not self._future.done():
            self._future.cancel()
        if self._streaming:
            queue = self._queue
            # What was queued is dropped now: a cancelled stream holds no memory.
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(RequestCancelledError())
        self._finish()


def _load_error(payload: bytes) -> BaseException:
    """The replica's exception, wrapped as Ray wraps task errors (still an instance of its type)."""
    from ray_serving_ext.exceptions import RayServeException

    try:
        cause, tb_text, where = pickle.loads(payload)
    except Exception as err:  # the exception itself did not survive pickling
        return RayServeException(f"A replica raised an exception that could not be unpickled: {err}")
    return wrap_error(cause, tb_text, where)


def wrap_error(cause: Any, tb_text: str, where: str) -> BaseException:
    """A replica's exception as its caller raises it: wrapped as Ray wraps task errors
    (still an instance of its type), with the replica's traceback text."""
    from ray_serving_ext.exceptions import RayServeException

    if not isinstance(cause, Exception) or isinstance(cause, RayServeException):
        return cause if isinstance(cause, BaseException) else RuntimeError(str(cause))
    try:
        import ray

        return ray.exceptions.RayTaskError(where, tb_text, cause).as_instanceof_cause()
    except Exception:
        return cause


class ReplicaConnection(_FrameWriter, asyncio.Protocol):
    """A multiplexed connection from this process to one replica, on one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, replica_id: str) -> None:
        self._init_writer(loop)
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
        if not self.closed:
            self._write(encode(ftype, rid, payload))

    def send_frames(self, frames: List[bytes]) -> None:
        if not self.closed:
            self._write(frames)

    def request(self, request: Request, window: int = STREAM_WINDOW_BYTES) -> TransportCall:
        """Send a request (pickled here); returns the call in flight.

        A stream's items are flow-controlled with `window` bytes (its credit
        goes out with the request, in the same write). Raises what pickling
        the request raises, or ReplicaUnavailableError when the connection is
        closed; no call is left registered either way.
        """
        if self.closed:
            raise ReplicaUnavailableError(
                f"The connection to replica {self.replica_id} is closed.", started=False, replica_id=self.replica_id
            )
        payload = dumps(request.to_wire())
        rid = next(self._ids)
        if request.kind == UNARY:
            call = TransportCall(self, rid, False, self.replica_id)
            self.calls[rid] = call
            self.send(REQUEST, rid, payload)
            return call
        call = TransportCall(self, rid, True, self.replica_id, window)
        self.calls[rid] = call
        self.send_frames(encode(REQUEST, rid, payload) + credit_frame(rid, window))
        return call

    def close(self) -> None:
        if self._transport is not None:
            self._flush()  # what was written goes out before the close
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
    """What a request handler uses to answer: started(), item(), result(), error(), end().

    `item()` waits while the caller's credit for this stream is spent (see the
    module docstring); `receive()` takes the caller's next INBOUND message and
    gives its credit back.
    """

    __slots__ = ("_proto", "rid", "_inbound", "credit", "_room", "_read")

    def __init__(self, proto: "ReplicaServerProtocol", rid: int) -> None:
        self._proto = proto
        self.rid = rid
        self._inbound: Optional[asyncio.Queue] = None
        self.credit = 0
        self._room: Optional[asyncio.Event] = None
        self._read = 0  # inbound bytes read since credit was last given back

    @property
    def inbound(self) -> asyncio.Queue:
        """The caller's INBOUND messages, as _Sized (made when first needed: most requests have none)."""
        if self._inbound is None:
            self._inbound = asyncio.Queue()
        return self._inbound

    def started(self) -> None:
        self._proto.send(STARTED, self.rid, eager=False)

    async def item(self, value: Any) -> None:
        payload = dumps(value)
        if self.credit <= 0 or not self._proto.writable:
            await self._wait_for_room()
        self.credit -= len(payload)
        self._proto.send(ITEM, self.rid, payload)

    async def _wait_for_room(self) -> None:
        while self.credit <= 0 or not self._proto.writable:
            if self._proto.lost:
                raise asyncio.CancelledError()
            if self._room is None:
                self._room = asyncio.Event()
            self._room.clear()
            if self.credit > 0:
                await self._proto.wait_writable()
            else:
                await self._room.wait()

    def add_credit(self, amount: int) -> None:
        self.credit += amount
        if self._room is not None and self.credit > 0:
            self._room.set()

    def grant_inbound(self, window: int = INBOUND_WINDOW_BYTES) -> None:
        """Let the caller send `window` bytes of INBOUND messages."""
        self._proto.send_frames(credit_frame(self.rid, window))

    async def receive(self) -> Any:
        """The caller's next INBOUND message; reading it gives its bytes of credit back."""
        item = await self.inbound.get()
        self._read += item.size
        if self._read >= INBOUND_WINDOW_BYTES >> 2:
            self.grant_inbound(self._read)
            self._read = 0
        return item.value

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


class ReplicaServerProtocol(_FrameWriter, asyncio.Protocol):
    """Replica end of one caller's connection."""

    def __init__(self, token: str, handler: Handler, max_frame: int = MAX_FRAME_BYTES,
                 hello_timeout_s: float = HELLO_TIMEOUT_S) -> None:
        self._init_writer(None)  # the loop is known once connected
        self._token = token.encode()
        self._handler = handler
        self._authed = False
        self._max_frame = max_frame
        self._hello_timeout_s = hello_timeout_s
        self._hello_timer: Optional[asyncio.TimerHandle] = None
        self._reader = FrameReader(max_frame=HELLO_MAX_BYTES)  # until HELLO: nothing bigger is buffered
        self._tasks: Dict[int, asyncio.Task] = {}
        self._streams: Dict[int, ServerStream] = {}
        self._transport: Optional[asyncio.Transport] = None
        self.writable = True  # False while the socket's send buffer is over its high-water mark
        self.lost = False
        self._writable_event: Optional[asyncio.Event] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._write_loop = asyncio.get_running_loop()
        _set_nodelay(transport)
        self._hello_timer = asyncio.get_running_loop().call_later(self._hello_timeout_s, self._hello_overdue)

    def _hello_overdue(self) -> None:
        if not self._authed:
            self._close(f"Closing a connection that sent no HELLO within {self._hello_timeout_s:.1f}s.")

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        if self._writable_event is not None:
            self._writable_event.set()

    async def wait_writable(self) -> None:
        if self.writable or self.lost:
            return
        if self._writable_event is None:
            self._writable_event = asyncio.Event()
        self._writable_event.clear()
        await self._writable_event.wait()

    def data_received(self, data: bytes) -> None:
        if not self._authed:
            if not self._authenticate(data):
                return
            data = b""  # the rest of this read waits in the reader
        try:
            frames = self._reader.feed(data)
        except FrameTooLargeError as exc:
            self._close(f"Closing a connection that sent a bad frame: {exc}")
            return
        for ftype, rid, payload in frames:
            if ftype == REQUEST:
                self._start(rid, payload)
            elif ftype == INBOUND:
                stream = self._streams.get(rid)
                if stream is not None:
                    stream.inbound.put_nowait(_Sized(pickle.loads(payload), len(payload)))
            elif ftype == CREDIT:
                stream = self._streams.get(rid)
                if stream is not None:
                    stream.add_credit(CREDIT_AMOUNT.unpack(payload)[0])
            elif ftype == CANCEL:
                task = self._tasks.get(rid)
                if task is not None:
                    task.cancel()

    def _authenticate(self, data: bytes) -> bool:
        """Parse the HELLO from `data`, and only it: what follows it in the same read must
        be judged by the data path's limit, not HELLO's. True once authenticated."""
        try:
            frames = self._reader.feed(data, max_frames=1)
            if not frames:
                return False
            ftype, _, payload = frames[0]
            if ftype != HELLO or not hmac.compare_digest(payload, self._token):
                self._close("Rejected a connection that did not authenticate.")
                return False
            self._authed = True
            if self._hello_timer is not None:
                self._hello_timer.cancel()
            self._reader.set_max_frame(self._max_frame)
            return True
        except FrameTooLargeError as exc:
            self._close(f"Closing a connection that sent a bad frame: {exc}")
            return False

    def _close(self, warning: str) -> None:
        logger.warning(warning)
        if self._transport is not None:
            self._transport.close()

    def _start(self, rid: int, payload: bytes) -> None:
        stream = ServerStream(self, rid)
        try:
            request = Request.from_wire(pickle.loads(payload))
        except Exception as exc:
            stream.error(exc)
            return
        # Registered before the handler runs: the caller's CREDIT follows in the same read.
        self._streams[rid] = stream
        if request.kind == WEBSOCKET or (request.kind == HTTP and request.body is None):
            stream.grant_inbound()  # its messages (or body chunks) may come
        task = asyncio.ensure_future(self._handler(request, stream))
        self._tasks[rid] = task

        def forget(_task: asyncio.Task) -> None:
            self._tasks.pop(rid, None)
            self._streams.pop(rid, None)

        task.add_done_callback(forget)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        # The caller is gone (proxy restarted, client process exited): stop its work.
        self.lost = True
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        for task in list(self._tasks.values()):
            task.cancel()
        self._transport = None
        self.resume_writing()  # wake writers: they see `lost` and stop

    def send(self, ftype: int, rid: int, payload: bytes = b"", eager: bool = True) -> None:
        self._write(encode(ftype, rid, payload), eager)

    def send_frames(self, frames: List[bytes]) -> None:
        self._write(frames)


async def start_server(token: str, handler: Handler, host: str) -> Tuple[asyncio.AbstractServer, int]:
    """Listen on a free port of `host` (the node's IP: callers on other nodes must reach it,
    and nothing else is exposed); returns the server and the port."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ReplicaServerProtocol(token, handler), host, 0, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    return server, port
