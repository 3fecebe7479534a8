"""The embedded default on a machine where a Ray head was killed (issue: README's first command hung).

`ray start` writes its address to `<RAY_TMPDIR>/ray/ray_current_cluster`; a head
stopped by a signal leaves the file behind, and a plain `ray.init()` then joins
that address and retries for ever. Here the file names a port where nothing
listens: `serve.run` must start a local Ray and serve, and the CLI's default
address ("auto") must fail at once with the reason, not hang.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.e2e.conftest import REPO_ROOT
from tests.utils import free_port

pytestmark = pytest.mark.e2e

HELLO = """
import requests
import ray_serving_ext as serve
from examples.hello import app
serve.start(http_options={{"port": {port}}})
serve.run(app, route_prefix="/")
print("ANSWER", requests.get("http://127.0.0.1:{port}/?name=Ray", timeout=10).text)
serve.shutdown()
"""


@pytest.fixture
def stale_env():
    tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths live under it
    os.makedirs(os.path.join(tmp, "ray"))
    dead = f"127.0.0.1:{free_port()}"
    with open(os.path.join(tmp, "ray", "ray_current_cluster"), "w") as f:
        f.write(dead)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "TMPDIR")}
    env.update(RAY_TMPDIR=tmp, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH", "")) if p))
    try:
        yield env, dead
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_serve_run_starts_a_local_ray_instead_of_joining_a_dead_head(stale_env):
    env, dead = stale_env
    port = free_port()
    out = subprocess.run([sys.executable, "-c", HELLO.format(port=port)], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "ANSWER Hello, Ray!" in out.stdout
    assert f"Ray's last cluster address {dead}" in out.stderr and "Starting a local Ray instead" in out.stderr


def test_the_clis_default_address_fails_fast_with_the_reason(stale_env):
    env, dead = stale_env
    out = subprocess.run([sys.executable, "-m", "ray_serving_ext", "status"], env=env, cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert f"Ray's last cluster address {dead} does not answer" in out.stderr
