"""The controller's gang and deployment-actor logic, driven tick by tick without Ray:
replica actors, placement groups and deployment actors are fakes that record what
was asked of them."""

from __future__ import annotations

from typing import Any

import ray.exceptions
from ray import cloudpickle

from ray_serving_ext._private.build import DeploymentSpec
from ray_serving_ext._private.constants import DEPLOYMENT_ACTOR_MAX_START_FAILURES
from ray_serving_ext._private.deployment_actors import DeploymentActors
from ray_serving_ext._private.deployment_state import DeploymentState
from ray_serving_ext._private.gang import GangTracker, round_up_to_gangs
from ray_serving_ext.schema import DeploymentStatus, ReplicaState
from tests.unit.test_deployment_state import DEP, ONE_NODE, FakeActor, FakeRecord


class GangRecord(FakeRecord):
    """A FakeRecord that remembers the scheduling strategy it was started with."""

    def start(self, spec: Any, config: dict[str, Any], ray_actor_options: dict[str, Any],
              node_id: str | None = None, scheduling_strategy: Any = None) -> None:
        super().start(spec, config, ray_actor_options, node_id)
        self.strategy = scheduling_strategy


class FakeGroups:
    """Placement groups as (name, bundles, strategy, selectors) tuples; removal is recorded."""

    def __init__(self) -> None:
        self.created: list[tuple[str, list, str, Any]] = []
        self.removed: list[str] = []

    def create(self, bundles: list, strategy: str, name: str, selectors: Any) -> str:
        self.created.append((name, bundles, strategy, selectors))
        return name

    def remove(self, group: str) -> None:
        self.removed.append(group)

    def live(self) -> list[str]:
        return [c[0] for c in self.created if c[0] not in self.removed]


class Harness:
    def __init__(self) -> None:
        self.groups = FakeGroups()
        self.state = DeploymentState(DEP, lambda _id, info: None, GangRecord)
        self.state._gangs = GangTracker(DEP, self.groups.create, self.groups.remove, lambda pg, index: (pg, index))

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.state.update(ONE_NODE)

    def records(self, state: ReplicaState | None = None) -> list[GangRecord]:
        return [r for r in self.state.replicas.values() if state is None or r.state == state]

    def finish_starts(self, error: BaseException | None = None) -> None:
        for rec in self.records():
            for call in rec.actor.pending("initialize_and_get_metadata"):
                if error is None:
                    call.fut.set_result({"pid": 1, "node_id": "n1"})
                else:
                    call.fut.set_exception(error)


def gang_spec(num_replicas: int = 4, gang_size: int = 2, **config: Any) -> DeploymentSpec:
    config.setdefault("ray_actor_options", {"num_cpus": 0.5})
    config["gang_scheduling_config"] = {"gang_size": gang_size, "gang_placement_strategy": "SPREAD"}
    return DeploymentSpec("D", b"", b"", {"num_replicas": num_replicas, **config}, "v1", is_function=False)


def test_round_up_to_gangs() -> None:
    assert [round_up_to_gangs(n, 2) for n in (0, 1, 2, 3, 4)] == [0, 2, 2, 4, 4]


def test_each_gang_gets_one_group_and_members_its_bundles() -> None:
    h = Harness()
    h.state.deploy(gang_spec(placement_group_bundles=[{"CPU": 0.5}, {"CPU": 2}],
                             placement_group_bundle_label_selector=[{"z": "a"}]))
    h.tick()
    assert len(h.groups.created) == 2 and len(h.records()) == 4
    name, bundles, strategy, selectors = h.groups.created[0]
    assert name.startswith("SERVE_GANG::app::D::") and strategy == "SPREAD"
    assert bundles == [{"CPU": 0.5}, {"CPU": 2}] * 2 and selectors == [{"z": "a"}] * 4
    # Member rank r runs in bundle r * (bundles per replica) of its gang's group.
    by_group: dict[str, list[int]] = {}
    for rec in h.records():
        by_group.setdefault(rec.strategy[0], []).append(rec.strategy[1])
    assert sorted(map(sorted, by_group.values())) == [[0, 2], [0, 2]]
    h.finish_starts()
    h.tick()
    assert len(h.records(ReplicaState.RUNNING)) == 4 and h.state.status == DeploymentStatus.HEALTHY


def test_a_dead_member_takes_its_gang_down_and_a_new_gang_replaces_it() -> None:
    h = Harness()
    h.state.deploy(gang_spec())
    h.tick()
    h.finish_starts()
    h.tick()
    gang = next(iter(h.state._gangs.gangs.values()))
    victim, partner = (h.state.replicas[rid] for rid in gang.member_ids)
    others = [r for r in h.records() if r.replica_id not in gang.member_ids]
    victim.actor.pending("liveness_probe")[0].fut.set_exception(ray.exceptions.RayActorError())
    h.tick()
    assert partner.state == ReplicaState.STOPPING and all(r.state == ReplicaState.RUNNING for r in others)
    h.tick()  # the torn-down members are killed, the group released, a new gang started
    assert gang.placement_group in h.groups.removed and len(h.groups.live()) == 2
    assert victim.replica_id not in h.state.replicas and partner.replica_id not in h.state.replicas
    assert len(h.records(ReplicaState.STARTING)) == 2


def test_new_version_replaces_gangs_only_once_new_gangs_run() -> None:
    h = Harness()
    h.state.deploy(gang_spec())
    h.tick()
    h.finish_starts()
    h.tick()
    old = {rec.replica_id for rec in h.records()}
    h.state.deploy(DeploymentSpec("D", b"", b"", gang_spec().config, "v2", is_function=False))
    h.tick()
    assert len(h.groups.live()) == 4 and len(h.records(ReplicaState.STARTING)) == 4
    assert all(h.state.replicas[rid].state == ReplicaState.RUNNING for rid in old)  # still serving
    h.finish_starts()
    h.tick(2)
    assert all(h.state.replicas[rid].state == ReplicaState.STOPPING for rid in old if rid in h.state.replicas)
    for rid in old & set(h.state.replicas):
        for call in h.state.replicas[rid].actor.pending("prepare_for_shutdown"):
            call.fut.set_result(None)
    h.tick()
    assert not old & set(h.state.replicas) and len(h.groups.live()) == 2 and len(h.records(ReplicaState.RUNNING)) == 4


def test_deleting_stops_every_gang_and_releases_the_groups() -> None:
    h = Harness()
    h.state.deploy(gang_spec())
    h.tick()
    h.finish_starts()
    h.tick()
    h.state.delete()
    h.tick()
    for rec in h.records():
        for call in rec.actor.pending("prepare_for_shutdown"):
            call.fut.set_result(None)
    h.tick()
    assert h.state.is_gone() and not h.groups.live() and not h.state._gangs.gangs


def test_failed_member_start_counts_and_leaves_no_group() -> None:
    h = Harness()
    h.state.deploy(gang_spec(num_replicas=2))
    for _ in range(DEPLOYMENT_ACTOR_MAX_START_FAILURES):
        h.tick()
        h.finish_starts(error=RuntimeError("boom"))
        h.tick(2)
    assert h.state.status == DeploymentStatus.DEPLOY_FAILED and "boom" in h.state.last_error
    assert not h.groups.live() and not h.state.replicas


# ---------------------------------------------------------------------------- deployment actors


class FakeActors:
    """Deployment actors by Ray name: `started` lists each creation; `live` maps names to handles."""

    def __init__(self) -> None:
        self.started: list[tuple[str, Any]] = []
        self.live: dict[str, FakeActor] = {}

    def start(self, cls: Any, name: str, options: dict[str, Any], args: tuple, kwargs: dict[str, Any]) -> FakeActor:
        actor = FakeActor()
        self.started.append((name, (cls, options, args, kwargs)))
        self.live[name] = actor
        return actor

    def kill(self, actor: FakeActor) -> None:
        actor.killed = True

    def release(self, name: str) -> None:
        self.live.pop(name, None)


def ready(actor: FakeActor, error: BaseException | None = None) -> None:
    for call in actor.pending("__ray_ready__"):
        call.fut.set_exception(error) if error else call.fut.set_result(None)


def actor_spec(num_replicas: int = 1, version: str = "a1") -> DeploymentSpec:
    blob = cloudpickle.dumps((dict, (), {}, {"num_cpus": 0.1}))
    config = {"num_replicas": num_replicas, "ray_actor_options": {"num_cpus": 0.1},
              "deployment_actors": [{"name": "counter", "actor_class": "builtins:dict"}]}
    return DeploymentSpec("D", b"", b"", config, "v1", is_function=False,
                          deployment_actors={"counter": (version, blob)})


def actor_harness() -> tuple[Harness, FakeActors]:
    h, fakes = Harness(), FakeActors()
    h.state._actors = DeploymentActors(DEP, fakes.start, fakes.live.get, fakes.kill)
    return h, fakes


def test_replicas_start_only_once_the_actor_is_ready() -> None:
    h, fakes = actor_harness()
    h.state.deploy(actor_spec())
    h.tick(2)
    assert [name for name, _ in fakes.started] == ["SERVE_DEPLOYMENT_ACTOR::app::D::counter"]
    assert fakes.started[0][1][1] == {"num_cpus": 0.1} and not h.records()
    assert "waiting for its deployment actor(s) ['counter']" in h.state.message
    ready(fakes.live["SERVE_DEPLOYMENT_ACTOR::app::D::counter"])
    h.tick()
    assert len(h.records(ReplicaState.STARTING)) == 1


def test_a_dead_actor_is_recreated_once_its_name_is_free() -> None:
    h, fakes = actor_harness()
    h.state.deploy(actor_spec())
    h.tick()
    name = fakes.started[0][0]
    first = fakes.live[name]
    ready(first)
    h.tick()
    entry = h.state._actors.actors["counter"]
    entry.last_check = 0.0  # a health check is due
    h.tick()
    ready(first, ray.exceptions.RayActorError())
    h.tick(3)
    assert len(fakes.started) == 1  # the dead instance still holds the name
    fakes.release(name)
    h.tick()
    assert len(fakes.started) == 2 and fakes.live[name] is not first


def test_actor_that_keeps_failing_to_start_fails_the_deployment() -> None:
    h, fakes = actor_harness()
    h.state.deploy(actor_spec())
    for _ in range(DEPLOYMENT_ACTOR_MAX_START_FAILURES):
        h.tick()
        name = fakes.started[-1][0]
        ready(fakes.live[name], ray.exceptions.RayActorError())
        h.tick()
        fakes.release(name)
    h.tick()
    assert h.state.status == DeploymentStatus.DEPLOY_FAILED and "counter" in h.state.last_error
    assert not h.records()


def test_actor_is_killed_with_the_deployment_and_replaced_on_a_new_declaration() -> None:
    h, fakes = actor_harness()
    h.state.deploy(actor_spec())
    h.tick()
    first = fakes.live[fakes.started[0][0]]
    ready(first)
    h.state.deploy(actor_spec(version="a2"))
    assert first.killed
    h.tick()
    assert len(fakes.started) == 1  # waits for the old one's name
    fakes.release(fakes.started[0][0])
    h.tick()
    second = fakes.live[fakes.started[1][0]]
    ready(second)
    h.tick()
    h.finish_starts()
    h.tick()
    assert h.records(ReplicaState.RUNNING)
    h.state.delete()
    h.tick(2)
    assert h.state.replicas and not second.killed  # the replica drains first
    for rec in h.records():
        for call in rec.actor.pending("prepare_for_shutdown"):
            call.fut.set_result(None)
    h.tick()
    assert second.killed and h.state.is_gone()

