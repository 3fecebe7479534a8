"""The `serve-ext` CLI end to end, each verb in a subprocess, on one private cluster.

The tests run in file order and share one Serve instance: start → deploy a
config → status/HTTP → config → build+deploy → invalid configs rejected while
the apps keep serving → user_config redeploy in place → run --non-blocking →
declarative removal → shutdown → a blocking `run` stopped by SIGTERM.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List

import pytest
import requests
import yaml

from tests.e2e.conftest import REPO_ROOT, RayCluster
from tests.utils import free_port, wait_for_condition

pytestmark = pytest.mark.e2e

WD_MODULE = textwrap.dedent(
    """
    from pydantic import BaseModel

    import ray_serving_ext as serve


    @serve.deployment
    class WdGreeter:
        def __init__(self, text: str) -> None:
            self.text = text

        def __call__(self, request) -> str:
            return self.text


    class Args(BaseModel):
        name: str


    def build(args: Args):
        return WdGreeter.bind(f"hello {args.name} from working_dir")
    """
)


class Flow:
    """State shared by the ordered tests of this module."""

    def __init__(self, cluster: RayCluster, workdir: Path) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.echo_pid: int = 0
        app_dir = workdir / "wd_app"
        app_dir.mkdir()
        (app_dir / "wd_greeter.py").write_text(WD_MODULE)
        self.wd_dir = str(app_dir)

    def base_config(self, echo_message: str = "hello-from-config") -> Dict[str, Any]:
        return {
            "proxy_location": "HeadOnly",
            "http_options": {"host": "127.0.0.1", "port": self.port},
            "applications": [
                {
                    "name": "echo",
                    "route_prefix": "/echo",
                    "import_path": "tests.e2e.apps.echo:app",
                    "deployments": [{"name": "Echo", "user_config": {"message": echo_message}}],
                },
                {
                    "name": "greet",
                    "route_prefix": "/greet",
                    "import_path": "wd_greeter:build",
                    "runtime_env": {"working_dir": self.wd_dir},
                    "args": {"name": "e2e"},
                },
            ],
        }

    def write(self, name: str, config: Dict[str, Any]) -> str:
        path = self.workdir / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return str(path)

    def status(self) -> Dict[str, Any]:
        out = self.cluster.cli("status")
        assert out.returncode == 0, out.stderr
        return yaml.safe_load(out.stdout)

    def wait_apps(
        self, running: List[str], absent: List[str] = (), routes: List[str] = (), timeout: float = 90.0
    ) -> Dict[str, Any]:
        """Poll `status` until every app in `running` is RUNNING and none of `absent`
        exists (after `routes` answer 200, a cheaper first sign of readiness)."""
        for route in routes:
            wait_for_condition(lambda: self.get(route).status_code == 200, timeout=timeout, interval=0.2)

        def ready() -> Any:
            status = self.status()
            apps = status["applications"]
            failed = [n for n, a in apps.items() if a["status"] == "DEPLOY_FAILED"]
            assert not failed, f"deploy failed: {apps}"
            ok = all(apps.get(n, {}).get("status") == "RUNNING" for n in running)
            return status if ok and not set(absent) & set(apps) else None

        return wait_for_condition(ready, timeout=timeout, interval=0.5, message=f"apps {running} RUNNING")

    def get(self, route: str) -> requests.Response:
        return requests.get(f"{self.url}{route}", timeout=10)


@pytest.fixture(scope="module")
def flow(ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Flow:
    return Flow(ray_cluster, tmp_path_factory.mktemp("cli_flow"))


def assert_clean_failure(out: subprocess.CompletedProcess, *needles: str) -> None:
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stderr, out.stderr
    for needle in needles:
        assert needle in out.stderr, out.stderr


def test_no_cluster_and_no_instance_fail_cleanly(flow: Flow) -> None:
    dead = f"127.0.0.1:{free_port()}"
    assert_clean_failure(flow.cluster.cli("status", "--address", dead), "Could not connect", dead)
    assert_clean_failure(flow.cluster.cli("status"), "No Serve instance")


def test_start(flow: Flow) -> None:
    admin_port = free_port()
    out = flow.cluster.cli(
        "start", "--http-host", "127.0.0.1", "--http-port", str(flow.port), "--proxy-location", "HeadOnly",
        "--admin-port", str(admin_port),
    )
    assert out.returncode == 0, out.stderr
    assert "Serve started" in out.stdout and f"REST API on http://127.0.0.1:{admin_port}" in out.stdout
    # The REST API is up: the same CLI reads the instance through it.
    status = flow.cluster.cli("status", "-a", f"http://127.0.0.1:{admin_port}")
    assert status.returncode == 0 and "applications: {}" in status.stdout, status.stdout + status.stderr


def test_deploy_config_then_status_and_http(flow: Flow) -> None:
    out = flow.cluster.cli("deploy", flow.write("main.yaml", flow.base_config()))
    assert out.returncode == 0, out.stderr
    assert "Sent deploy request successfully." in out.stdout
    status = flow.wait_apps(["echo", "greet"], routes=["/echo", "/greet"])
    assert set(status) >= {"proxies", "applications"}
    echo = status["applications"]["echo"]
    assert set(echo) >= {"status", "message", "last_deployed_time_s", "deployments"}
    dep = echo["deployments"]["Echo"]
    assert dep["status"] == "HEALTHY" and dep["replica_states"] == {"RUNNING": 1}
    assert set(dep) >= {"status_trigger", "message"}
    resp = flow.get("/echo")
    assert resp.status_code == 200 and resp.json()["message"] == "hello-from-config"
    flow.echo_pid = resp.json()["pid"]
    resp = flow.get("/greet")
    assert resp.status_code == 200 and resp.text == "hello e2e from working_dir"


def test_config_prints_the_deployed_configs(flow: Flow) -> None:
    out = flow.cluster.cli("config")
    assert out.returncode == 0, out.stderr
    docs = {d["name"]: d for d in yaml.safe_load_all(out.stdout)}
    assert set(docs) == {"echo", "greet"}
    assert docs["greet"]["import_path"] == "wd_greeter:build" and docs["greet"]["args"] == {"name": "e2e"}
    out = flow.cluster.cli("config", "--name", "echo")
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["deployments"] == [{"name": "Echo", "user_config": {"message": "hello-from-config"}}]


def test_build_then_deploy_round_trips(flow: Flow) -> None:
    built_path = flow.workdir / "built.yaml"
    out = flow.cluster.cli("build", "tests.e2e.apps.echo:app", "-o", str(built_path))
    assert out.returncode == 0, out.stderr
    built = yaml.safe_load(built_path.read_text())
    assert (built["proxy_location"], built["http_options"]) == ("EveryNode", {"host": "0.0.0.0", "port": 8000})
    (app,) = built["applications"]
    assert app == {
        "name": "app1",
        "route_prefix": "/",
        "import_path": "tests.e2e.apps.echo:app",
        "runtime_env": {},
        "deployments": [{"name": "Echo", "max_ongoing_requests": 10, "user_config": {"message": "hello"}}],
    }
    config = flow.base_config()
    config["applications"].append({**app, "name": "built", "route_prefix": "/built"})
    out = flow.cluster.cli("deploy", flow.write("combined.yaml", config))
    assert out.returncode == 0, out.stderr
    flow.wait_apps(["echo", "greet", "built"], routes=["/built"])
    resp = flow.get("/built")
    assert resp.status_code == 200 and resp.json()["message"] == "hello"
    assert flow.get("/echo").json() == {"pid": flow.echo_pid, "message": "hello-from-config"}


def test_invalid_configs_are_rejected_and_apps_keep_serving(flow: Flow) -> None:
    bad = flow.base_config()
    bad["applications"][0]["deployments"][0]["num_replicas"] = -1
    bad_path = flow.write("bad.yaml", bad)
    out = flow.cluster.cli("deploy", bad_path)
    assert_clean_failure(out, "bad.yaml", "applications.0.deployments.0.num_replicas")
    unimportable = flow.base_config(echo_message="never-deployed")
    unimportable["applications"][1]["import_path"] = "no_such_module_xyz:app"
    out = flow.cluster.cli("deploy", flow.write("unimportable.yaml", unimportable))
    assert_clean_failure(out, "no_such_module_xyz:app")
    resp = flow.get("/echo")
    assert resp.status_code == 200
    assert resp.json() == {"pid": flow.echo_pid, "message": "hello-from-config"}
    assert flow.get("/built").status_code == 200


def test_user_config_redeploy_keeps_replicas(flow: Flow) -> None:
    config = flow.base_config(echo_message="changed")
    out = flow.cluster.cli("deploy", flow.write("changed.yaml", config))
    assert out.returncode == 0, out.stderr
    body = wait_for_condition(
        lambda: (r := flow.get("/echo").json())["message"] == "changed" and r, timeout=60, interval=0.2
    )
    assert body["pid"] == flow.echo_pid


def test_run_non_blocking_with_builder_args(flow: Flow) -> None:
    out = flow.cluster.cli(
        "run", "tests.e2e.apps.echo:greeter", "name=cli", "--name", "runapp", "--route-prefix", "/run", "--non-blocking"
    )
    assert out.returncode == 0, out.stderr
    resp = flow.get("/run")
    assert resp.status_code == 200 and resp.text == "Hello, cli!"


def test_declarative_deploy_removes_missing_apps(flow: Flow) -> None:
    config = flow.base_config(echo_message="changed")
    config["applications"] = config["applications"][:1]
    out = flow.cluster.cli("deploy", flow.write("only_echo.yaml", config))
    assert out.returncode == 0, out.stderr
    status = flow.wait_apps(["echo"], absent=["greet", "built", "runapp"])
    assert set(status["applications"]) == {"echo"}
    wait_for_condition(lambda: flow.get("/greet").status_code == 404, timeout=30, interval=0.2)
    assert flow.get("/echo").json() == {"pid": flow.echo_pid, "message": "changed"}


def test_shutdown_leaves_no_serve_actor(flow: Flow) -> None:
    out = flow.cluster.cli("shutdown", "-y")
    assert out.returncode == 0, out.stderr
    wait_for_condition(lambda: flow.cluster.serve_actor_names() == [], timeout=60, interval=0.5)
    assert_clean_failure(flow.cluster.cli("status"), "No Serve instance")


def test_blocking_run_shuts_serve_down_on_sigterm(flow: Flow) -> None:
    config = flow.base_config()
    config["applications"] = config["applications"][:1]
    path = flow.write("run.yaml", config)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray_serving_ext", "run", path],
        env=flow.cluster.env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_condition(lambda: flow.get("/echo").status_code == 200, timeout=90, interval=0.3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    wait_for_condition(lambda: flow.cluster.serve_actor_names() == [], timeout=60, interval=0.5)
