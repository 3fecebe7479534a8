"""http_options.direct_ingress: an application's ingress replicas accept the node's HTTP
connections themselves (from the proxy's listening socket) and serve their own requests
in-process; the proxy takes the connections back when they go."""

from __future__ import annotations

import http.client
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional
from urllib.parse import urlparse

import pytest
import ray
import requests
from fastapi import FastAPI, WebSocket
from fastapi.responses import StreamingResponse
from websockets.sync.client import connect

import ray_serving_ext as serve
from tests.utils import wait_for_condition

api = FastAPI()


@serve.deployment(graceful_shutdown_wait_loop_s=0.1, graceful_shutdown_timeout_s=5)
class Pid:
    def __call__(self, request=None) -> str:
        return str(os.getpid())


@serve.deployment(graceful_shutdown_wait_loop_s=0.1)
class Child:
    def __call__(self, text: str) -> str:
        return f"child({text}) in {os.getpid()}"


@serve.deployment(graceful_shutdown_wait_loop_s=0.1)
class Parent:
    def __init__(self, child) -> None:
        self.child = child

    async def __call__(self, request) -> str:
        return await self.child.remote(request.query_params.get("q", ""))


@serve.deployment(graceful_shutdown_wait_loop_s=0.1)
@serve.ingress(api)
class Api:
    @api.get("/stream")
    def stream(self, n: int = 3) -> StreamingResponse:
        return StreamingResponse((f"{i}\n" for i in range(n)), media_type="text/plain")

    @api.websocket("/ws")
    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_text(f"{os.getpid()}:{text}")
        await websocket.close()


@serve.deployment(max_ongoing_requests=1, max_queued_requests=1, graceful_shutdown_wait_loop_s=0.1)
class Slow:
    def __call__(self, request=None) -> str:
        time.sleep(2)
        return "done"


@pytest.fixture
def direct_url(serve_instance):
    yield serve_instance.ensure(direct_ingress=True)
    names = list(serve.status().applications)
    if names:
        from ray_serving_ext import api as serve_api

        serve_api._get_client().delete_apps(names, blocking=True)


def _proxy_pid() -> int:
    proxies = serve.status().proxies
    node_id = next(iter(proxies))
    actor = ray.get_actor("SERVE_PROXY_ACTOR-" + node_id, namespace="serve")
    return ray.get(actor.ready.remote(), timeout=30)["pid"]


def _server_pid_of(conn: http.client.HTTPConnection, server_port: int) -> Optional[int]:
    """The pid of the process holding the server end of `conn` (from /proc)."""
    client_port = conn.sock.getsockname()[1]
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local, remote = fields[1], fields[2]
                if int(local.rsplit(":", 1)[1], 16) == server_port and int(remote.rsplit(":", 1)[1], 16) == client_port:
                    inode = fields[9]
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") == target for fd in os.listdir(f"/proc/{entry}/fd")):
                return int(entry)
        except OSError:
            continue
    return None


def _who_answers(url: str, path: str, tries: int = 20) -> Dict[str, int]:
    """For `tries` fresh connections: which process accepted each, and what it answered."""
    parsed = urlparse(url)
    seen: Dict[str, int] = {}
    for _ in range(tries):
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read().decode()
            holder = _server_pid_of(conn, parsed.port)
            key = f"{response.status}:{body}:{holder}"
            seen[key] = seen.get(key, 0) + 1
        finally:
            conn.close()
    return seen


def test_the_ingress_replica_accepts_and_answers_itself(direct_url):
    serve.run(Pid.bind(), name="pid", route_prefix="/pid")
    replica_pid = requests.get(f"{direct_url}/pid", timeout=30).text
    proxy_pid = _proxy_pid()

    def replica_accepts() -> bool:
        return set(_who_answers(direct_url, "/pid", tries=5)) == {f"200:{replica_pid}:{replica_pid}"}

    wait_for_condition(replica_accepts, timeout=30, message="the replica accepts the connections itself")
    assert str(proxy_pid) != replica_pid
    # Probes and unknown paths are answered where the connection landed, with the proxy's contract.
    assert requests.get(f"{direct_url}/-/healthz", timeout=10).status_code == 200
    assert requests.get(f"{direct_url}/-/routes", timeout=10).json() == {"/pid": "pid"}
    missing = requests.get(f"{direct_url}/nope", timeout=10)
    assert missing.status_code == 404 and "not found" in missing.text


def test_deleting_the_app_gives_the_connections_back_to_the_proxy(direct_url):
    serve.run(Pid.bind(), name="pid", route_prefix="/pid")
    replica_pid = requests.get(f"{direct_url}/pid", timeout=30).text
    wait_for_condition(lambda: set(_who_answers(direct_url, "/pid", tries=3)) == {f"200:{replica_pid}:{replica_pid}"},
                       timeout=30)
    serve.delete("pid")
    proxy_pid = _proxy_pid()
    seen = _who_answers(direct_url, "/-/routes", tries=5)
    assert set(seen) == {f"200:{{}}:{proxy_pid}"}, seen


def test_composition_streaming_and_websockets(direct_url):
    serve.run(Parent.bind(Child.bind()), name="parent", route_prefix="/parent")
    answer = requests.get(f"{direct_url}/parent?q=hi", timeout=30)
    assert answer.status_code == 200 and answer.text.startswith("child(hi) in ")
    assert answer.headers.get("x-request-id")

    serve.run(Api.bind(), name="api", route_prefix="/api")
    streamed = requests.get(f"{direct_url}/api/stream?n=5", timeout=30)
    assert streamed.status_code == 200 and streamed.text == "".join(f"{i}\n" for i in range(5))
    ws_url = direct_url.replace("http://", "ws://") + "/api/ws"
    with connect(ws_url, open_timeout=10) as ws:
        ws.send("hello")
        pid, text = ws.recv(timeout=10).split(":", 1)
        assert text == "hello" and pid.isdigit()
    # Both applications answer, whichever ingress replica accepted the connection.
    for _ in range(10):
        assert requests.get(f"{direct_url}/parent?q=x", timeout=30).status_code == 200
        assert requests.get(f"{direct_url}/api/stream?n=1", timeout=30).text == "0\n"


def test_backpressure_is_the_routers(direct_url):
    serve.run(Slow.bind(), name="slow", route_prefix="/slow")
    assert requests.get(f"{direct_url}/slow", timeout=30).status_code == 200
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(requests.get, f"{direct_url}/slow", timeout=30)
        time.sleep(0.5)
        queued = pool.submit(requests.get, f"{direct_url}/slow", timeout=30)
        time.sleep(0.5)
        third = requests.get(f"{direct_url}/slow", timeout=30)
        assert third.status_code == 503 and third.headers.get("x-request-id")
        assert [first.result().status_code, queued.result().status_code] == [200, 200]


def test_no_request_fails_across_a_redeploy_and_a_killed_replica(direct_url):
    serve.run(Pid.bind(), name="pid", route_prefix="/pid")
    old_pid = requests.get(f"{direct_url}/pid", timeout=30).text
    failures: List[str] = []
    statuses: Dict[int, int] = {}

    def hammer(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        for _ in range(5000):
            if time.monotonic() > deadline:
                return
            try:
                status = requests.get(f"{direct_url}/pid", timeout=30).status_code
                statuses[status] = statuses.get(status, 0) + 1
                if status != 200:
                    failures.append(str(status))
            except requests.ConnectionError as exc:
                failures.append(repr(exc))

    with ThreadPoolExecutor(max_workers=2) as pool:
        load = [pool.submit(hammer, 12.0) for _ in range(2)]
        time.sleep(1.0)
        serve.run(Pid.options(version="2").bind(), name="pid", route_prefix="/pid")
        for future in load:
            future.result()
    assert not failures, (failures[:5], statuses)
    new_pid = requests.get(f"{direct_url}/pid", timeout=30).text
    assert new_pid != old_pid

    # A killed ingress replica: the proxy accepts again, the controller replaces the replica.
    ray.kill(ray.get_actor(next(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                                if a["namespace"] == "serve" and "SERVE_REPLICA::pid#Pid" in a["name"]),
                           namespace="serve"), no_restart=True)

    def answers() -> bool:
        response = requests.get(f"{direct_url}/pid", timeout=10)
        return response.status_code == 200 and response.text not in (new_pid, "")

    wait_for_condition(answers, timeout=60, interval=0.5, message="a new replica answers")


def test_a_restarted_proxy_hands_out_its_sockets_again(direct_url):
    serve.run(Pid.bind(), name="pid", route_prefix="/pid")
    replica_pid = requests.get(f"{direct_url}/pid", timeout=30).text
    wait_for_condition(lambda: set(_who_answers(direct_url, "/pid", tries=3)) == {f"200:{replica_pid}:{replica_pid}"},
                       timeout=30)
    old_proxy = _proxy_pid()
    node_id = next(iter(serve.status().proxies))
    ray.kill(ray.get_actor("SERVE_PROXY_ACTOR-" + node_id, namespace="serve"), no_restart=False)
    # Meanwhile the replica serves on with the sockets it holds: no request fails.
    for _ in range(20):
        assert requests.get(f"{direct_url}/pid", timeout=30).text == replica_pid

    def new_proxy_up() -> bool:
        return _proxy_pid() != old_proxy

    wait_for_condition(new_proxy_up, timeout=90, interval=0.5, message="the proxy restarted")
    # The replica takes the new proxy's sockets; every connection lands on it again.
    wait_for_condition(lambda: set(_who_answers(direct_url, "/pid", tries=5)) == {f"200:{replica_pid}:{replica_pid}"},
                       timeout=60, interval=0.5, message="the replica accepts from the new proxy's socket")
    assert requests.get(f"{direct_url}/-/healthz", timeout=10).status_code == 200


def test_a_draining_proxy_takes_the_replicas_off_the_port_too(direct_url, serve_instance):
    """Last in the module: it drains the instance's proxy, then shuts the instance down."""
    serve.run(Pid.bind(), name="pid", route_prefix="/pid")
    replica_pid = requests.get(f"{direct_url}/pid", timeout=30).text
    wait_for_condition(lambda: set(_who_answers(direct_url, "/pid", tries=3)) == {f"200:{replica_pid}:{replica_pid}"},
                       timeout=30)
    node_id = next(iter(serve.status().proxies))
    proxy = ray.get_actor("SERVE_PROXY_ACTOR-" + node_id, namespace="serve")
    try:
        ray.get(proxy.prepare_for_shutdown.remote(), timeout=60)

        def off_the_port() -> bool:
            try:
                requests.get(f"{direct_url}/pid", timeout=2)
            except requests.ConnectionError:
                return True
            return False

        wait_for_condition(off_the_port, timeout=30, interval=0.5,
                           message="nothing accepts the drained node's connections")
    finally:
        serve.shutdown()
        serve_instance.options = None  # the next test starts a new instance
