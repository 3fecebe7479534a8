"""Behaviours Ray Serve's own docs rely on: each test is the documented contract.

1. A function deployment without parameters answers HTTP (called without the request).
2. A constructor runs with the replica's event loop running (asyncio primitives work in it).
3. `serve.ingress(builder)`: a function that returns the FastAPI app, built on the replica.
4. FastAPI path parameters at the app root, for GET and POST, at "/" and at a prefix.
5. `serve.status()` and handle look-ups from inside a replica, in sync and async methods.
6. Blocking on a response inside a running event loop is a RuntimeError, as in Ray Serve.
"""

import asyncio

import pytest
import requests
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

import ray_serving_ext as serve


# ---- 1. function deployments without parameters --------------------------------------
@serve.deployment
def no_args():
    return "no args"


@serve.deployment
async def no_args_async():
    return "no args async"


def test_function_deployment_without_parameters(serve_url):
    serve.run(no_args.bind(), name="noargs", route_prefix="/noargs")
    serve.run(no_args_async.bind(), name="noargs-async", route_prefix="/noargs-async")
    r = requests.get(f"{serve_url}/noargs", timeout=30)
    assert (r.status_code, r.text) == (200, "no args")
    r = requests.post(f"{serve_url}/noargs-async", data=b"ignored", timeout=30)
    assert (r.status_code, r.text) == (200, "no args async")


# ---- 2. a running event loop in the constructor ---------------------------------------
@serve.deployment
class LoopInSyncInit:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.ready = asyncio.Event()
        self.ticks = 0
        self.task = asyncio.create_task(self._background())

    async def _background(self) -> None:
        self.ready.set()
        while True:
            self.ticks += 1
            await asyncio.sleep(0.01)

    async def __call__(self) -> dict:
        await asyncio.wait_for(self.ready.wait(), 10)
        before = self.ticks
        await asyncio.sleep(0.2)
        return {
            "same_loop": asyncio.get_running_loop() is self.loop,
            "task_alive": not self.task.done(),
            "advanced": self.ticks > before,
        }


@serve.deployment
class LoopInAsyncInit:
    async def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.started = asyncio.Event()
        self.task = asyncio.create_task(self._background())

    async def _background(self) -> None:
        self.started.set()
        await asyncio.sleep(3600)

    async def __call__(self) -> dict:
        await asyncio.wait_for(self.started.wait(), 10)
        return {"same_loop": asyncio.get_running_loop() is self.loop, "task_alive": not self.task.done(),
                "advanced": True}


def test_constructor_sees_running_loop(serve_url):
    serve.run(LoopInSyncInit.bind(), name="loop-sync", route_prefix="/loop-sync")
    serve.run(LoopInAsyncInit.bind(), name="loop-async", route_prefix="/loop-async")
    expected = {"same_loop": True, "task_alive": True, "advanced": True}
    for prefix in ("/loop-sync", "/loop-async"):
        r = requests.get(f"{serve_url}{prefix}", timeout=30)
        assert r.status_code == 200, r.text
        assert r.json() == expected


# ---- 3. serve.ingress(builder) ----------------------------------------------------------
class Teapot(Exception):
    pass


def build_app() -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def add_header(request: Request, call_next):
        response = await call_next(request)
        response.headers["x-built"] = "yes"
        return response

    @app.exception_handler(Teapot)
    async def teapot(request: Request, exc: Teapot):
        return JSONResponse({"error": "teapot"}, status_code=418)

    def greeting() -> str:
        return "hello"

    @app.get("/hi")
    def hi(greet: str = Depends(greeting)) -> str:
        return greet

    @app.get("/teapot")
    def brew() -> str:
        raise Teapot()

    @app.get("/missing")
    def missing() -> str:
        raise HTTPException(status_code=404, detail="nope")

    return app


BuiltIngress = serve.deployment(serve.ingress(build_app)())


@serve.deployment
@serve.ingress(build_app)
class BuiltIngressClass:
    def __init__(self, tag: str) -> None:
        self.tag = tag


def test_ingress_of_app_builder(serve_url):
    serve.run(BuiltIngress.bind(), name="built", route_prefix="/built")
    serve.run(BuiltIngressClass.bind("x"), name="built-cls", route_prefix="/built-cls")
    for prefix in ("/built", "/built-cls"):
        r = requests.get(f"{serve_url}{prefix}/hi", timeout=30)
        assert (r.status_code, r.json(), r.headers.get("x-built")) == (200, "hello", "yes")
        r = requests.get(f"{serve_url}{prefix}/teapot", timeout=30)
        assert (r.status_code, r.json()) == (418, {"error": "teapot"})
        r = requests.get(f"{serve_url}{prefix}/missing", timeout=30)
        assert (r.status_code, r.json()) == (404, {"detail": "nope"})


# ---- 4. path parameters at the app root ---------------------------------------------------
root_app = FastAPI()


@serve.deployment
@serve.ingress(root_app)
class RootParams:
    @root_app.get("/{name}")
    def get_name(self, name: str) -> dict:
        return {"method": "GET", "name": name}

    @root_app.post("/{name}")
    async def post_name(self, name: str, request: Request) -> dict:
        return {"method": "POST", "name": name, "body": (await request.body()).decode()}


standalone_app = FastAPI()


class Item(BaseModel):
    value: int


@standalone_app.get("/{name}")
def standalone_get(name: str) -> dict:
    return {"method": "GET", "name": name}


@standalone_app.post("/{name}")
def standalone_post(name: str, item: Item) -> dict:
    return {"method": "POST", "name": name, "body": str(item.value)}


Standalone = serve.deployment(serve.ingress(standalone_app)())


def test_root_path_parameters(serve_url):
    serve.run(RootParams.bind(), name="root", route_prefix="/")
    serve.run(RootParams.bind(), name="prefixed", route_prefix="/prefix")
    serve.run(Standalone.bind(), name="standalone", route_prefix="/standalone")
    r = requests.post(f"{serve_url}/standalone/carol", json={"value": 7}, timeout=30)
    assert (r.status_code, r.json()) == (200, {"method": "POST", "name": "carol", "body": "7"}), r.text
    r = requests.get(f"{serve_url}/standalone/dave", timeout=30)
    assert (r.status_code, r.json()) == (200, {"method": "GET", "name": "dave"}), r.text
    serve.delete("root")
    serve.run(Standalone.bind(), name="standalone-root", route_prefix="/")
    r = requests.post(f"{serve_url}/erin", json={"value": 1}, timeout=30)
    assert (r.status_code, r.json()) == (200, {"method": "POST", "name": "erin", "body": "1"}), r.text
    serve.delete("standalone-root")
    serve.run(RootParams.bind(), name="root", route_prefix="/")
    for base in (serve_url, f"{serve_url}/prefix"):
        r = requests.get(f"{base}/alice", timeout=30)
        assert (r.status_code, r.json()) == (200, {"method": "GET", "name": "alice"}), (base, r.text)
        r = requests.post(f"{base}/bob", data=b"payload", timeout=30)
        assert (r.status_code, r.json()) == (200, {"method": "POST", "name": "bob", "body": "payload"}), (base, r.text)


# ---- 5. serve.status() and handles from inside a replica ----------------------------------
@serve.deployment
class Echo:
    def __call__(self, x: str = "") -> str:
        return f"echo:{x}"


@serve.deployment
class Monitor:
    def __init__(self, echo) -> None:
        self.echo = echo
        self.apps_at_start = sorted(serve.status().applications)

    def sync_call(self) -> str:
        return serve.get_deployment_handle("Echo", app_name="monitored").remote("s").result(timeout_s=30)

    def sync_status(self) -> dict:
        status = serve.status()
        app = serve.get_app_handle("monitored")
        dep = serve.get_deployment_handle("Echo", app_name="monitored")
        return {"apps": sorted(status.applications), "app": type(app).__name__, "dep": type(dep).__name__}

    async def async_status(self) -> dict:
        status = serve.status()
        dep = serve.get_deployment_handle("Echo")
        return {"apps": sorted(status.applications), "echo": await dep.remote("a"),
                "status": status.applications["monitored"].status}

    async def __call__(self, request: Request) -> dict:
        return {"sync": self.sync_status(), "async": await self.async_status()}


def test_status_and_handles_inside_replica(serve_url):
    handle = serve.run(Monitor.bind(Echo.bind()), name="monitored", route_prefix="/monitored")
    sync = handle.sync_status.remote().result(timeout_s=60)
    assert sync == {"apps": ["monitored"], "app": "DeploymentHandle", "dep": "DeploymentHandle"}
    asynchronous = handle.async_status.remote().result(timeout_s=60)
    assert handle.sync_call.remote().result(timeout_s=60) == "echo:s"
    assert asynchronous == {"apps": ["monitored"], "echo": "echo:a", "status": "RUNNING"}
    r = requests.get(f"{serve_url}/monitored", timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["async"]["echo"] == "echo:a"


# ---- the docs' own examples ---------------------------------------------------------------
docs_app = FastAPI()


@serve.deployment
@serve.ingress(docs_app)
class DocsFastAPIDeployment:
    @docs_app.get("/")
    def root(self):
        return "Hello, world!"

    @docs_app.post("/{subpath}")
    def root(self, subpath: str):  # noqa: F811 - the docs reuse the name
        return f"Hello from {subpath}!"


@serve.deployment
class SubDeployment:
    def __call__(self):
        return "Hello world!"


def build_docs_asgi_app():
    from fastapi import FastAPI

    app = FastAPI()

    def get_sub_deployment_handle():
        return serve.get_deployment_handle(SubDeployment.name, app_name="my_app")

    @app.get("/hi")
    async def say_hi(handle=Depends(get_sub_deployment_handle)):  # the docs' `handle: Depends(...)` fails in FastAPI 0.165 itself
        return await handle.remote()

    return app


def test_docs_examples(serve_url):
    serve.run(DocsFastAPIDeployment.bind(), name="docs", route_prefix="/")
    r = requests.get(f"{serve_url}/", timeout=30)
    assert (r.status_code, r.json()) == (200, "Hello, world!")
    r = requests.post(f"{serve_url}/hello", timeout=30)
    assert (r.status_code, r.json()) == (200, "Hello from hello!"), r.text
    serve.delete("docs")
    deployment = serve.deployment(serve.ingress(build_docs_asgi_app)())
    serve.run(deployment.bind(SubDeployment.bind()), name="my_app", route_prefix="/")
    r = requests.get(f"{serve_url}/hi", timeout=30)
    assert (r.status_code, r.json()) == (200, "Hello world!"), r.text


# ---- 6. no blocking calls inside a running event loop ---------------------------------------
@serve.deployment
class Blocker:
    def __init__(self, child) -> None:
        self._child = child

    async def __call__(self) -> dict:
        out = {}
        for name, call in (("result", lambda: self._child.remote().result()),
                           ("stream", lambda: next(iter(self._child.options(stream=True).chunks.remote())))):
            try:
                call()
                out[name] = "blocked"
            except RuntimeError as exc:
                out[name] = str(exc)
        out["awaited"] = await self._child.remote()
        return out


@serve.deployment
class Child:
    def __call__(self) -> str:
        return "child"

    def chunks(self):
        yield "chunk"


def test_blocking_on_a_response_inside_an_event_loop_raises(serve_url):
    handle = serve.run(Blocker.bind(Child.bind()), name="blocker", route_prefix="/blocker")
    out = handle.remote().result(timeout_s=60)  # here no loop runs: blocking is fine
    assert out["result"] == ("Sync methods should not be called from within an `asyncio` event loop. "
                             "Use `await response` instead.")
    assert "Use `async for` or `await response.__anext__()` instead." in out["stream"]
    assert out["awaited"] == "child"

    async def in_a_loop() -> str:
        response = handle.remote()
        with pytest.raises(RuntimeError, match="Use `await response` instead"):
            response.result(timeout_s=60)
        broadcast = handle.broadcast("__call__")
        with pytest.raises(RuntimeError, match="Use `await response.results_async[(][)]` instead"):
            broadcast.results(timeout_s=60)
        assert [r["awaited"] for r in await broadcast.results_async(timeout_s=60)] == ["child"]
        return (await response)["awaited"]

    assert asyncio.run(in_a_loop()) == "child"
