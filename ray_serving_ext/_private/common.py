"""Small value types passed between the controller, proxies, routers and replicas."""

from __future__ import annotations

import os
import random
from enum import Enum
from operator import itemgetter
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple


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


@dataclass(frozen=True)
class ReplicaID:
    """A replica's identity: its unique id within its deployment, and the deployment.

    Hashable and comparable by value (Ray Serve's ``ReplicaID``); ``str()`` is
    ``Replica(id='...', deployment='...', app='...')``.
    """

    unique_id: str
    deployment_id: DeploymentID

    def to_full_id_str(self) -> str:
        """``SERVE_REPLICA::app#deployment#unique_id`` (the app part left out when empty)."""
        s = f"{self.deployment_id.name}#{self.unique_id}"
        if self.deployment_id.app_name:
            s = f"{self.deployment_id.app_name}#{s}"
        return f"{_REPLICA_ID_PREFIX}{s}"

    @staticmethod
    def is_full_id_str(s: str) -> bool:
        """Whether `s` is in the form `to_full_id_str` returns."""
        return s.startswith(_REPLICA_ID_PREFIX)

    @classmethod
    def from_full_id_str(cls, s: str) -> "ReplicaID":
        """The inverse of `to_full_id_str`; ValueError for any other string."""
        if not cls.is_full_id_str(s):
            raise ValueError(f"{s!r} is not a full replica id string.")
        parts = s[len(_REPLICA_ID_PREFIX):].split("#")
        if len(parts) == 3:
            app_name, name, unique_id = parts
        elif len(parts) == 2:
            app_name, (name, unique_id) = "", parts
        else:
            raise ValueError(f"Replica id string {s!r} must have two or three '#'-separated fields.")
        return cls(unique_id, DeploymentID(name, app_name))

    def __str__(self) -> str:
        return f"Replica(id='{self.unique_id}', deployment='{self.deployment_id.name}', app='{self.deployment_id.app_name}')"

    __repr__ = __str__


# Ray Serve's prefix of full replica id strings (also our replica actors' name prefix).
_REPLICA_ID_PREFIX = "SERVE_REPLICA::"


class DeploymentHandleSource(str, Enum):
    """Where a router runs: in a proxy, in a replica, or elsewhere (a driver)."""

    UNKNOWN = "UNKNOWN"
    PROXY = "PROXY"
    REPLICA = "REPLICA"


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
    session_id: str = ""  # DeploymentHandle.options(session_id=...): kept for session-aware routers
    internal_request_id: str = field(default_factory=lambda: _hex_id())
    # W3C trace-context headers of the caller's span (Ray Serve's field), set per
    # instance only when tracing is on. A class attribute rather than a field, so
    # untraced requests do not pickle it on every call.
    tracing_context = None  # type: Optional[Dict[str, str]]


# Request kinds. A WEBSOCKET request also takes the client's messages (the
# transport's INBOUND frames) for as long as it runs.
UNARY, STREAM, HTTP, WEBSOCKET = "unary", "stream", "http", "websocket"
REQUEST_KINDS = (UNARY, STREAM, HTTP, WEBSOCKET)


class Request(tuple):
    """One request, built once by its caller (a handle or a proxy) and carried
    unchanged through the router, the transport and the replica.

    UNARY and STREAM requests carry `args`/`kwargs` for `metadata.call_method`;
    HTTP requests carry an ASGI `scope` and the whole `body`; WEBSOCKET requests
    carry a `scope`. Fields are read-only.

    It is a tuple underneath because it is pickled once per request on the
    wire: `to_wire()` is its fields as a plain tuple, which pickles without the
    class look-ups an object costs on each end (about 3 us per request each
    way), and `from_wire()` rebuilds it without running Python code.
    """

    __slots__ = ()

    def __new__(
        cls,
        kind: str,
        metadata: "RequestMetadata",
        args: Tuple[Any, ...] = (),
        kwargs: Optional[Dict[str, Any]] = None,
        scope: Optional[Dict[str, Any]] = None,
        body: bytes = b"",
    ) -> "Request":
        return tuple.__new__(cls, (kind, metadata, args, {} if kwargs is None else kwargs, scope, body))

    kind = property(itemgetter(0), doc="UNARY, STREAM, HTTP or WEBSOCKET.")
    metadata = property(itemgetter(1), doc="The RequestMetadata.")
    args = property(itemgetter(2), doc="Positional arguments (UNARY, STREAM).")
    kwargs = property(itemgetter(3), doc="Keyword arguments (UNARY, STREAM).")
    scope = property(itemgetter(4), doc="The forwardable ASGI scope (HTTP, WEBSOCKET).")
    body = property(itemgetter(5), doc="The whole request body (HTTP).")

    def to_wire(self) -> Tuple[Any, ...]:
        """The fields as a plain tuple: what the transport pickles."""
        return self[:]  # a full slice of a tuple subclass is a plain tuple (cheaper than tuple(self))

    # `Request.from_wire(fields)`, the inverse of `to_wire`: a C call, no Python frame.
    from_wire = classmethod(tuple.__new__)

    def __getnewargs__(self) -> Tuple[Any, ...]:
        return tuple(self)

    def __repr__(self) -> str:
        return f"Request({self.kind!r}, request_id={self.metadata.request_id!r})"


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
    availability_zone: Optional[str] = None
    # The replica's latest `record_routing_stats()` result (custom request routers read it).
    routing_stats: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DeploymentTargetInfo:
    """What routers learn about a deployment through the long poll."""

    replicas: list = field(default_factory=list)  # list[ReplicaInfo]
    max_ongoing_requests: int = 5
    max_queued_requests: int = -1
    exists: bool = True
    message: str = ""
    # The deployment's backpressure_config: how callers answer HTTP requests
    # past max_queued_requests (status 503 or 429, Retry-After seconds or None).
    backpressure_status_code: int = 503
    backpressure_retry_after_s: Optional[float] = None
    # The deployment's config.RequestRouterConfig when it names a custom request
    # router; None means the built-in power-of-two-choices routing.
    request_router_config: Any = None


# Request ids need to be unique, not secret: uuid4's os.urandom (two system
# calls and a UUID object per request, about 5 us) is replaced by a
# process-local Mersenne Twister seeded from os.urandom, reseeded after fork.
_random = random.Random()
random_bits = _random.getrandbits
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


def _reseed() -> None:
    _random.seed()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def _hex_id() -> str:
    return "%032x" % random_bits(128)


def new_request_id() -> str:
    """A random id in UUID4's text form, as Ray Serve's request ids are."""
    h = "%032x" % ((random_bits(128) & _UUID4_CLEAR) | _UUID4_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


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


def deployment_actor_name(deployment_id: DeploymentID, actor_name: str) -> str:
    """The Ray actor name (namespace "serve") of a deployment-scoped actor: one per
    deployment and declared name, so every replica of the deployment finds the same one."""
    from ray_serving_ext._private.constants import DEPLOYMENT_ACTOR_NAME_PREFIX

    return f"{DEPLOYMENT_ACTOR_NAME_PREFIX}{deployment_id.app_name}::{deployment_id.name}::{actor_name}"
