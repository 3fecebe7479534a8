"""Small value types passed between the controller, proxies, routers and replicas."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Optional


@dataclass(frozen=True)
class DeploymentID:
    """A deployment is named within its application."""

    name: str
    app_name: str

    def __str__(self) -> str:
        return f"Deployment(name='{self.name}', app='{self.app_name}')"

    @property
    def key(self) -> str:
        return f"{self.app_name}#{self.name}"


@dataclass
class RequestMetadata:
    """What a replica needs to know about one request besides its arguments."""

    request_id: str
    app_name: str
    call_method: str = "__call__"
    route: str = ""
    http_method: str = ""
    is_http_request: bool = False
    is_streaming: bool = False
    multiplexed_model_id: str = ""
    internal_request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class ReplicaInfo:
    """A routable replica as the controller announces it."""

    replica_id: str
    actor_name: str
    actor_handle: Any
    node_id: str = ""
    max_ongoing_requests: int = 5
    node_ip: str = ""
    port: Optional[int] = None
    token: str = ""
    model_ids: tuple = ()  # multiplexed models this replica holds


@dataclass
class DeploymentTargetInfo:
    """What routers learn about a deployment through the long poll."""

    replicas: list = field(default_factory=list)  # list[ReplicaInfo]
    max_ongoing_requests: int = 5
    max_queued_requests: int = -1
    exists: bool = True
    message: str = ""


def new_request_id() -> str:
    return str(uuid.uuid4())


def replica_actor_name(deployment_id: DeploymentID, suffix: str) -> str:
    from ray_serving_ext._private.constants import REPLICA_NAME_PREFIX

    return f"{REPLICA_NAME_PREFIX}{deployment_id.app_name}#{deployment_id.name}#{suffix}"


def parse_replica_actor_name(name: str) -> Optional[Dict[str, str]]:
    """Inverse of replica_actor_name; None for names that are not replicas'."""
    from ray_serving_ext._private.constants import REPLICA_NAME_PREFIX

    if not name.startswith(REPLICA_NAME_PREFIX):
        return None
    parts = name[len(REPLICA_NAME_PREFIX):].split("#")
    if len(parts) != 3:
        return None
    return {"app_name": parts[0], "deployment": parts[1], "suffix": parts[2]}
