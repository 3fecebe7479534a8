"""Binding the proxy's port without Ray: SO_REUSEPORT sharing only among the node's proxies."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys

import pytest

from ray_serving_ext._private.proxy_bind import bind_sockets, describe_bind_error, foreign_listener
from tests.utils import free_port, wait_for_condition

HOLD = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if sys.argv[2] == "reuse":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print("bound", flush=True)
time.sleep(60)
"""


def _holder(port: int, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(port), mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "bound"
    return proc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT ownership is read from /proc")
def test_reuse_port_refuses_a_port_shared_with_a_foreign_process():
    port = free_port()
    proc = _holder(port, "reuse")
    try:
        assert foreign_listener(port) == proc.pid
        with pytest.raises(OSError) as info:
            bind_sockets("127.0.0.1", port, reuse_port=True)
        assert info.value.errno == errno.EADDRINUSE and str(proc.pid) in str(info.value)
        assert "already in use" in describe_bind_error(info.value, "127.0.0.1", port, "10.0.0.1")
        # Nothing of ours is left listening: only the holder's socket remains.
        wait_for_condition(lambda: foreign_listener(port) == proc.pid, timeout=5)
    finally:
        proc.kill()
        proc.wait(10)


def test_reuse_port_binds_alone_and_a_second_socket_of_ours_may_join():
    port = free_port()
    first = bind_sockets("127.0.0.1", port, reuse_port=True)
    try:
        assert foreign_listener(port) is None  # our own listener is not foreign
        second = bind_sockets("127.0.0.1", port, reuse_port=True)  # as a sibling proxy would
        for sock in second:
            sock.close()
    finally:
        for sock in first:
            sock.close()


def test_without_reuse_port_a_taken_port_is_in_use():
    port = free_port()
    proc = _holder(port, "plain")
    try:
        with pytest.raises(OSError) as info:
            bind_sockets("127.0.0.1", port, reuse_port=True)
        assert info.value.errno == errno.EADDRINUSE
        with pytest.raises(OSError):
            bind_sockets("127.0.0.1", port)
    finally:
        proc.kill()
        proc.wait(10)
    with socket.socket() as probe:  # and the port is free again afterwards
        probe.bind(("127.0.0.1", port))
