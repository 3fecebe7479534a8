"""The RayService manifest's head, run for real without Kubernetes, then driven as KubeRay drives it.

deploy/kubernetes/rayservice.yaml is read, not copied: the head container's
environment goes into `ray start`'s (with Ray's token auth on, as KubeRay's
`authOptions: {mode: token}` sets it, and the commented
`RAY_SERVE_EXT_ADMIN_API_KEYS_ENV=RAY_AUTH_TOKEN` turned on), and its postStart
script is run as the kubelet runs it. Only addresses change: loopback instead
of 0.0.0.0, free ports instead of 8000 and 8265, a temporary log file.

Then what the kubelet and the operator do, in their order:
- the head's readiness probe (as the manifest defines it) passes before any
  application exists, while the head proxy's /-/healthz is still 503: the
  operator sends its first PUT only to a Ready head;
- the operator PUTs serveConfigV2 as JSON with its token in
  `X-Ray-Authorization`, and polls `GET /api/serve/applications/?api_type=declarative`
  until every application is RUNNING (reading status and message per
  application and deployment);
- the head proxy's /-/healthz turns 200 (the operator's own check before it
  labels the head for the serve Service) and both example apps answer;
- an edited serveConfigV2 (a new user_config) is PUT while a client keeps
  sending requests: every request gets a 200 and the new threshold arrives.

And the RayCluster variant's deploy Job: its script, with its API key, applies
its ConfigMap's config over the admin API.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

import pytest
import requests
import yaml

from tests.e2e.conftest import REPO_ROOT, _cluster
from tests.utils import free_port, wait_for_condition

pytestmark = pytest.mark.e2e

MANIFEST = Path(REPO_ROOT) / "deploy" / "kubernetes" / "rayservice.yaml"
MANIFEST_ADMIN_PORT = 8265
MANIFEST_HTTP = '"host": "0.0.0.0", "port": 8000'


def _head_container(service: dict) -> dict:
    return service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]


@pytest.fixture(scope="module")
def rayservice() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


@pytest.fixture(scope="module")
def head(tmp_path_factory, rayservice):
    """A head node started with the manifest's head environment, under token auth."""
    env = {e["name"]: str(e["value"]) for e in _head_container(rayservice)["env"]}
    assert env["RAY_SERVE_EXT_ADMIN_HOST"] == "0.0.0.0"
    assert int(env["RAY_SERVE_EXT_ADMIN_PORT"]) == MANIFEST_ADMIN_PORT
    admin_port = free_port()
    env.update(RAY_SERVE_EXT_ADMIN_HOST="127.0.0.1", RAY_SERVE_EXT_ADMIN_PORT=str(admin_port),
               RAY_SERVE_EXT_ADMIN_API_KEYS_ENV="RAY_AUTH_TOKEN")  # the manifest's commented line, on
    for cluster in _cluster(tmp_path_factory, dashboard=False, auth_token=secrets.token_hex(16), extra_env=env):
        http_port, log = free_port(), tmp_path_factory.mktemp("post_start") / "serve-ext-start.log"
        env = {**cluster.env, "PATH": os.pathsep.join([os.path.dirname(sys.executable), cluster.env.get("PATH", "")])}
        # The kubelet runs the postStart hook once the container has started (`ray start`).
        started = subprocess.run(["/bin/bash", "-c", _post_start(rayservice, http_port, log)], env=env,
                                 cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
        assert started.returncode == 0, (log.read_text() if log.exists() else "")[-3000:]
        cluster.extra.update(admin_port=admin_port, http_port=http_port, path=env["PATH"])
        yield cluster


def _post_start(rayservice: dict, http_port: int, log: Path) -> str:
    command = _head_container(rayservice)["lifecycle"]["postStart"]["exec"]["command"]
    script = command[2]
    assert script.count(MANIFEST_HTTP) == 1 and script.count(">>/tmp/serve-ext-start.log") == 1
    script = script.replace(MANIFEST_HTTP, f'"host": "127.0.0.1", "port": {http_port}')
    return script.replace(">>/tmp/serve-ext-start.log", f">>{log}")


def _probe_passes(probe: dict, ports: Dict[int, int]) -> bool:
    """One run of a pod probe as the kubelet runs it (httpGet: a 2xx/3xx; tcpSocket: a connection),
    the manifest's ports mapped to the test's by `ports`."""
    if "httpGet" in probe:
        port = ports[probe["httpGet"]["port"]]
        try:
            status = requests.get(f"http://127.0.0.1:{port}{probe['httpGet']['path']}", timeout=2).status_code
        except requests.RequestException:
            return False
        return 200 <= status < 400
    try:
        socket.create_connection(("127.0.0.1", ports[probe["tcpSocket"]["port"]]), timeout=2).close()
        return True
    except OSError:
        return False


def _serve_config(rayservice: dict, http_port: int) -> dict:
    """serveConfigV2 as the operator sends it: YAML turned into JSON (addresses made local)."""
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert config["http_options"]["host"] == "0.0.0.0" and config["http_options"]["port"] == 8000
    config["http_options"].update(host="127.0.0.1", port=http_port)
    return config


def _put(admin: str, config: dict, token: str) -> requests.Response:
    return requests.put(f"{admin}/api/serve/applications/", data=json.dumps(config), timeout=30,
                        headers={"Content-Type": "application/json", "X-Ray-Authorization": f"Bearer {token}"})


def _operator_view(admin: str, token: str) -> Dict[str, dict]:
    """What the operator keeps of GET ?api_type=declarative: per app, status, message, deployments."""
    resp = requests.get(f"{admin}/api/serve/applications/", params={"api_type": "declarative"},
                        headers={"X-Ray-Authorization": f"Bearer {token}"}, timeout=30)
    resp.raise_for_status()
    return {name: {"status": app["status"], "message": app["message"],
                   "deployments": {d: (dep["status"], dep["message"]) for d, dep in app["deployments"].items()}}
            for name, app in resp.json()["applications"].items()}


def _cluster_ready(view: Dict[str, dict], names: List[str]) -> bool:
    """The operator's isReady: every application RUNNING (and here: all of ours, deployments HEALTHY)."""
    return sorted(view) == sorted(names) and all(
        app["status"] == "RUNNING" and all(s == "HEALTHY" for s, _ in app["deployments"].values())
        for app in view.values())


def test_the_rayservice_head_comes_up_and_takes_kuberays_requests(head, rayservice):
    token, admin_port, http_port = head.env["RAY_AUTH_TOKEN"], head.extra["admin_port"], head.extra["http_port"]
    admin, serve_url = f"http://127.0.0.1:{admin_port}", f"http://127.0.0.1:{http_port}"
    # The kubelet: the head's readiness probe, as the manifest defines it, before any application.
    ports = {8000: http_port, MANIFEST_ADMIN_PORT: admin_port}
    probe = _head_container(rayservice)["readinessProbe"]
    wait_for_condition(lambda: _probe_passes(probe, ports), timeout=60,
                       message=f"the head's readiness probe {probe} passes with no application deployed")
    assert requests.get(f"{serve_url}/-/routes", timeout=10).status_code == 200  # startup and liveness
    assert requests.get(f"{serve_url}/-/healthz", timeout=10).status_code == 503  # why it is not the readiness

    # The operator: PUT serveConfigV2 (its token in X-Ray-Authorization), poll GET until ready.
    config = _serve_config(rayservice, http_port)
    names = [app["name"] for app in config["applications"]]
    unauthenticated = requests.put(f"{admin}/api/serve/applications/", json=config, timeout=30)
    assert unauthenticated.status_code == 401
    resp = _put(admin, config, token)
    assert resp.status_code == 200, resp.text
    wait_for_condition(lambda: _cluster_ready(_operator_view(admin, token), names), timeout=180, interval=1.0,
                       message="every application RUNNING with its deployments HEALTHY")
    view = _operator_view(admin, token)
    assert {name: app["message"] for name, app in view.items()} == {name: "" for name in names}
    assert set(view["classifier"]["deployments"]) == {"Classifier"}

    # The operator's check of the head's proxy before it labels the head for the serve Service.
    wait_for_condition(lambda: requests.get(f"{serve_url}/-/healthz", timeout=5).status_code == 200, timeout=30)
    assert requests.get(f"{serve_url}/hello?name=Ray", timeout=10).text == "Hello, Ray!"
    assert requests.get(f"{serve_url}/classify?score=0.5", timeout=10).json()["threshold"] == 0.8

    _upgrade_in_place(admin, serve_url, config, token)


def _upgrade_in_place(admin: str, serve_url: str, config: dict, token: str) -> None:
    """An edited serveConfigV2 (new user_config) PUT while a client sends requests: no request fails."""
    statuses: List[int] = []
    stop = threading.Event()

    def client() -> None:
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                statuses.append(requests.get(f"{serve_url}/classify?score=0.5", timeout=10).status_code)
            except requests.RequestException:
                statuses.append(-1)
            time.sleep(0.02)

    worker = threading.Thread(target=client, daemon=True)
    worker.start()
    try:
        wait_for_condition(lambda: len(statuses) >= 5, timeout=30)
        for app in config["applications"]:
            if app["name"] == "classifier":
                app["deployments"][0]["user_config"] = {"threshold": 0.3}
        assert _put(admin, config, token).status_code == 200
        wait_for_condition(
            lambda: requests.get(f"{serve_url}/classify?score=0.5", timeout=10).json()["threshold"] == 0.3,
            timeout=60, message="the new user_config reaches the replicas")
        sent = len(statuses)
        wait_for_condition(lambda: len(statuses) >= sent + 5, timeout=30)
    finally:
        stop.set()
        worker.join(timeout=15)
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}


def test_the_rayclusters_deploy_job_applies_its_configmap(head, tmp_path):
    """The RayCluster variant's Job script (wait for the admin API, then `serve-ext deploy -a`), run against
    the same head with its key (the manifest's commented RAY_SERVE_EXT_API_KEY, set to the token)."""
    docs = [d for d in yaml.safe_load_all((MANIFEST.parent / "raycluster.yaml").read_text()) if d]
    job = next(d for d in docs if d["kind"] == "Job")["spec"]["template"]["spec"]["containers"][0]
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    mount = job["volumeMounts"][0]["mountPath"]
    script = job["command"][2]
    assert job["command"][:2] == ["/bin/bash", "-c"] and script.count(f"{mount}/serve_config.yaml") == 1
    config = yaml.safe_load(config_map["data"]["serve_config.yaml"])
    http_port = head.extra["http_port"]
    config["http_options"].update(host="127.0.0.1", port=http_port)  # the instance's, as on the cluster
    config["applications"] = [app for app in config["applications"] if app["name"] == "hello"]
    (tmp_path / "serve_config.yaml").write_text(yaml.safe_dump(config))
    admin = f"http://127.0.0.1:{head.extra['admin_port']}"
    env = {**head.env, "SERVE_ADDRESS": admin, "RAY_SERVE_EXT_API_KEY": head.env["RAY_AUTH_TOKEN"],
           "PATH": head.extra["path"]}
    env.pop("RAY_ADDRESS")  # the Job does not join the Ray cluster: it only speaks HTTP
    env.pop("RAY_AUTH_TOKEN")
    script = script.replace(f"{mount}/serve_config.yaml", str(tmp_path / "serve_config.yaml"))
    ran = subprocess.run(["/bin/bash", "-c", script], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=300)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-3000:]
    token = head.env["RAY_AUTH_TOKEN"]
    # Declarative: the config names only `hello`, so `classifier` (if the previous test deployed it) is deleted.
    wait_for_condition(lambda: _cluster_ready(_operator_view(admin, token), ["hello"]), timeout=120, interval=1.0,
                       message="the Job's config applied: only hello, RUNNING")
    assert requests.get(f"http://127.0.0.1:{http_port}/hello?name=Job", timeout=10).text == "Hello, Job!"
