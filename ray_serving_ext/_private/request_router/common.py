"""The request a custom request router routes, and the routers' queue-length cache.

Pure stdlib: custom routers, the config schema and unit tests use these
without Ray.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ray_serving_ext._private.common import ReplicaID, RequestMetadata
from ray_serving_ext._private.constants import QUEUE_LENGTH_CACHE_TIMEOUT_S


@dataclass
class RequestRoutingContext:
    """What the mixins remember about one request across routing attempts."""

    multiplexed_start_matching_time: float | None = None
    tried_fewest_multiplexed_models: bool = False
    tried_first_multiplexed_models: bool = False
    tried_same_node: bool = False
    tried_same_az: bool = False
    should_backoff: bool = False


def _new_future() -> asyncio.Future:
    return asyncio.get_running_loop().create_future()


@dataclass
class PendingRequest:
    """A request waiting to be assigned a replica (Ray Serve's ``PendingRequest``).

    ``args``/``kwargs`` are the handle call's arguments. For an HTTP request
    from a proxy, as in Ray Serve, ``args`` is one item: the pickled
    :class:`StreamingHTTPRequest`, so ``pickle.loads(pr.args[0]).asgi_scope``
    gives the ASGI scope and its ``headers``. ``metadata`` has ``request_id``,
    ``internal_request_id``, ``multiplexed_model_id``, ``session_id``,
    ``call_method``, ``route``, ``app_name``, ``is_streaming`` and
    ``is_http_request``. ``future`` is set to the chosen replica.
    """

    args: list[Any]
    kwargs: dict[Any, Any]
    metadata: RequestMetadata
    created_at: float = field(default_factory=time.time)
    future: asyncio.Future = field(default_factory=_new_future)
    routing_context: RequestRoutingContext = field(default_factory=RequestRoutingContext)
    resolved: bool = True  # arguments arrive resolved: handles resolve responses before routing

    def reset_future(self) -> None:
        """Give the request a fresh future; must be called before routing it again."""
        self.future = _new_future()


class StreamingHTTPRequest:
    """What ``pickle.loads(pending_request.args[0])`` gives for an HTTP request.

    Only ``asgi_scope`` is offered: the request's ASGI scope (``method``,
    ``path``, ``query_string``, ``headers`` as a list of ``(bytes, bytes)``).
    The body is not part of it (in Ray Serve it is streamed to the replica later).
    """

    def __init__(self, asgi_scope: dict[str, Any]) -> None:
        self._asgi_scope = asgi_scope

    @property
    def asgi_scope(self) -> dict[str, Any]:
        return self._asgi_scope


@dataclass(frozen=True)
class ReplicaQueueLengthCacheEntry:
    queue_len: int
    timestamp: float


class ReplicaQueueLengthCache:
    """Last known number of requests per replica; entries go stale after a timeout."""

    def __init__(
        self,
        *,
        staleness_timeout_s: float = QUEUE_LENGTH_CACHE_TIMEOUT_S,
        get_curr_time_s: Callable[[], float] | None = None,
    ) -> None:
        self._cache: dict[ReplicaID, ReplicaQueueLengthCacheEntry] = {}
        self._staleness_timeout_s = staleness_timeout_s
        self._get_curr_time_s = get_curr_time_s or time.time

    def get(self, replica_id: ReplicaID) -> int | None:
        """The cached queue length, or None if there is none or it is stale."""
        entry = self._cache.get(replica_id)
        if entry is None or self._get_curr_time_s() - entry.timestamp > self._staleness_timeout_s:
            return None
        return entry.queue_len

    def update(self, replica_id: ReplicaID, queue_len: int) -> None:
        self._cache[replica_id] = ReplicaQueueLengthCacheEntry(queue_len, self._get_curr_time_s())

    def invalidate_key(self, replica_id: ReplicaID) -> None:
        self._cache.pop(replica_id, None)

    def remove_inactive_replicas(self, *, active_replica_ids: set[ReplicaID]) -> None:
        """Drop the entries of replicas not in `active_replica_ids`."""
        for replica_id in list(self._cache):
            if replica_id not in active_replica_ids:
                del self._cache[replica_id]
