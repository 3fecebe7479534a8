"""`http_options.middlewares`: Starlette middlewares around every proxy's ASGI app.

One instance with three: two that stamp each response (so the order they wrap in
shows), one that answers some requests itself (so they see every request: the
proxy's fast path is off), and Starlette's CORSMiddleware (a preflight gets its
answer from the middleware, not from the app).
"""

from __future__ import annotations

import pytest
import requests
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse

import ray_serving_ext as serve


class Stamp:
    """Appends its name to the response's `x-trail` header (inner middlewares stamp first)."""

    def __init__(self, app, name: str) -> None:
        self.app, self.name = app, name.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def stamped(message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-trail"]
                trail = [v for k, v in message.get("headers", []) if k == b"x-trail"]
                message = {**message, "headers": headers + [(b"x-trail", b",".join(trail + [self.name]))]}
            await send(message)

        await self.app(scope, receive, stamped)


class Gate:
    """Answers 418 itself, without calling the app, when the request has `?blocked`."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and b"blocked" in scope.get("query_string", b""):
            return await PlainTextResponse("stopped by a middleware", status_code=418)(scope, receive, send)
        await self.app(scope, receive, send)


# Module-level: the instance is kept across this module's tests only while these are the same objects.
MIDDLEWARES = [Middleware(Stamp, name="inner"), Middleware(Gate), Middleware(Stamp, name="outer"),
               Middleware(CORSMiddleware, allow_origins=["https://example.test"], allow_methods=["GET"])]


@serve.deployment(graceful_shutdown_wait_loop_s=0.1)
def hello(request) -> str:
    return "hello"


@pytest.fixture(scope="module")
def wrapped(serve_instance):
    url = serve_instance.ensure(middlewares=MIDDLEWARES)
    serve.run(hello.bind(), name="hello", route_prefix="/hello")
    yield url
    serve.shutdown()
    serve_instance.options = None  # later tests get an instance without middlewares


def test_every_response_passes_the_middlewares_in_ray_serves_order(wrapped):
    for _ in range(3):  # keep-alive requests too, each one through the middlewares
        resp = requests.get(f"{wrapped}/hello", timeout=10)
        assert resp.status_code == 200 and resp.text == "hello"
        # Each entry wraps the ones before it: the first listed is innermost, so it stamps first.
        assert resp.headers["x-trail"] == "inner,outer"
        assert resp.headers["x-request-id"]
    missing = requests.get(f"{wrapped}/nowhere", timeout=10)
    assert missing.status_code == 404 and missing.headers["x-trail"] == "inner,outer"


def test_a_middleware_can_answer_a_request_itself(wrapped):
    resp = requests.get(f"{wrapped}/hello?blocked=1", timeout=10)
    assert resp.status_code == 418 and resp.text == "stopped by a middleware"
    assert resp.headers["x-trail"] == "outer"  # Gate answered inside "outer" and outside "inner"


def test_cors_preflight_and_headers(wrapped):
    preflight = requests.options(f"{wrapped}/hello", timeout=10, headers={
        "Origin": "https://example.test", "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://example.test"
    resp = requests.get(f"{wrapped}/hello", headers={"Origin": "https://example.test"}, timeout=10)
    assert resp.text == "hello" and resp.headers["access-control-allow-origin"] == "https://example.test"
    other = requests.get(f"{wrapped}/hello", headers={"Origin": "https://elsewhere.test"}, timeout=10)
    assert "access-control-allow-origin" not in other.headers
