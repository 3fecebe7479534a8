"""Request limits on the proxy (issue 15, finding 4), each with the status code users expect.

One instance with small limits: a declared or sent body over the limit gets
413, a head over the limit 431, headers that trickle in 408, a stalled body
408, one connection too many 503, and the metrics endpoint can be off. After
each refusal the connection is closed and the next valid request gets 200.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlparse

import pytest
import requests

import ray_serving_ext as serve

LIMITS = {"max_request_body_bytes": 4096, "max_header_bytes": 2048, "header_timeout_s": 1.0,
          "body_timeout_s": 1.0, "max_connections": 8, "metrics_endpoint": False}


@serve.deployment(graceful_shutdown_wait_loop_s=0.1)
async def size(request) -> str:
    return str(len(await request.body()))


@pytest.fixture(scope="module")
def limited(serve_instance):
    url = serve_instance.ensure(**LIMITS)
    serve.run(size.bind(), name="size", route_prefix="/size")
    yield url
    serve.shutdown()
    serve_instance.options = None  # later tests get an instance with the default limits


def _raw(url: str, data: bytes, wait_s: float = 0.0) -> bytes:
    """Send `data` on a new connection (then wait, sending nothing); everything read until it closes."""
    parsed = urlparse(url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as sock:
        sock.sendall(data)
        if wait_s:
            time.sleep(wait_s)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
        return out


def _still_serving(url: str) -> None:
    assert requests.post(f"{url}/size", data=b"ok", timeout=10).text == "2"


def test_body_limit_declared_and_sent(limited):
    assert requests.post(f"{limited}/size", data=b"x" * 4096, timeout=10).text == "4096"
    too_big = requests.post(f"{limited}/size", data=b"x" * 4097, timeout=10)
    assert too_big.status_code == 413 and "4096 bytes" in too_big.text
    chunked = requests.post(f"{limited}/size", data=iter([b"x" * 3000, b"y" * 3000]), timeout=10)
    assert chunked.status_code == 413
    _still_serving(limited)


def test_header_limit(limited):
    resp = requests.get(f"{limited}/size", headers={"x-big": "a" * 3000}, timeout=10)
    assert resp.status_code == 431
    assert requests.get(f"{limited}/size", headers={"x-small": "a" * 1000}, timeout=10).status_code == 200
    _still_serving(limited)


def test_slow_headers_and_stalled_body_get_408(limited):
    start = time.monotonic()
    reply = _raw(limited, b"GET /size HTTP/1.1\r\nHost: x\r\nX-Slow", wait_s=0)  # the head never ends
    assert reply.startswith(b"HTTP/1.1 408"), reply[:80]
    assert time.monotonic() - start < 8
    reply = _raw(limited, b"POST /size HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-part")
    assert reply.startswith(b"HTTP/1.1 408"), reply[:80]
    _still_serving(limited)


def test_connection_cap(limited):
    parsed = urlparse(limited)
    held = []
    for _ in range(8):  # eight kept-alive connections, each idle after one answered request
        sock = socket.create_connection((parsed.hostname, parsed.port), timeout=10)
        sock.sendall(b"GET /size HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        held.append(sock)
    try:
        reply = _raw(limited, b"GET /size HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 503"), reply[:80]
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the held connections are gone once the proxy sees them close
        try:
            _still_serving(limited)
            break
        except (AssertionError, requests.RequestException):
            time.sleep(0.2)
    _still_serving(limited)


def test_a_connection_that_sends_nothing_is_closed(limited):
    start = time.monotonic()
    assert _raw(limited, b"") == b""  # closed by the proxy, without an answer
    assert time.monotonic() - start < 8


def test_metrics_endpoint_can_be_off(limited):
    assert requests.get(f"{limited}/-/metrics", timeout=10).status_code == 404
    assert requests.get(f"{limited}/-/healthz", timeout=10).status_code == 200
