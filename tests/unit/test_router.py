"""The Router without Ray: which replica it picks, and its queue (backpressure, order, cancellation).

Replicas are real transport servers on 127.0.0.1 whose handler holds each
request until the test lets it finish; the controller is a fake whose long
poll never answers, so the replica set is whatever the test passes to
`Router.update` (as the long poll would).
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List, Tuple

import pytest

from ray_serving_ext._private import metrics, transport
from ray_serving_ext._private.common import DeploymentID, DeploymentTargetInfo, ReplicaInfo, Request, RequestMetadata
from ray_serving_ext._private.router import Router
from ray_serving_ext.exceptions import BackPressureError

TOKEN = "test-token"


class _NeverAnswers:
    def remote(self, *args: Any, **kwargs: Any) -> asyncio.Future:
        return asyncio.get_running_loop().create_future()


class FakeController:
    """Long poll and metrics pushes that never return: no update comes but the test's."""

    listen_for_change = _NeverAnswers()
    record_metrics = _NeverAnswers()


class HeldReplica:
    """A transport server that answers each request only when the test releases it."""

    def __init__(self, replica_id: str) -> None:
        self.replica_id = replica_id
        self.received: List[Any] = []
        self._gates: List[asyncio.Event] = []
        self.server: Any = None
        self.port = 0

    async def start(self) -> "HeldReplica":
        self.server, self.port = await transport.start_server(TOKEN, self._handle, host="127.0.0.1")
        return self

    async def _handle(self, request: Request, stream: transport.ServerStream) -> None:
        stream.started()
        gate = asyncio.Event()
        self._gates.append(gate)
        self.received.append(request.args[0])
        await gate.wait()
        stream.result(request.args[0])

    def release_one(self) -> None:
        next(g for g in self._gates if not g.is_set()).set()

    def release_all(self) -> None:
        for gate in self._gates:
            gate.set()

    def info(self, max_ongoing: int = 10, model_ids: Tuple[str, ...] = ()) -> ReplicaInfo:
        return ReplicaInfo(self.replica_id, self.replica_id, None, max_ongoing_requests=max_ongoing,
                           node_ip="127.0.0.1", port=self.port, token=TOKEN, model_ids=model_ids)


def _request(value: Any, model_id: str = "") -> Request:
    meta = RequestMetadata(request_id=f"req-{value}", app_name="app", multiplexed_model_id=model_id)
    return Request(transport.UNARY, meta, (value,), {})


async def _settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


def _run(test: Any, replica_ids: List[str], infos: Dict[str, Dict[str, Any]] = {},
         max_ongoing: int = 10, max_queued: int = -1) -> None:
    """Run `test(router, replicas)` on a fresh loop with held replicas, then clean up."""
    infos = dict(infos)

    async def main() -> None:
        replicas = {rid: await HeldReplica(rid).start() for rid in replica_ids}
        router = Router(DeploymentID("d", "app"), asyncio.get_running_loop(), lambda: FakeController())
        router.update(DeploymentTargetInfo(
            replicas=[r.info(**infos.get(rid, {})) for rid, r in replicas.items()],
            max_ongoing_requests=max_ongoing, max_queued_requests=max_queued,
        ))
        try:
            await test(router, replicas)
        finally:
            for replica in replicas.values():
                replica.release_all()
            await _settle()
            router.stop()
            metrics.stop_pusher()
            for replica in replicas.values():
                replica.server.close()

    asyncio.run(main())


# ---- choice ------------------------------------------------------------------------------
def test_power_of_two_choices_picks_the_less_loaded():
    async def test(router: Router, replicas: Dict[str, HeldReplica]) -> None:
        counts = {"a": 0, "b": 0}
        for i in range(8):  # with two replicas both are always sampled: the load stays even
            call = await router.assign_request(_request(i))
            counts[call.replica_id] += 1
            assert abs(counts["a"] - counts["b"]) <= 1, counts
        assert router.num_ongoing == 8

    _run(test, ["a", "b"])


def test_replica_at_max_ongoing_requests_is_skipped():
    async def test(router: Router, replicas: Dict[str, HeldReplica]) -> None:
        chosen = [(await router.assign_request(_request(i))).replica_id for i in range(4)]
        assert chosen.count("full") == 1 and chosen.count("roomy") == 3

    _run(test, ["full", "roomy"], {"full": {"max_ongoing": 1}})


def test_replica_holding_the_model_is_preferred_even_when_busier():
    async def test(router: Router, replicas: Dict[str, HeldReplica]) -> None:
        chosen = [(await router.assign_request(_request(i, model_id="m"))).replica_id for i in range(4)]
        assert chosen == ["holder"] * 4
        other = await router.assign_request(_request("no-model"))
        assert other.replica_id == "other"  # the less loaded one, without a model to prefer

    _run(test, ["holder", "other"], {"holder": {"model_ids": ("m",)}})


def test_suspect_replica_is_skipped():
    async def test(router: Router, replicas: Dict[str, HeldReplica]) -> None:
        router.mark_dead("a")
        chosen = {(await router.assign_request(_request(i))).replica_id for i in range(4)}
        assert chosen == {"b"}

    _run(test, ["a", "b"])


def test_slot_is_released_when_the_call_completes():
    async def test(router: Router, replicas: Dict[str, HeldReplica]) -> None:
        call = await router.assign_request(_request("x"))
        assert router.num_ongoing == 1
        await _settle()
        replicas["a"].release_one()
        assert await asyncio.wait_for(call.result(), 5) == "x"
        assert router.num_ongoing == 0

    _run(test, ["a"])


# ---- the queue ---------------------------------------------------------------------------
def test_request_past_max_queued_requests_is_refused_at_once():
    async def test(router: Router, replicas: Dict[str, HeldReplica]) -> None:
        await router.assign_request(_request("running"))
        queued = [asyncio.ensure_future(router.assign_request(_request(i))) for i in range(2)]
        await _settle()
        assert router.num_queued == 2 and not any(q.done() for q in queued)
        with pytest.raises(BackPressureError):
            await asyncio.wait_for(router.assign_request(_request("one too many")), 0.5)
        for q in queued:
            q.cancel()

    _run(test, ["a"], {"a": {"max_ongoing": 1}}, max_queued=2)


def test_queued_requests_are_served_in_order_as_slots_free_up():
    async def test(router: Router, replicas: Dict[str, HeldReplica]) -> None:
        await router.assign_request(_request(0))
        queued = []
        for i in range(1, 4):
            queued.append(asyncio.ensure_future(router.assign_request(_request(i))))
            await _settle(0.01)  # arrival order is the order the tasks start waiting
        for expected in range(1, 4):
            await _settle()
            replicas["a"].release_one()
            await asyncio.wait_for(queued[expected - 1], 5)
        await _settle()
        assert replicas["a"].received == [0, 1, 2, 3]

    _run(test, ["a"], {"a": {"max_ongoing": 1}})


def test_cancelled_queued_request_passes_on_its_wake_up():
    async def test(router: Router, replicas: Dict[str, HeldReplica]) -> None:
        first = await router.assign_request(_request(0))
        woken = asyncio.ensure_future(router.assign_request(_request(1)))
        await _settle(0.01)
        behind = asyncio.ensure_future(router.assign_request(_request(2)))
        await _settle()
        # Runs right after the router's own completion callback has woken `woken`,
        # before `woken` resumes: its wake-up must go to `behind`.
        first.add_done_callback(woken.cancel)
        replicas["a"].release_one()
        call = await asyncio.wait_for(behind, 5)
        assert woken.cancelled() and call.replica_id == "a" and router.num_queued == 0

    _run(test, ["a"], {"a": {"max_ongoing": 1}})


def test_a_cancelled_queued_request_is_never_sent():
    async def test(router: Router, replicas: Dict[str, HeldReplica]) -> None:
        await router.assign_request(_request(0))
        gone = asyncio.ensure_future(router.assign_request(_request("gone")))
        await _settle()
        gone.cancel()
        await _settle()
        replicas["a"].release_one()
        await _settle()
        assert replicas["a"].received == [0] and router.num_queued == 0

    _run(test, ["a"], {"a": {"max_ongoing": 1}})


def test_router_max_ongoing_caps_a_replica_below_its_own():
    async def test(router: Router, replicas: Dict[str, HeldReplica]) -> None:
        await router.assign_request(_request(0))
        pending = asyncio.ensure_future(router.assign_request(_request(1)))
        await _settle()
        assert not pending.done() and router.num_queued == 1
        pending.cancel()

    _run(test, ["a"], {"a": {"max_ongoing": 5}}, max_ongoing=1)


