"""Health checks: a failing or hanging check_health gets the replica replaced, status shows it."""

from __future__ import annotations

import os
import threading
import time

import ray_serving_ext as serve
from tests.utils import wait_for_condition


@serve.deployment(health_check_period_s=0.3, health_check_timeout_s=1, graceful_shutdown_wait_loop_s=0.1)
class Flaky:
    def __init__(self) -> None:
        self.mode = "ok"

    def set_mode(self, mode: str) -> int:
        self.mode = mode
        return os.getpid()

    def check_health(self) -> None:
        if self.mode == "fail":
            raise RuntimeError("database connection lost")
        if self.mode == "hang":
            time.sleep(60)

    def __call__(self) -> int:
        return os.getpid()


def _deployment_status() -> tuple:
    app = serve.status().applications.get("flaky")
    if app is None:
        return (None, None, "")
    dep = app.deployments["Flaky"]
    return (str(app.status), str(dep.status), dep.message)


def _watch_statuses(stop: threading.Event, seen: list) -> None:
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
        seen.append(_deployment_status())
        time.sleep(0.05)


def _replaced_after(mode: str) -> None:
    handle = serve.run(Flaky.bind(), name="flaky", route_prefix=None)
    old_pid = handle.remote().result()
    seen: list = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_statuses, args=(stop, seen), daemon=True)
    watcher.start()
    try:
        assert handle.set_mode.remote(mode).result() == old_pid
        wait_for_condition(lambda: handle.remote().result(timeout_s=5) != old_pid, timeout=30)
        wait_for_condition(lambda: _deployment_status()[1] == "HEALTHY", timeout=30)
    finally:
        stop.set()
        watcher.join(5)
        seen.append(_deployment_status())
    statuses = [s[1] for s in seen]
    assert "UNHEALTHY" in statuses, statuses
    first_unhealthy = statuses.index("UNHEALTHY")
    assert "HEALTHY" in statuses[first_unhealthy:]
    app_statuses = [s[0] for s in seen]
    assert "UNHEALTHY" in app_statuses
    messages = [s[2] for s in seen if s[1] == "UNHEALTHY"]
    expected = "database connection lost" if mode == "fail" else "timed out"
    assert any(expected in m for m in messages), messages
    assert _deployment_status()[0] == "RUNNING"


def test_failing_health_check_replaces_replica(serve_url):
    _replaced_after("fail")


def test_hanging_health_check_replaces_replica(serve_url):
    _replaced_after("hang")


@serve.deployment(graceful_shutdown_wait_loop_s=0.1)
class BrokenConstructor:
    def __init__(self) -> None:
        raise ValueError("model weights not found at /nowhere")

    def __call__(self) -> str:
        return "unreachable"


@serve.deployment
def fine() -> str:
    return "fine"


def test_constructor_failure_is_deploy_failed_and_isolated(serve_url):
    other = serve.run(fine.bind(), name="fine", route_prefix="/fine")
    try:
        serve.run(BrokenConstructor.bind(), name="broken", route_prefix="/broken")
        raise AssertionError("serve.run must raise when the constructor keeps failing")
    except RuntimeError as exc:
        assert "model weights not found" in str(exc)
    status = serve.status().applications["broken"]
    assert str(status.status) == "DEPLOY_FAILED"
    assert "model weights not found" in status.message
    dep = status.deployments["BrokenConstructor"]
    assert str(dep.status) == "DEPLOY_FAILED"
    # No replica is left retrying forever.
    wait_for_condition(lambda: not serve.status().applications["broken"].deployments["BrokenConstructor"].replica_states, timeout=15)
    assert str(serve.status().applications["fine"].status) == "RUNNING"
    assert other.remote().result() == "fine"
