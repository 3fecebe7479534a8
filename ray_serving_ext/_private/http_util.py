"""HTTP helpers shared by the proxy and replicas: response conversion and ASGI plumbing."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

from starlette.responses import Response, StreamingResponse

Message = Dict[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]

# The ASGI scope keys a proxy forwards to a replica (all plain data).
_SCOPE_KEYS = (
    "type",
    "asgi",
    "http_version",
    "server",
    "client",
    "scheme",
    "method",
    "root_path",
    "path",
    "raw_path",
    "query_string",
    "headers",
    "subprotocols",
)


def match_route(routes: List[Tuple[str, str, str]], path: str) -> Optional[Tuple[str, str, str]]:
    """The (prefix, app, deployment) of the longest route prefix `path` falls under
    ('/a' covers '/a' and '/a/x', not '/ab'); `routes` are sorted longest first."""
    for entry in routes:
        prefix = entry[0]
        if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
            return entry
    return None


def route_path(scope: Dict[str, Any]) -> str:
    """The path below http_options.root_path (uvicorn puts root_path in front of every path)."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root):] or "/"
    return path


def forwardable_scope(scope: Dict[str, Any], route_prefix: str) -> Dict[str, Any]:
    """A picklable copy of the scope; root_path set so mounted apps see paths under the prefix."""
    out = {k: scope[k] for k in _SCOPE_KEYS if k in scope}
    if route_prefix and route_prefix != "/":
        out["root_path"] = scope.get("root_path", "") + route_prefix
    out["headers"] = [(bytes(k), bytes(v)) for k, v in scope.get("headers", [])]
    return out


def _jsonable(content: Any) -> Any:
    try:
        from fastapi.encoders import jsonable_encoder

        return jsonable_encoder(content)
    except ImportError:  # pragma: no cover - fastapi is a dependency
        return content


def to_response(result: Any) -> Response:
    """Turn what a user callable returned into a Starlette response, as Ray Serve does.

    str -> text/plain (utf-8), bytes -> text/plain, Response -> itself,
    generators -> a streaming response, anything else -> JSON.
    """
    if isinstance(result, Response):
        return result
    if isinstance(result, str):
        return Response(result.encode("utf-8"), media_type="text/plain; charset=utf-8")
    if isinstance(result, (bytes, bytearray, memoryview)):
        return _exact_type(Response(bytes(result)), b"text/plain")
    if hasattr(result, "__aiter__") or hasattr(result, "__next__"):
        return StreamingResponse(result)
    if result is None:  # as Ray Serve: an empty text/plain body
        return _exact_type(Response(b""), b"text/plain")
    body = json.dumps(_jsonable(result), separators=(",", ":")).encode()
    return Response(body, media_type="application/json")


def _exact_type(response: Response, content_type: bytes) -> Response:
    """Set content-type verbatim (Starlette would append a charset to text/*)."""
    response.raw_headers = [(k, v) for k, v in response.raw_headers if k != b"content-type"]
    response.raw_headers.append((b"content-type", content_type))
    return response


def plain_response_messages(status: int, body: str, headers: Optional[List[tuple]] = None) -> List[Message]:
    """The two ASGI messages of a small text/plain response."""
    raw = body.encode()
    hdrs = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(raw)).encode())]
    for k, v in headers or []:
        hdrs.append((k.encode() if isinstance(k, str) else k, v.encode() if isinstance(v, str) else v))
    return [
        {"type": "http.response.start", "status": status, "headers": hdrs},
        {"type": "http.response.body", "body": raw, "more_body": False},
    ]


def retry_after_headers(retry_after_s: Optional[float]) -> List[tuple]:
    """A `Retry-After` header of *retry_after_s* rounded up to whole seconds
    (never negative), or no header for None."""
    if retry_after_s is None:
        return []
    return [("retry-after", str(max(0, math.ceil(retry_after_s))))]


def uvicorn_ssl_kwargs(http_options: Any) -> Dict[str, Any]:
    """uvicorn's TLS options for an `HTTPOptions`: empty (plain HTTP) unless both
    `ssl_keyfile` and `ssl_certfile` are set; the password and CA file only when set."""
    if not (http_options.ssl_keyfile and http_options.ssl_certfile):
        return {}
    kwargs: Dict[str, Any] = {"ssl_keyfile": http_options.ssl_keyfile, "ssl_certfile": http_options.ssl_certfile}
    if http_options.ssl_keyfile_password:
        kwargs["ssl_keyfile_password"] = http_options.ssl_keyfile_password
    if http_options.ssl_ca_certs:
        kwargs["ssl_ca_certs"] = http_options.ssl_ca_certs
    return kwargs


async def send_plain(send: Send, status: int, body: str, headers: Optional[List[tuple]] = None) -> None:
    for message in plain_response_messages(status, body, headers):
        await send(message)


class BufferedReceive:
    """An ASGI receive() that yields one buffered body, then waits for disconnect."""

    __slots__ = ("_body", "_sent", "_disconnected", "_gone")

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._sent = False
        self._gone = False
        self._disconnected: Optional[asyncio.Event] = None  # made only for an app that waits for it

    async def __call__(self) -> Message:
        if not self._sent:
            self._sent = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        if not self._gone:
            if self._disconnected is None:
                self._disconnected = asyncio.Event()
            await self._disconnected.wait()
        return {"type": "http.disconnect"}

    def disconnect(self) -> None:
        self._gone = True
        if self._disconnected is not None:
            self._disconnected.set()


class StreamedReceive:
    """An ASGI receive() over a body that arrives in chunks (`next_message()`), then waits for disconnect.

    Each call returns the caller's next `http.request` chunk as it comes, so
    the app reads the body at its own pace; reading it is what gives the
    sender credit for more (flow control). After the last chunk (or an
    `http.disconnect` from the caller) it behaves as BufferedReceive.
    """

    def __init__(self, next_message: Callable[[], Awaitable[Message]]) -> None:
        self._next = next_message
        self._body_done = False
        self._disconnected = asyncio.Event()

    async def __call__(self) -> Message:
        if not self._body_done:
            message = await self._next()
            if message.get("type") != "http.request" or not message.get("more_body", False):
                self._body_done = True
            return message
        await self._disconnected.wait()
        return {"type": "http.disconnect"}

    def disconnect(self) -> None:
        self._disconnected.set()
