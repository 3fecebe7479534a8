"""Flow control on every stream (issue 17): a slow reader never makes a serving process buffer the stream.

Each test runs a producer much faster than its consumer, samples the resident
memory of the proxy and the replica (from /proc) while the consumer lags, and
checks that production stays within the window of consumption; when the
consumer goes away, the producer is cancelled and memory comes back.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Callable, Dict, List

import pytest
import ray
import requests

import ray_serving_ext as serve
from ray_serving_ext._private.constants import PROXY_NAME_PREFIX, STREAM_WINDOW_BYTES
from tests.integration.flow_apps import MIB, Producer, SlowReader, WsProducer
from tests.utils import wait_for_condition

GROWTH_LIMIT = 64 * MIB  # the acceptance bound on any serving process
SETTLE_LIMIT = 32 * MIB  # and on what is left once the consumer is gone
HOLD_S = 6.0
WINDOW_CHUNKS = STREAM_WINDOW_BYTES // MIB


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _pids(app: str) -> Dict[str, int]:
    """The proxy's and the app's replica's process ids (this is a one-node cluster)."""
    replicas = serve.api._get_client().get_replica_details(app)
    pids = {f"replica {r['replica_id']}": r["pid"] for reps in replicas.values() for r in reps}
    node_id = ray.get_runtime_context().get_node_id()
    proxy = ray.get_actor(PROXY_NAME_PREFIX + node_id, namespace="serve")
    pids["proxy"] = ray.get(proxy.__ray_call__.remote(lambda self: os.getpid()), timeout=30)
    return pids


class _Sampler:
    """The largest RSS growth of each process over a period, sampled every 0.1 s."""

    def __init__(self, pids: Dict[str, int]) -> None:
        self.pids = pids
        self.base = {name: _rss(pid) for name, pid in pids.items()}
        self.peak = dict(self.base)

    def sample(self) -> None:
        for name, pid in self.pids.items():
            self.peak[name] = max(self.peak[name], _rss(pid))

    def hold(self, seconds: float, during: Callable[[], None] = lambda: None) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            during()
            self.sample()
            time.sleep(0.1)

    def growth(self) -> Dict[str, int]:
        return {name: self.peak[name] - self.base[name] for name in self.pids}

    def now_above_base(self) -> Dict[str, int]:
        return {name: _rss(pid) - self.base[name] for name, pid in self.pids.items()}

    def report(self, what: str, **figures: object) -> None:
        """One line of the measured figures (shown with `pytest -s`)."""
        growth = ", ".join(f"{k} +{v / MIB:.1f} MiB" for k, v in self.growth().items())
        extra = ", ".join(f"{k}={v}" for k, v in figures.items())
        print(f"[flow] {what}: peak growth {growth}; {extra}")

    def assert_bounded(self) -> None:
        growth = self.growth()
        assert all(g < GROWTH_LIMIT for g in growth.values()), {k: f"{v / MIB:.1f} MiB" for k, v in growth.items()}


def _settles(sampler: _Sampler) -> bool:
    return all(v < SETTLE_LIMIT for v in sampler.now_above_base().values())


def test_a_slow_http_reader_holds_the_stream_back(serve_url):
    handle = serve.run(Producer.bind(), name="flow_http", route_prefix="/flow")
    assert len(requests.get(f"{serve_url}/flow?n=8", timeout=60).content) == 8 * MIB  # a reader that keeps up gets it all
    sampler = _Sampler(_pids("flow_http"))
    host, port = serve_url.rsplit("/", 1)[-1].split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow link: the client's buffer is tiny
    sock.connect((host, int(port)))
    sock.sendall(b"GET /flow HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        sampler.hold(HOLD_S)  # the client reads nothing
        produced = handle.stats.remote().result(timeout_s=30)["produced"]
        # What left the replica is in its window, the proxy's queue, or the kernel's
        # socket buffers toward the client (at most tcp_wmem's maximum).
        kernel_chunks = _tcp_wmem_max() // MIB + 1
        sampler.report("slow HTTP reader", produced_mib=produced, read_mib=0)
        assert produced <= WINDOW_CHUNKS + kernel_chunks + 2, produced
        sampler.assert_bounded()
    finally:
        sock.close()
    wait_for_condition(lambda: handle.stats.remote().result(timeout_s=30)["closed"], timeout=30,
                       message="the generator is cancelled once the client is gone")
    wait_for_condition(lambda: _settles(sampler), timeout=30, message="memory back within 32 MiB")


def test_a_slow_handle_stream_consumer_holds_the_generator_back(serve_url):
    handle = serve.run(Producer.bind(), name="flow_handle", route_prefix=None)
    sampler = _Sampler(_pids("flow_handle"))
    gen = handle.options(stream=True).chunks.remote(400)
    consumed = 0
    for chunk in gen:
        consumed += 1
        assert len(chunk) == MIB
        time.sleep(0.1)  # a consumer far slower than the producer
        sampler.sample()
        produced = handle.stats.remote().result(timeout_s=30)["produced"]
        assert produced - consumed <= WINDOW_CHUNKS + 2, (produced, consumed)
        if consumed == 30:
            break
    sampler.report("slow handle consumer", produced_mib=produced, consumed_mib=consumed)
    sampler.assert_bounded()
    gen.cancel()
    wait_for_condition(lambda: handle.stats.remote().result(timeout_s=30)["closed"], timeout=30,
                       message="the generator is cancelled with the stream")
    wait_for_condition(lambda: _settles(sampler), timeout=30, message="memory back within 32 MiB")


def _raw_websocket(serve_url: str, path: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then reads nothing (a tiny receive buffer)."""
    host, port = serve_url.rsplit("/", 1)[-1].split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_a_websocket_client_that_reads_nothing(serve_url):
    serve.run(WsProducer.bind(), name="flow_ws", route_prefix="/ws")
    sampler = _Sampler(_pids("flow_ws"))
    sock = _raw_websocket(serve_url, "/ws/")
    try:
        sampler.hold(HOLD_S)
        produced = requests.get(f"{serve_url}/ws/stats", timeout=30).json()["produced"]
        kernel_chunks = _tcp_wmem_max() // MIB + 1
        sampler.report("WebSocket client reading nothing", sent_mib=produced, read_mib=0)
        assert produced <= WINDOW_CHUNKS + kernel_chunks + 2, produced
        sampler.assert_bounded()
    finally:
        sock.close()
    wait_for_condition(lambda: requests.get(f"{serve_url}/ws/stats", timeout=30).json()["closed"], timeout=30,
                       message="the handler stops once the client is gone")
    wait_for_condition(lambda: _settles(sampler), timeout=30, message="memory back within 32 MiB")


def test_a_large_upload_to_a_slow_reader(serve_url):
    serve.run(SlowReader.bind(), name="flow_upload", route_prefix="/upload")
    sampler = _Sampler(_pids("flow_upload"))
    total = 200 * MIB
    result: List[requests.Response] = []

    def upload() -> None:
        body = (b"u" * MIB for _ in range(total // MIB))
        result.append(requests.post(f"{serve_url}/upload", data=body, timeout=300))

    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    deadline = time.monotonic() + 240
    while thread.is_alive() and time.monotonic() < deadline:
        sampler.sample()
        time.sleep(0.1)
    thread.join(timeout=1)
    assert result and result[0].status_code == 200 and result[0].text == str(total)
    sampler.report("200 MiB upload to a slow reader", uploaded_mib=total // MIB)
    sampler.assert_bounded()


def _tcp_wmem_max() -> int:
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        pytest.skip("cannot read tcp_wmem: the kernel's share of the stream is unknown")
