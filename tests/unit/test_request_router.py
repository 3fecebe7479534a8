"""Custom request routers without Ray: the RequestRouter routing loop, the mixins, and the
Router sending what a custom router chose (limits, backpressure, retries)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import pytest

from ray_serving_ext._private.common import (
    DeploymentID,
    DeploymentTargetInfo,
    ReplicaInfo,
    RequestMetadata,
)
from ray_serving_ext._private.request_router import PowerOfTwoChoicesRequestRouter
from ray_serving_ext.config import RequestRouterConfig
from ray_serving_ext.exceptions import BackPressureError
from ray_serving_ext.request_router import (
    FIFOMixin,
    LocalityMixin,
    MultiplexMixin,
    PendingRequest,
    RequestRouter,
    RunningReplica,
)
from tests.unit.test_router import HeldReplica, _request, _run, _settle

DEP = DeploymentID("d", "app")


class Ranked(RequestRouter):
    """Returns the ranks the test sets (replica ids), and counts its rounds."""

    ranks: ClassVar[list[list[str]]] = []

    def initialize_state(self, **kwargs: Any) -> None:
        self.rounds = 0
        self.kwargs = kwargs

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        self.rounds += 1
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        return [[by_id[rid] for rid in rank if rid in by_id] for rank in self.ranks]


class FIFORanked(FIFOMixin, Ranked):
    pass


class Harness:
    """A RequestRouter fed fake replicas; slots are counted here as the Router counts them."""

    def __init__(self, cls: type, replicas: dict[str, dict[str, Any]], **kwargs: Any) -> None:
        self.ongoing: dict[str, int] = {rid: 0 for rid in replicas}
        self.router = cls(deployment_id=DEP, **kwargs)
        self.router.initialize_state()
        self.router._on_assigned = lambda r: self.ongoing.__setitem__(r._unique_id, self.ongoing[r._unique_id] + 1)
        self.router.update_replicas([
            RunningReplica(ReplicaInfo(rid, rid, None, **info), DEP, queue_len_fn=self.ongoing.__getitem__)
            for rid, info in replicas.items()])

    def pending(self, name: str, model_id: str = "") -> PendingRequest:
        meta = RequestMetadata(request_id=name, app_name="app", multiplexed_model_id=model_id)
        return PendingRequest(args=[name], kwargs={}, metadata=meta)

    async def choose(self, pr: PendingRequest) -> str:
        replica = await asyncio.wait_for(self.router._choose_replica_for_request(pr), 5)
        return replica.replica_id.unique_id

    def free(self, rid: str) -> None:
        self.ongoing[rid] -= 1
        self.router._on_slot_freed()


def test_the_first_rank_with_room_wins_and_the_least_loaded_in_it():
    async def main() -> None:
        h = Harness(Ranked, {"a": {"max_ongoing_requests": 1}, "b": {}, "c": {}})
        Ranked.ranks = [["a"], ["b", "c"]]
        assert await h.choose(h.pending("1")) == "a"
        assert await h.choose(h.pending("2")) in ("b", "c")  # a is full: the next rank
        second = await h.choose(h.pending("3"))
        assert {second, "a"} != {"a"} and h.ongoing["b"] == h.ongoing["c"] == 1  # least loaded of b, c

    asyncio.run(main())


def test_no_room_backs_off_and_a_freed_slot_ends_the_wait():
    async def main() -> None:
        h = Harness(Ranked, {"a": {"max_ongoing_requests": 1}}, initial_backoff_s=5.0, max_backoff_s=5.0)
        Ranked.ranks = [["a"]]
        await h.choose(h.pending("1"))
        waiting = asyncio.ensure_future(h.choose(h.pending("2")))
        await _settle(0.1)
        rounds = h.router.rounds
        await _settle(0.2)
        assert not waiting.done() and h.router.rounds == rounds  # sleeping its 5 s backoff, not spinning
        started = time.monotonic()
        h.free("a")
        assert await waiting == "a" and time.monotonic() - started < 1.0
        assert h.ongoing["a"] == 1

    asyncio.run(main())


def test_backoff_grows_by_the_multiplier_up_to_the_cap():
    router = Ranked(deployment_id=DEP, initial_backoff_s=0.1, backoff_multiplier=3, max_backoff_s=1.0)
    assert [router._compute_backoff_s(i) for i in range(4)] == pytest.approx([0.1, 0.3, 0.9, 1.0])
    assert router._compute_backoff_s(10_000) == 1.0
    router.update_backoff_params(0.2, None, None)
    assert router._compute_backoff_s(1) == pytest.approx(0.6)


@pytest.mark.parametrize("cls, expected", [(Ranked, ["new", "old"]), (FIFORanked, ["old", "new"])])
def test_fifo_mixin_gives_a_freed_replica_to_the_oldest_request(cls: type, expected: list[str]):
    async def main() -> None:
        h = Harness(cls, {"a": {"max_ongoing_requests": 1}}, initial_backoff_s=5.0, max_backoff_s=5.0)
        Ranked.ranks = [["a"]]
        await h.choose(h.pending("first"))
        old = asyncio.ensure_future(h.choose(h.pending("old")))
        await _settle(0.05)
        # A new request's routing task finds the freed slot first.
        new = asyncio.ensure_future(h.choose(h.pending("new")))
        h.ongoing["a"] -= 1
        done, _ = await asyncio.wait([old, new], timeout=1, return_when=asyncio.FIRST_COMPLETED)
        winner = "old" if old in done else "new"
        assert [winner, "new" if winner == "old" else "old"] == expected
        for task in (old, new):
            task.cancel()

    asyncio.run(main())


def test_an_exception_in_choose_replicas_fails_that_request_only():
    class Flaky(Ranked):
        async def choose_replicas(self, candidate_replicas, pending_request=None):
            if pending_request is not None and pending_request.metadata.request_id == "bad":
                raise RuntimeError("router bug")
            return await super().choose_replicas(candidate_replicas, pending_request)

    async def main() -> None:
        h = Harness(Flaky, {"a": {}})
        Ranked.ranks = [["a"]]
        with pytest.raises(RuntimeError, match="router bug"):
            await h.choose(h.pending("bad"))
        assert await h.choose(h.pending("good")) == "a"

    asyncio.run(main())


def test_a_cancelled_request_leaves_the_queue_and_takes_no_slot():
    async def main() -> None:
        h = Harness(Ranked, {"a": {"max_ongoing_requests": 1}}, initial_backoff_s=0.01, max_backoff_s=0.01)
        Ranked.ranks = [["a"]]
        await h.choose(h.pending("1"))
        gone = asyncio.ensure_future(h.choose(h.pending("gone")))
        await _settle(0.05)
        gone.cancel()
        await _settle(0.05)
        h.free("a")
        assert await h.choose(h.pending("next")) == "a" and h.ongoing["a"] == 1
        assert h.router.num_pending_requests == 0

    asyncio.run(main())


def test_a_dead_replica_is_not_chosen_until_replicas_are_updated():
    async def main() -> None:
        h = Harness(Ranked, {"a": {}, "b": {}})
        Ranked.ranks = [["a", "b"]]
        h.router.on_replica_actor_died(h.router._replicas_list[0].replica_id)
        alive = h.router._replicas_list[0].replica_id.unique_id
        assert {await h.choose(h.pending(str(i))) for i in range(3)} == {alive}

    asyncio.run(main())


def test_locality_mixin_tries_node_then_zone_then_all():
    class Local(LocalityMixin, Ranked):
        pass

    async def main() -> None:
        h = Harness(Local, {"near": {"node_id": "n1"}, "zone": {"node_id": "n2", "availability_zone": "z"},
                            "far": {"node_id": "n3"}},
                    self_node_id="n1", self_availability_zone="z", prefer_local_node_routing=True,
                    prefer_local_az_routing=True)
        pr = h.pending("x")
        ids = [{r.unique_id for r in h.router.apply_locality_routing(pr)} for _ in range(3)]
        assert ids == [{"near"}, {"zone"}, {"near", "zone", "far"}]
        assert pr.routing_context.should_backoff
        ranks = h.router.rank_replicas_via_locality(h.router._replicas_list)
        assert [[r.replica_id.unique_id for r in rank] for rank in ranks] == [["near"], ["zone"], ["far"]]

    asyncio.run(main())


def test_multiplex_mixin_prefers_holders_then_fewest_models():
    class Mux(MultiplexMixin, Ranked):
        pass

    async def main() -> None:
        h = Harness(Mux, {"holder": {"model_ids": ("m", "x")}, "empty": {}, "other": {"model_ids": ("y",)}})
        assert {r.unique_id for r in h.router.apply_multiplex_routing(h.pending("1", "m"))} == {"holder"}
        # No replica holds "new": those with the fewest models.
        assert {r.unique_id for r in h.router.apply_multiplex_routing(h.pending("2", "new"))} == {"empty"}
        ranks = h.router.rank_replicas_via_multiplex(h.router._replicas_list, "m")
        assert [[r.replica_id.unique_id for r in rank] for rank in ranks] == [["holder"], ["empty"], ["other"]]

    asyncio.run(main())


def test_power_of_two_router_sends_a_model_to_its_holder():
    async def main() -> None:
        h = Harness(PowerOfTwoChoicesRequestRouter, {"holder": {"model_ids": ("m",)}, "b": {}, "c": {}})
        assert [await h.choose(h.pending(str(i), "m")) for i in range(3)] == ["holder"] * 3
        assert {await h.choose(h.pending(f"p{i}")) for i in range(12)} >= {"b", "c"}

    asyncio.run(main())


# ---- the Router with a custom request router ----------------------------------------------
class PinToLast(RequestRouter):
    """Every request to the replica with the greatest id."""

    def initialize_state(self, **kwargs: Any) -> None:
        self.routed: list[str] = []
        self.completed: list[str] = []

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        return [[max(candidate_replicas, key=lambda r: r.replica_id.unique_id)]]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: Any, result: Any) -> None:
        self.routed.append(replica_id.unique_id)

    def on_request_completed(self, replica_id: Any, internal_request_id: str) -> None:
        self.completed.append(replica_id.unique_id)


def _with_custom(router: Any, replicas: dict[str, HeldReplica], max_ongoing: int = 10,
                 max_queued: int = -1, **infos: Any) -> None:
    router.update(DeploymentTargetInfo(
        replicas=[r.info(**infos.get(rid, {})) for rid, r in replicas.items()],
        max_ongoing_requests=max_ongoing, max_queued_requests=max_queued,
        request_router_config=RequestRouterConfig(request_router_class=PinToLast, initial_backoff_s=0.01),
    ))


def test_router_sends_where_the_custom_router_chose_and_reports_back():
    async def test(router: Any, replicas: dict[str, HeldReplica]) -> None:
        _with_custom(router, replicas)
        calls = [await router.assign_request(_request(i)) for i in range(3)]
        assert {c.replica_id for c in calls} == {"b"} and router.num_ongoing == 3
        custom = router._custom.router
        assert custom.routed == ["b"] * 3
        await _settle()  # the requests reach the replica
        replicas["b"].release_all()
        assert [await asyncio.wait_for(c.result(), 5) for c in calls] == [0, 1, 2]
        await _settle()
        assert custom.completed == ["b"] * 3 and router.num_ongoing == 0

    _run(test, ["a", "b"])


def test_router_keeps_max_ongoing_and_backpressure_with_a_custom_router():
    async def test(router: Any, replicas: dict[str, HeldReplica]) -> None:
        _with_custom(router, replicas, max_ongoing=1, max_queued=1)
        await router.assign_request(_request("running"))
        queued = asyncio.ensure_future(router.assign_request(_request("queued")))
        await _settle()
        assert not queued.done() and router.num_queued == 1  # b is full: it waits, a is not chosen
        with pytest.raises(BackPressureError):
            await asyncio.wait_for(router.assign_request(_request("one too many")), 0.5)
        replicas["b"].release_one()
        call = await asyncio.wait_for(queued, 5)
        await _settle()
        assert call.replica_id == "b" and replicas["b"].received == ["running", "queued"]

    _run(test, ["a", "b"])


def test_router_retries_elsewhere_when_the_chosen_replica_is_unreachable():
    async def test(router: Any, replicas: dict[str, HeldReplica]) -> None:
        replicas["b"].server.close()
        await replicas["b"].server.wait_closed()
        _with_custom(router, replicas)
        call = await asyncio.wait_for(router.assign_request(_request("x")), 5)
        assert call.replica_id == "a"  # b was dropped from the custom router's replicas
        assert "b" in router._suspect

    _run(test, ["a", "b"])


def test_router_without_a_custom_config_keeps_the_builtin_path():
    async def test(router: Any, replicas: dict[str, HeldReplica]) -> None:
        assert router._custom is None
        _with_custom(router, replicas)
        assert router._custom is not None
        router.update(DeploymentTargetInfo(replicas=[r.info() for r in replicas.values()]))
        assert router._custom is None
        chosen = {(await router.assign_request(_request(i))).replica_id for i in range(8)}
        assert chosen == {"a", "b"}

    _run(test, ["a", "b"])

