"""Replica ranks seen by user code over HTTP: dense 0..N-1, compacted after a scale-down,
freed ranks reused by new replicas and by the replacement of a killed one."""

from __future__ import annotations

from typing import Dict

import ray
import requests

import ray_serving_ext as serve
from ray_serving_ext._private.constants import SERVE_NAMESPACE
from tests.utils import wait_for_condition

APP = "ranks"


@serve.deployment(num_replicas=4, max_ongoing_requests=50, graceful_shutdown_wait_loop_s=0.1,
                  graceful_shutdown_timeout_s=2, health_check_period_s=1,
                  ray_actor_options={"num_cpus": 0.1})
class Ranked:
    def __init__(self) -> None:
        ctx = serve.get_replica_context()
        self.rank_in_init = ctx.rank.rank  # ranks are given before the constructor runs
        self.heard = None

    def reconfigure(self, config, rank) -> None:
        self.heard = rank.rank  # the rank the user hook was last called with

    async def __call__(self, request=None) -> Dict:
        ctx = serve.get_replica_context()
        return {"id": ctx.replica_id.unique_id, "rank": ctx.rank.rank, "node_rank": ctx.rank.node_rank,
                "local_rank": ctx.rank.local_rank, "world_size": ctx.world_size,
                "rank_in_init": self.rank_in_init, "heard": self.heard}


def _running_ids() -> set:
    details = serve.api._get_client().get_replica_details(APP)
    return {r["replica_id"] for reps in details.values() for r in reps if r["state"] == "RUNNING"}


def _ranks_over_http(url: str, n: int) -> Dict[str, Dict]:
    """Each running replica's report, once one round of requests has reached exactly the
    n running ones, every report agrees with itself (context and user hook on the same
    rank) and the ranks are 0..n-1: the controller renumbers survivors after a scale-down
    asynchronously, so a round may still see the old numbers."""
    seen: Dict[str, Dict] = {}

    def reached() -> bool:
        running = _running_ids()
        seen.clear()  # only this round's reports: an earlier one may predate a renumbering
        with requests.Session() as s:
            for _ in range(40):
                body = s.get(url, timeout=10).json()
                seen[body["id"]] = body
        for gone in set(seen) - running:
            del seen[gone]
        return (len(running) == n and set(seen) == running
                and all(b["heard"] == b["rank"] for b in seen.values())
                and sorted(b["rank"] for b in seen.values()) == list(range(n)))

    wait_for_condition(reached, timeout=60, interval=0.3, message=f"{n} replicas answering with their ranks")
    return dict(seen)


def _assert_dense(reports: Dict[str, Dict], n: int) -> None:
    assert sorted(b["rank"] for b in reports.values()) == list(range(n)), reports
    # One node: one node rank, and local ranks are the global ones' set.
    assert {b["node_rank"] for b in reports.values()} == {0}, reports
    assert sorted(b["local_rank"] for b in reports.values()) == list(range(n)), reports
    assert {b["world_size"] for b in reports.values()} == {n}, reports


def _deploy(n: int) -> None:
    serve.run(Ranked.options(num_replicas=n).bind(), name=APP, route_prefix="/ranks")


def test_ranks_stay_dense_through_scaling(serve_url):
    url = f"{serve_url}/ranks"
    _deploy(4)
    first = _ranks_over_http(url, 4)
    _assert_dense(first, 4)
    assert all(b["rank_in_init"] == b["rank"] for b in first.values())

    _deploy(2)  # same version: two replicas stop, the survivors are renumbered to 0 and 1
    after_down = _ranks_over_http(url, 2)
    _assert_dense(after_down, 2)
    assert set(after_down) <= set(first)

    _deploy(4)  # the new replicas take the freed ranks 2 and 3; the survivors keep theirs
    after_up = _ranks_over_http(url, 4)
    _assert_dense(after_up, 4)
    for rid, body in after_down.items():
        assert after_up[rid]["rank"] == body["rank"]
    new = {rid: b for rid, b in after_up.items() if rid not in after_down}
    assert sorted(b["rank_in_init"] for b in new.values()) == [2, 3]


def test_replacement_of_killed_replica_takes_its_rank(serve_url):
    url = f"{serve_url}/ranks"
    _deploy(3)
    before = _ranks_over_http(url, 3)
    _assert_dense(before, 3)
    victim_id, victim = next((rid, b) for rid, b in before.items() if b["rank"] == 1)
    actor = ray.get_actor(f"SERVE_REPLICA::{APP}#Ranked#{victim_id}", namespace=SERVE_NAMESPACE)
    ray.kill(actor, no_restart=True)

    wait_for_condition(lambda: victim_id not in _running_ids() and len(_running_ids()) == 3, timeout=60)
    after = _ranks_over_http(url, 3)
    _assert_dense(after, 3)
    (replacement,) = [b for rid, b in after.items() if rid not in before]
    assert replacement["rank"] == replacement["rank_in_init"] == victim["rank"]
    for rid, body in after.items():
        if rid in before:
            assert body["rank"] == before[rid]["rank"], "survivors keep their ranks"
