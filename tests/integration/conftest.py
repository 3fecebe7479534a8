"""One local Ray and one Serve instance shared by every integration test.

Ray is started with logical resources (16 CPUs, 2 GPUs) so replica placement
and GPU assignment are exercised on a 2-core machine without accelerators.
Each test gets a clean slate: applications left behind are deleted after it.
"""

from __future__ import annotations

import os
import sys

import pytest
import ray

import ray_serving_ext as serve
from tests.utils import free_port

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def ray_session():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        num_cpus=16,
        num_gpus=2,
        include_dashboard=False,
        # Replicas must import test modules and examples by reference.
        runtime_env={"env_vars": {"PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}},
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_session(ray_session):
    """The session's Serve instance; yields its HTTP base URL."""
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


@pytest.fixture
def serve_url(serve_session):
    """The HTTP base URL; every application is deleted when the test ends."""
    yield serve_session
    names = list(serve.status().applications)
    for name in names:
        serve.delete(name)
