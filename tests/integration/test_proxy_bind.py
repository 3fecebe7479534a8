"""A proxy whose HTTP port is taken (issue 15, finding 2): it says so, and serves once the port is free.

Another process (here, a plain socket of the test) listens on the port the
instance is started with. The proxy must not hang silently: `serve.start`
logs a warning with the reason, `serve.status()` shows the proxy UNHEALTHY
with "port N already in use on node ...", and the proxy keeps trying, so it
serves within a few seconds of the port being freed.
"""

from __future__ import annotations

import logging
import socket
import time

import requests

import ray_serving_ext as serve
from ray_serving_ext.schema import ProxyStatus
from tests.utils import wait_for_condition


@serve.deployment(graceful_shutdown_wait_loop_s=0.1)
def hello(request) -> str:
    return "hello"


def test_busy_port_is_reported_and_served_once_free(serve_instance, caplog):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        serve_logger = logging.getLogger("ray_serving_ext")
        serve_logger.addHandler(caplog.handler)  # whether or not it propagates to the root logger
        try:
            url = serve_instance.ensure(port=port)
        finally:
            serve_logger.removeHandler(caplog.handler)
        assert any(f"port {port} already in use" in r.getMessage() for r in caplog.records), \
            [r.getMessage() for r in caplog.records]
        status = serve.status()
        assert list(status.proxies.values()) == [ProxyStatus.UNHEALTHY], status.proxies
        (message,) = status.proxy_messages.values()
        assert f"port {port} already in use on node" in message, message
        assert status.status_view()["proxy_messages"] == status.proxy_messages  # what `serve-ext status` prints
        serve.run(hello.bind(), name="hello", route_prefix="/hello")  # apps deploy meanwhile
    finally:
        blocker.close()
    freed = time.monotonic()
    wait_for_condition(lambda: _get(f"{url}/hello") == "hello", timeout=15,
                       message="the proxy serves once the port is free")
    assert time.monotonic() - freed < 5, "the proxy took too long to bind the freed port"
    wait_for_condition(lambda: list(serve.status().proxies.values()) == [ProxyStatus.HEALTHY], timeout=20,
                       message="the proxy is HEALTHY again")
    assert serve.status().proxy_messages == {} and "proxy_messages" not in serve.status().status_view()
    serve.shutdown()
    serve_instance.options = None  # later tests get a fresh instance on a free port


def _get(url: str) -> str:
    try:
        return requests.get(url, timeout=2).text
    except requests.RequestException:
        return ""
