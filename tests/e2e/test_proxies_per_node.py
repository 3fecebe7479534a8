"""Several HTTP proxies on one node (RAY_SERVE_EXT_PROXIES_PER_NODE=2), sharing the port.

Both proxies take connections (each proxy process reports its own metrics
`source`), the instance reports one proxy entry per node, and when one proxy
process is killed the other keeps answering while Ray restarts it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import requests

from tests.e2e.conftest import REPO_ROOT
from tests.utils import free_port, wait_for_condition

pytestmark = pytest.mark.e2e


def _driver(env, code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    script = "import json, ray\nimport ray_serving_ext as serve\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _proxy_sources(url: str) -> dict:
    """Requests counted per reporting process, for the app's route."""
    counts: dict = {}
    for line in requests.get(f"{url}/-/metrics", timeout=5).text.splitlines():
        if line.startswith("ray_serve_num_http_requests_total{") and 'route="/keep"' in line:
            labels, value = line.rsplit(" ", 1)
            source = labels.split('source="', 1)[1].split('"', 1)[0]
            counts[source] = counts.get(source, 0) + float(value)
    return counts


def _all_ok(url: str, n: int) -> bool:
    for _ in range(n):  # a new connection each time: the kernel picks a proxy per connection
        with requests.Session() as session:
            if session.get(f"{url}/keep", timeout=10).status_code != 200:
                return False
    return True


def test_two_proxies_share_the_port(ray_cluster):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = _driver(ray_cluster.env, f"""
        from ray_serving_ext.config import ControllerOptions
        ray.init(address="{ray_cluster.address}")
        serve.start(detached=True, http_options={{"host": "127.0.0.1", "port": {port}}},
                    controller_options=ControllerOptions(
                        runtime_env={{"env_vars": {{"RAY_SERVE_EXT_PROXIES_PER_NODE": "2"}}}}))
        from tests.e2e.detached_apps.apps import Keeper
        serve.run(Keeper.bind(), name="keeper", route_prefix="/keep")
        status = serve.status()
        pids = [ray.get(ray.get_actor(name, namespace="serve").ready.remote())["pid"]
                for name in sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                                   if a["name"].startswith("SERVE_PROXY_ACTOR-"))]
        print("RESULT", json.dumps({{"proxies": {{k: str(v) for k, v in status.proxies.items()}}, "pids": pids}}))
    """)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert len(result["pids"]) == 2 and len(set(result["pids"])) == 2, result  # two processes
    assert list(result["proxies"].values()) == ["HEALTHY"], result  # one entry for the node

    assert _all_ok(url, 60)
    # Both processes served some of the 60 connections (metrics are pushed every second).
    wait_for_condition(lambda: len([c for c in _proxy_sources(url).values() if c > 0]) == 2, timeout=20,
                       message=f"both proxies counted requests: {_proxy_sources(url)}")

    os.kill(result["pids"][1], signal.SIGKILL)
    # The survivor holds the port alone until Ray restarts the other: no request is refused.
    wait_for_condition(lambda: _all_ok(url, 30), timeout=30, message="the surviving proxy serves")
    assert _all_ok(url, 30)
    assert ray_cluster.cli("shutdown", "-y").returncode == 0
    wait_for_condition(lambda: ray_cluster.serve_actor_names() == [], timeout=60)
