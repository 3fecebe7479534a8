"""Bounded fuzzing of a live proxy and a live replica's data-path port (issue 15, finding 4).

A seeded mutation loop (reproducible: the seed is printed on failure) sends
a few thousand malformed, truncated, pipelined and abruptly closed HTTP
requests to the proxy, several at a time, and malformed frames to a
replica's data-path port, with and without a HELLO. Afterwards: the proxy
and the replica are the same processes (nothing crashed), no connection was
left open on either, their memory is back near where it started, and a
valid request gets 200. A pre-authentication flood (a REQUEST header
claiming 4 GiB, then zeros) is closed with the replica's memory unchanged.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Tuple
from urllib.parse import urlparse

import ray
import requests

import ray_serving_ext as serve
from ray_serving_ext._private.constants import PROXY_NAME_PREFIX
from tests.utils import wait_for_condition

SEED = int(os.environ.get("SERVE_FUZZ_SEED", "20261201"))
HTTP_CASES = int(os.environ.get("SERVE_FUZZ_HTTP_CASES", "2400"))
FRAME_CASES = int(os.environ.get("SERVE_FUZZ_FRAME_CASES", "600"))
HEADER = struct.Struct("!IBQ")
MIB = 1024 * 1024


@serve.deployment(graceful_shutdown_wait_loop_s=0.1, max_ongoing_requests=200)
async def target(request) -> str:
    body = await request.body()
    return f"{request.method} {len(body)}"


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _tcp_connections(pid: int, port: int) -> int:
    """Established TCP connections of `pid` on local `port` (from /proc/<pid>/net/tcp and its fds)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target_ = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target_.startswith("socket:["):
            inodes.add(target_[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            lines = open(f"/proc/{pid}/net/{table}").read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local_port = int(parts[1].split(":")[1], 16)
            if parts[3] == "01" and local_port == port and parts[9] in inodes:  # 01: ESTABLISHED
                count += 1
    return count


# ---- HTTP mutations --------------------------------------------------------------------
def _valid_requests(rng: random.Random) -> List[bytes]:
    body = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 17, 300, 5000])))
    chunked = b"".join(b"%x\r\n" % len(part) + part + b"\r\n" for part in (body[:10], body[10:]) if part) + b"0\r\n\r\n"
    return [
        b"GET /fz/a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n",
        b"POST /fz/b HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
        b"POST /fz/c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
        b"GET /fz HTTP/1.0\r\n\r\n",
        b"GET /-/healthz HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /fz/ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    ]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:  # flip a byte
            data[min(pos, len(data) - 1)] = rng.getrandbits(8)
        elif op == 1:  # truncate
            del data[pos:]
        elif op == 2:  # insert junk or control bytes
            data[pos:pos] = bytes(rng.choice([0, 10, 13, 32, 58, 127, 255, rng.getrandbits(8)])
                                  for _ in range(rng.randint(1, 20)))
        elif op == 3:  # a huge or negative length
            data[pos:pos] = rng.choice([b"Content-Length: 99999999999999\r\n", b"Content-Length: -5\r\n",
                                        b"Transfer-Encoding: chunked\r\n", b"Content-Length: 3\r\nContent-Length: 9\r\n"])
        elif op == 4:  # a long header
            data[pos:pos] = b"X-" + b"a" * rng.choice([10, 1000, 70_000]) + b": v\r\n"
        elif op == 5:  # a bad chunk size
            data[pos:pos] = rng.choice([b"zz\r\n", b"fffffffffffffffff\r\n", b"-1\r\n", b"\r\n\r\n"])
        elif op == 6 and data:  # duplicate a slice (pipelining, repeated headers)
            a = rng.randrange(len(data))
            data[pos:pos] = data[a:a + rng.randint(1, 200)]
        else:  # a strange method or version
            data[0:0] = rng.choice([b"BREW ", b"GET  ", b"\x16\x03\x01", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"])
    return bytes(data)


def _http_case(host: str, port: int, rng: random.Random) -> None:
    valid = _valid_requests(rng)
    pieces = [rng.choice(valid) for _ in range(rng.choice([1, 1, 2, 3]))]  # sometimes pipelined
    data = b"".join(_mutate(rng, p) if rng.random() < 0.8 else p for p in pieces)
    with socket.create_connection((host, port), timeout=2) as sock:
        sock.settimeout(rng.choice([0.05, 0.2, 0.5]))
        try:
            if rng.random() < 0.3:  # dribbled in small writes
                for i in range(0, len(data), 7):
                    sock.sendall(data[i:i + 7])
            else:
                sock.sendall(data)
            if rng.random() < 0.25:  # abrupt close: RST, unread data and all
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and sock.recv(65536):
                pass
        except (OSError, socket.timeout):
            pass


def _run_cases(count: int, case: Callable[[random.Random], None]) -> None:
    """`count` cases, 8 at a time; each case gets its own seeded generator."""
    def one(i: int) -> None:
        case(random.Random(SEED * 100_003 + i))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, range(count)))


# ---- data-path frames ------------------------------------------------------------------
def _frame_case(host: str, port: int, token: bytes, rng: random.Random) -> None:
    parts = []
    if rng.random() < 0.5:
        parts.append(HEADER.pack(len(token), 1, 0) + token)  # a valid HELLO first
    elif rng.random() < 0.5:
        junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40)))
        parts.append(HEADER.pack(len(junk), 1, 0) + junk)  # a wrong HELLO
    for _ in range(rng.randint(0, 5)):
        ftype = rng.choice([0, 2, 3, 4, 7, 8, 9, 10, 11, 255])
        payload = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 13, 200])))
        if ftype == 2 and rng.random() < 0.5:
            payload = b"\x80\x05" + payload  # a pickle header, then junk
        length = len(payload) if rng.random() < 0.8 else rng.choice([0, 2**32 - 1, len(payload) + 1000])
        parts.append(HEADER.pack(length, ftype, rng.getrandbits(64)) + payload)
    data = b"".join(parts)
    if rng.random() < 0.3:
        data = data[:rng.randrange(len(data) + 1)]
    with socket.create_connection((host, port), timeout=2) as sock:
        sock.settimeout(0.2)
        try:
            sock.sendall(data)
            if rng.random() < 0.3:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            while sock.recv(65536):
                pass
        except (OSError, socket.timeout):
            pass


def _replica(app: str) -> Tuple[int, str, int, bytes]:
    """(pid, node ip, data-path port, token) of the app's one replica."""
    details = serve.api._get_client().get_replica_details(app)
    (rep,) = [r for reps in details.values() for r in reps]
    actor = ray.get_actor(rep["actor_name"], namespace="serve")
    meta = ray.get(actor.__ray_call__.remote(lambda self: self._metadata()), timeout=30)
    return meta["pid"], meta["node_ip"], meta["port"], meta["token"].encode()


def _proxy_pid() -> int:
    node_id = ray.get_runtime_context().get_node_id()
    proxy = ray.get_actor(PROXY_NAME_PREFIX + node_id, namespace="serve")
    return ray.get(proxy.__ray_call__.remote(lambda self: os.getpid()), timeout=30)


def test_http_and_frame_fuzzing_leave_everything_serving(serve_url):
    serve.run(target.bind(), name="fz", route_prefix="/fz")
    parsed = urlparse(serve_url)
    host, port = parsed.hostname, parsed.port
    assert requests.post(f"{serve_url}/fz", data=b"abc", timeout=10).text == "POST 3"
    proxy_pid = _proxy_pid()
    replica_pid, replica_ip, data_port, token = _replica("fz")
    before: Dict[int, int] = {proxy_pid: _rss(proxy_pid), replica_pid: _rss(replica_pid)}
    baseline = {proxy_pid: _tcp_connections(proxy_pid, port), replica_pid: _tcp_connections(replica_pid, data_port)}

    start = time.monotonic()
    _run_cases(HTTP_CASES, lambda rng: _http_case(host, port, rng))
    _run_cases(FRAME_CASES, lambda rng: _frame_case(replica_ip, data_port, token, rng))
    print(f"\nfuzz: {HTTP_CASES} HTTP cases, {FRAME_CASES} frame cases in {time.monotonic() - start:.1f}s (seed {SEED})")

    # Nothing crashed: the same processes serve, and a valid request is answered.
    assert _proxy_pid() == proxy_pid, f"the proxy restarted (seed {SEED})"
    assert _replica("fz")[0] == replica_pid, f"the replica restarted (seed {SEED})"
    assert requests.post(f"{serve_url}/fz", data=b"abcd", timeout=10).text == "POST 4"
    # No connection leaked; memory back near where it began.
    wait_for_condition(lambda: _tcp_connections(proxy_pid, port) <= baseline[proxy_pid], timeout=40,
                       message=f"the proxy's client connections close (seed {SEED})")
    wait_for_condition(lambda: _tcp_connections(replica_pid, data_port) <= baseline[replica_pid], timeout=40,
                       message=f"the replica's fuzzed connections close (seed {SEED})")
    for pid, rss in before.items():
        wait_for_condition(lambda pid=pid, rss=rss: _rss(pid) - rss < 48 * MIB, timeout=30,
                           message=f"pid {pid}'s memory back within 48 MiB (seed {SEED})")


def test_pre_auth_flood_is_closed_without_buffering(serve_url):
    """A REQUEST header claiming 4 GiB and 64 MiB of zeros, no HELLO: closed; the replica's RSS stays."""
    serve.run(target.bind(), name="fz", route_prefix="/fz")
    replica_pid, replica_ip, data_port, _ = _replica("fz")
    rss = _rss(replica_pid)
    peak = [rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss(replica_pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sent = 0
    closed = False
    with socket.create_connection((replica_ip, data_port), timeout=5) as sock:
        try:
            sock.sendall(HEADER.pack(2**32 - 1, 2, 1))
            zeros = b"\0" * MIB
            while sent < 64 * MIB:
                sock.sendall(zeros)
                sent += MIB
        except OSError:  # reset by the replica
            closed = True
        if not closed:
            sock.settimeout(5)
            try:
                closed = sock.recv(1) == b""
            except OSError:
                closed = True
    stop.set()
    sampler.join()
    print(f"\npre-auth flood: sent {sent // MIB} MiB before the close; replica RSS +{(peak[0] - rss) / MIB:.1f} MiB")
    assert closed, "the replica kept the connection open"
    assert peak[0] - rss < 10 * MIB
    assert requests.post(f"{serve_url}/fz", data=b"ok", timeout=10).text == "POST 2"
