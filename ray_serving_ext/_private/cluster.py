"""The one module that asks Ray core about the cluster and creates Serve's actors.

Everything Serve needs from Ray besides calling actor methods lives here:
- node and resource queries, as an immutable :class:`NodeSnapshot` that the
  controller takes once per control-loop tick and hands to its state managers
  (so those are plain state machines, testable without Ray);
- finding the controller, and the creation options shared by the system
  actors (controller and proxies);
- the cached ``ray.remote`` classes of the controller, proxy and replica
  (:func:`remote_class`);
- :class:`PendingCall`, an actor call polled without blocking an event loop.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import ray

from ray_serving_ext._private.constants import CONTROLLER_NAME, SERVE_NAMESPACE, ray_address_env

_HEAD_NODE_RESOURCE = "node:__internal_head__"

# ---------------------------------------------------------------------------- joining


def stale_bootstrap_address(probe_timeout_s: float = 1.0) -> Optional[str]:
    """The address in Ray's `ray_current_cluster` file when nothing answers there, else None.

    `ray start` writes that file and a head stopped by a signal leaves it behind; a
    plain `ray.init()` (or `address="auto"`) then joins it and retries for ever. None
    also when the file is absent or unreadable, or when `$RAY_ADDRESS` is set (then
    that address is the user's choice, as in Ray).
    """
    if ray_address_env():
        return None
    try:
        from ray._private.utils import read_ray_address  # Ray's own reader: its temp dir, RAY_TMPDIR

        address = read_ray_address()
    except Exception:
        return None
    target = host_port(address or "")
    if target is None or not target[0]:
        return None
    return None if probe(target, probe_timeout_s) is None else address


def host_port(address: str) -> Optional[Tuple[str, int]]:
    """(host, port) when `address` is "host:port" (optionally with a scheme), else None
    (an empty host is 127.0.0.1)."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.split("://")[-1].strip("[]") or "127.0.0.1", int(port)


def probe(target: Tuple[str, int], timeout_s: float) -> Optional[str]:
    """None when something accepts a TCP connection at `target` within `timeout_s`, else why not."""
    try:
        socket.create_connection(target, timeout=timeout_s).close()
    except OSError as exc:
        return str(exc.strerror or exc)
    return None


# ---------------------------------------------------------------------------- nodes


@dataclass(frozen=True)
class NodeInfo:
    """One alive node: its id, IP and total resources."""

    node_id: str
    ip: str
    resources: Mapping[str, float]
    is_head: bool = False

    def fits(self, required: Mapping[str, float]) -> bool:
        """True if the node's total resources cover `required`."""
        return all(self.resources.get(k, 0) >= v for k, v in required.items())


@dataclass(frozen=True)
class NodeSnapshot:
    """The alive nodes and the cluster's resources at one moment."""

    nodes: Tuple[NodeInfo, ...] = ()
    total_resources: Mapping[str, float] = field(default_factory=dict)
    available_resources: Mapping[str, float] = field(default_factory=dict)

    @property
    def node_ids(self) -> List[str]:
        return [n.node_id for n in self.nodes]

    def head_node_id(self) -> Optional[str]:
        for node in self.nodes:
            if node.is_head:
                return node.node_id
        return None

    def nodes_fitting(self, required: Mapping[str, float]) -> List[NodeInfo]:
        """The nodes whose total resources could host something needing `required`."""
        return [n for n in self.nodes if n.fits(required)]

    def fits_some_node(self, required: Mapping[str, float]) -> bool:
        return bool(self.nodes_fitting(required))

    @property
    def is_single_node(self) -> bool:
        return len(self.nodes) <= 1


def take_node_snapshot() -> NodeSnapshot:
    """Ask Ray for the alive nodes and the cluster's resources (three GCS calls)."""
    nodes = tuple(
        NodeInfo(
            node_id=n["NodeID"],
            ip=n.get("NodeManagerAddress", ""),
            resources=dict(n.get("Resources", {})),
            is_head=_HEAD_NODE_RESOURCE in n.get("Resources", {}),
        )
        for n in ray.nodes()
        if n.get("Alive")
    )
    return NodeSnapshot(nodes, dict(ray.cluster_resources()), dict(ray.available_resources()))


class NodeSnapshotSource:
    """Takes a new snapshot at most every `min_interval_s` (ray.nodes() is a GCS round trip)."""

    def __init__(self, min_interval_s: float = 1.0) -> None:
        self._min_interval_s = min_interval_s
        self._snapshot = NodeSnapshot()
        self._taken_at = float("-inf")

    def refresh(self, now: float) -> NodeSnapshot:
        if now - self._taken_at >= self._min_interval_s:
            self._snapshot = take_node_snapshot()
            self._taken_at = now
        return self._snapshot


_local_ip: Optional[str] = None


def local_node_ip() -> str:
    """This process's node IP (cached: it does not change)."""
    global _local_ip
    if _local_ip is None:
        _local_ip = ray.util.get_node_ip_address()
    return _local_ip


def current_node_id() -> str:
    return ray.get_runtime_context().get_node_id()


def current_actor_id() -> str:
    return ray.get_runtime_context().get_actor_id()


def actor_id_of(handle: Any) -> Optional[str]:
    """The hex id of the actor behind `handle` (None if it cannot be told)."""
    try:
        return handle._actor_id.hex()
    except AttributeError:
        return None
# The node label Ray Serve reads a node's availability zone from.
_AZ_LABEL = "ray.io/availability-zone"


@dataclass(frozen=True)
class CallerIdentity:
    """Where this process runs, as request routers see their caller (all None outside Ray)."""

    node_id: Optional[str] = None
    actor_id: Optional[str] = None
    actor_name: str = ""
    availability_zone: Optional[str] = None


def caller_identity() -> CallerIdentity:
    """This process's node, actor and availability zone. Never starts Ray: outside a
    connected process (a unit test, a driver before ray.init) everything is unknown."""
    if not ray.is_initialized():
        return CallerIdentity()
    ctx = ray.get_runtime_context()
    try:
        labels = ctx.get_node_labels()
    except AttributeError:  # a Ray without node labels
        labels = {}
    return CallerIdentity(ctx.get_node_id(), ctx.get_actor_id(), ctx.get_actor_name() or "", labels.get(_AZ_LABEL))


def current_availability_zone() -> Optional[str]:
    """The availability zone label of this process's node, or None if it has none."""
    return caller_identity().availability_zone


def job_is_dead(job_id_hex: str) -> bool:
    """True if the job with this id has ended (False while it runs or is unknown)."""
    gcs = ray._private.worker.global_worker.gcs_client
    return any(job_id.hex() == job_id_hex and info.is_dead for job_id, info in gcs.get_all_job_info().items())


def named_serve_actors() -> Iterator[Tuple[str, Any]]:
    """(name, handle) of every live named actor in the `serve` namespace."""
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry.get("namespace") != SERVE_NAMESPACE:
            continue
        try:
            yield entry["name"], ray.get_actor(entry["name"], namespace=SERVE_NAMESPACE)
        except ValueError:  # gone between the listing and the look-up
            continue


def exit_current_actor() -> None:
    """End the actor this runs in for good (no restart)."""
    ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


# ---------------------------------------------------------------------------- the controller


def find_controller() -> Optional[Any]:
    """The running controller's handle, or None."""
    try:
        return ray.get_actor(CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return None


def get_controller() -> Any:
    """The controller actor. Never starts or joins a Ray cluster: background
    loops call this, and after the driver's Ray has shut down they must fail,
    not attach to some other cluster on the machine."""
    if not ray.is_initialized():
        raise RuntimeError("Ray is not initialized in this process.")
    return ray.get_actor(CONTROLLER_NAME, namespace=SERVE_NAMESPACE)


# ---------------------------------------------------------------------------- creating actors


def system_actor_options(name: str, node_id: str, soft: bool) -> Dict[str, Any]:
    """Creation options of the controller and the proxies: named and detached in
    the `serve` namespace, restarted by Ray forever, no CPU reserved, pinned to
    `node_id` (softly for the controller, which may move if its node goes)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {
        "name": name,
        "namespace": SERVE_NAMESPACE,
        "lifetime": "detached",
        "max_restarts": -1,
        "max_task_retries": 0,
        "num_cpus": 0,
        "max_concurrency": 100_000,
        "get_if_exists": True,
        "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=soft),
    }


_remote_classes: Dict[type, Any] = {}


def remote_class(actor_cls: type) -> Any:
    """`ray.remote(actor_cls)`, made once per class and process."""
    cls = _remote_classes.get(actor_cls)
    if cls is None:
        cls = _remote_classes[actor_cls] = ray.remote(actor_cls)
    return cls


def kill_actor(actor: Any) -> None:
    """End an actor for good (no restart); no error if it is already gone."""
    try:
        ray.kill(actor, no_restart=True)
    except Exception:
        pass


# ---------------------------------------------------------------------------- calls in flight


class PendingCall:
    """An actor call in flight, polled without blocking the controller's event loop."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref
        self._future = ref.future()

    def done(self) -> bool:
        return self._future.done()

    def result(self) -> Any:
        """The call's value; raises what the call raised. Only once done()."""
        return self._future.result()


# ---------------------------------------------------------------------------- placement groups


def create_placement_group(bundles: list[dict[str, float]], strategy: str, name: str = "",
                           bundle_label_selector: list[dict[str, str]] | None = None) -> Any:
    """Ask Ray for a placement group (returns at once; Ray reserves it when it can).

    `bundle_label_selector`, one selector per bundle, restricts each bundle to
    nodes with those labels (Ray core's own option). Raises ValueError for
    arguments Ray rejects.
    """
    from ray.util.placement_group import placement_group

    kwargs: dict[str, Any] = {"strategy": strategy, "name": name}
    if bundle_label_selector:
        kwargs["bundle_label_selector"] = bundle_label_selector
    return placement_group(bundles, **kwargs)


def remove_placement_group(group: Any) -> None:
    """Release a placement group (and end what still runs in it); no error if it is gone."""
    from ray.util.placement_group import remove_placement_group as _remove

    try:
        _remove(group)
    except Exception:  # noqa: BLE001, S110 - already removed (or its cluster is gone): nothing to release
        pass


def in_placement_group(group: Any, bundle_index: int) -> Any:
    """The scheduling strategy that puts an actor into bundle `bundle_index` of
    `group`, with the tasks and actors it starts captured by the group too."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return PlacementGroupSchedulingStrategy(
        group, placement_group_bundle_index=bundle_index, placement_group_capture_child_tasks=True
    )


# ---------------------------------------------------------------------------- named actors


def get_serve_actor(name: str) -> Any:
    """The live actor named `name` in the `serve` namespace; ValueError if there is none."""
    return ray.get_actor(name, namespace=SERVE_NAMESPACE)


def start_named_actor(actor_class: Any, name: str, options: dict[str, Any], args: tuple, kwargs: dict[str, Any]) -> Any:
    """Create a detached actor named `name` in the `serve` namespace that Ray never
    restarts (its owner recreates it), from a `@ray.remote` class or a plain class."""
    remote = actor_class if callable(getattr(actor_class, "options", None)) and hasattr(actor_class, "remote") \
        else ray.remote(actor_class)
    return remote.options(
        name=name, namespace=SERVE_NAMESPACE, lifetime="detached", max_restarts=0, **options
    ).remote(*args, **kwargs)
