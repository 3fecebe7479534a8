"""A private `ray start --head --block` cluster per e2e module, and a CLI runner.

The cluster gets free ports for everything it listens on, 8 logical CPUs, the
repo root on its workers' PYTHONPATH (so `tests.e2e.apps...` import paths
work) and token auth off. It is stopped by killing its process group: SIGTERM,
then SIGKILL after a bounded wait. Never `ray stop` (it would stop every
cluster on the machine). Children get the address explicitly via RAY_ADDRESS.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from tests.utils import forget_ray_start_address, free_port, is_port_clash, wait_for_condition

REPO_ROOT = str(Path(__file__).resolve().parents[2])

_LIST_SERVE_ACTORS = (
    "import json, ray\n"
    "ray.init(address='{address}', namespace='serve', logging_level='ERROR', log_to_driver=False)\n"
    "names = [a['name'] for a in ray.util.list_named_actors(all_namespaces=True) if a.get('namespace') == 'serve']\n"
    "print(json.dumps(names))\n"
)


@dataclass
class RayCluster:
    """A running test cluster: its address and the environment children need."""

    address: str
    env: Dict[str, str]
    log_path: Path
    extra: Dict[str, object] = field(default_factory=dict)

    def cli(self, *args: str, timeout: float = 120.0, cwd: str = REPO_ROOT) -> subprocess.CompletedProcess:
        """Run `python -m ray_serving_ext ARGS...` against this cluster; never raises on exit status."""
        return subprocess.run(
            [sys.executable, "-m", "ray_serving_ext", *args],
            env=self.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def serve_actor_names(self, timeout: float = 60.0) -> List[str]:
        """Names of the live named actors in namespace "serve" (asked from a short subprocess)."""
        out = subprocess.run(
            [sys.executable, "-c", _LIST_SERVE_ACTORS.format(address=self.address)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])


def _child_env(address: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(
        RAY_ADDRESS=address,
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONPATH=os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH", "")) if p),
    )
    return env


def _start_command(port: int, dashboard_port: int = 0) -> List[str]:
    ports = {
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
        "--dashboard-port": dashboard_port or free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
    }
    cmd = ["ray", "start", "--head", "--block", "--port", str(port), "--num-cpus", "8"]
    cmd += ["--include-dashboard", "true" if dashboard_port else "false", "--disable-usage-stats"]
    if dashboard_port:
        cmd += ["--dashboard-host", "127.0.0.1"]
    cmd += ["--min-worker-port", "0", "--max-worker-port", "0"]
    for flag, value in ports.items():
        cmd += [flag, str(value)]
    return cmd


def _stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM the cluster's process group, SIGKILL it if still alive after `timeout`."""
    for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            time.sleep(1.0)  # let the group's other processes finish exiting
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A fresh head node with 8 logical CPUs for one test module."""
    yield from _cluster(tmp_path_factory, dashboard=False)


@pytest.fixture(scope="module")
def job_cluster(tmp_path_factory: pytest.TempPathFactory):
    """Like ray_cluster, with the dashboard (and so the job server) on a free port."""
    yield from _cluster(tmp_path_factory, dashboard=True)


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory: pytest.TempPathFactory):
    """Like ray_cluster, with Ray's token authentication on (RAY_AUTH_MODE=token and a
    RAY_AUTH_TOKEN that the head and every child of the test share)."""
    import secrets

    yield from _cluster(tmp_path_factory, dashboard=False, auth_token=secrets.token_hex(16))


def _cluster(tmp_path_factory: pytest.TempPathFactory, dashboard: bool, auth_token: str = "",
             extra_env: Optional[Dict[str, str]] = None):
    """Start the head (retried on a port clash), yield its RayCluster, stop it. `extra_env` is set
    in `ray start`'s environment (so every Ray worker inherits it) and in the children's."""
    log_dir = tmp_path_factory.mktemp("ray_cluster")
    for attempt in range(3):  # another process may take a picked port before Ray binds it
        port = free_port()
        address = f"127.0.0.1:{port}"
        env = _child_env(address)
        if auth_token:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=auth_token)
            env.pop("RAY_AUTH_TOKEN_PATH", None)
        env.update(extra_env or {})
        dashboard_port = free_port() if dashboard else 0
        log_path = log_dir / f"ray_start_{attempt}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                _start_command(port, dashboard_port), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for_condition(
            lambda: proc.poll() is not None or "Ray runtime started" in log_path.read_text(),
            timeout=90,
            interval=0.2,
            message=f"ray start did not come up (log: {log_path})",
        )
        if proc.poll() is None:
            break
        _stop(proc)
        forget_ray_start_address(port)
        if attempt == 2 or not is_port_clash(log_path.read_text()):
            raise AssertionError(f"ray start exited with {proc.returncode}: {log_path.read_text()[-3000:]}")
    try:
        extra = {"dashboard_url": f"http://127.0.0.1:{dashboard_port}"} if dashboard else {}
        yield RayCluster(address=address, env=env, log_path=log_path, extra=extra)
    finally:
        _stop(proc)
        forget_ray_start_address(port)
