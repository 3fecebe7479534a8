"""Detached instances outlive their driver; non-detached ones go with it; `ray job submit` deploys."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import requests

from tests.e2e.conftest import REPO_ROOT
from tests.utils import free_port, wait_for_condition

pytestmark = pytest.mark.e2e


def _driver(cluster, code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    script = "import ray\nimport ray_serving_ext as serve\n" + textwrap.dedent(code)
    proc = subprocess.run([sys.executable, "-c", script], env=cluster.env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _get(url: str) -> str:
    resp = requests.get(url, timeout=5)
    resp.raise_for_status()
    return resp.text


def test_detached_instance_outlives_driver_and_a_second_driver_reconnects(ray_cluster):
    port = free_port()
    _driver(ray_cluster, f"""
        ray.init(address="{ray_cluster.address}")
        serve.start(detached=True, http_options={{"host": "127.0.0.1", "port": {port}}})
        from tests.e2e.detached_apps.apps import Keeper
        serve.run(Keeper.bind(), name="keeper", route_prefix="/keep")
    """)
    # The driver has exited; the app still serves.
    first = wait_for_condition(lambda: _get(f"http://127.0.0.1:{port}/keep"), timeout=30)
    assert first.startswith("kept ")
    # A second driver, in another namespace, reconnects: no second controller, same app.
    out = _driver(ray_cluster, f"""
        ray.init(address="{ray_cluster.address}", namespace="some_other_namespace")
        serve.start()
        print("APPS", sorted(serve.status().applications))
        print("RESULT", serve.get_app_handle("keeper").remote().result(timeout_s=30))
    """).stdout
    assert "APPS ['keeper']" in out
    assert f"RESULT {first}" in out
    names = ray_cluster.serve_actor_names()
    assert names.count("SERVE_CONTROLLER_ACTOR") == 1
    assert _get(f"http://127.0.0.1:{port}/keep") == first
    assert ray_cluster.cli("shutdown", "-y").returncode == 0
    wait_for_condition(lambda: ray_cluster.serve_actor_names() == [], timeout=60)


def test_non_detached_instance_goes_away_with_its_driver(ray_cluster):
    port = free_port()
    _driver(ray_cluster, f"""
        import requests
        ray.init(address="{ray_cluster.address}")
        serve.start(http_options={{"host": "127.0.0.1", "port": {port}}})
        from tests.e2e.detached_apps.apps import short_lived
        serve.run(short_lived.bind(), name="short", route_prefix="/short")
        assert requests.get("http://127.0.0.1:{port}/short", timeout=10).text == "short-lived"
        print("served")
    """)
    wait_for_condition(lambda: ray_cluster.serve_actor_names() == [], timeout=60,
                       message="controller, proxy and replicas gone after the driver exited")


def test_ray_job_submit_deploys(job_cluster):
    port = free_port()
    proc = subprocess.run(
        ["ray", "job", "submit", "--address", job_cluster.extra["dashboard_url"], "--",
         sys.executable, "-m", "tests.e2e.detached_apps.deploy_from_job", str(port)],
        env=job_cluster.env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "deployed from job" in proc.stdout
    assert wait_for_condition(lambda: _get(f"http://127.0.0.1:{port}/job"), timeout=30) == "deployed by a job"
    assert job_cluster.cli("shutdown", "-y").returncode == 0
