"""End-to-end request timeouts (408) and cancellation on timeout and client disconnect."""

from __future__ import annotations

import asyncio
import socket
import time

import requests

import ray_serving_ext as serve
from tests.utils import wait_for_condition


@serve.deployment(max_ongoing_requests=10)
class Sleeper:
    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0
        self.finished = 0

    async def __call__(self, request) -> str:
        seconds = float(request.query_params.get("s", "0"))
        self.started += 1
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished += 1
        return "done"

    def counts(self) -> dict:
        return {"started": self.started, "cancelled": self.cancelled, "finished": self.finished}


def test_timeout_gives_408_and_cancels_on_replica(serve_url_with_timeout):
    handle = serve.run(Sleeper.bind(), name="sleeper", route_prefix="/sleep")
    url = f"{serve_url_with_timeout}/sleep"
    assert requests.get(url, params={"s": "0"}, timeout=10).text == "done"
    start = time.monotonic()
    resp = requests.get(url, params={"s": "30"}, headers={"x-request-id": "slow-1"}, timeout=20)
    elapsed = time.monotonic() - start
    assert resp.status_code == 408
    assert resp.headers["x-request-id"] == "slow-1"
    assert "timed out" in resp.text
    assert 1.5 < elapsed < 6
    # The slow request was cancelled on the replica, not left running.
    wait_for_condition(lambda: handle.counts.remote().result()["cancelled"] == 1, timeout=10)
    assert handle.counts.remote().result()["finished"] == 1


def test_client_disconnect_cancels_request(serve_url):
    handle = serve.run(Sleeper.bind(), name="sleeper", route_prefix="/sleep")
    port = int(serve_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /sleep?s=30 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        wait_for_condition(lambda: handle.counts.remote().result()["started"] == 1, timeout=10)
    wait_for_condition(lambda: handle.counts.remote().result()["cancelled"] == 1, timeout=10)


def test_handle_cancel(serve_url):
    handle = serve.run(Sleeper.bind(), name="sleeper", route_prefix=None)

    class FakeRequest:
        query_params = {"s": "30"}

    response = handle.remote(FakeRequest())
    wait_for_condition(lambda: handle.counts.remote().result()["started"] == 1, timeout=10)
    response.cancel()
    wait_for_condition(lambda: handle.counts.remote().result()["cancelled"] == 1, timeout=10)
    try:
        response.result(timeout_s=10)
        raise AssertionError("a cancelled response must not return a result")
    except serve.exceptions.RequestCancelledError:
        pass
