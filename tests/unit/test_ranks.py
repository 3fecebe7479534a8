"""RankAllocator: dense global, node and local ranks; reuse of freed ranks; minimal compaction.
And how a replica's user code hears its rank through reconfigure()."""

from __future__ import annotations

import asyncio

from ray import cloudpickle

from ray_serving_ext._private.ranks import RankAllocator
from ray_serving_ext._private.user_callable import UserCallable
from ray_serving_ext.schema import ReplicaRank


def _rank(alloc: RankAllocator, rid: str) -> tuple:
    r = alloc.get(rid)
    assert r is not None
    return (r.rank, r.node_rank, r.local_rank)


def test_assign_numbers_replicas_nodes_and_local_replicas_densely() -> None:
    alloc = RankAllocator()
    assert alloc.assign("a", "n1") == ReplicaRank(rank=0, node_rank=0, local_rank=0)
    assert alloc.assign("b", "n2") == ReplicaRank(rank=1, node_rank=1, local_rank=0)
    assert alloc.assign("c", "n1") == ReplicaRank(rank=2, node_rank=0, local_rank=1)
    assert alloc.assign("c", "n1") == ReplicaRank(rank=2, node_rank=0, local_rank=1)  # asking again: same
    assert sorted(alloc.ranked()) == ["a", "b", "c"]


def test_freed_ranks_go_to_the_next_replica_smallest_first() -> None:
    alloc = RankAllocator()
    for rid in "abcd":
        alloc.assign(rid, "n1")
    alloc.release("c")
    alloc.release("b")
    assert alloc.get("b") is None
    assert _rank(alloc, "d") == (3, 0, 3)  # a release moves nobody
    assert alloc.assign("e", "n1") == ReplicaRank(rank=1, node_rank=0, local_rank=1)
    assert alloc.assign("f", "n1") == ReplicaRank(rank=2, node_rank=0, local_rank=2)
    alloc.release("unknown")  # releasing what holds nothing is a no-op


def test_a_node_loses_its_rank_with_its_last_replica() -> None:
    alloc = RankAllocator()
    alloc.assign("a", "n1")
    alloc.assign("b", "n2")
    alloc.assign("c", "n3")
    alloc.release("b")
    assert alloc.assign("d", "n4") == ReplicaRank(rank=1, node_rank=1, local_rank=0)  # n4 takes n2's node rank


def test_compact_closes_gaps_moving_as_few_replicas_as_possible() -> None:
    alloc = RankAllocator()
    for rid in "abcd":
        alloc.assign(rid, "n1")
    alloc.release("a")
    alloc.release("b")  # c=2, d=3 remain
    moved = alloc.compact(["c", "d"])
    assert sorted(moved) == ["c", "d"]
    assert sorted(_rank(alloc, r) for r in "cd") == [(0, 0, 0), (1, 0, 1)]

    alloc = RankAllocator()
    for rid in "abcd":
        alloc.assign(rid, "n1")
    alloc.release("b")  # a=0, c=2, d=3: only d must move, to 1
    assert alloc.compact(["a", "c", "d"]) == ["d"]
    assert (_rank(alloc, "a")[0], _rank(alloc, "c")[0], _rank(alloc, "d")[0]) == (0, 2, 1)
    assert alloc.compact(["a", "c", "d"]) == []  # already dense: nothing moves


def test_compact_renumbers_nodes_and_moves_every_replica_of_a_renumbered_node() -> None:
    alloc = RankAllocator()
    alloc.assign("a", "n1")
    alloc.assign("b", "n2")
    alloc.assign("c", "n3")
    alloc.assign("d", "n3")
    alloc.release("a")
    alloc.release("b")  # only n3 (node rank 2) is left
    moved = alloc.compact(["c", "d"])
    assert sorted(moved) == ["c", "d"]
    assert {_rank(alloc, "c"), _rank(alloc, "d")} == {(0, 0, 0), (1, 0, 1)}


def test_compact_drops_replicas_not_listed() -> None:
    alloc = RankAllocator()
    alloc.assign("a", "n1")
    alloc.assign("b", "n1")
    alloc.compact(["b"])
    assert alloc.get("a") is None and _rank(alloc, "b") == (0, 0, 0)
    assert alloc.compact([]) == [] and alloc.ranked() == []


def test_recover_takes_reported_ranks_and_compact_repairs_duplicates() -> None:
    alloc = RankAllocator()
    alloc.recover("a", "n1", ReplicaRank(rank=3, node_rank=1, local_rank=0))
    alloc.recover("b", "n1", ReplicaRank(rank=3, node_rank=1, local_rank=0))  # a clash (e.g. a lost update)
    assert _rank(alloc, "a") == (3, 1, 0)
    assert alloc.assign("c", "n2") == ReplicaRank(rank=0, node_rank=0, local_rank=0)
    alloc.compact(["a", "b", "c"])
    ranks = [_rank(alloc, r) for r in "abc"]
    assert sorted(r[0] for r in ranks) == [0, 1, 2]
    assert sorted({r[1] for r in ranks}) == [0, 1]
    assert sorted(r[2] for r in ranks if r[1] == _rank(alloc, "a")[1]) == [0, 1]


# ---- how user code hears its rank (no Ray: the replica's UserCallable alone) -------------------
class _TakesRank:
    def __init__(self) -> None:
        self.calls: list = []

    def reconfigure(self, config, rank) -> None:
        self.calls.append((config, rank))


class _NoRank:
    def __init__(self) -> None:
        self.calls: list = []

    def reconfigure(self, config) -> None:
        self.calls.append(config)


def _user(cls: type) -> UserCallable:
    return UserCallable(cloudpickle.dumps(cls), cloudpickle.dumps(((), {})), 1)


def test_a_reconfigure_taking_rank_hears_it_even_without_user_config() -> None:
    rank = ReplicaRank(rank=2, node_rank=0, local_rank=1)
    user = _user(_TakesRank)
    asyncio.run(user.initialize(None, rank))  # called at start because it takes `rank`
    asyncio.run(user.reconfigure({"k": 1}, rank))
    assert user.instance.calls == [(None, rank), ({"k": 1}, rank)]

    plain = _user(_NoRank)
    asyncio.run(plain.initialize(None, rank))  # no user_config and no `rank` parameter: not called
    asyncio.run(plain.reconfigure({"k": 1}, rank))
    assert plain.instance.calls == [{"k": 1}]
