"""The proxy's HTTP fast path (`_private/fast_http.py`) at the wire level.

Plain requests are forwarded from uvicorn's parser callbacks instead of the
ASGI app. These tests speak raw HTTP/1.1 over a socket to check what a client
sees on that path: pipelined requests answered in order on one connection,
HTTP/1.0 closing, HEAD without a body, keep-alive across many requests, bodies
on both sides of the streaming threshold (the fast path below it, the ASGI
path above), the request id, the multiplexed model id header, and a streamed
response that continues (in a task) while its client's socket is full.
"""

from __future__ import annotations

import socket
import time
from typing import List, Tuple
from urllib.parse import urlparse

import requests
from starlette.requests import Request
from starlette.responses import StreamingResponse

import ray_serving_ext as serve
from ray_serving_ext._private.constants import BODY_STREAM_THRESHOLD_BYTES

FAST = {"graceful_shutdown_wait_loop_s": 0.1}


@serve.deployment(**FAST)
async def echo(request: Request) -> dict:
    body = await request.body()
    return {
        "method": request.method,
        "path": request.url.path,
        "query": request.url.query,
        "len": len(body),
        "sum": sum(body[::4096]),
        "model": serve.get_multiplexed_model_id(),
    }


@serve.deployment(**FAST)
async def stream(request: Request) -> StreamingResponse:
    n, size = int(request.query_params["n"]), int(request.query_params["size"])

    async def chunks():
        for i in range(n):
            yield bytes([65 + i % 26]) * size

    return StreamingResponse(chunks(), media_type="application/octet-stream")


def _connect(url: str) -> socket.socket:
    parsed = urlparse(url)
    sock = socket.create_connection((parsed.hostname, parsed.port), timeout=15)
    return sock


def _read_responses(sock: socket.socket, count: int, head: bool = False) -> List[Tuple[int, dict, bytes]]:
    """Read `count` responses (content-length or chunked bodies) off `sock`."""
    buf = b""
    out = []
    deadline = time.monotonic() + 20
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            assert time.monotonic() < deadline, "timed out reading a response head"
            data = sock.recv(65536)
            assert data, f"connection closed after {len(out)} responses"
            buf += data
        head_bytes, buf = buf.split(b"\r\n\r\n", 1)
        lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        body = b""
        if head:
            pass
        elif "content-length" in headers:
            need = int(headers["content-length"])
            while len(buf) < need:
                assert time.monotonic() < deadline
                data = sock.recv(65536)
                assert data
                buf += data
            body, buf = buf[:need], buf[need:]
        elif headers.get("transfer-encoding") == "chunked":
            while True:
                while b"\r\n" not in buf:
                    buf += sock.recv(65536)
                size_line, buf = buf.split(b"\r\n", 1)
                size = int(size_line, 16)
                while len(buf) < size + 2:
                    assert time.monotonic() < deadline
                    buf += sock.recv(65536)
                body += buf[:size]
                buf = buf[size + 2:]
                if size == 0:
                    break
        out.append((status, headers, body))
    return out


def test_pipelined_requests_are_answered_in_order_on_one_connection(serve_url):
    serve.run(echo.bind(), name="fp", route_prefix="/fp")
    sock = _connect(serve_url)
    try:
        requests_bytes = b"".join(
            f"POST /fp/{i}?q={i} HTTP/1.1\r\nHost: x\r\nContent-Length: {i}\r\nx-request-id: rid-{i}\r\n\r\n".encode()
            + b"a" * i
            for i in range(1, 6)
        )
        sock.sendall(requests_bytes)  # five requests in one write
        replies = _read_responses(sock, 5)
    finally:
        sock.close()
    import json

    for i, (status, headers, body) in enumerate(replies, start=1):
        assert status == 200
        assert headers["x-request-id"] == f"rid-{i}"
        data = json.loads(body)
        assert data["path"] == f"/fp/{i}" and data["query"] == f"q={i}" and data["len"] == i


def test_keep_alive_http10_and_head(serve_url):
    serve.run(echo.bind(), name="fp", route_prefix="/fp")
    sock = _connect(serve_url)
    try:
        for i in range(50):  # one connection, many requests
            sock.sendall(f"GET /fp/k{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            ((status, headers, body),) = _read_responses(sock, 1)
            assert status == 200 and b'"/fp/k%d"' % i in body
            assert len(headers["x-request-id"]) == 36  # a generated UUID4
        sock.sendall(b"HEAD /fp/h HTTP/1.1\r\nHost: x\r\n\r\n")
        ((status, headers, body),) = _read_responses(sock, 1, head=True)
        assert status == 200 and body == b""
        sock.sendall(b"GET /fp/after-head HTTP/1.1\r\nHost: x\r\n\r\n")  # the connection is still in step
        ((status, _, body),) = _read_responses(sock, 1)
        assert status == 200 and b"after-head" in body
    finally:
        sock.close()
    sock = _connect(serve_url)
    try:
        sock.sendall(b"GET /fp/old HTTP/1.0\r\n\r\n")
        ((status, headers, _),) = _read_responses(sock, 1)
        assert status == 200 and headers.get("connection") == "close"
        sock.settimeout(10)
        assert sock.recv(1) == b""  # closed by the proxy after an HTTP/1.0 answer
    finally:
        sock.close()


def test_bodies_on_both_sides_of_the_streaming_threshold(serve_url):
    serve.run(echo.bind(), name="fp", route_prefix="/fp")
    for size in (0, 70_000, BODY_STREAM_THRESHOLD_BYTES, BODY_STREAM_THRESHOLD_BYTES + 1, 5 * 1024 * 1024):
        body = bytes((i * 7) % 251 for i in range(size))
        resp = requests.post(f"{serve_url}/fp/b", data=body, timeout=30)
        assert resp.status_code == 200, size
        assert resp.json()["len"] == size and resp.json()["sum"] == sum(body[::4096]), size
    # A chunked upload (no length given) takes the ASGI path, with the same answer.
    resp = requests.post(f"{serve_url}/fp/c", data=iter([b"x" * 1000, b"y" * 1000]), timeout=30)
    assert resp.status_code == 200 and resp.json()["len"] == 2000


def test_model_id_header_and_query_reach_the_replica(serve_url):
    serve.run(echo.bind(), name="fp", route_prefix="/fp")
    resp = requests.get(f"{serve_url}/fp/m?a=1&b=2", headers={"serve_multiplexed_model_id": "m7"}, timeout=15)
    assert resp.json() == {"method": "GET", "path": "/fp/m", "query": "a=1&b=2", "len": 0, "sum": 0, "model": "m7"}


def test_streamed_response_to_a_client_that_reads_late(serve_url):
    """Items arriving while the client's socket is full continue in a task; all arrive, in order."""
    serve.run(stream.bind(), name="st", route_prefix="/st")
    n, size = 80, 256 * 1024  # 20 MiB: more than loopback's socket buffers and the stream's window
    sock = _connect(serve_url)
    try:
        sock.sendall(f"GET /st?n={n}&size={size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(2)  # not reading: the proxy's writes to this client pause
        ((status, _, body),) = _read_responses(sock, 1)
        assert status == 200 and len(body) == n * size
        assert all(body[i * size] == 65 + i % 26 for i in range(n))
        sock.sendall(b"GET /st?n=1&size=3 HTTP/1.1\r\nHost: x\r\n\r\n")  # the connection lives on
        ((status, _, body),) = _read_responses(sock, 1)
        assert status == 200 and body == b"AAA"
    finally:
        sock.close()
