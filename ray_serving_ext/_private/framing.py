"""The data path's frames: their encoding, an incremental reader, and a coalescing writer.

The frame layout and the meaning of each type are in `transport.py`'s
docstring; `transport.py` builds connections and calls out of these pieces
(and re-exports them, so `transport.HEADER`, `transport.FrameReader`, ...
keep working).
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from typing import Any, List, Optional, Tuple

from ray import cloudpickle

HEADER = struct.Struct("!IBQ")
HELLO, REQUEST, STARTED, RESULT, ITEM, END, ERROR, CANCEL, INBOUND, CREDIT = range(1, 11)
CREDIT_AMOUNT = struct.Struct("!I")

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


def credit_frame(request_id: int, amount: int) -> List[bytes]:
    return encode(CREDIT, request_id, CREDIT_AMOUNT.pack(max(0, min(amount, MAX_FRAME))))


class _Sized:
    """An item taken off the wire with its size, so its consumer can give the credit back."""

    __slots__ = ("value", "size")

    def __init__(self, value: Any, size: int) -> None:
        self.value = value
        self.size = size


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

    Payloads are bytes-like (bytes or bytearray). One of at least
    LARGE_PAYLOAD_BYTES that has not fully arrived is read into a bytearray of
    its size as its pieces come, so each of its bytes is copied once here (a
    1 MiB HTTP body would otherwise be copied three times: appended to the
    buffer, sliced out, made bytes).
    """

    LARGE_PAYLOAD_BYTES = 64 * 1024

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame
        self._error: Optional[FrameTooLargeError] = None
        # The large payload being filled: (frame type, request id, what arrived, its length).
        self._large: Optional[Tuple[int, int, bytearray, int]] = None

    def set_max_frame(self, max_frame: int) -> None:
        """Change the limit; raises FrameTooLargeError if a frame already begun exceeds it."""
        self.max_frame = max_frame
        length = -1
        if self._large is not None:
            length = self._large[3]
        elif len(self._buf) >= HEADER.size:
            length = HEADER.unpack_from(self._buf, 0)[0]
        if length > max_frame:
            self._buf = bytearray()
            self._large = None
            self._error = FrameTooLargeError(length, max_frame)
            raise self._error

    def feed(self, data: bytes, max_frames: Optional[int] = None) -> List[Tuple[int, int, Any]]:
        """The frames complete so far. With `max_frames`, parsing stops after that many and
        the rest stays buffered, its headers unchecked, for a later `feed` (of b"" if need
        be): a server that raises the limit once a HELLO arrives must not judge the request
        frame sent right behind it, often in the same read, by HELLO's limit."""
        if self._error is not None:
            raise self._error
        frames: List[Tuple[int, int, Any]] = []
        if self._large is not None:
            data = self._fill(data, frames)
            if not data:
                return frames
        buf = self._buf
        buf += data
        offset = 0
        size = HEADER.size
        while len(buf) - offset >= size and (max_frames is None or len(frames) < max_frames):
            length, ftype, rid = HEADER.unpack_from(buf, offset)
            if length > self.max_frame:
                self._buf = bytearray()
                self._error = FrameTooLargeError(length, self.max_frame)
                raise self._error
            end = offset + size + length
            if len(buf) < end:
                if length >= self.LARGE_PAYLOAD_BYTES:  # the rest is read straight into its own buffer
                    # It grows as bytes arrive (not allocated at the claimed length): a peer
                    # that claims a gigabyte and sends a kilobyte costs a kilobyte.
                    self._large = (ftype, rid, bytearray(memoryview(buf)[offset + size:]), length)
                    offset = len(buf)
                break
            frames.append((ftype, rid, buf[offset + size:end]))  # a bytearray slice: one copy
            offset = end
        if offset:
            del buf[:offset]
        return frames

    def _fill(self, data: bytes, frames: List[Tuple[int, int, Any]]) -> Any:
        """Copy into the large payload being filled; returns what follows it in `data`."""
        ftype, rid, target, length = self._large  # type: ignore[misc]
        take = min(length - len(target), len(data))
        view = memoryview(data)
        target += view[:take]
        if len(target) < length:
            return b""
        self._large = None
        frames.append((ftype, rid, target))
        return view[take:]


class _FrameWriter:
    """At most two writes per event-loop iteration, however many frames are sent in it.

    The first frame of an iteration goes out at once, so the other end starts
    on it while this one goes on; later frames of the same iteration are kept
    and leave together when the loop next runs its ready callbacks (before it
    waits for I/O again). A proxy under load sends many requests to one replica
    per iteration, and a replica answering writes STARTED, ITEM and END: each
    would otherwise be a write (and a wake-up of the other end) of its own.
    A frame sent with `eager=False` (STARTED: the caller has nothing to do with
    it alone) never goes out by itself at once; it rides with what follows.
    """

    _transport: Optional[asyncio.Transport]

    def _init_writer(self, loop: Optional[asyncio.AbstractEventLoop]) -> None:
        self._out: List[bytes] = []
        self._flush_scheduled = False
        self._write_loop = loop

    def _can_write(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def _write(self, frames: List[bytes], eager: bool = True) -> None:
        if not self._can_write():
            return
        if self._flush_scheduled:  # this iteration already wrote: keep it for the flush
            self._out.extend(frames)
            return
        self._flush_scheduled = True
        self._write_loop.call_soon(self._flush)  # type: ignore[union-attr]
        if eager:
            self._transport.writelines(frames)  # type: ignore[union-attr]
        else:
            self._out.extend(frames)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if out and self._can_write():
            self._transport.writelines(out)  # type: ignore[union-attr]
