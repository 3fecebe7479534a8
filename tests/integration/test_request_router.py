"""Custom request routers (request_router_config): they choose the replica, on HTTP and handles.

The routers are module-level classes: building the application pickles them
by value, so the proxy loads them without importing this module.
"""

from __future__ import annotations

import asyncio
import hashlib
import pickle
import time

import requests

import ray_serving_ext as serve
from ray_serving_ext.config import RequestRouterConfig
from ray_serving_ext.request_router import (
    FIFOMixin,
    LocalityMixin,
    MultiplexMixin,
    PendingRequest,
    RequestRouter,
    RunningReplica,
)
from tests.utils import wait_for_condition


def _pin_key(pending_request: PendingRequest | None, header: bytes) -> bytes:
    """The pinning key: the header's value on HTTP requests, the session id on handle calls."""
    if pending_request is None:
        return b""
    if pending_request.metadata.is_http_request:
        scope = pickle.loads(pending_request.args[0]).asgi_scope
        return dict(scope["headers"]).get(header, b"")
    return pending_request.metadata.session_id.encode()


def pinned_index(key: bytes, n: int) -> int:
    return int(hashlib.sha256(key).hexdigest(), 16) % n


class HeaderPinRouter(RequestRouter):
    """Sends every request with the same key to the same replica (replicas ordered by id)."""

    def initialize_state(self, header: str = "x-pin") -> None:
        self.header = header.encode()

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        ordered = sorted(candidate_replicas, key=lambda r: r.replica_id.unique_id)
        key = _pin_key(pending_request, self.header)
        if not key or not ordered:
            return [ordered]
        return [[ordered[pinned_index(key, len(ordered))]]]


@serve.deployment(
    num_replicas=3,
    request_router_config=RequestRouterConfig(
        request_router_class=HeaderPinRouter, request_router_kwargs={"header": "x-tenant"}
    ),
)
class WhoAmI:
    async def __call__(self, request=None) -> str:
        return serve.get_replica_context().replica_id.unique_id


def test_a_header_pins_requests_to_one_replica_on_http_and_handles(serve_url):
    handle = serve.run(WhoAmI.bind(), name="pin", route_prefix="/pin")
    url = f"{serve_url}/pin"

    def replica_for(key: str) -> str:
        return requests.get(url, headers={"x-tenant": key}, timeout=10).text

    seen: dict[str, str] = {}
    for i in range(60):  # enough keys that every replica gets some
        seen[f"tenant-{i}"] = replica_for(f"tenant-{i}")
        if len(set(seen.values())) == 3 and i >= 11:
            break
    replicas = sorted(set(seen.values()))
    assert len(replicas) == 3, f"different keys should spread over the 3 replicas, got {replicas}"
    for key, replica in seen.items():  # exactly the router's choice, for every key
        assert replica == replicas[pinned_index(key.encode(), 3)], key
    for key in list(seen)[:4]:  # the same key keeps landing on the same replica
        assert {replica_for(key) for _ in range(5)} == {seen[key]}
        via_handle = handle.options(session_id=key).remote().result(timeout_s=10)
        assert via_handle == seen[key]


class StatsEchoRouter(RequestRouter):
    """Routes to the replica reporting the fewest calls so far and tells it the stats it saw."""

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        chosen = min(candidate_replicas, key=lambda r: (r.routing_stats.get("calls", 0), r.replica_id.unique_id))
        if pending_request is not None:
            # As in Ray Serve, what a router leaves in the request's kwargs is what is sent.
            pending_request.kwargs["seen_by_router"] = dict(chosen.routing_stats)
        return [[chosen]]


@serve.deployment(
    num_replicas=2,
    # An import path, as a config file gives it: imported when the app is built.
    request_router_config={"request_router_class": f"{__name__}:StatsEchoRouter",
                           "request_routing_stats_period_s": 0.2, "request_routing_stats_timeout_s": 5},
)
class ReportsStats:
    def __init__(self) -> None:
        self.calls = 0

    async def record_routing_stats(self) -> dict:
        self.calls += 1
        return {"replica": serve.get_replica_context().replica_id.unique_id, "calls": self.calls}

    async def __call__(self, seen_by_router: dict | None = None) -> dict:
        return {"me": serve.get_replica_context().replica_id.unique_id, "seen": seen_by_router}


def test_record_routing_stats_reach_the_router(serve_url):
    handle = serve.run(ReportsStats.bind(), name="stats", route_prefix=None)

    def stats_seen() -> dict | None:
        reply = handle.remote().result(timeout_s=10)
        seen = reply["seen"]
        # The stats the router saw for the replica it chose are that replica's own.
        return reply if seen and seen.get("replica") == reply["me"] else None

    first = wait_for_condition(stats_seen, timeout=20, message="the router sees routing_stats")
    assert first["seen"]["calls"] >= 1
    # They are refreshed every period: the count the router sees keeps growing.
    wait_for_condition(lambda: (stats_seen() or {"seen": {"calls": 0}})["seen"]["calls"] > first["seen"]["calls"] + 2,
                       timeout=20, message="routing_stats are refreshed periodically")


class MixedRouter(FIFOMixin, LocalityMixin, MultiplexMixin, RequestRouter):
    """Ranks by multiplexed model when the request names one, else by locality."""

    def initialize_state(self, **kwargs) -> None:
        self.local_node = self._self_node_id

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        model_id = pending_request.metadata.multiplexed_model_id if pending_request is not None else ""
        if model_id:
            return self.rank_replicas_via_multiplex(candidate_replicas, model_id)
        ranks = self.rank_replicas_via_locality(candidate_replicas)
        if pending_request is not None and pending_request.kwargs.get("report_rank"):
            pending_request.kwargs["report_rank"] = [len(rank) for rank in ranks]
        return ranks


@serve.deployment(num_replicas=2, max_ongoing_requests=1,
                  request_router_config=RequestRouterConfig(request_router_class=MixedRouter))
class MixedServer:
    def __init__(self) -> None:
        self.started: list[int] = []

    @serve.multiplexed(max_num_models_per_replica=2)
    async def get_model(self, model_id: str) -> str:
        return f"model-{model_id}"

    async def __call__(self, order: int = -1, report_rank=None, hold_s: float = 0.0) -> dict:
        self.started.append(order)
        model_id = serve.get_multiplexed_model_id()
        model = await self.get_model(model_id) if model_id else None
        await asyncio.sleep(hold_s)
        return {"me": serve.get_replica_context().replica_id.unique_id, "model": model, "ranks": report_rank,
                "started": list(self.started)}


def test_fifo_locality_and_multiplex_mixins_work_in_a_custom_router(serve_url):
    handle = serve.run(MixedServer.bind(), name="mixed", route_prefix=None)

    # LocalityMixin: on one node, both replicas are in the caller's node rank.
    ranks = handle.remote(report_rank=True).result(timeout_s=10)["ranks"]
    assert ranks == [2, 0, 0]

    # MultiplexMixin: once the controller says who holds "alpha", its requests go there.
    alpha = handle.options(multiplexed_model_id="alpha")
    holder = alpha.remote().result(timeout_s=10)["me"]
    wait_for_condition(lambda: {alpha.remote().result(timeout_s=10)["me"] for _ in range(6)} == {holder},
                       timeout=20, message="requests for 'alpha' go to the replica holding it")

    # FIFOMixin: with both replicas busy, waiting requests get replicas in arrival order.
    blockers = [handle.remote(order=-1, hold_s=1.0) for _ in range(2)]
    time.sleep(0.2)
    waiting = [handle.remote(order=i) for i in range(6)]
    for r in blockers:
        r.result(timeout_s=20)
    replies = [r.result(timeout_s=20) for r in waiting]
    by_replica = {reply["me"]: [i for i in reply["started"] if i >= 0] for reply in replies}
    assert sorted(i for seq in by_replica.values() for i in seq) == list(range(6))
    for seq in by_replica.values():
        assert seq == sorted(seq), f"a replica started waiting requests out of arrival order: {seq}"
