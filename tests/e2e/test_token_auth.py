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


def _ray_serve_cli(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from ray.serve.scripts import cli; cli()", *args],
                          env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_admin_api_takes_the_clusters_token_as_its_key(token_cluster, tmp_path):
    """The KubeRay-with-auth set-up: the admin API's key is Ray's token (RAY_SERVE_EXT_ADMIN_API_KEYS_ENV
    names RAY_AUTH_TOKEN), so Ray's own `serve` CLI, which sends the token, deploys; without it, 401."""
    probe = subprocess.run([sys.executable, "-c", "import ray.serve.scripts"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("Ray's serve CLI (ray[serve], the bench extra) is not installed")
    port, admin_port = free_port(), free_port()
    admin = f"http://127.0.0.1:{admin_port}"
    env_vars = {"RAY_SERVE_EXT_ADMIN_PORT": str(admin_port), "RAY_SERVE_EXT_ADMIN_API_KEYS_ENV": "RAY_AUTH_TOKEN"}
    out = _driver(token_cluster.env, f"""
        from ray_serving_ext.config import ControllerOptions
        ray.init(address="{token_cluster.address}")
        serve.start(detached=True, http_options={{"host": "127.0.0.1", "port": {port}}},
                    controller_options=ControllerOptions(runtime_env={{"env_vars": {env_vars!r}}}))
    """)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert wait_for_condition(lambda: requests.get(f"{admin}/api/ray/version", timeout=5).status_code, timeout=30) == 401
    config = tmp_path / "config.yaml"
    config.write_text("applications:\n  - name: hello\n    route_prefix: /hello\n    import_path: examples.hello:app\n")

    deployed = _ray_serve_cli(token_cluster.env, "deploy", "--address", admin, str(config))
    assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-3000:]
    wait_for_condition(lambda: requests.get(f"http://127.0.0.1:{port}/hello?name=token", timeout=5).text
                       == "Hello, token!", timeout=90, message="the app deployed by Ray's CLI serves")
    status = token_cluster.cli("status", "-a", admin)  # ours sends the token too (RAY_AUTH_MODE=token)
    assert status.returncode == 0 and "hello" in status.stdout, status.stdout + status.stderr[-2000:]

    no_token = {k: v for k, v in token_cluster.env.items() if k != "RAY_AUTH_TOKEN"}
    no_token["RAY_AUTH_TOKEN_PATH"] = "/nonexistent/auth_token"
    refused = subprocess.run(
        [sys.executable, "-m", "ray_serving_ext", "status", "-a", admin], env=no_token, cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    wrong = requests.put(f"{admin}/api/serve/applications/", json={"applications": []}, timeout=10,
                         headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401 and requests.get(f"http://127.0.0.1:{port}/hello", timeout=5).status_code == 200

    stopped = _ray_serve_cli(token_cluster.env, "shutdown", "-a", admin, "-y")
    assert stopped.returncode == 0, stopped.stdout[-2000:] + stopped.stderr[-3000:]
    wait_for_condition(lambda: token_cluster.serve_actor_names() == [], timeout=60)
