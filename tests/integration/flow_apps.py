"""Deployments for the flow-control tests: fast producers, slow readers.

Each counts what it produced and records when its generator was closed, so a
test can compare production with consumption and see cancellation happen.
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse

import ray_serving_ext as serve

MIB = 1024 * 1024
CHUNK = b"x" * MIB


class _Counts:
    def __init__(self) -> None:
        self.produced = 0
        self.closed = False
        self.received = 0

    def stats(self) -> Dict[str, Any]:
        return {"produced": self.produced, "closed": self.closed, "received": self.received}

    async def _chunks(self, n: int):
        self.produced, self.closed = 0, False
        try:
            for _ in range(n):
                self.produced += 1
                yield CHUNK
        finally:
            self.closed = True  # finished, cancelled (CancelledError) or closed (GeneratorExit)


@serve.deployment(max_ongoing_requests=100, graceful_shutdown_wait_loop_s=0.1)
class Producer(_Counts):
    """HTTP: `?n=` MiB (default 600) as a StreamingResponse. Handle: `chunks(n)` streams n MiB."""

    async def __call__(self, request: Request) -> Any:
        n = int(request.query_params.get("n", 600))
        return StreamingResponse(self._chunks(n), media_type="application/octet-stream")

    async def chunks(self, n: int):
        async for chunk in self._chunks(n):
            yield chunk


ws_app = FastAPI()


@serve.deployment(max_ongoing_requests=100, graceful_shutdown_wait_loop_s=0.1)
@serve.ingress(ws_app)
class WsProducer(_Counts):
    @ws_app.websocket("/")
    async def flood(self, ws: WebSocket) -> None:
        await ws.accept()
        self.produced, self.closed = 0, False
        try:
            for _ in range(600):
                await ws.send_bytes(CHUNK)
                self.produced += 1
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self.closed = True

    @ws_app.get("/stats")
    def get_stats(self) -> Dict[str, Any]:
        return self.stats()


@serve.deployment(max_ongoing_requests=100, graceful_shutdown_wait_loop_s=0.1)
class SlowReader(_Counts):
    """Reads an uploaded body slowly, a chunk at a time."""

    async def __call__(self, request: Request) -> Any:
        self.received = 0
        async for chunk in request.stream():
            self.received += len(chunk)
            await asyncio.sleep(0.0005)
        return PlainTextResponse(str(self.received))
