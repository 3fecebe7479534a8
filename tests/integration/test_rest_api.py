"""Ray Serve's REST API on the controller's admin server (issue 16), driven by real clients.

- The requests the KubeRay operator makes: serveConfigV2 as JSON in a PUT to
  `/api/serve/applications/`, then GET until the application is RUNNING and
  its deployments HEALTHY, reading the fields the operator reads.
- Ray's own `serve` CLI (from the `bench` extra), as a subprocess, with
  `--address http://127.0.0.1:PORT`: deploy, status, config, shutdown.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests

import ray_serving_ext as serve
from tests.utils import wait_for_condition

HELLO = {"name": "hello", "route_prefix": "/hello", "import_path": "examples.hello:app",
         "deployments": [{"name": "hello", "num_replicas": 1}]}


def _details(admin: str) -> dict:
    resp = requests.get(f"{admin}/api/serve/applications/", timeout=10)
    resp.raise_for_status()
    return resp.json()


def _app_ready(admin: str, name: str) -> bool:
    app = _details(admin)["applications"].get(name)
    return bool(app) and app["status"] == "RUNNING" and app["deployments"] and all(
        d["status"] == "HEALTHY" for d in app["deployments"].values())


def test_kuberay_requests(serve_instance, serve_url):
    admin = serve_instance.admin_url
    version = requests.get(f"{admin}/api/ray/version", timeout=10).json()
    import ray

    assert version["ray_version"] == ray.__version__
    bad = requests.put(f"{admin}/api/serve/applications/",
                       json={"applications": [{"name": "x", "import_path": 5}]}, timeout=10)
    assert bad.status_code == 400 and "applications.0.import_path" in bad.text, bad.text
    assert requests.put(f"{admin}/api/serve/applications/", data=b"{not json", timeout=10).status_code == 400

    resp = requests.put(f"{admin}/api/serve/applications/", data=json.dumps({"applications": [HELLO]}),
                        headers={"Content-Type": "application/json"}, timeout=10)
    assert resp.status_code == 200, resp.text
    wait_for_condition(lambda: _app_ready(admin, "hello"), timeout=60, message="the app RUNNING, deployments HEALTHY")
    app = _details(admin)["applications"]["hello"]
    # What the operator reads: status and message per app and per deployment, and the config it sent.
    assert app["message"] == "" and app["route_prefix"] == "/hello"
    assert app["deployed_app_config"]["import_path"] == "examples.hello:app"
    assert set(app["deployments"]) == {"hello"} and app["deployments"]["hello"]["message"] == ""
    assert requests.get(f"{serve_url}/hello?name=KubeRay", timeout=10).text == "Hello, KubeRay!"
    # A second PUT without the app deletes it (declarative, as serve-ext deploy).
    assert requests.put(f"{admin}/api/serve/applications/", json={"applications": []}, timeout=10).status_code == 200
    wait_for_condition(lambda: "hello" not in serve.status().applications, timeout=60, message="the app is deleted")


def test_serve_ext_cli_with_an_http_address(serve_instance, serve_url, tmp_path):
    admin = serve_instance.admin_url
    config = tmp_path / "config.yaml"
    config.write_text("applications:\n  - name: hello\n    route_prefix: /hello\n    import_path: examples.hello:app\n")
    cli = [sys.executable, "-m", "ray_serving_ext"]
    run = lambda *args: subprocess.run(cli + list(args), capture_output=True, text=True, timeout=120)  # noqa: E731
    deployed = run("deploy", "-a", admin, str(config))
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    wait_for_condition(lambda: _app_ready(admin, "hello"), timeout=60, message="deployed through the REST API")
    status = run("status", "-a", admin)
    assert status.returncode == 0 and "RUNNING" in status.stdout and "hello" in status.stdout, status.stderr
    shown = run("config", "-a", admin)
    assert "import_path: examples.hello:app" in shown.stdout, shown.stdout + shown.stderr
    refused = run("deploy", "-a", admin.replace(admin.rsplit(":", 1)[1], "1"), str(config))  # nothing listens there
    assert refused.returncode != 0 and "Could not reach the Serve REST API" in refused.stderr + refused.stdout
    serve.delete("hello")


def _ray_serve_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from ray.serve.scripts import cli; cli()", *args],
                          capture_output=True, text=True, timeout=120)


def test_rays_serve_cli_against_our_instance(serve_instance, serve_url, tmp_path):
    probe = subprocess.run([sys.executable, "-c", "import ray.serve.scripts"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("Ray's serve CLI (ray[serve], the bench extra) is not installed")
    admin = serve_instance.admin_url
    config = tmp_path / "config.yaml"
    config.write_text("applications:\n  - name: hello\n    route_prefix: /hello\n    import_path: examples.hello:app\n")
    deployed = _ray_serve_cli("deploy", "--address", admin, str(config))
    assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-3000:]
    wait_for_condition(lambda: "RUNNING" in _ray_serve_cli("status", "-a", admin).stdout, timeout=90,
                       message="`serve status -a` shows the app RUNNING")
    status = _ray_serve_cli("status", "-a", admin)
    assert "hello" in status.stdout and "HEALTHY" in status.stdout, status.stdout
    shown = _ray_serve_cli("config", "-a", admin)
    assert shown.returncode == 0 and "import_path: examples.hello:app" in shown.stdout, shown.stdout + shown.stderr
    assert requests.get(f"{serve_url}/hello", timeout=10).text == "Hello, world!"
    stopped = _ray_serve_cli("shutdown", "-a", admin, "-y")
    assert stopped.returncode == 0, stopped.stdout[-2000:] + stopped.stderr[-3000:]
    from ray_serving_ext._private.cluster import find_controller

    wait_for_condition(lambda: find_controller() is None, timeout=60, message="Serve is shut down")
    serve_instance.options = None  # later tests get a new instance
    serve.api._client = None

