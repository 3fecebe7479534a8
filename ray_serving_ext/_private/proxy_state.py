"""Keeps one HTTP proxy actor per node (or on the head node only), healthy."""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional

from ray_serving_ext._private.constants import PROXY_HEALTH_CHECK_PERIOD_S, PROXY_NAME_PREFIX
from ray_serving_ext._private.cluster import NodeSnapshot, PendingCall, kill_actor, remote_class, system_actor_options
from ray_serving_ext._private.proxy import ProxyActor
from ray_serving_ext.config import HTTPOptions, TracingConfig
from ray_serving_ext.schema import ProxyStatus

logger = logging.getLogger("ray_serving_ext.controller")


class ProxyRecord:
    def __init__(self, node_id: str, actor: Any) -> None:
        self.node_id = node_id
        self.actor = actor
        self.actor_name = PROXY_NAME_PREFIX + node_id
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
        self.proxies: Dict[str, ProxyRecord] = {}

    def _target_nodes(self, nodes: NodeSnapshot) -> List[str]:
        if self.proxy_location == "Disabled":
            return []
        if self.proxy_location == "HeadOnly":
            head = nodes.head_node_id()
            return [head] if head else []
        return nodes.node_ids

    def _create(self, node_id: str) -> None:
        options = system_actor_options(PROXY_NAME_PREFIX + node_id, node_id, soft=False)
        actor = remote_class(ProxyActor).options(**options).remote(
            node_id, self.http_options, self.logging_config, self.tracing_config)
        self.proxies[node_id] = ProxyRecord(node_id, actor)

    def update(self, nodes: NodeSnapshot) -> None:
        """Start proxies on new target nodes, forget those of gone nodes, poll the rest."""
        now = time.time()
        target = set(self._target_nodes(nodes))
        for node_id in target - set(self.proxies):
            self._create(node_id)
        for node_id in set(self.proxies) - target:
            self.proxies.pop(node_id)  # its node is gone; the actor went with it
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
        """Each proxy's status by node id."""
        return {node_id: rec.status for node_id, rec in self.proxies.items()}

    def messages(self) -> Dict[str, str]:
        """Why each proxy that is not healthy is not (port in use, ...), by node id."""
        return {node_id: rec.error for node_id, rec in self.proxies.items()
                if rec.error and rec.status != ProxyStatus.HEALTHY}

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
