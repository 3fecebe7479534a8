"""The proxy's answers before it is ready for traffic (no Ray: these paths reach no replica)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Dict, List, Tuple

from ray_serving_ext._private.proxy import DRAINING_MESSAGE, NO_REPLICAS_MESSAGE, NO_ROUTES_MESSAGE, ProxyASGIApp


def _get(app: ProxyASGIApp, path: str) -> Tuple[int, Dict[bytes, bytes], bytes]:
    """GET `path` through the ASGI app; (status, headers, body)."""
    sent: List[Dict[str, Any]] = []

    async def receive() -> Dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "headers": [], "scheme": "http", "server": ("127.0.0.1", 8000),
             "client": ("127.0.0.1", 5000), "http_version": "1.1", "asgi": {"version": "3.0"}}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start.get("headers", [])), body


def _app() -> ProxyASGIApp:
    app = ProxyASGIApp(None, "node")
    app.access_log = False
    return app


def test_before_the_first_route_table_requests_get_a_retryable_503():
    app = _app()
    status, headers, body = _get(app, "/anything")
    assert (status, body.decode()) == (503, NO_ROUTES_MESSAGE)
    assert headers[b"x-request-id"]
    assert _get(app, "/-/healthz")[::2] == (503, NO_ROUTES_MESSAGE.encode())
    assert _get(app, "/-/routes")[::2] == (200, b"{}")


def test_an_empty_route_table_answers_404_and_is_not_healthy():
    app = _app()
    app.update_routes({})
    status, _, body = _get(app, "/anything")
    assert status == 404 and b"/anything" in body
    assert _get(app, "/-/healthz")[::2] == (503, NO_ROUTES_MESSAGE.encode())


def test_with_a_route_it_is_healthy_and_other_paths_are_404():
    app = _app()
    app.update_routes({"/a": {"app_name": "a", "deployment": "A"}})
    assert _get(app, "/-/healthz")[::2] == (200, b"success")
    assert json.loads(_get(app, "/-/routes")[2]) == {"/a": "a"}
    assert _get(app, "/b")[0] == 404
    app.draining = True
    assert _get(app, "/-/healthz")[::2] == (503, DRAINING_MESSAGE.encode())


class _Router:
    """Stands in for a Router: only what readiness reads."""

    def __init__(self) -> None:
        self.num_replicas = 0

    def stop(self) -> None:
        pass


def test_off_the_head_node_it_is_ready_once_a_replica_is_known(monkeypatch):
    app = ProxyASGIApp(None, "node", is_head=False)
    app.access_log = False
    router = _Router()
    made = []
    monkeypatch.setattr(app, "_router", lambda dep_id: made.append(dep_id) or app.routers.setdefault(dep_id, router))
    app.update_routes({"/a": {"app_name": "a", "deployment": "A"}})
    assert [(d.app_name, d.name) for d in made] == [("a", "A")]  # made with the routes, before any request
    assert _get(app, "/-/healthz")[::2] == (503, NO_REPLICAS_MESSAGE.encode())
    router.num_replicas = 1
    assert _get(app, "/-/healthz")[::2] == (200, b"success")


def test_a_websocket_before_the_first_route_table_is_told_to_try_again():
    closes: List[int] = []

    async def receive() -> Dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Dict[str, Any]) -> None:
        closes.append(message["code"])

    scope = {"type": "websocket", "path": "/ws", "raw_path": b"/ws", "root_path": "", "query_string": b"",
             "headers": [], "scheme": "ws", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000)}
    app = _app()
    asyncio.run(app(scope, receive, send))
    app.update_routes({})
    asyncio.run(app(scope, receive, send))
    assert closes == [1013, 1008]  # try again later; then no such route
