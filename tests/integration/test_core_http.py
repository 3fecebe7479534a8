"""HTTP behaviour of the proxy and replicas (issue #2: items 1, 6 and 7).

Function and class deployments receive a Starlette Request; what they return
becomes the HTTP response the way Ray Serve converts it. The proxy answers
/-/healthz and /-/routes itself, 404s unknown paths, turns user exceptions into
500s, tags every application response with x-request-id and routes by the
longest matching route prefix.
"""

from __future__ import annotations

import os

import requests
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

import ray_serving_ext as serve
from tests.utils import wait_for_condition

TIMEOUT = 15
# Deletion waits one graceful_shutdown_wait_loop_s (2 s by default); keep teardown quick.
FAST = {"graceful_shutdown_wait_loop_s": 0.1}


# ---- deployments ----------------------------------------------------------------------


@serve.deployment(**FAST)
async def echo(request: Request) -> dict:
    body = await request.body()
    return {
        "method": request.method,
        "path": request.url.path,
        "query": dict(request.query_params),
        "header": request.headers.get("x-custom"),
        "body": body.decode(),
    }


@serve.deployment(**FAST)
class Counter:
    """A class deployment keeps state across requests in one replica."""

    def __init__(self, start: int) -> None:
        self.count = start

    def __call__(self, request: Request) -> str:
        self.count += int(request.query_params.get("by", "1"))
        return f"count={self.count}"


@serve.deployment(**FAST)
def returns(request: Request):
    kind = request.query_params["kind"]
    if kind == "str":
        return "héllo"
    if kind == "bytes":
        return b"\x00\x01raw"
    if kind == "dict":
        return {"a": 1, "b": [1, 2], "c": None}
    if kind == "list":
        return [1, "two", 3.5]
    if kind == "int":
        return 42
    if kind == "response":
        return Response(
            content=b"created!",
            status_code=201,
            headers={"x-custom-header": "custom-value"},
            media_type="application/x-thing",
        )
    if kind == "plain":
        return PlainTextResponse("teapot", status_code=418)
    if kind == "stream":
        return StreamingResponse((f"chunk{i};" for i in range(3)), media_type="text/plain")
    if kind == "none":
        return None
    raise AssertionError(kind)


@serve.deployment(**FAST)
class Flaky:
    def __call__(self, request: Request) -> dict:
        if request.query_params.get("fail"):
            raise ValueError("user code failed on purpose")
        return {"pid": os.getpid()}


@serve.deployment(**FAST)
class Named:
    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, request: Request) -> dict:
        return {"app": self.name, "path": request.url.path, "root_path": request.scope.get("root_path", "")}


# ---- tests ----------------------------------------------------------------------------


def test_function_deployment_sees_query_body_and_headers(serve_url):
    serve.run(echo.bind(), name="echo", route_prefix="/echo")
    resp = requests.post(
        f"{serve_url}/echo/sub/path?x=1&name=ray",
        data=b"payload-bytes",
        headers={"x-custom": "custom-header-value"},
        timeout=TIMEOUT,
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {
        "method": "POST",
        "path": "/echo/sub/path",
        "query": {"x": "1", "name": "ray"},
        "header": "custom-header-value",
        "body": "payload-bytes",
    }
    # Exactly the prefix also routes to the app.
    resp = requests.get(f"{serve_url}/echo", timeout=TIMEOUT)
    assert resp.status_code == 200
    assert resp.json()["method"] == "GET"
    assert resp.json()["body"] == ""


def test_class_deployment_keeps_state_and_takes_bound_args(serve_url):
    serve.run(Counter.bind(100), name="counter", route_prefix="/counter")
    assert requests.get(f"{serve_url}/counter", timeout=TIMEOUT).text == "count=101"
    resp = requests.get(f"{serve_url}/counter?by=10", timeout=TIMEOUT)
    assert resp.status_code == 200
    assert resp.text == "count=111"
    assert resp.headers["content-type"].startswith("text/plain")


def test_return_types_become_http_responses(serve_url):
    serve.run(returns.bind(), name="returns", route_prefix="/r")

    def get(kind: str) -> requests.Response:
        return requests.get(f"{serve_url}/r", params={"kind": kind}, timeout=TIMEOUT)

    resp = get("str")
    assert resp.status_code == 200
    assert resp.content == "héllo".encode("utf-8")
    assert resp.headers["content-type"] == "text/plain; charset=utf-8"

    resp = get("bytes")
    assert resp.status_code == 200
    assert resp.content == b"\x00\x01raw"
    assert resp.headers["content-type"].startswith("text/plain")

    resp = get("dict")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {"a": 1, "b": [1, 2], "c": None}
    assert resp.content == b'{"a":1,"b":[1,2],"c":null}'  # compact, as Ray Serve

    resp = get("list")
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == [1, "two", 3.5]

    resp = get("int")
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == 42

    resp = get("response")
    assert resp.status_code == 201
    assert resp.content == b"created!"
    assert resp.headers["x-custom-header"] == "custom-value"
    assert resp.headers["content-type"] == "application/x-thing"
    assert resp.headers["x-request-id"]

    resp = get("plain")
    assert resp.status_code == 418
    assert resp.text == "teapot"

    resp = get("stream")
    assert resp.status_code == 200
    assert resp.text == "chunk0;chunk1;chunk2;"


def test_bytes_content_type_matches_ray_serve(serve_url):
    serve.run(returns.bind(), name="returns", route_prefix="/r")
    resp = requests.get(f"{serve_url}/r", params={"kind": "bytes"}, timeout=TIMEOUT)
    assert resp.content == b"\x00\x01raw"
    assert resp.headers["content-type"] == "text/plain"


def test_none_return_matches_ray_serve(serve_url):
    serve.run(returns.bind(), name="returns", route_prefix="/r")
    resp = requests.get(f"{serve_url}/r", params={"kind": "none"}, timeout=TIMEOUT)
    assert resp.status_code == 200
    assert resp.content == b""
    assert resp.headers["content-type"] == "text/plain"


def test_healthz_routes_and_404(serve_url):
    # As Ray Serve's: not ready for traffic (503) until some application has a route.
    resp = requests.get(f"{serve_url}/-/healthz", timeout=TIMEOUT)
    assert (resp.status_code, resp.text) == (503, "Route table is not populated yet.")
    serve.run(Named.bind("hidden"), name="hidden", route_prefix=None)
    resp = requests.get(f"{serve_url}/-/healthz", timeout=TIMEOUT)
    assert (resp.status_code, resp.text) == (503, "Route table is not populated yet.")
    assert requests.get(f"{serve_url}/-/routes", timeout=TIMEOUT).json() == {}

    serve.run(Named.bind("one"), name="app_one", route_prefix="/one")
    wait_for_condition(lambda: requests.get(f"{serve_url}/-/healthz", timeout=TIMEOUT).text == "success", timeout=10)
    serve.run(Named.bind("two"), name="app_two", route_prefix="/two/deeper")
    resp = requests.get(f"{serve_url}/-/routes", timeout=TIMEOUT)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {"/one": "app_one", "/two/deeper": "app_two"}

    resp = requests.get(f"{serve_url}/no/such/path", timeout=TIMEOUT)
    assert resp.status_code == 404
    assert "/no/such/path" in resp.text
    assert resp.headers["x-request-id"]
    # "/two" alone is not under "/two/deeper".
    assert requests.get(f"{serve_url}/two", timeout=TIMEOUT).status_code == 404


def test_user_exception_is_500_and_replica_survives(serve_url):
    serve.run(Flaky.bind(), name="flaky", route_prefix="/flaky")
    ok = requests.get(f"{serve_url}/flaky", timeout=TIMEOUT)
    assert ok.status_code == 200
    pid = ok.json()["pid"]

    bad = requests.get(f"{serve_url}/flaky?fail=1", timeout=TIMEOUT)
    assert bad.status_code == 500
    rid = bad.headers["x-request-id"]
    assert rid
    assert "user code failed on purpose" not in bad.text  # no traceback leaks to clients

    again = requests.get(f"{serve_url}/flaky", timeout=TIMEOUT)
    assert again.status_code == 200
    assert again.json()["pid"] == pid, "the replica must not be restarted by a user exception"
    assert again.headers["x-request-id"] != rid

    status = serve.status().applications["flaky"]
    assert status.status == "RUNNING"
    assert status.deployments["Flaky"].replica_states == {"RUNNING": 1}


def test_request_id_is_generated_or_kept(serve_url):
    serve.run(Flaky.bind(), name="flaky", route_prefix="/flaky")
    ids = set()
    for _ in range(3):
        resp = requests.get(f"{serve_url}/flaky", timeout=TIMEOUT)
        assert resp.status_code == 200
        ids.add(resp.headers["x-request-id"])
    assert len(ids) == 3, "every request gets its own id"

    mine = "client-chosen-request-id-123"
    resp = requests.get(f"{serve_url}/flaky", headers={"X-Request-ID": mine}, timeout=TIMEOUT)
    assert resp.status_code == 200
    assert resp.headers["x-request-id"] == mine
    resp = requests.get(f"{serve_url}/flaky?fail=1", headers={"x-request-id": mine + "-err"}, timeout=TIMEOUT)
    assert resp.status_code == 500
    assert resp.headers["x-request-id"] == mine + "-err"


def test_longest_prefix_routing(serve_url):
    serve.run(Named.bind("root"), name="root", route_prefix="/")
    serve.run(Named.bind("a"), name="a", route_prefix="/a")
    serve.run(Named.bind("ab"), name="ab", route_prefix="/a/b")
    assert requests.get(f"{serve_url}/-/routes", timeout=TIMEOUT).json() == {"/": "root", "/a": "a", "/a/b": "ab"}

    expected = {
        "/a/b/c": "ab",
        "/a/b": "ab",
        "/a/b/": "ab",
        "/a/x": "a",
        "/a": "a",
        "/ab": "root",
        "/a/bc": "a",
        "/zzz": "root",
        "/": "root",
    }
    for path, app in expected.items():
        resp = requests.get(f"{serve_url}{path}", timeout=TIMEOUT)
        assert resp.status_code == 200, (path, resp.status_code, resp.text)
        assert resp.json()["app"] == app, (path, resp.json())
        assert resp.json()["path"] == path
    # Apps behind a prefix see it as the ASGI root_path, as in Ray Serve.
    assert requests.get(f"{serve_url}/a/b/c", timeout=TIMEOUT).json()["root_path"] == "/a/b"
    assert requests.get(f"{serve_url}/zzz", timeout=TIMEOUT).json()["root_path"] == ""

    # Deleting the longest prefix sends its paths to the next one.
    serve.delete("ab")
    wait_for_condition(
        lambda: requests.get(f"{serve_url}/a/b/c", timeout=TIMEOUT).json()["app"] == "a",
        timeout=20,
        message="/a/b/c should route to app 'a' once '/a/b' is deleted",
    )


@serve.deployment(graceful_shutdown_wait_loop_s=0.1)
def where_am_i(request) -> dict:
    return {"root_path": request.scope["root_path"], "path": request.url.path}


def test_http_options_root_path(serve_instance):
    """Behind a reverse proxy that strips /serve: routes match below it; apps see their full mount path."""
    url = serve_instance.ensure(root_path="/serve")
    try:
        serve.run(where_am_i.bind(), name="mounted", route_prefix="/app")
        resp = requests.get(f"{url}/app/x", timeout=TIMEOUT)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"root_path": "/serve/app", "path": "/serve/app/x"}
        assert requests.get(f"{url}/-/healthz", timeout=TIMEOUT).text == "success"
    finally:
        serve.delete("mounted")
