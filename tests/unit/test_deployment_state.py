"""The deployment state machine, without Ray.

Replica records are real `ReplicaRecord`s except for how they start and die:
their actor is a fake whose calls finish only when a test says so, and node
facts come from a hand-made `NodeSnapshot`. Nothing here starts Ray.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import Future
from typing import Any, Dict, List, Optional

import pytest

from ray_serving_ext._private.application_state import ApplicationStateManager
from ray_serving_ext._private.build import BuiltApplication, DeploymentSpec
from ray_serving_ext._private.cluster import NodeInfo, NodeSnapshot
from ray_serving_ext._private.common import DeploymentID
from ray_serving_ext._private.constants import MAX_PER_REPLICA_RETRY_COUNT
from ray_serving_ext._private.deployment_state import DeploymentState, DeploymentStateManager
from ray_serving_ext._private.replica_record import ReplicaRecord
from ray_serving_ext.exceptions import RayServeException
from ray_serving_ext.schema import DeploymentStatus, DeploymentStatusTrigger, ReplicaState

DEP = DeploymentID("D", "app")


class FakeCall:
    """An ObjectRef stand-in: `future()` is what PendingCall polls."""

    def __init__(self) -> None:
        self.fut: Future = Future()

    def future(self) -> Future:
        return self.fut


class FakeActor:
    """Any method `.remote(...)` returns a FakeCall kept in `calls[method]`."""

    def __init__(self) -> None:
        self.calls: Dict[str, List[FakeCall]] = defaultdict(list)
        self.killed = False

    def __getattr__(self, method: str) -> Any:
        actor = self

        class _Method:
            def remote(self, *args: Any) -> FakeCall:
                call = FakeCall()
                actor.calls[method].append(call)
                return call

        return _Method()

    def pending(self, method: str) -> List[FakeCall]:
        return [c for c in self.calls[method] if not c.fut.done()]


class FakeRecord(ReplicaRecord):
    """A ReplicaRecord whose actor is a FakeActor (creating and killing it asks no Ray)."""

    def start(self, spec: Any, config: Dict[str, Any], ray_actor_options: Dict[str, Any],
              node_id: Optional[str] = None) -> None:
        from ray_serving_ext._private.cluster import PendingCall

        self.started_on = node_id
        self.actor = FakeActor()
        self.pending_ref = PendingCall(self.actor.initialize_and_get_metadata.remote())

    def kill(self) -> None:
        self.actor.killed = True


def node(node_id: str, cpus: float = 4, head: bool = False) -> NodeInfo:
    return NodeInfo(node_id, "10.0.0." + node_id[-1], {"CPU": cpus}, is_head=head)


ONE_NODE = NodeSnapshot((node("n1", head=True),), {"CPU": 4.0}, {"CPU": 1.5})
TWO_NODES = NodeSnapshot((node("n1", head=True), node("n2")), {"CPU": 8.0}, {"CPU": 8.0})


def spec(version: str = "v1", **config: Any) -> DeploymentSpec:
    config.setdefault("num_replicas", 1)
    config.setdefault("ray_actor_options", {"num_cpus": 1})
    return DeploymentSpec("D", b"", b"", config, version, is_function=False)


class Harness:
    """One DeploymentState driven tick by tick; remembers what it broadcast."""

    def __init__(self, nodes: NodeSnapshot = ONE_NODE) -> None:
        self.nodes = nodes
        self.broadcasts: List[Any] = []
        self.state = DeploymentState(DEP, lambda _id, info: self.broadcasts.append(info), FakeRecord)

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.state.update(self.nodes)

    def in_state(self, state: ReplicaState, version: Optional[str] = None) -> List[FakeRecord]:
        return [r for r in self.state.replicas.values()
                if r.state == state and (version is None or self._version(r) == version)]

    def _version(self, rec: ReplicaRecord) -> str:
        return "current" if rec.version_key == self.state.version_key else "old"

    def finish_starts(self, meta: Optional[Dict[str, Any]] = None, error: Optional[BaseException] = None) -> int:
        """Complete every pending constructor call; how many there were."""
        calls = [c for r in self.state.replicas.values() for c in r.actor.pending("initialize_and_get_metadata")]
        for call in calls:
            if error is not None:
                call.fut.set_exception(error)
            else:
                call.fut.set_result(meta or {"pid": 1, "node_id": "n1", "node_ip": "10.0.0.1", "port": 9, "token": "t"})
        return len(calls)

    def finish_drains(self) -> None:
        for rec in self.state.replicas.values():
            for call in rec.actor.pending("prepare_for_shutdown"):
                call.fut.set_result(None)

    def running(self) -> int:
        return len(self.in_state(ReplicaState.RUNNING))


def test_scale_up_then_down() -> None:
    h = Harness()
    h.state.deploy(spec(num_replicas=2))
    h.tick()
    assert len(h.in_state(ReplicaState.STARTING)) == 2
    assert h.state.status == DeploymentStatus.UPDATING
    assert h.state.target_info().replicas == []  # nothing routable until RUNNING

    assert h.finish_starts() == 2
    h.tick()
    assert h.running() == 2
    assert h.state.status == DeploymentStatus.HEALTHY
    assert h.state.trigger == DeploymentStatusTrigger.CONFIG_UPDATE_COMPLETED
    assert len(h.broadcasts[-1].replicas) == 2

    h.state.deploy(spec(num_replicas=1))  # same version: scale down in place
    h.tick()
    stopping = h.in_state(ReplicaState.STOPPING)
    (kept,) = h.in_state(ReplicaState.UPDATING)  # gets the new config in place, keeps serving
    assert len(stopping) == 1 and [r.replica_id for r in h.broadcasts[-1].replicas] == [kept.replica_id]
    kept.actor.pending("reconfigure")[0].fut.set_result({"node_id": "n1"})  # the replica's metadata
    assert stopping[0].actor.pending("prepare_for_shutdown")  # drained before it is killed
    assert not stopping[0].actor.killed
    h.finish_drains()
    h.tick()
    assert stopping[0].actor.killed and len(h.state.replicas) == 1 and h.running() == 1
    assert h.state.status == DeploymentStatus.HEALTHY
    overview = h.state.status_overview()
    assert overview.replica_states == {"RUNNING": 1} and overview.target_num_replicas == 1


def test_rolling_update_keeps_target_running() -> None:
    h = Harness()
    h.state.deploy(spec("v1", num_replicas=2))
    h.tick()
    h.finish_starts()
    h.tick()
    old = h.in_state(ReplicaState.RUNNING)
    assert len(old) == 2

    # Surge by the whole target, replacing it all in one step: old replicas drain only as new ones run.
    h.state.deploy(spec("v2", num_replicas=2, max_surge_percent=100, rolling_update_percentage=1.0))
    for _ in range(2):
        h.tick()
        assert h.running() >= 2  # never below target while new ones start
    assert len(h.in_state(ReplicaState.STARTING, "current")) == 2
    assert all(r.state == ReplicaState.RUNNING for r in old)

    # One new replica comes up: exactly one old one drains.
    first = h.in_state(ReplicaState.STARTING, "current")[0]
    first.actor.pending("initialize_and_get_metadata")[0].fut.set_result({"node_id": "n1"})
    h.tick()
    assert first.state == ReplicaState.RUNNING
    assert len(h.in_state(ReplicaState.RUNNING, "old")) == 1 and h.running() == 2

    h.finish_starts()
    h.tick()
    assert len(h.in_state(ReplicaState.RUNNING, "current")) == 2
    assert h.in_state(ReplicaState.RUNNING, "old") == []
    h.finish_drains()
    h.tick()
    assert all(r.actor.killed for r in old)
    assert set(h.state.replicas) == {r.replica_id for r in h.in_state(ReplicaState.RUNNING, "current")}
    assert h.state.status == DeploymentStatus.HEALTHY


def test_failing_constructor_is_deploy_failed_and_old_version_keeps_serving() -> None:
    h = Harness()
    h.state.deploy(spec("v1"))
    h.tick()
    h.finish_starts()
    h.tick()
    (old,) = h.in_state(ReplicaState.RUNNING)

    h.state.deploy(spec("v2", max_surge_percent=100))  # the old replica serves until a new one runs
    attempts = 0
    for _ in range(4 * MAX_PER_REPLICA_RETRY_COUNT):
        h.tick()
        if h.state.status == DeploymentStatus.DEPLOY_FAILED:
            break
        attempts += h.finish_starts(error=RuntimeError("boom in __init__"))
    assert h.state.status == DeploymentStatus.DEPLOY_FAILED
    assert attempts == MAX_PER_REPLICA_RETRY_COUNT
    assert h.state.trigger == DeploymentStatusTrigger.REPLICA_STARTUP_FAILED
    assert "boom in __init__" in h.state.message
    h.tick(3)
    assert old.state == ReplicaState.RUNNING and not old.actor.killed
    assert h.in_state(ReplicaState.STARTING) == []  # no more attempts
    assert [r.replica_id for r in h.broadcasts[-1].replicas] == [old.replica_id]


def test_unschedulable_replica_message_uses_the_snapshot() -> None:
    h = Harness(ONE_NODE)
    h.state.deploy(spec(ray_actor_options={"num_cpus": 8}))
    h.tick()
    assert "cannot be scheduled" in h.state.message
    assert "{'CPU': 4.0}" in h.state.message  # total resources, from the snapshot
    h.nodes = NodeSnapshot((node("n1", head=True), node("n2", cpus=16)), {"CPU": 20.0}, {"CPU": 20.0})
    h.tick()
    assert h.state.message == ""


def test_max_replicas_per_node_places_on_snapshot_nodes() -> None:
    h = Harness(TWO_NODES)
    h.state.deploy(spec(num_replicas=3, max_replicas_per_node=1))
    h.tick()
    placed = sorted(r.started_on for r in h.state.replicas.values())
    assert placed == ["n1", "n2"]
    assert "max_replicas_per_node=1" in h.state.message


def test_manager_adopts_recovered_replicas_and_kills_all() -> None:
    broadcasts: List[Any] = []
    manager = DeploymentStateManager(lambda _id, info: broadcasts.append(info), FakeRecord)
    manager.deploy(DEP, spec())
    actor = FakeActor()
    assert manager.adopt_recovered(DEP, "abc", actor)
    assert not manager.adopt_recovered(DeploymentID("gone", "app"), "x", FakeActor())
    rec = manager.get(DEP).replicas["abc"]
    assert rec.state == ReplicaState.RECOVERING
    manager.update(ONE_NODE)
    assert len(manager.get(DEP).replicas) == 1  # waits for the replica's report, starts nothing
    actor.pending("get_metadata")[0].fut.set_result(
        {"initialized": True, "version": manager.get(DEP).version_key, "config": manager.get(DEP).config.model_dump()})
    manager.update(ONE_NODE)
    assert rec.state == ReplicaState.RUNNING and len(manager.get(DEP).replicas) == 1
    manager.kill_all_replicas()
    assert actor.killed


def _app(name: str, prefix: Optional[str]) -> BuiltApplication:
    return BuiltApplication(name, prefix, "D", [spec()])


def test_route_prefix_clash_is_refused_before_anything_changes() -> None:
    deployments = DeploymentStateManager(lambda *_: None, FakeRecord)
    routes: List[Dict[str, Any]] = []
    apps = ApplicationStateManager(deployments, routes.append)
    apps.deploy(_app("a", "/x"))
    apps.deploy(_app("b", "/y"))
    with pytest.raises(RayServeException, match='Prefix /x is being used by application "a". Failed to deploy application "c"'):
        apps.deploy(_app("c", "/x"))
    with pytest.raises(RayServeException, match='Prefix /z is used by both application "c" and "d"'):
        apps.deploy_all([_app("c", "/z"), _app("d", "/z")], [None, None], delete_missing=False)
    with pytest.raises(RayServeException, match="/y"):
        apps.deploy_all([_app("a", "/y")], [None], delete_missing=False)  # b keeps /y
    assert set(apps.apps) == {"a", "b"} and routes[-1] == {
        "/x": {"app_name": "a", "deployment": "D"}, "/y": {"app_name": "b", "deployment": "D"}}
    apps.deploy_all([_app("a", "/y"), _app("b", "/x")], [None, None], delete_missing=False)  # a swap is one step
    assert apps.routes()["/y"]["app_name"] == "a"
    apps.deploy_all([_app("c", "/x")], [None], delete_missing=True)  # the others go, so no clash
    assert apps.routes() == {"/x": {"app_name": "c", "deployment": "D"}}
