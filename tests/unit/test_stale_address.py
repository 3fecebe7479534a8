"""cluster.stale_bootstrap_address: Ray's last `ray start` address, when nothing answers there."""

from __future__ import annotations

import socket

import pytest
import ray._private.utils as ray_utils

from ray_serving_ext._private.cluster import stale_bootstrap_address
from tests.utils import free_port


@pytest.fixture
def recorded(monkeypatch):
    """Set what Ray's ray_current_cluster file says (None: no file); RAY_ADDRESS unset."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    def record(address):
        monkeypatch.setattr(ray_utils, "read_ray_address", lambda temp_dir=None: address)

    return record


def test_an_address_where_nothing_listens_is_stale(recorded):
    dead = f"127.0.0.1:{free_port()}"
    recorded(dead)
    assert stale_bootstrap_address(probe_timeout_s=0.5) == dead


def test_a_live_address_no_file_or_ray_address_are_not(recorded, monkeypatch):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        recorded(f"127.0.0.1:{listener.getsockname()[1]}")
        assert stale_bootstrap_address(probe_timeout_s=0.5) is None
    for content in (None, "", "garbage"):
        recorded(content)
        assert stale_bootstrap_address(probe_timeout_s=0.5) is None
    recorded(f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # the user's explicit choice wins, as in Ray
    assert stale_bootstrap_address(probe_timeout_s=0.5) is None
