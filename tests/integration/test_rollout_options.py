"""Rollout options on a real cluster: max_surge_percent bounds the extra replicas and
keeps the target running, rolling_update_percentage bounds the replicas replaced at once,
and max_constructor_retry_count bounds constructor attempts before DEPLOY_FAILED."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Dict, List

import pytest
import ray
import requests

import ray_serving_ext as serve
from ray_serving_ext._private.constants import CONTROLLER_NAME, SERVE_NAMESPACE
from tests.utils import wait_for_condition

APP = "rollout"


@serve.deployment(num_replicas=4, max_ongoing_requests=50, graceful_shutdown_wait_loop_s=0.1,
                  graceful_shutdown_timeout_s=2, ray_actor_options={"num_cpus": 0.1})
class Versioned:
    def __init__(self, version: str, startup_s: float = 0.0) -> None:
        time.sleep(startup_s)  # slow enough for the observer to see every step
        self.version = version

    async def __call__(self, request=None) -> str:
        return self.version


class Observer:
    """Samples the controller's replica states while a rollout runs."""

    def __init__(self) -> None:
        self.samples: List[List[Dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._controller = ray.get_actor(CONTROLLER_NAME, namespace=SERVE_NAMESPACE)

    def _run(self) -> None:
        while not self._stop.is_set():
            details = ray.get(self._controller.get_replica_details.remote(APP), timeout=10)
            self.samples.append([r for reps in details.values() for r in reps])
            time.sleep(0.05)

    def __enter__(self) -> "Observer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def counts(self, predicate) -> List[int]:
        return [sum(1 for r in sample if predicate(r)) for sample in self.samples]


def _live(r: Dict) -> bool:
    return r["state"] != "STOPPING"


def _versions_served(url: str, n: int = 20) -> set:
    with requests.Session() as s:
        return {s.get(url, timeout=10).text for _ in range(n)}


def _roll(url: str, **options) -> Observer:
    """v1 on 4 replicas, then v2 (1 s constructors) with `options`, under observation."""
    serve.run(Versioned.bind("v1"), name=APP, route_prefix="/rollout")
    old_versions = {r["version"] for r in _details()}
    with Observer() as obs:
        serve.run(Versioned.options(**options).bind("v2", 1.0), name=APP, route_prefix="/rollout")
        wait_for_condition(lambda: all(r["version"] not in old_versions for r in _details()), timeout=60)
    assert _versions_served(url) == {"v2"}
    obs.old_versions = old_versions  # type: ignore[attr-defined]
    return obs


def _details() -> List[Dict]:
    details = serve.api._get_client().get_replica_details(APP)
    return [r for reps in details.values() for r in reps]


def test_surge_bounds_extra_replicas_and_keeps_target_running(serve_url):
    # target 4, surge 50% -> at most 2 extra; 25% per step -> 1 old replica stopped at a time.
    obs = _roll(f"{serve_url}/rollout", max_surge_percent=50, rolling_update_percentage=0.25)
    live = obs.counts(_live)
    running = obs.counts(lambda r: r["state"] == "RUNNING")
    print(f"\nsurge rollout: {len(live)} samples, live max {max(live)}, running min {min(running)}")
    assert max(live) <= 4 + 2, live
    assert max(live) > 4, "the surge was used"
    assert min(running) >= 4, "capacity never drops below the target"


def test_without_surge_at_most_the_rollout_batch_is_replaced_at_once(serve_url):
    # target 4, no surge, 50% per step -> never more than 4 live, never fewer than 2 running.
    obs = _roll(f"{serve_url}/rollout", rolling_update_percentage=0.5)
    live = obs.counts(_live)
    running = obs.counts(lambda r: r["state"] == "RUNNING")
    new_starting = obs.counts(lambda r: r["state"] == "STARTING" and r["version"] not in obs.old_versions)
    print(f"\nstop-first rollout: {len(live)} samples, live max {max(live)}, running min {min(running)}")
    assert max(live) <= 4, live
    assert min(running) >= 2, running
    assert max(new_starting) <= 2, new_starting
    assert min(running) < 4, "old replicas stopped before their replacements ran"


@serve.deployment(num_replicas=1, graceful_shutdown_wait_loop_s=0.1, ray_actor_options={"num_cpus": 0.1})
class AlwaysFails:
    def __init__(self, attempts_file: str) -> None:
        with open(attempts_file, "a") as f:
            f.write("attempt\n")
        raise RuntimeError("constructor fails on purpose")

    def __call__(self, request=None) -> str:
        return "never"


def test_max_constructor_retry_count_bounds_attempts(serve_url, tmp_path: Path):
    retries = 2
    attempts = tmp_path / "attempts.txt"
    app = AlwaysFails.options(max_constructor_retry_count=retries).bind(str(attempts))
    with pytest.raises(RuntimeError, match="constructor fails on purpose"):
        serve.run(app, name=APP, route_prefix="/rollout")
    status = serve.status().applications[APP]
    assert str(status.status) == "DEPLOY_FAILED"
    assert str(status.deployments["AlwaysFails"].status) == "DEPLOY_FAILED"
    time.sleep(1.0)  # no attempt after DEPLOY_FAILED (the default, 3 for one replica, would make another)
    assert attempts.read_text().count("attempt") == retries
