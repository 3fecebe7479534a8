"""The admin (REST) API is on by default: 127.0.0.1:8266, read from the controller's environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ray_serving_ext._private.admin_server import AdminServer, build_app
from tests.utils import free_port

_READ = "from ray_serving_ext._private import constants as c; print(c.ADMIN_HOST, c.ADMIN_PORT)"


def _constants(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_EXT_ADMIN")}
    out = subprocess.run([sys.executable, "-c", _READ], env={**clean, **env}, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_on_by_default_on_loopback_port_8266():
    assert _constants() == "127.0.0.1 8266"
    assert _constants(RAY_SERVE_EXT_ADMIN_PORT="0") == "127.0.0.1 0"
    assert _constants(RAY_SERVE_EXT_ADMIN_PORT="9123", RAY_SERVE_EXT_ADMIN_HOST="::1") == "::1 9123"


async def _nothing(*args) -> None:
    return None


@pytest.mark.asyncio
async def test_address_while_serving_and_a_busy_port_leaves_it_off(caplog):
    port = free_port()
    first = AdminServer(build_app(_nothing, _nothing), "127.0.0.1", port)
    off = AdminServer(build_app(_nothing, _nothing), "127.0.0.1", 0)
    assert off.start() is False and off.address is None
    assert first.address is None and first.start() is True
    try:
        assert first.address == f"http://127.0.0.1:{port}"
        second = AdminServer(build_app(_nothing, _nothing), "127.0.0.1", port)  # another instance, same port
        assert second.start() is False and second.address is None
        assert "RAY_SERVE_EXT_ADMIN_PORT" in caplog.text and str(port) in caplog.text
    finally:
        await first.stop()
