"""WebSockets through the proxy to a FastAPI ingress, as Ray Serve supports them."""

from __future__ import annotations

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from websockets.sync.client import connect

import ray_serving_ext as serve

ws_app = FastAPI()


@serve.deployment(graceful_shutdown_wait_loop_s=0.1)
@serve.ingress(ws_app)
class Chat:
    def __init__(self) -> None:
        self.prefix = "echo"

    @ws_app.websocket("/ws")
    async def chat(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                if text == "bye":
                    await websocket.close()
                    return
                await websocket.send_text(f"{self.prefix}: {text}")
        except WebSocketDisconnect:
            pass


def test_websocket_round_trips(serve_url):
    serve.run(Chat.bind(), name="chat", route_prefix="/chat")
    ws_url = serve_url.replace("http://", "ws://") + "/chat/ws"
    with connect(ws_url, open_timeout=10) as ws:
        for i in range(5):
            ws.send(f"hello {i}")
            assert ws.recv(timeout=10) == f"echo: hello {i}"
    # A second connection after the first closed works too (the replica slot was released).
    with connect(ws_url, open_timeout=10) as ws:
        ws.send("again")
        assert ws.recv(timeout=10) == "echo: again"
        ws.send("bye")
