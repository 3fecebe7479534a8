"""Replica ranks of one deployment: which numbers its replicas and their nodes hold.

Three dense numberings, as in Ray Serve 2.60: a replica's global `rank`, the
`node_rank` of the node it runs on (among the nodes hosting the deployment),
and its `local_rank` among the deployment's replicas on that node. A new
replica or node always takes the smallest free number, so a replacement takes
the number its predecessor freed. `compact()` closes the gaps stopping
replicas leave, moving as few holders as it can. Pure bookkeeping: no Ray.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Set

from ray_serving_ext.schema import ReplicaRank


class _Numbering:
    """Dense non-negative numbers held by keys: smallest free one on assign."""

    def __init__(self) -> None:
        self.held: Dict[str, int] = {}

    def assign(self, key: str) -> int:
        if key in self.held:
            return self.held[key]
        taken = set(self.held.values())
        number = next(n for n in range(len(taken) + 1) if n not in taken)
        self.held[key] = number
        return number

    def hold(self, key: str, number: int) -> None:
        """Give `key` exactly `number` (a recovered replica's), whoever else has it."""
        self.held[key] = number

    def release(self, key: str) -> None:
        self.held.pop(key, None)

    def compact(self, keys: Iterable[str]) -> Set[str]:
        """Renumber so that `keys` hold exactly 0..len-1; the keys whose number moved.

        Keys already holding a number inside the range keep it (the first one
        wins a duplicate); the others take the free numbers in ascending order,
        in the order given. Keys not listed lose their numbers.
        """
        keys = list(dict.fromkeys(keys))
        wanted = set(range(len(keys)))
        keeping: Dict[str, int] = {}
        movers: List[str] = []
        for key in keys:
            number = self.held.get(key)
            if number in wanted and number not in keeping.values():
                keeping[key] = number
            else:
                movers.append(key)
        free = sorted(wanted - set(keeping.values()))
        moved = {key for key, number in zip(movers, free) if self.held.get(key) != number}
        self.held = {**keeping, **dict(zip(movers, free))}
        return moved


class RankAllocator:
    """The ranks of one deployment's replicas, keyed by replica id.

    Invariant after every call: each ranked replica has a node, each node with
    ranked replicas has a node rank, and each replica has a local rank on its node.
    """

    def __init__(self) -> None:
        self._global = _Numbering()
        self._nodes = _Numbering()
        self._local: Dict[str, _Numbering] = {}  # node id -> local numbering
        self._node_of: Dict[str, str] = {}  # replica id -> node id

    def assign(self, replica_id: str, node_id: str) -> ReplicaRank:
        """The replica's rank, assigning the smallest free numbers if it has none yet."""
        if replica_id in self._node_of:
            return self.get(replica_id)  # type: ignore[return-value]
        self._node_of[replica_id] = node_id
        self._global.assign(replica_id)
        self._nodes.assign(node_id)
        self._local.setdefault(node_id, _Numbering()).assign(replica_id)
        return self.get(replica_id)  # type: ignore[return-value]

    def recover(self, replica_id: str, node_id: str, rank: ReplicaRank) -> None:
        """Take the rank a live replica reports after a controller restart, as it is."""
        self.release(replica_id)
        self._node_of[replica_id] = node_id
        self._global.hold(replica_id, rank.rank)
        if node_id not in self._nodes.held:
            self._nodes.hold(node_id, rank.node_rank)
        self._local.setdefault(node_id, _Numbering()).hold(replica_id, rank.local_rank)

    def release(self, replica_id: str) -> None:
        """Free the replica's numbers (and its node's, if it was the node's last replica)."""
        node_id = self._node_of.pop(replica_id, None)
        if node_id is None:
            return
        self._global.release(replica_id)
        local = self._local[node_id]
        local.release(replica_id)
        if not local.held:
            del self._local[node_id]
            self._nodes.release(node_id)

    def get(self, replica_id: str) -> Optional[ReplicaRank]:
        """The replica's current rank, or None if it has none."""
        node_id = self._node_of.get(replica_id)
        if node_id is None:
            return None
        return ReplicaRank(rank=self._global.held[replica_id], node_rank=self._nodes.held[node_id],
                           local_rank=self._local[node_id].held[replica_id])

    def ranked(self) -> List[str]:
        """The ids of the replicas holding a rank."""
        return list(self._node_of)

    def compact(self, replica_ids: Iterable[str]) -> List[str]:
        """Make every numbering dense over `replica_ids` (the deployment's live
        replicas); the ids whose rank changed, in the order given.

        Replicas not listed lose their ranks; listed replicas without a rank are
        ignored (they get one when they ask).
        """
        live = [r for r in dict.fromkeys(replica_ids) if r in self._node_of]
        for gone in set(self._node_of) - set(live):
            self.release(gone)
        before = {r: self.get(r) for r in live}
        self._global.compact(live)
        by_node: Dict[str, List[str]] = {}
        for replica_id in live:
            by_node.setdefault(self._node_of[replica_id], []).append(replica_id)
        for node_id, on_node in by_node.items():
            self._local[node_id].compact(on_node)
        self._nodes.compact(by_node)
        return [r for r in live if self.get(r) != before[r]]
