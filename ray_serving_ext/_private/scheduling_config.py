"""The scheduling options of a deployment, as in Ray Serve 2.60: gang scheduling,
deployment-scoped actors and placement group bundle label selectors.

Re-exported by ``ray_serving_ext.config`` (their public home, as ``ray.serve.config``
is Ray Serve's), whose ``DeploymentConfig`` holds them. Pure pydantic and stdlib,
no Ray: the config modules import it without starting anything.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
)

from ray_serving_ext._private.config_types import Int, parse_import_path

__all__ = [
    "DeploymentActorConfig", "GangPlacementStrategy", "GangRuntimeFailurePolicy", "GangSchedulingConfig",
    "LabelSelectors", "actor_class_path", "bundle_label_selectors", "check_scheduling_options",
]


class GangPlacementStrategy(str, Enum):
    """How the replicas of one gang are placed (the gang placement group's strategy)."""

    PACK = "PACK"  # as few nodes as possible, best effort
    SPREAD = "SPREAD"  # distinct nodes as far as possible, best effort


class GangRuntimeFailurePolicy(str, Enum):
    """What happens to a running gang when one of its replicas fails."""

    RESTART_GANG = "RESTART_GANG"  # stop every member and start a new gang
    RESTART_REPLICA = "RESTART_REPLICA"  # replace only the failed replica (not implemented, as in 2.60)


class GangSchedulingConfig(BaseModel):
    """Replicas scheduled in groups ("gangs") of ``gang_size``, as in Ray Serve 2.60.

    Each gang gets one placement group holding the bundles of all its replicas
    (``gang_placement_strategy``), its replicas start together, and when one
    fails ``runtime_failure_policy`` decides what happens to the others.
    ``num_replicas`` must be a multiple of ``gang_size``. ``RESTART_REPLICA`` is
    rejected, as Ray Serve 2.60 rejects it (there with ``NotImplementedError``,
    here with a ``ValueError`` so it reads as a validation error). Unknown keys
    are rejected.
    """

    model_config = ConfigDict(extra="forbid")

    gang_size: Int = Field(ge=1)
    gang_placement_strategy: GangPlacementStrategy = GangPlacementStrategy.PACK
    runtime_failure_policy: GangRuntimeFailurePolicy = GangRuntimeFailurePolicy.RESTART_GANG

    @field_validator("runtime_failure_policy")
    @classmethod
    def _only_restart_gang(cls, value: GangRuntimeFailurePolicy) -> GangRuntimeFailurePolicy:
        if value == GangRuntimeFailurePolicy.RESTART_REPLICA:
            raise ValueError(
                "RESTART_REPLICA policy is not yet implemented. File a GitHub issue if you need this feature."
            )
        return value


def _check_actor_class(value: Any) -> Any:
    """An import path ("module:Class"), a class, or a ``@ray.remote`` actor class."""
    if isinstance(value, str):
        parse_import_path(value)
        return value
    if isinstance(value, type) or callable(getattr(value, "remote", None)):
        return value
    raise ValueError(
        "actor_class must be a @ray.remote class, a class or an import path like 'module:Class', "
        f"got {type(value).__name__}"
    )


class DeploymentActorConfig(BaseModel):
    """One deployment-scoped actor, as in Ray Serve 2.60.

    The controller creates it (``actor_class(*init_args, **init_kwargs)`` with
    ``actor_options``) before the deployment's replicas start, health-checks it
    and recreates it when it dies; it is deleted with the deployment. Replicas
    reach it with ``serve.get_deployment_actor(name)``. ``actor_class`` is a
    ``@ray.remote`` class, a plain class (made remote by Serve) or an import
    path; ``actor_options`` are Ray actor options (``runtime_env`` is merged
    over the deployment's; ``name``, ``namespace``, ``lifetime``,
    ``max_restarts`` and ``get_if_exists`` are Serve's and ignored). Equality
    compares the fields, classes by their import path.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str = Field(min_length=1)
    actor_class: Annotated[Any, AfterValidator(_check_actor_class)]
    init_args: tuple[Any, ...] = ()
    init_kwargs: dict[str, Any] = Field(default_factory=dict)
    actor_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("init_args", mode="before")
    @classmethod
    def _args_tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else (value if value is not None else ())

    @field_serializer("actor_class", when_used="json")
    def _class_as_path(self, value: Any) -> str:
        return actor_class_path(value)

    def actor_class_path(self) -> str:
        """``module:QualName`` of the actor class (the string itself for an import path)."""
        return actor_class_path(self.actor_class)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DeploymentActorConfig):
            return False
        mine = (self.name, self.actor_class_path(), self.init_args, self.init_kwargs, self.actor_options)
        return mine == (other.name, other.actor_class_path(), other.init_args, other.init_kwargs,
                        other.actor_options)

    __hash__ = None  # type: ignore[assignment]


def actor_class_path(actor_class: Any) -> str:
    """``module:QualName`` naming *actor_class* (unwrapping a ``@ray.remote`` class)."""
    if isinstance(actor_class, str):
        return actor_class
    cls = getattr(actor_class, "__ray_actor_class__", actor_class)
    return f"{getattr(cls, '__module__', '')}:{getattr(cls, '__qualname__', type(cls).__name__)}"


LabelSelectors = list[dict[str, str]]


def check_scheduling_options(options: dict[str, Any]) -> None:
    """Raise ValueError where gang scheduling, placement group bundles and their
    label selectors are combined as Ray Serve 2.60 forbids.

    *options* maps option names to values (absent or None: not set). Checked:
    an int ``num_replicas`` (without autoscaling) is a multiple of ``gang_size``;
    a gang excludes ``max_replicas_per_node`` and ``placement_group_strategy``;
    ``placement_group_bundle_label_selector`` needs ``placement_group_bundles``
    and holds one selector (for every bundle) or one per bundle; deployment
    actor names are unique.
    """
    gang = options.get("gang_scheduling_config")
    gang_size = gang.get("gang_size") if isinstance(gang, dict) else getattr(gang, "gang_size", None)
    num_replicas = options.get("num_replicas")
    if gang_size and isinstance(num_replicas, int) and options.get("autoscaling_config") is None \
            and num_replicas % gang_size:
        raise ValueError(f"num_replicas ({num_replicas}) must be a multiple of gang_size ({gang_size}).")
    if gang is not None and options.get("max_replicas_per_node") is not None:
        raise ValueError("Setting max_replicas_per_node is not allowed when gang_scheduling_config is provided.")
    if gang is not None and options.get("placement_group_strategy") is not None:
        raise ValueError(
            "Setting placement_group_strategy is not allowed when gang_scheduling_config is provided. "
            "Use gang_scheduling_config.gang_placement_strategy instead."
        )
    _check_label_selector(options.get("placement_group_bundle_label_selector"), options.get("placement_group_bundles"))
    names = [a.get("name") if isinstance(a, dict) else getattr(a, "name", None)
             for a in options.get("deployment_actors") or ()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"deployment_actors must have unique names. Duplicate name(s): {duplicates}")


def _check_label_selector(selector: list | None, bundles: list | None) -> None:
    if selector is None:
        return
    if not bundles:
        raise ValueError(
            "If `placement_group_bundle_label_selector` is provided, `placement_group_bundles` must also be provided."
        )
    if len(selector) not in (1, len(bundles)):
        raise ValueError(
            "The `placement_group_bundle_label_selector` list must contain either a single selector (to apply "
            "to all bundles) or match the number of `placement_group_bundles`. Got "
            f"{len(selector)} selectors for {len(bundles)} bundles."
        )


def bundle_label_selectors(selector: list | None, num_bundles: int) -> LabelSelectors | None:
    """One label selector per bundle: a single given selector applies to all
    *num_bundles* bundles (Ray Serve's broadcast); None when none is given."""
    if not selector:
        return None
    if len(selector) == 1:
        return [dict(selector[0]) for _ in range(num_bundles)]
    return [dict(s) for s in selector]
