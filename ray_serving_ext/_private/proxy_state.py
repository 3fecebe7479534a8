"""Keeps the HTTP proxy actors healthy: one per node (or on the head node only), or
`RAY_SERVE_EXT_PROXIES_PER_NODE` of them, sharing the port with SO_REUSEPORT.

With several per node the kernel spreads incoming connections over them, so a
node's HTTP work is not capped by one Python process; each proxy has its own
routers and long poll. A node's status is its worst proxy's.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional, Tuple

from ray_serving_ext._private.constants import PROXIES_PER_NODE, PROXY_HEALTH_CHECK_PERIOD_S, PROXY_NAME_PREFIX
from ray_serving_ext._private.cluster import NodeSnapshot, PendingCall, kill_actor, remote_class, system_actor_options
from ray_serving_ext._private.proxy import ProxyActor
from ray_serving_ext.config import HTTPOptions, TracingConfig
from ray_serving_ext.schema import ProxyStatus

logger = logging.getLogger("ray_serving_ext.controller")


ProxyKey = Tuple[str, int]  # (node id, index on the node)
_WORST_FIRST = (ProxyStatus.UNHEALTHY, ProxyStatus.STARTING, ProxyStatus.DRAINING, ProxyStatus.HEALTHY)


def proxy_actor_name(node_id: str, index: int) -> str:
    """The first proxy of a node keeps Ray Serve's name; the others add their index."""
    return PROXY_NAME_PREFIX + node_id + (f"-{index}" if index else "")


class ProxyRecord:
    def __init__(self, node_id: str, actor: Any, index: int = 0) -> None:
        self.node_id = node_id
        self.index = index
        self.actor = actor
        self.actor_name = proxy_actor_name(node_id, index)
        self.status = ProxyStatus.STARTING
        self.ready_ref: Any = PendingCall(actor.ready.remote())
        self.health_ref: Any = None
        self.health_sent = 0.0
        self.last_check = time.time()
        self.error = ""


def _took(rec: ProxyRecord, call: PendingCall) -> bool:
    """Record the outcome of a finished ready/health call on the proxy; True if it succeeded."""
    try:
        call.result()
    except Exception as exc:
        rec.status = ProxyStatus.UNHEALTHY
        rec.error = _reason(exc)
        return False
    rec.status = ProxyStatus.HEALTHY
    rec.error = ""
    return True


def _reason(exc: BaseException) -> str:
    """The proxy's own error message, without Ray's task-error wrapping and traceback."""
    cause = getattr(exc, "cause", None)
    return str(cause) if isinstance(cause, BaseException) else str(exc).strip().splitlines()[-1]


class ProxyStateManager:
    """Creates, health-checks and removes proxies as nodes come and go."""

    def __init__(self, http_options: HTTPOptions, proxy_location: str,
                 logging_config: Optional[Dict[str, Any]] = None,
                 tracing_config: Optional[TracingConfig] = None) -> None:
        self.http_options = http_options
        self.tracing_config = tracing_config
        self.logging_config = logging_config or {}
        self.proxy_location = proxy_location
        self.per_node = PROXIES_PER_NODE
        self.proxies: Dict[ProxyKey, ProxyRecord] = {}

    def _target_nodes(self, nodes: NodeSnapshot) -> List[str]:
        if self.proxy_location == "Disabled":
            return []
        if self.proxy_location == "HeadOnly":
            head = nodes.head_node_id()
            return [head] if head else []
        return nodes.node_ids

    def _create(self, key: ProxyKey, is_head: bool) -> None:
        node_id, index = key
        options = system_actor_options(proxy_actor_name(node_id, index), node_id, soft=False)
        actor = remote_class(ProxyActor).options(**options).remote(
            node_id, self.http_options, self.logging_config, self.tracing_config, index, self.per_node > 1,
            is_head)
        self.proxies[key] = ProxyRecord(node_id, actor, index)

    def update(self, nodes: NodeSnapshot) -> None:
        """Start proxies on new target nodes, forget those of gone nodes, poll the rest."""
        now = time.time()
        target = {(node_id, i) for node_id in self._target_nodes(nodes) for i in range(self.per_node)}
        head = nodes.head_node_id()
        for key in sorted(target - set(self.proxies)):
            self._create(key, key[0] == head)
        for key in set(self.proxies) - target:
            self.proxies.pop(key)  # its node is gone; the actor went with it
        for rec in self.proxies.values():
            self._poll(rec, now)

    def _poll(self, rec: ProxyRecord, now: float) -> None:
        if rec.ready_ref is not None:
            if rec.ready_ref.done():
                ref, rec.ready_ref = rec.ready_ref, None
                if not _took(rec, ref):
                    logger.error("Proxy on node %s failed to start: %s", rec.node_id, rec.error)
                rec.last_check = now
            return
        if rec.health_ref is None:
            if now - rec.last_check >= PROXY_HEALTH_CHECK_PERIOD_S:
                rec.health_ref = PendingCall(rec.actor.check_health.remote())
                rec.health_sent = now
            return
        if rec.health_ref.done():
            ref, rec.health_ref = rec.health_ref, None
            rec.last_check = now
            if not _took(rec, ref):
                # A restarted proxy actor must serve again: ask it to start.
                rec.ready_ref = PendingCall(rec.actor.ready.remote())
        elif now - rec.health_sent > 10 * PROXY_HEALTH_CHECK_PERIOD_S:
            rec.health_ref = None
            rec.status = ProxyStatus.UNHEALTHY

    def statuses(self) -> Dict[str, ProxyStatus]:
        """Each node's proxy status by node id: the worst of its proxies'."""
        by_node: Dict[str, ProxyStatus] = {}
        for rec in self.proxies.values():
            old = by_node.get(rec.node_id)
            if old is None or _WORST_FIRST.index(rec.status) < _WORST_FIRST.index(old):
                by_node[rec.node_id] = rec.status
        return by_node

    def messages(self) -> Dict[str, str]:
        """Why a node's proxy is not healthy (port in use, ...), by node id."""
        out: Dict[str, str] = {}
        for rec in self.records():
            if rec.error and rec.status != ProxyStatus.HEALTHY:
                out.setdefault(rec.node_id, rec.error)
        return out

    def records(self) -> List[ProxyRecord]:
        """Every proxy, first proxies of nodes first."""
        return sorted(self.proxies.values(), key=lambda r: (r.index, r.node_id))

    def shutdown(self) -> List[Any]:
        refs = []
        for rec in self.proxies.values():
            try:
                refs.append(rec.actor.prepare_for_shutdown.remote())
            except Exception:
                pass
        return refs

    def kill_all(self) -> None:
        for rec in self.proxies.values():
            kill_actor(rec.actor)
        self.proxies.clear()
