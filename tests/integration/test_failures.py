"""Failures survived: replicas, the proxy and the controller killed, under load."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field

import ray
import requests

import ray_serving_ext as serve
from ray_serving_ext._private.constants import CONTROLLER_NAME, PROXY_NAME_PREFIX, SERVE_NAMESPACE
from tests.utils import wait_for_condition

RETRY_STATUSES = {502, 503, 504}


@serve.deployment(num_replicas=2, max_ongoing_requests=100, graceful_shutdown_wait_loop_s=0.2,
                  health_check_period_s=1)
class Pid:
    async def __call__(self, request=None) -> str:
        return str(os.getpid())


def _replica_pids(app: str) -> dict:
    client = serve.api._get_client()
    details = client.get_replica_details(app)
    return {r["replica_id"]: r["pid"] for reps in details.values() for r in reps if r["state"] == "RUNNING"}


def _replica_actor(app: str):
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == SERVE_NAMESPACE and a["name"].startswith(f"SERVE_REPLICA::{app}#")]
    return ray.get_actor(names[0], namespace=SERVE_NAMESPACE)


def _proxy_actor():
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == SERVE_NAMESPACE and a["name"].startswith(PROXY_NAME_PREFIX)]
    return ray.get_actor(names[0], namespace=SERVE_NAMESPACE)


def get_with_retries(session: requests.Session, url: str, budget_s: float = 60.0) -> tuple:
    """GET as the production guide advises: retry 502/503/504 and connection errors with
    backoff, for up to `budget_s` (a proxy that Ray restarts on a busy 2-core machine, where
    its new worker runs at Ray's niceness 15, has taken 16 s to listen again)."""
    backoff = 0.1
    deadline = time.monotonic() + budget_s
    for attempt in range(200):
        try:
            resp = session.get(url, timeout=10)
            if resp.status_code not in RETRY_STATUSES:
                return resp.status_code, attempt
        except requests.RequestException:
            pass
        if time.monotonic() + backoff > deadline:
            return -1, attempt
        time.sleep(backoff)
        backoff = min(backoff * 2, 1.0)
    return -1, 200


@dataclass
class LoadStats:
    ok: int = 0
    failed: int = 0
    retried_requests: int = 0
    retries: int = 0
    statuses: dict = field(default_factory=dict)
    longest_s: float = 0.0  # the longest a request took, its retries included
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, status: int, retries: int, took_s: float) -> None:
        with self.lock:
            self.longest_s = max(self.longest_s, took_s)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 200:
                self.ok += 1
            else:
                self.failed += 1
            if retries:
                self.retried_requests += 1
                self.retries += retries


def _client_loop(url: str, stop: threading.Event, stats: LoadStats, deadline: float) -> None:
    with requests.Session() as session:
        while not stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            status, retries = get_with_retries(session, url)
            stats.record(status, retries, time.monotonic() - started)


def test_replica_killed_is_replaced(serve_url):
    serve.run(Pid.bind(), name="pid", route_prefix="/pid")
    before = _replica_pids("pid")
    assert len(before) == 2
    ray.kill(_replica_actor("pid"), no_restart=True)
    wait_for_condition(lambda: len(set(_replica_pids("pid").values()) - set(before.values())) == 1, timeout=30)
    wait_for_condition(lambda: str(serve.status().applications["pid"].status) == "RUNNING", timeout=30)
    with requests.Session() as session:
        for _ in range(10):
            assert get_with_retries(session, f"{serve_url}/pid")[0] == 200


def test_replica_sigkill_is_replaced(serve_url):
    serve.run(Pid.bind(), name="pid", route_prefix="/pid")
    before = _replica_pids("pid")
    victim = next(iter(before.values()))
    os.kill(victim, signal.SIGKILL)
    wait_for_condition(lambda: victim not in _replica_pids("pid").values() and len(_replica_pids("pid")) == 2,
                       timeout=30)


def test_proxy_killed_restarts_and_serves(serve_url):
    serve.run(Pid.bind(), name="pid", route_prefix="/pid")
    assert requests.get(f"{serve_url}/pid", timeout=10).status_code == 200
    ray.kill(_proxy_actor(), no_restart=False)
    wait_for_condition(lambda: requests.get(f"{serve_url}/pid", timeout=2).status_code == 200, timeout=60)


def test_controller_crash_keeps_replicas_and_routing(serve_url):
    handle = serve.run(Pid.bind(), name="pid", route_prefix="/pid")
    before = _replica_pids("pid")
    controller = ray.get_actor(CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    ray.kill(controller, no_restart=False)
    # While it restarts, routing goes on with what handles and proxies know.
    for _ in range(5):
        assert int(handle.remote().result(timeout_s=10)) in before.values()
        assert requests.get(f"{serve_url}/pid", timeout=10).status_code == 200
    wait_for_condition(lambda: str(serve.status().applications["pid"].status) == "RUNNING", timeout=60)
    after = _replica_pids("pid")
    assert after == before, "replicas must be adopted, not restarted"


def test_no_request_lost_under_load_while_killing_components(serve_url):
    serve.run(Pid.bind(), name="pid", route_prefix="/pid")
    url = f"{serve_url}/pid"
    stats = LoadStats()
    stop = threading.Event()
    deadline = time.monotonic() + 20
    threads = [threading.Thread(target=_client_loop, args=(url, stop, stats, deadline), daemon=True)
               for _ in range(20)]
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        ray.kill(_replica_actor("pid"), no_restart=True)
        time.sleep(4)
        ray.kill(_proxy_actor(), no_restart=False)
        time.sleep(4)
        ray.kill(ray.get_actor(CONTROLLER_NAME, namespace=SERVE_NAMESPACE), no_restart=False)
    finally:
        for t in threads:
            t.join(timeout=90)  # the clients stop at `deadline`, after at most one retry budget
        stop.set()
    print(f"\nload test: {stats.ok} ok, {stats.failed} failed, {stats.retried_requests} requests needed "
          f"a retry ({stats.retries} retries in all, the longest request took {stats.longest_s:.1f} s); "
          f"statuses {stats.statuses}")
    assert stats.ok > 100
    assert stats.failed == 0, stats.statuses
    wait_for_condition(lambda: len(_replica_pids("pid")) == 2, timeout=30)
