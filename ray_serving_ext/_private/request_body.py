"""An HTTP request's body on its way from the client to a replica, under flow control.

The proxy reads the body's head; a body that ends within
BODY_STREAM_THRESHOLD_BYTES travels inside the REQUEST frame, as most do.
A longer one is streamed: the request goes with `body=None`, and a
`BodyPump` feeds the rest to the replica as `http.request` INBOUND messages,
reading the client only as the replica grants credit (the socket's own
backpressure then slows the client). Either way the pump then watches for the
client's disconnect, which is how the proxy learns the client went away.
"""

from __future__ import annotations

import asyncio
from typing import Any, List, Optional, Tuple

from ray_serving_ext._private.constants import BODY_STREAM_THRESHOLD_BYTES


async def read_body_head(receive: Any, limit: int = BODY_STREAM_THRESHOLD_BYTES) -> Tuple[bytes, bool, bool]:
    """(body read so far, whether more follows, whether the client disconnected), reading up to `limit` bytes."""
    chunks: List[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), False, True
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
        if not more:
            return b"".join(chunks), False, False
        if size >= limit:
            return b"".join(chunks), True, False


class BodyPump:
    """Feeds a streamed body to the call it is attached to, then waits for the client's disconnect.

    `run()` returns when the client disconnects. For a streamed body it first
    waits for `attach(call)`, sends the head and then each chunk as the
    replica's credit allows; a disconnect mid-body is passed on to the replica.
    """

    def __init__(self, receive: Any, head: Optional[bytes] = None, disconnected: bool = False) -> None:
        self._receive = receive
        self._head = head  # None: the body is not streamed (it went with the request)
        self._disconnected = disconnected
        self._call: Optional[asyncio.Future] = None if head is None else asyncio.get_running_loop().create_future()

    @property
    def streams_body(self) -> bool:
        return self._head is not None

    def attach(self, call: Any) -> None:
        """The call the body goes to (once: a streamed body cannot be sent twice)."""
        if self._call is not None and not self._call.done():
            self._call.set_result(call)

    async def run(self) -> None:
        if self._disconnected:
            return
        if self._call is not None:
            call = await self._call
            await call.send_inbound({"type": "http.request", "body": self._head, "more_body": True})
            self._head = b""
            if not await self._pump(call):
                return
        while (await self._receive())["type"] != "http.disconnect":
            pass

    async def _pump(self, call: Any) -> bool:
        """Send the rest of the body; False if the client disconnected meanwhile (passed on)."""
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                await call.send_inbound(message, force=True)
                return False
            more = message.get("more_body", False)
            await call.send_inbound({"type": "http.request", "body": message.get("body", b""), "more_body": more})
            if not more:
                return True
