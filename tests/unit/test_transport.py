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
            stream.item(item)
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
