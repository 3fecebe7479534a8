"""Serve on a Ray cluster started with token authentication (RAY_AUTH_MODE=token), issue 15.

The head and the test's drivers share RAY_AUTH_TOKEN. A driver deploys a
detached instance; the app serves over HTTP; the CLI reads its status and
shuts it down. A driver without the token cannot even connect, which shows the
cluster really enforces it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import requests

from tests.e2e.conftest import REPO_ROOT
from tests.utils import free_port, wait_for_condition

pytestmark = pytest.mark.e2e


def _driver(env, code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    script = "import ray\nimport ray_serving_ext as serve\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_serve_on_a_token_auth_cluster(token_cluster):
    port = free_port()
    out = _driver(token_cluster.env, f"""
        ray.init(address="{token_cluster.address}")
        serve.start(detached=True, http_options={{"host": "127.0.0.1", "port": {port}}})
        from tests.e2e.detached_apps.apps import Keeper
        serve.run(Keeper.bind(), name="keeper", route_prefix="/keep")
        print("STATUS", serve.status().applications["keeper"].status)
    """)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "STATUS RUNNING" in out.stdout
    assert wait_for_condition(lambda: requests.get(f"http://127.0.0.1:{port}/keep", timeout=5).text,
                              timeout=30).startswith("kept ")
    status = token_cluster.cli("status")
    assert status.returncode == 0 and "keeper" in status.stdout, status.stderr[-2000:]

    no_token = {k: v for k, v in token_cluster.env.items() if k != "RAY_AUTH_TOKEN"}
    no_token["RAY_AUTH_TOKEN_PATH"] = "/nonexistent/auth_token"
    try:
        refused = _driver(no_token, f"""
            ray.init(address="{token_cluster.address}")
            print("CONNECTED")
        """, timeout=30).stdout
    except subprocess.TimeoutExpired:  # it keeps retrying the handshake: refused all the same
        refused = ""
    assert "CONNECTED" not in refused, "a driver without the token connected"

    assert token_cluster.cli("shutdown", "-y").returncode == 0
    wait_for_condition(lambda: token_cluster.serve_actor_names() == [], timeout=60)
