"""Gang scheduling and bundle label selectors on a real cluster: one placement
group per gang (seen in Ray's placement group table), whole gangs restarted when
a member dies, groups released with the application."""

from __future__ import annotations

from typing import Any

import pytest
import ray
import requests

import ray_serving_ext as serve
from ray_serving_ext._private.build import build_app
from ray_serving_ext._private.common import DeploymentID, replica_actor_name
from ray_serving_ext.config import GangPlacementStrategy, GangSchedulingConfig
from tests.utils import wait_for_condition

TIMEOUT = 30


@serve.deployment(
    num_replicas=4,
    gang_scheduling_config=GangSchedulingConfig(gang_size=2, gang_placement_strategy=GangPlacementStrategy.SPREAD),
    ray_actor_options={"num_cpus": 0.25},
    graceful_shutdown_wait_loop_s=0.1,
    graceful_shutdown_timeout_s=1,
)
class Member:
    def __call__(self, request: Any = None) -> dict[str, str]:
        group = ray.util.get_current_placement_group()
        return {"replica": serve.get_replica_context().replica_id.unique_id, "group": group.id.hex() if group else ""}


def _gang_groups(app: str, deployment: str, state: str = "CREATED") -> dict[str, dict[str, Any]]:
    """Our gang placement groups of `app`/`deployment` in Ray's table, by group id."""
    prefix = f"SERVE_GANG::{app}::{deployment}::"
    return {pg_id: info for pg_id, info in ray.util.placement_group_table().items()
            if info["name"].startswith(prefix) and info["state"] == state}


def _members(url: str, want: int) -> dict[str, str]:
    """replica id -> placement group id, over HTTP until `want` replicas have answered."""
    seen: dict[str, str] = {}

    def all_answered() -> bool:
        for _ in range(20):
            body = requests.get(url, timeout=TIMEOUT).json()
            seen[body["replica"]] = body["group"]
        return len(seen) >= want

    wait_for_condition(all_answered, timeout=TIMEOUT, message=f"{want} replicas answering at {url}")
    return seen


def _by_group(members: dict[str, str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for replica, group in members.items():
        groups.setdefault(group, []).append(replica)
    return groups


def test_each_gang_has_its_own_placement_group_and_goes_with_the_app(serve_url):
    serve.run(Member.bind(), name="gang", route_prefix="/gang")
    groups = _gang_groups("gang", "Member")
    assert len(groups) == 2
    for info in groups.values():
        assert info["strategy"] == "SPREAD"
        assert info["bundles"] == {0: {"CPU": 0.25}, 1: {"CPU": 0.25}}
    members = _members(f"{serve_url}/gang", 4)
    assert len(members) == 4
    by_group = _by_group(members)
    assert {g for g in by_group} == set(groups) and all(len(rs) == 2 for rs in by_group.values())

    serve.delete("gang")
    wait_for_condition(lambda: not _gang_groups("gang", "Member"), timeout=TIMEOUT)
    assert set(_gang_groups("gang", "Member", state="REMOVED")) >= set(groups)


def test_a_dead_member_restarts_its_whole_gang(serve_url):
    serve.run(Member.bind(), name="gangfail", route_prefix="/gangfail")
    members = _members(f"{serve_url}/gangfail", 4)
    by_group = _by_group(members)
    doomed_group, doomed = next(iter(by_group.items()))
    survivors = [r for g, rs in by_group.items() if g != doomed_group for r in rs]
    victim = ray.get_actor(replica_actor_name(DeploymentID("Member", "gangfail"), doomed[0]), namespace="serve")
    ray.kill(victim, no_restart=True)

    def replaced() -> bool:
        groups = _gang_groups("gangfail", "Member")
        dep = serve.status().applications["gangfail"].deployments["Member"]
        running = {str(k): v for k, v in dep.replica_states.items()}
        return len(groups) == 2 and doomed_group not in groups and running == {"RUNNING": 4}

    wait_for_condition(replaced, timeout=TIMEOUT, message="the dead member's gang replaced")
    after = _members(f"{serve_url}/gangfail", 4)
    # Both members of the dead replica's gang were replaced; the other gang was left alone.
    assert not set(doomed) & set(after)
    assert set(survivors) <= set(after)
    assert members[survivors[0]] in set(after.values()) and doomed_group not in set(after.values())


@serve.deployment(
    num_replicas=2,
    gang_scheduling_config={"gang_size": 2},
    placement_group_bundles=[{"CPU": 0.25}, {"CPU": 0.1}],
    ray_actor_options={"num_cpus": 0.25},
    graceful_shutdown_wait_loop_s=0.1,
)
class Labelled:
    def __call__(self) -> str:
        return serve.get_replica_context().replica_id.unique_id


def test_gang_of_bundled_replicas_with_label_selector(serve_url):
    node_id = ray.get_runtime_context().get_node_id()
    app = Labelled.options(placement_group_bundle_label_selector=[{"ray.io/node-id": node_id}]).bind()
    handle = serve.run(app, name="labelled", route_prefix=None)
    assert handle.remote().result(timeout_s=TIMEOUT)
    (info,) = _gang_groups("labelled", "Labelled").values()
    # Each replica's bundles, once per member; the replica runs in its first bundle.
    assert info["strategy"] == "PACK"
    assert info["bundles"] == {0: {"CPU": 0.25}, 1: {"CPU": 0.1}, 2: {"CPU": 0.25}, 3: {"CPU": 0.1}}
    assert set(info["bundles_to_node_id"].values()) == {node_id}


@serve.deployment(placement_group_bundles=[{"CPU": 0.25}], ray_actor_options={"num_cpus": 0.25},
                  graceful_shutdown_wait_loop_s=0.1)
def selected() -> str:
    return "placed"


def _replica_groups(name_prefix: str = "") -> list[dict[str, Any]]:
    return [info for info in ray.util.placement_group_table().values()
            if info["state"] in ("CREATED", "PENDING") and info["bundles"] == {0: {"CPU": 0.25}}
            and info["name"].startswith(name_prefix)]


def test_bundle_label_selector_places_the_replica_group(serve_url):
    node_id = ray.get_runtime_context().get_node_id()
    app = selected.options(placement_group_bundle_label_selector=[{"ray.io/node-id": node_id}]).bind()
    handle = serve.run(app, name="selected", route_prefix=None)
    assert handle.remote().result(timeout_s=TIMEOUT) == "placed"


def test_bundle_label_selector_no_node_matches_stays_pending(serve_url):
    before = {info["placement_group_id"] for info in ray.util.placement_group_table().values()}
    app = selected.options(placement_group_bundle_label_selector=[{"zone": "nowhere"}]).bind()
    serve.api._get_client().deploy_application(build_app(app, "unmatched", None))

    def pending_group() -> bool:
        new = [info for info in _replica_groups() if info["placement_group_id"] not in before]
        states = serve.status().applications["unmatched"].deployments["selected"].replica_states
        return len(new) == 1 and new[0]["state"] == "PENDING" and {str(k): v for k, v in states.items()} == {
            "STARTING": 1}

    wait_for_condition(pending_group, timeout=TIMEOUT)


def test_invalid_gang_options_are_rejected_at_decoration():
    with pytest.raises(ValueError, match="multiple of gang_size"):
        serve.deployment(num_replicas=3, gang_scheduling_config={"gang_size": 2})(lambda: None)
    with pytest.raises(ValueError, match="must also be provided"):
        serve.deployment(placement_group_bundle_label_selector=[{"a": "b"}])(lambda: None)
