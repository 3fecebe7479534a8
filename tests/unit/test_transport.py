"""The direct transport without Ray: framing, the request on the wire, and a loopback pair."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any, List

import pytest

from ray_serving_ext._private import transport
from ray_serving_ext._private.common import Request, RequestMetadata
from ray_serving_ext._private.transport import (
    END, HEADER, ITEM, REQUEST, RESULT, FrameReader, FrameTooLargeError, ReplicaConnection, ReplicaUnavailableError,
    encode, start_server,
)

FRAMES = [(REQUEST, 1, b"first payload"), (RESULT, 2, b""), (ITEM, 2**40, bytes(range(256)) * 3), (END, 7, b"x")]


def _wire(frames: List[tuple]) -> bytes:
    return b"".join(b"".join(encode(ftype, rid, payload)) for ftype, rid, payload in frames)


def test_encode_header_is_length_type_request_id():
    header, payload = encode(RESULT, 42, b"abc")
    assert HEADER.unpack(header) == (3, RESULT, 42) and payload == b"abc"


def test_frames_split_at_every_byte_boundary():
    data = _wire(FRAMES)
    for cut in range(len(data) + 1):
        reader = FrameReader()
        assert reader.feed(data[:cut]) + reader.feed(data[cut:]) == FRAMES, cut


def test_frames_fed_one_byte_at_a_time():
    reader = FrameReader()
    got = []
    for i in range(len(_wire(FRAMES))):
        got += reader.feed(_wire(FRAMES)[i:i + 1])
    assert got == FRAMES


def test_several_frames_in_one_chunk():
    assert FrameReader().feed(_wire(FRAMES)) == FRAMES


def test_large_payloads_in_pieces_between_small_frames():
    """A payload past LARGE_PAYLOAD_BYTES is filled in its own buffer as it arrives, whatever the cut points."""
    import random

    big = bytes(random.Random(7).getrandbits(8) for _ in range(300_000))
    frames = [(REQUEST, 1, b"a"), (ITEM, 2, big), (END, 2, b""), (ITEM, 3, big[:FrameReader.LARGE_PAYLOAD_BYTES]),
              (RESULT, 4, b"tail")]
    data = _wire(frames)
    rng = random.Random(11)
    for _ in range(30):
        reader, got, pos = FrameReader(), [], 0
        while pos < len(data):
            step = rng.choice([1, 7, 13, 4096, 65536, 200_000, len(data)])
            got += reader.feed(data[pos:pos + step])
            pos += step
        assert [(t, r, bytes(p)) for t, r, p in got] == frames
    reader = FrameReader(max_frame=1024)  # a large frame is refused at its header, before any filling
    with pytest.raises(FrameTooLargeError):
        reader.feed(HEADER.pack(len(big), ITEM, 9) + big[:1000])


def test_oversized_header_raises_before_its_payload_arrives():
    reader = FrameReader(max_frame=16)
    assert reader.feed(_wire([(RESULT, 1, b"0123456789abcdef")])) == [(RESULT, 1, b"0123456789abcdef")]
    with pytest.raises(FrameTooLargeError) as info:
        reader.feed(HEADER.pack(17, RESULT, 2))  # the header alone: no payload sent yet
    assert info.value.length == 17 and info.value.max_frame == 16
    with pytest.raises(FrameTooLargeError):  # the stream cannot resynchronise
        reader.feed(b"")


def test_default_limit_accepts_what_the_header_can_say():
    assert FrameReader().max_frame == transport.MAX_FRAME == 2**32 - 1


def _request(**kw: Any) -> Request:
    meta = RequestMetadata(request_id="r-1", app_name="app", call_method="predict", multiplexed_model_id="m")
    return Request(kw.pop("kind", transport.UNARY), meta, **kw)


def test_request_round_trips_through_the_wire_encoding():
    req = _request(args=(1, "two"), kwargs={"three": 3.0})
    back = Request.from_wire(pickle.loads(transport.dumps(req.to_wire())))
    assert type(back) is Request and back == req
    assert (back.kind, back.args, back.kwargs, back.scope, back.body) == (transport.UNARY, (1, "two"), {"three": 3.0},
                                                                         None, b"")
    assert back.metadata == req.metadata


def test_http_request_round_trip_and_defaults():
    scope = {"type": "http", "path": "/x", "headers": [(b"a", b"b")]}
    req = _request(kind=transport.HTTP, scope=scope, body=b"payload")
    back = Request.from_wire(pickle.loads(transport.dumps(req.to_wire())))
    assert (back.kind, back.scope, back.body, back.args, back.kwargs) == (transport.HTTP, scope, b"payload", (), {})
    assert type(req.to_wire()) is tuple  # what goes on the wire is a plain tuple


def test_request_pickles_as_itself_and_cloudpickle_fallback_works():
    req = _request(args=(lambda x: x + 1,))  # a lambda needs the cloudpickle fallback
    back = Request.from_wire(pickle.loads(transport.dumps(req.to_wire())))
    assert back.args[0](1) == 2
    plain = _request(args=(1,))
    assert pickle.loads(pickle.dumps(plain)) == plain and type(pickle.loads(pickle.dumps(plain))) is Request


# ---- a loopback pair ------------------------------------------------------------------
async def _echo_handler(request: Request, stream: transport.ServerStream) -> None:
    stream.started()
    if request.kind == transport.STREAM:
        for item in request.args:
            await stream.item(item)
        stream.end()
    elif request.args and request.args[0] == "raise":
        stream.error(KeyError("boom"))
    else:
        stream.result((request.metadata.call_method, request.args, request.kwargs))


async def _pair(token: str = "secret", client_token: str = "secret") -> tuple:
    server, port = await start_server(token, _echo_handler, host="127.0.0.1")
    conn = await ReplicaConnection.open("127.0.0.1", port, client_token, "replica-1")
    return server, conn


def test_loopback_unary_stream_and_error():
    async def main() -> None:
        server, conn = await _pair()
        try:
            call = conn.request(_request(args=(1,), kwargs={"k": 2}))
            assert await call.result() == ("predict", (1,), {"k": 2})
            assert call.started and call.done and not conn.calls
            items = [item async for item in conn.request(_request(kind=transport.STREAM, args=("a", "b")))]
            assert items == ["a", "b"]
            with pytest.raises(KeyError):
                await conn.request(_request(args=("raise",))).result()
        finally:
            conn.close()
            server.close()

    asyncio.run(main())


def test_loopback_wrong_token_closes_the_connection():
    async def main() -> None:
        server, conn = await _pair(client_token="wrong")
        try:
            call = conn.request(_request(args=(1,)))
            with pytest.raises(ReplicaUnavailableError) as info:
                await asyncio.wait_for(call.result(), 5)
            assert info.value.started is False and conn.closed
        finally:
            server.close()

    asyncio.run(main())


def test_oversized_frame_from_the_replica_fails_calls_as_a_lost_connection():
    async def main() -> None:
        server, conn = await _pair()
        try:
            conn._reader.max_frame = 8  # the replica's answer is larger
            call = conn.request(_request(args=("x" * 100,)))
            with pytest.raises(ReplicaUnavailableError):
                await asyncio.wait_for(call.result(), 5)
            assert conn.closed and not conn.calls
        finally:
            server.close()

    asyncio.run(main())


# ---- flow control -----------------------------------------------------------------------
def test_a_stream_runs_no_further_ahead_than_the_window():
    """The replica's producer waits once the caller's window is full, and resumes as items are taken."""
    produced = []

    async def producer(request: Request, stream: transport.ServerStream) -> None:
        stream.started()
        for i in range(200):
            await stream.item(b"x" * 10_000)
            produced.append(i)
        stream.end()

    async def main() -> None:
        server, port = await start_server("t", producer, host="127.0.0.1")
        conn = await ReplicaConnection.open("127.0.0.1", port, "t", "r")
        try:
            call = conn.request(_request(kind=transport.STREAM), window=50_000)
            await asyncio.sleep(0.3)  # nothing is taken: the producer must stop at the window
            ahead = len(produced)
            assert 4 <= ahead <= 6, ahead  # 50 kB of 10 kB items (the one that crosses goes too)
            taken = 0
            async for _ in call:
                taken += 1
                assert len(produced) - taken <= 7  # never more than a window (+ credit granularity) ahead
            assert taken == 200 and len(produced) == 200
        finally:
            conn.close()
            server.close()

    asyncio.run(main())


def test_cancelling_a_blocked_stream_cancels_the_producer():
    state = {"cancelled": False}

    async def producer(request: Request, stream: transport.ServerStream) -> None:
        stream.started()
        try:
            while True:
                await stream.item(b"y" * 10_000)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    async def main() -> None:
        server, port = await start_server("t", producer, host="127.0.0.1")
        conn = await ReplicaConnection.open("127.0.0.1", port, "t", "r")
        try:
            call = conn.request(_request(kind=transport.STREAM), window=20_000)
            await call.__anext__()
            call.cancel()
            for _ in range(50):
                if state["cancelled"]:
                    break
                await asyncio.sleep(0.05)
            assert state["cancelled"]
        finally:
            conn.close()
            server.close()

    asyncio.run(main())


def test_inbound_messages_wait_for_the_replicas_credit():
    """A caller sends INBOUND only under the replica's credit; reading them grants more."""
    received = []
    release = None

    async def reader(request: Request, stream: transport.ServerStream) -> None:
        stream.started()
        await release.wait()
        while True:
            message = await stream.receive()
            received.append(len(message["body"]))
            if not message["more_body"]:
                break
        stream.end()

    async def main() -> None:
        nonlocal release
        release = asyncio.Event()
        server, port = await start_server("t", reader, host="127.0.0.1")
        conn = await ReplicaConnection.open("127.0.0.1", port, "t", "r")
        try:
            call = conn.request(_request(kind=transport.HTTP, args=(), body=None))
            sent = 0

            async def send_all() -> None:
                nonlocal sent
                for i in range(40):
                    await call.send_inbound({"type": "http.request", "body": b"z" * 200_000, "more_body": i < 39})
                    sent += 1

            sender = asyncio.ensure_future(send_all())
            await asyncio.sleep(0.3)
            window = transport.INBOUND_WINDOW_BYTES
            assert sent * 200_000 <= window + 200_000, sent  # stopped at the replica's window
            release.set()
            await asyncio.wait_for(sender, 10)
            assert [x async for x in call] == []
            assert len(received) == 40
        finally:
            conn.close()
            server.close()

    asyncio.run(main())


# ---- the port before HELLO ----------------------------------------------------------------
def _raw_peer(port: int):
    import socket as _socket
    sock = _socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def _closed(sock, timeout: float = 5.0) -> bool:
    """Whether the replica closed the connection (EOF or reset) within `timeout`."""
    import socket as _socket
    import time as _time
    sock.settimeout(0.2)
    deadline = _time.monotonic() + timeout
    while _time.monotonic() < deadline:
        try:
            if sock.recv(1024) == b"":
                return True
        except _socket.timeout:
            continue
        except OSError:
            return True
    return False


def _serve_in_thread(**protocol_options):
    """A replica server on its own loop thread (the test talks to it with blocking sockets)."""
    import threading
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box = {}

    async def start():
        box["server"] = await loop.create_server(
            lambda: transport.ReplicaServerProtocol("secret", _echo_handler, **protocol_options), "127.0.0.1", 0)
        box["port"] = box["server"].sockets[0].getsockname()[1]
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert started.wait(5)
    return loop, box["port"]


def test_a_huge_header_before_hello_is_refused_without_buffering():
    loop, port = _serve_in_thread()
    try:
        sock = _raw_peer(port)
        # A REQUEST header claiming 4 GiB, then zeros: closed at the header, nothing buffered.
        sock.sendall(transport.HEADER.pack(2**32 - 1, transport.REQUEST, 1))
        try:
            sock.sendall(b"\0" * 65536)
        except OSError:
            pass
        assert _closed(sock)
    finally:
        loop.call_soon_threadsafe(loop.stop)


def test_a_long_hello_is_refused():
    loop, port = _serve_in_thread()
    try:
        sock = _raw_peer(port)
        sock.sendall(b"".join(transport.encode(transport.HELLO, 0, b"x" * 5000)))
        assert _closed(sock)
    finally:
        loop.call_soon_threadsafe(loop.stop)


def test_a_silent_peer_is_closed_after_the_hello_timeout():
    loop, port = _serve_in_thread(hello_timeout_s=0.3)
    try:
        sock = _raw_peer(port)
        assert _closed(sock, timeout=3)
    finally:
        loop.call_soon_threadsafe(loop.stop)


def test_after_hello_frames_are_bounded_by_max_frame():
    loop, port = _serve_in_thread(max_frame=100)
    try:
        sock = _raw_peer(port)
        sock.sendall(b"".join(transport.encode(transport.HELLO, 0, b"secret")))
        sock.sendall(transport.HEADER.pack(1000, transport.REQUEST, 1))
        sock.sendall(b"\0" * 200)
        assert _closed(sock)
    finally:
        loop.call_soon_threadsafe(loop.stop)


class _Transport:
    """Stands in for an asyncio transport: records whether it was closed."""

    closed = False

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def test_a_request_in_the_same_read_as_the_hello_is_judged_by_the_data_paths_limit():
    """A HELLO and a 5 KB request often reach the replica in one read: the request is
    served, not refused by the 1 KiB pre-authentication limit (the CI failure of
    test_proxy_limits: every replica closed the proxy's first connection)."""
    async def main() -> None:
        proto = transport.ReplicaServerProtocol("secret", _echo_handler)
        started: List[tuple] = []
        proto._start = lambda rid, payload: started.append((rid, len(payload)))  # type: ignore[method-assign]
        fake = _Transport()
        proto.connection_made(fake)  # type: ignore[arg-type]
        hello = b"".join(transport.encode(transport.HELLO, 0, b"secret"))
        request = b"".join(transport.encode(transport.REQUEST, 7, b"r" * 5000))
        proto.data_received(hello + request[:3000])  # the request's head in HELLO's read, its rest later
        proto.data_received(request[3000:])
        assert started == [(7, 5000)] and not fake.closed
        proto.connection_lost(None)

    asyncio.run(main())


def test_the_frame_after_a_bad_first_frame_is_never_parsed():
    async def main() -> None:
        proto = transport.ReplicaServerProtocol("secret", _echo_handler)
        proto._start = lambda rid, payload: pytest.fail("a frame was started")  # type: ignore[method-assign]
        fake = _Transport()
        proto.connection_made(fake)  # type: ignore[arg-type]
        wrong = b"".join(transport.encode(transport.HELLO, 0, b"guess"))
        proto.data_received(wrong + b"".join(transport.encode(transport.REQUEST, 1, b"x")))
        assert fake.closed
        proto.connection_lost(None)

    asyncio.run(main())


def test_frame_reader_stops_after_max_frames_and_keeps_the_rest():
    reader = transport.FrameReader(max_frame=10)
    data = b"".join(transport.encode(transport.HELLO, 0, b"abc")) + transport.HEADER.pack(50, transport.REQUEST, 2)
    assert [(f, r, bytes(p)) for f, r, p in reader.feed(data, max_frames=1)] == [(transport.HELLO, 0, b"abc")]
    reader.set_max_frame(100)
    assert reader.feed(b"y" * 50) == [(transport.REQUEST, 2, bytearray(b"y" * 50))]


def test_a_large_frame_claimed_costs_only_what_arrived() -> None:
    import tracemalloc

    from ray_serving_ext._private.framing import HEADER, FrameReader

    reader = FrameReader(max_frame=1 << 30)
    claimed = 512 * 1024 * 1024
    tracemalloc.start()
    try:
        assert reader.feed(HEADER.pack(claimed, 2, 1) + b"x" * 100_000) == []
        for _ in range(10):
            assert reader.feed(b"y" * 100_000) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"{peak} bytes held for a frame that sent 1.1 MB of {claimed}"
    # The frame still completes, byte for byte, when the rest arrives.
    reader = FrameReader(max_frame=1 << 30)
    body = bytes(range(256)) * 1024  # 256 KiB, over LARGE_PAYLOAD_BYTES
    wire = HEADER.pack(len(body), 2, 7) + body + HEADER.pack(3, 2, 8) + b"end"
    frames = []
    for i in range(0, len(wire), 10_000):
        frames += reader.feed(wire[i:i + 10_000])
    assert [(t, r, bytes(p)) for t, r, p in frames] == [(2, 7, body), (2, 8, b"end")]
