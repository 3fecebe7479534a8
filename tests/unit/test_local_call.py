"""local_call: a replica's own ingress calling it in-process keeps the data path's contract."""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest

from ray_serving_ext._private import transport
from ray_serving_ext._private.common import HTTP, STREAM, UNARY, Request, RequestMetadata
from ray_serving_ext._private.local_call import LocalConnection


def _meta() -> RequestMetadata:
    return RequestMetadata(request_id="r1", app_name="a", call_method="__call__")


def test_unary_result_and_started() -> None:
    async def handler(request: Request, stream: Any) -> None:
        stream.started()
        stream.result(("echo", request.args))

    async def main() -> None:
        conn = LocalConnection(asyncio.get_running_loop(), "rep", handler)
        call = conn.request(Request(UNARY, _meta(), (1, 2)))
        assert await call.result() == ("echo", (1, 2))
        assert call.started and call.done and not conn.calls

    asyncio.run(main())


def test_stream_items_wait_for_the_callers_window() -> None:
    produced: List[int] = []

    async def handler(request: Request, stream: Any) -> None:
        stream.started()
        for i in range(10):
            await stream.item(b"x" * 1000)
            produced.append(i)
        stream.end()

    async def main() -> None:
        conn = LocalConnection(asyncio.get_running_loop(), "rep", handler)
        call = conn.request(Request(STREAM, _meta()), window=2000)
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(produced) < 4, "the handler ran ahead of a caller that takes nothing"
        items = [item async for item in call]
        assert len(items) == 10 and produced == list(range(10))

    asyncio.run(main())


def test_cancel_cancels_the_handler_and_an_error_is_the_callers() -> None:
    async def main() -> None:
        state = {"cancelled": False}

        async def slow(request: Request, stream: Any) -> None:
            stream.started()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                state["cancelled"] = True
                raise

        conn = LocalConnection(asyncio.get_running_loop(), "rep", slow)
        call = conn.request(Request(STREAM, _meta()))
        await asyncio.sleep(0.01)
        call.cancel()
        await asyncio.sleep(0.01)
        assert state["cancelled"] and call.done

        async def failing(request: Request, stream: Any) -> None:
            stream.error(ValueError("boom"), "D.__call__")

        conn = LocalConnection(asyncio.get_running_loop(), "rep", failing)
        with pytest.raises(ValueError, match="boom"):
            await conn.request(Request(UNARY, _meta())).result()

    asyncio.run(main())


def test_inbound_messages_reach_the_handler_and_the_scope_is_its_own() -> None:
    async def main() -> None:
        seen: List[Any] = []

        async def handler(request: Request, stream: Any) -> None:
            request.scope["added_by_app"] = True
            stream.started()
            while True:
                message = await stream.receive()
                seen.append(message["body"])
                if not message.get("more_body"):
                    break
            await stream.item([{"type": "http.response.start", "status": 200, "headers": []},
                               {"type": "http.response.body", "body": b"".join(seen)}])
            stream.end()

        scope = {"type": "http", "path": "/"}
        conn = LocalConnection(asyncio.get_running_loop(), "rep", handler)
        call = conn.request(Request(HTTP, _meta(), scope=scope, body=None))
        await call.send_inbound({"type": "http.request", "body": b"ab", "more_body": True})
        await call.send_inbound({"type": "http.request", "body": b"cd", "more_body": False})
        (messages,) = [item async for item in call]
        assert messages[1]["body"] == b"abcd"
        assert "added_by_app" not in scope

    asyncio.run(main())


def test_a_closed_connection_refuses_new_requests() -> None:
    async def handler(request: Request, stream: Any) -> None:
        stream.result(None)

    async def main() -> None:
        conn = LocalConnection(asyncio.get_running_loop(), "rep", handler)
        conn.close_when_idle()
        with pytest.raises(transport.ReplicaUnavailableError):
            conn.request(Request(UNARY, _meta()))

    asyncio.run(main())
