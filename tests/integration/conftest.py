"""One local Ray and one Serve instance shared by every integration test.

Ray is started with logical resources (16 CPUs, 2 GPUs) so replica placement
and GPU assignment are exercised on a 2-core machine without accelerators.
Each test gets a clean slate: applications left behind are deleted after it.
"""

from __future__ import annotations

import os

import pytest
import ray

import ray_serving_ext as serve
from ray_serving_ext import api as serve_api
from tests.utils import free_port

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# SERVE_TEST_DIRECT_INGRESS=1 runs the integration tests with http_options.direct_ingress on
# (the replicas' own HTTP ingress): the same contract must hold either way.
DEFAULT_HTTP_OPTIONS = {"direct_ingress": True} if os.environ.get("SERVE_TEST_DIRECT_INGRESS") == "1" else {}


@pytest.fixture(scope="package")
def ray_session():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local",  # never attach to another cluster running on this machine
        num_cpus=16,
        num_gpus=2,
        include_dashboard=False,
        # Replicas must import test modules and examples by reference.
        runtime_env={"env_vars": {"PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}},
    )
    yield
    ray.shutdown()


class ServeInstance:
    """The session's Serve instance, restarted only when a test needs other HTTP options."""

    def __init__(self) -> None:
        self.options: dict | None = None
        self.url = ""
        self.admin_url = ""  # the controller's admin HTTP API (on a free loopback port)

    def ensure(self, port: int = 0, **http_options) -> str:
        """The instance with these HTTP options (on `port`, or a free one), restarted if it differs."""
        wanted = {"host": "127.0.0.1", **DEFAULT_HTTP_OPTIONS, **http_options}
        if self.options is not None and {k: v for k, v in self.options.items() if k != "port"} == wanted \
                and port in (0, self.options["port"]):
            return self.url
        if self.options is not None:
            serve.shutdown()
        port, admin_port = port or free_port(), free_port()
        serve.start(http_options={**wanted, "port": port},
                    controller_options={"runtime_env": {"env_vars": {"RAY_SERVE_EXT_ADMIN_PORT": str(admin_port)}}})
        self.options = {**wanted, "port": port}
        self.url = f"http://127.0.0.1:{port}"
        self.admin_url = f"http://127.0.0.1:{admin_port}"
        return self.url


@pytest.fixture(scope="package")
def serve_instance(ray_session):
    instance = ServeInstance()
    yield instance
    serve.shutdown()


@pytest.fixture(scope="package")
def serve_session(serve_instance):
    """The session's Serve instance with default HTTP options; yields its base URL."""
    return serve_instance


def _delete_all_apps() -> None:
    """Delete what a test left, all at once: their graceful shutdowns overlap (as
    `serve.delete` does for one app, it returns when every one is gone)."""
    names = list(serve.status().applications)
    if names:
        serve_api._get_client().delete_apps(names, blocking=True)


@pytest.fixture
def serve_url(serve_instance):
    """The HTTP base URL; every application is deleted when the test ends."""
    yield serve_instance.ensure()
    _delete_all_apps()


@pytest.fixture
def serve_url_with_timeout(serve_instance):
    """Like serve_url, on an instance with http_options.request_timeout_s = 2."""
    yield serve_instance.ensure(request_timeout_s=2)
    _delete_all_apps()
