"""Surviving head-node loss (issue #7): restore every application on a brand-new cluster.

Each restore test really loses a cluster: `ray start --head --block` runs in its
own process group and is SIGKILLed (the equivalent of `ray stop --force` for
that cluster only), then a new cluster restores from the same checkpoint. The
tests chain clusters to stay fast: the cluster a restore ends on (after a
`serve.shutdown()`, which must clear the checkpoint) hosts the next deploy.
Drivers are subprocesses (`tests/e2e/checkpoint_apps/driver.py`) given
RAY_ADDRESS explicitly; this process never connects to Ray.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import pytest
import requests

from ray_serving_ext._private.build import build_app
from ray_serving_ext._private.checkpoint import make_checkpoint_manager
from ray_serving_ext._private.constants import CHECKPOINT_KEY
from tests.utils import forget_ray_start_address, free_port, is_port_clash, wait_for_condition

pytestmark = pytest.mark.e2e

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CUSTOM_STORE = "tests.e2e.checkpoint_apps.stores.DirectoryKVStore"
BUCKET = "serve-checkpoints"
LISTEN_PORT_FLAGS = (
    "--node-manager-port", "--object-manager-port", "--dashboard-port", "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port",
)


def _base_env() -> Dict[str, str]:
    """The environment of clusters and drivers: repo importable, dummy AWS credentials, no RAY_ADDRESS."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
    )
    return env


class RayCluster:
    """One `ray start --head --block` in its own process group, on a free port."""

    def __init__(self, log_dir: str) -> None:
        for attempt in range(3):  # another process may take a picked port before Ray binds it
            self._launch(log_dir)
            wait_for_condition(
                lambda: self.proc.poll() is not None or self._started(),
                timeout=60,
                interval=0.2,
                message=f"cluster {self.address} started",
            )
            if self.proc.poll() is None:
                return
            self.lose()  # whatever it started before it died
            if attempt == 2 or not is_port_clash(self._log_tail()):
                raise AssertionError(f"ray start exited with {self.proc.returncode}: {self._log_tail()}")

    def _launch(self, log_dir: str) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = os.path.join(log_dir, f"ray-{self.port}.log")
        cmd = [
            "ray", "start", "--head", "--block", "--port", str(self.port), "--num-cpus", "8",
            "--include-dashboard", "false", "--disable-usage-stats", "--object-store-memory", "200000000",
            "--min-worker-port", "0", "--max-worker-port", "0",
        ]
        for flag in LISTEN_PORT_FLAGS:  # never collide with the other clusters on this machine
            cmd += [flag, str(free_port())]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, env=_base_env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _started(self) -> bool:
        with open(self.log_path, "rb") as f:
            return b"Ray runtime started" in f.read()

    def _log_tail(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read()[-3000:].decode(errors="replace")

    def _leftovers(self) -> List[int]:
        """Live pids of this cluster: its session (workers get their own process groups)."""
        left = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()  # state ppid pgrp session ...
            except (OSError, IndexError):
                continue
            if fields[0] not in (b"Z", b"X") and self.proc.pid in (int(fields[2]), int(fields[3])):
                left.append(int(entry))
        return left

    def lose(self) -> None:
        """SIGKILL the whole cluster: its process group, then every straggler of its session, bounded."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

        def gone() -> bool:
            pids = self._leftovers()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return not pids

        wait_for_condition(gone, timeout=30, interval=0.2, message=f"cluster {self.address} gone")
        forget_ray_start_address(self.port)


class ClusterChain:
    """The current cluster, reused by the next test; `lose()` then `fresh()` replaces it."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.current: Optional[RayCluster] = None

    def get(self) -> RayCluster:
        if self.current is None:
            self.current = RayCluster(self.log_dir)
        return self.current

    def lose(self) -> None:
        if self.current is not None:
            cluster, self.current = self.current, None
            cluster.lose()

    def fresh(self) -> RayCluster:
        self.lose()
        return self.get()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory):
    clusters = ClusterChain(str(tmp_path_factory.mktemp("ray-logs")))
    yield clusters
    clusters.lose()


@pytest.fixture(scope="module")
def moto_endpoint():
    """A moto S3 server on loopback with one bucket."""
    boto3 = pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    port = free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = _base_env()
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    client.create_bucket(Bucket=BUCKET)
    yield endpoint, client
    server.stop()


def run_driver(cluster: RayCluster, action: str, checkpoint: str = "", port: int = 0,
               extra_env: Optional[Dict[str, str]] = None, working_dir: str = "") -> Dict[str, Any]:
    """Run one driver action against `cluster`; its RESULT json (fails on a non-zero exit)."""
    env = {**_base_env(), "RAY_ADDRESS": cluster.address, **(extra_env or {})}
    cmd = [sys.executable, "-m", "tests.e2e.checkpoint_apps.driver", action, "--checkpoint", checkpoint]
    if port:
        cmd += ["--port", str(port)]
    if working_dir:
        cmd += ["--working-dir", working_dir]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    out = proc.stdout + proc.stderr[-4000:]
    assert proc.returncode == 0, out
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, out
    return json.loads(lines[-1][len("RESULT "):])


def _get_json(url: str) -> Any:
    resp = requests.get(url, timeout=10)
    resp.raise_for_status()
    return resp.json()


SHIPPED_APP = """
import ray_serving_ext as serve

ANSWER = "shipped in the working_dir"


@serve.deployment(graceful_shutdown_wait_loop_s=0.1, graceful_shutdown_timeout_s=2)
def shipped(request) -> str:
    return ANSWER
"""
APPS = ["composed", "greeter", "shipped"]


def _working_dir(parent: str) -> str:
    """A runtime_env working_dir holding `shipped_app`, a module found nowhere else."""
    path = os.path.join(parent, "working_dir")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "shipped_app.py"), "w") as f:
        f.write(SHIPPED_APP)
    return path


def _check_restored(port: int) -> None:
    """The apps answer with their updated user_config (and shipped code); the deleted app stays deleted."""
    base = f"http://127.0.0.1:{port}"
    wait_for_condition(lambda: requests.get(f"{base}/shipped", timeout=10).text == "shipped in the working_dir",
                       timeout=30, message="shipped (runtime_env working_dir code) answers")
    wait_for_condition(lambda: _get_json(f"{base}/greeter") == {"app": "greeter", "greeting": "updated"},
                       timeout=30, message="greeter answers with the updated user_config")
    wait_for_condition(lambda: _get_json(f"{base}/composed?x=1") == {"app": "composed", "result": 101},
                       timeout=30, message="composed answers with the updated user_config")
    assert requests.get(f"{base}/doomed", timeout=10).status_code == 404


def _lose_and_restore(chain: ClusterChain, checkpoint: str, read: Callable[[], Optional[bytes]],
                      working_dir: str, extra_env: Optional[Dict[str, str]] = None) -> None:
    """Deploy on the current cluster, lose it, restore on a brand-new one, check, shut down."""
    t0 = time.monotonic()
    phase = lambda name: print(f"[{time.monotonic() - t0:6.1f}s] {name}", flush=True)  # noqa: E731
    first = chain.get()
    old_port = free_port()
    phase("cluster A up")
    deployed = run_driver(first, "deploy", checkpoint, old_port, extra_env, working_dir)
    assert deployed["apps"] == APPS, deployed
    assert read() is not None, "the checkpoint was not written"
    phase("deployed; losing cluster A")
    chain.lose()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{old_port}/greeter", timeout=5)
    second = chain.fresh()
    new_port = free_port()
    phase("cluster B up")
    restored = run_driver(second, "restore", checkpoint, new_port, extra_env)
    assert restored["apps"] == APPS, restored
    seen = restored["seen"]
    assert sorted(seen) == APPS, seen
    assert all(s in (["DEPLOYING", "RUNNING"], ["RUNNING"]) for s in seen.values()), seen
    assert any(s[0] == "DEPLOYING" for s in seen.values()), f"no restored app was seen DEPLOYING: {seen}"
    phase(f"restored, statuses seen {restored['seen']}")
    _check_restored(new_port)
    assert run_driver(second, "shutdown", extra_env=extra_env)["actors"] == []
    assert read() is None, "serve.shutdown() must clear the checkpoint"
    phase("checked over HTTP and shut down")


def test_restore_from_file_checkpoint(chain: ClusterChain, tmp_path) -> None:
    directory = tmp_path / "ckpt"
    path = directory / CHECKPOINT_KEY
    _lose_and_restore(chain, f"file://{directory}", lambda: path.read_bytes() if path.exists() else None,
                      _working_dir(str(tmp_path)))
    assert os.listdir(directory) == [], "serve.shutdown() must remove the kept runtime_env package too"


def test_restore_from_s3_checkpoint(chain: ClusterChain, moto_endpoint, tmp_path) -> None:
    endpoint, client = moto_endpoint
    key = f"clusters/a/{CHECKPOINT_KEY}"

    def read() -> Optional[bytes]:
        try:
            return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None

    env = {"RAY_SERVE_EXT_S3_ENDPOINT_URL": endpoint}
    _lose_and_restore(chain, f"s3://{BUCKET}/clusters/a", read, _working_dir(str(tmp_path)), env)
    assert client.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_restore_from_custom_checkpoint(chain: ClusterChain, tmp_path) -> None:
    path = tmp_path / "ckpt" / f"{CHECKPOINT_KEY}.kv"
    url = f"custom://{CUSTOM_STORE}/ckpt?root={tmp_path}"
    _lose_and_restore(chain, url, lambda: path.read_bytes() if path.exists() else None,
                      _working_dir(str(tmp_path)))


def test_truncated_checkpoint_refused_and_nothing_created(chain: ClusterChain, tmp_path) -> None:
    from tests.e2e.checkpoint_apps import apps

    url = f"file://{tmp_path}"
    built = build_app(apps.greeter_app("updated"), "greeter", "/greeter")
    make_checkpoint_manager(url).save({"applications": [{"built": built, "config": None}]})
    path = tmp_path / CHECKPOINT_KEY
    truncated = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(truncated)
    result = run_driver(chain.get(), "badstart", url, free_port())
    assert result["error"] is not None, result
    assert result["error"]["type"] == "CheckpointError", result
    assert str(path) in result["error"]["message"] and "truncated" in result["error"]["message"], result
    assert result["actors"] == [], "serve.start created actors despite the bad checkpoint"
    assert path.read_bytes() == truncated, "the refused checkpoint was modified"
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT_KEY]
