"""The test suites' port picker: ports are never handed out twice, and Ray's port clash is recognised."""

from __future__ import annotations

import socket

from tests.utils import free_port, is_port_clash

RAY_CLASH = (
    "ValueError: Ray component metrics_export is trying to use a port number 35773 that is used by other components."
)


def test_free_port_never_repeats_and_the_port_is_bindable() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    for port in ports[:20]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))


def test_free_port_stays_out_of_the_ephemeral_range() -> None:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    if low <= 20001:  # nothing to stay below: the picker falls back to the kernel's choice
        return
    assert all(20000 <= free_port() < low for _ in range(50))


def test_port_clash_is_recognised_in_rays_log() -> None:
    assert is_port_clash(RAY_CLASH)
    assert is_port_clash("OSError: [Errno 98] Address already in use")
    assert not is_port_clash("ValueError: unrelated failure")
