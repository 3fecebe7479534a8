"""Helpers shared by the test suites: free ports and bounded polling."""

from __future__ import annotations

import os
import random
import socket
import time
from typing import Any, Callable, Set, Tuple

_HANDED_OUT: Set[int] = set()


def _pool() -> Tuple[int, int]:
    """Ports above Ray's default worker ports (10002-19999), below the kernel's ephemeral range."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return 20000, max(20001, low - 1)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port nothing listens on now, never handed out before by this process.

    Why not bind(0): the kernel gives such ports from its ephemeral range, so a
    port freed a moment ago can come back on the next call (a cluster's flags
    once got one port twice) and any outgoing connection may take it before
    the server binds. Ports are drawn at random below that range instead.
    """
    low, high = _pool()
    for _ in range(200):
        port = random.randint(low, high)
        if port not in _HANDED_OUT and _bindable(port):
            _HANDED_OUT.add(port)
            return port
    for _ in range(200):  # the pool is crowded: the kernel's choice, still never repeated
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError(f"no free TCP port found ({len(_HANDED_OUT)} handed out by this process)")


_PORT_CLASH_MARKERS = ("is trying to use a port number", "already in use", "Failed to bind")


def is_port_clash(log_text: str) -> bool:
    """Whether a server's log says it died because a port it was given was taken meanwhile."""
    return any(marker in log_text for marker in _PORT_CLASH_MARKERS)


def wait_for_condition(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, message: str = ""
) -> Any:
    """Poll predicate until it returns a truthy value; fail after `timeout` seconds.

    Exceptions raised by the predicate count as "not yet" and the last one is reported.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - reported below
            last_exc = exc
        time.sleep(interval)
    detail = f" (last error: {last_exc!r})" if last_exc else ""
    raise AssertionError(f"Condition not met within {timeout}s: {message or predicate}{detail}")


def forget_ray_start_address(port: int) -> None:
    """Remove Ray's `ray_current_cluster` file if it names the cluster on `port`, which a test
    has just stopped by signal: `ray start` wrote it and nothing else removes it, and a plain
    `ray.init()` on this machine would then try to join that dead address."""
    from ray._common.utils import get_ray_address_file  # Ray's path: its temp dir, RAY_TMPDIR

    path = get_ray_address_file(None)
    try:
        with open(path) as f:
            named = f.read().strip()
        if named.rpartition(":")[2] == str(port):
            os.remove(path)
    except (OSError, ValueError):
        pass
