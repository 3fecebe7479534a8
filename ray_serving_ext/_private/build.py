"""Turn a bound `Application` graph into the deployment specs the controller takes.

Each distinct bound deployment becomes one spec; Applications nested in
constructor arguments are replaced by `HandleMarker`s that replicas turn into
`DeploymentHandle`s. Code and arguments are pickled here, in the caller's
process, so the controller never needs the user's modules.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ray import cloudpickle

from ray_serving_ext._private.request_router_config import (
    DEFAULT_REQUEST_ROUTER_PATH,
    SERIALIZED_CLASS_KEY,
    class_import_path,
)
from ray_serving_ext._private.common import DeploymentID
from ray_serving_ext._private.config_types import import_attr
from ray_serving_ext._private.constants import DEPLOYMENT_ACTOR_CONTEXT_ENV
from ray_serving_ext._private.scheduling_config import actor_class_path
from ray_serving_ext.config import DeploymentConfig, RequestRouterConfig
from ray_serving_ext.deployment import _NOT_CONFIG, Application
from ray_serving_ext.request_router import RequestRouter


@dataclass(frozen=True)
class HandleMarker:
    """Stands in for a nested Application inside constructor arguments."""

    deployment_name: str
    app_name: str


@dataclass
class DeploymentSpec:
    """Everything the controller needs to run one deployment."""

    name: str
    serialized_def: bytes
    serialized_init_args: bytes
    config: Dict[str, Any]
    code_version: str
    is_function: bool
    ingress: bool = False
    explicit_options: Dict[str, Any] = field(default_factory=dict)
    def_name: str = ""
    # Deployment-scoped actors: name -> (version, pickled (actor class, init args, init kwargs)).
    deployment_actors: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def deployment_config(self) -> DeploymentConfig:
        return DeploymentConfig.model_validate(self.config)


@dataclass
class BuiltApplication:
    name: str
    route_prefix: Optional[str]
    ingress: str
    deployments: List[DeploymentSpec]
    # Replica counts are set from outside (`update_deployment_replicas`), not by Serve's autoscaler.
    external_scaler_enabled: bool = False

    def check_external_scaler(self) -> None:
        """ValueError (Ray Serve's wording) if an external scaler is enabled while a deployment autoscales."""
        if not self.external_scaler_enabled:
            return
        autoscaled = [s.name for s in self.deployments if s.config.get("autoscaling_config") is not None]
        if autoscaled:
            names = ", ".join(f'"{n}"' for n in autoscaled)
            raise ValueError(
                f"external_scaler_enabled is set to True, but the following deployment(s) have autoscaling "
                f"configured: {names}. When using an external autoscaler, Serve's built-in autoscaling must "
                "be disabled for all deployments in the application."
            )


def module_digest(obj: Any) -> str:
    """A hash of the source file of the module defining `obj` ("" if there is none)."""
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return ""


def source_of(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def code_version(func_or_class: Any, serialized_def: bytes, serialized_init: bytes, explicit: Any = None,
                 extra: tuple = ()) -> str:
    """A version that changes with the code (its source and its module's file) and
    the constructor args, never with options applied in place.

    Deterministic across processes, unlike a hash of the pickled class (classes
    pickled by value carry a per-process id). An explicit `version` stands in
    for code and args; `extra` (import path, runtime_env) is always included.
    """
    parts = [str(p) for p in extra]
    if explicit:
        parts.append(f"version={explicit}")
    else:
        name = f"{getattr(func_or_class, '__module__', '')}.{getattr(func_or_class, '__qualname__', '')}"
        code = [source_of(func_or_class), module_digest(func_or_class)]
        if not any(code):  # nothing stable to go by: the pickled code itself
            code.append(hashlib.sha256(serialized_def).hexdigest())
        parts += [name, *code, hashlib.sha256(serialized_init).hexdigest()]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def map_nested(value: Any, fn: Callable[[Any], Any]) -> Any:
    """`value` with every leaf replaced by `fn(leaf)`, where lists, tuples and
    dict values are walked (and rebuilt as plain list/tuple/dict, keys kept)
    and anything else is a leaf. The one walker over constructor arguments."""
    if isinstance(value, list):
        return [map_nested(v, fn) for v in value]
    if isinstance(value, tuple):
        return tuple(map_nested(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: map_nested(v, fn) for k, v in value.items()}
    return fn(value)


def _replace_apps(value: Any, names: Dict[int, str], app_name: str) -> Any:
    """`value` with every nested Application replaced by its HandleMarker."""
    return map_nested(value, lambda v: HandleMarker(names[id(v)], app_name) if isinstance(v, Application) else v)


def _children(value: Any) -> List[Application]:
    """The Applications nested in `value`, in walk order."""
    found: List[Application] = []
    map_nested(value, lambda v: found.append(v) if isinstance(v, Application) else None)
    return found


def _collect(root: Application) -> List[Application]:
    """Every Application in the graph once, children before parents."""
    order: List[Application] = []
    seen: set = set()

    def visit(app: Application, stack: tuple) -> None:
        if id(app) in stack:
            raise ValueError("Cycle in the application graph.")
        if id(app) in seen:
            return
        for child in _children(list(app.args)) + _children(app.kwargs):
            visit(child, stack + (id(app),))
        seen.add(id(app))
        order.append(app)

    visit(root, ())
    return order


def _unique_names(apps: List[Application]) -> Dict[int, str]:
    names: Dict[int, str] = {}
    used: Dict[str, int] = {}
    for app in apps:
        base = app.deployment.name
        if base not in used:
            used[base] = 0
            names[id(app)] = base
        else:
            used[base] += 1
            names[id(app)] = f"{base}_{used[base]}"
    return names


def ship_request_router(dumped: Dict[str, Any]) -> Dict[str, Any]:
    """A dumped RequestRouterConfig ready to travel: a custom router class (given
    or imported from its path, here in the caller's process) becomes its import
    path plus the class pickled by value, so that proxies and handles can load it
    without its module. The default router is left as it is. Raises ValueError
    for a path that does not import or does not name a RequestRouter subclass.
    """
    if dumped.get(SERIALIZED_CLASS_KEY) or dumped.get("request_router_class") == DEFAULT_REQUEST_ROUTER_PATH:
        return dumped
    try:
        cls = RequestRouterConfig.model_validate(dumped).get_request_router_class()
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"request_router_class {dumped.get('request_router_class')!r} could not be imported: {exc}") from exc
    if not inspect.isclass(cls) or not issubclass(cls, RequestRouter):
        raise ValueError(f"request_router_class must name a RequestRouter subclass, got {cls!r}")
    module = sys.modules.get(cls.__module__)
    # The user's own module goes by value; ours (and __main__, by value anyway) by reference.
    by_value = module is not None and cls.__module__ != "__main__" and not cls.__module__.startswith("ray_serving_ext")
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        blob = cloudpickle.dumps(cls)
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)
    return {**dumped, "request_router_class": class_import_path(cls), SERIALIZED_CLASS_KEY: blob}


def _explicit_options(options: Dict[str, Any], shipped_router: Dict[str, Any]) -> Dict[str, Any]:
    """The user's options as the controller keeps them: a request router class given
    as a class is named by its import path, so unpickling the spec imports no user module."""
    explicit = {k: v for k, v in options.items() if k != "name"}
    if "request_router_config" in explicit:
        explicit["request_router_config"] = {k: v for k, v in shipped_router.items() if k != SERIALIZED_CLASS_KEY}
    return explicit


def _actor_options(
    options: Dict[str, Any], runtime_env: Dict[str, Any], merge_runtime_env: bool
) -> Dict[str, Any]:
    """A deployment's validated `ray_actor_options` with the app's default
    `runtime_env`: merged under its own (`merge_runtime_env`, env_vars combined)
    or used only when it sets none."""
    opts = dict(options)
    own = opts.get("runtime_env") or {}
    if merge_runtime_env and (runtime_env or own):
        opts["runtime_env"] = merge_runtime_envs(runtime_env, own)
    elif not merge_runtime_env and runtime_env and not own:
        opts["runtime_env"] = runtime_env
    return opts


def merge_runtime_envs(parent: Dict[str, Any], child: Dict[str, Any]) -> Dict[str, Any]:
    """`child` over `parent`, key by key, except `env_vars`, which are combined
    (the child's win) — Ray Serve's rule for app-level vs deployment-level envs."""
    merged = copy.deepcopy(parent)
    merged.update(copy.deepcopy(child))
    env_vars = {**parent.get("env_vars", {}), **child.get("env_vars", {})}
    if env_vars:
        merged["env_vars"] = env_vars
    return merged


# Actor options Serve sets itself on a deployment-scoped actor (the user's are ignored).
_SERVE_ACTOR_OPTIONS = frozenset({"name", "namespace", "lifetime", "max_restarts", "get_if_exists"})


def _pickled_by_value(cls: Any, obj: Any) -> bytes:
    """`obj` pickled with the module defining `cls` pickled by value, so the controller
    can load it without the user's code on its path (as Ray Serve does)."""
    module = sys.modules.get(getattr(getattr(cls, "__ray_actor_class__", cls), "__module__", "") or "")
    name = getattr(module, "__name__", "__main__")
    register = module is not None and name != "__main__" and not name.startswith(("ray.", "ray_serving_ext")) \
        and name not in cloudpickle.list_registry_pickle_by_value()
    if register:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(obj)
    finally:
        if register:
            cloudpickle.unregister_pickle_by_value(module)


def _deployment_actor_options(entry: dict[str, Any], deployment_env: dict[str, Any], dep_id: DeploymentID,
                              version: str) -> dict[str, Any]:
    """The Ray options a deployment actor is created with: the user's (less those Serve
    sets), its runtime_env merged over the deployment's, plus its context env vars."""
    options = {k: v for k, v in (entry.get("actor_options") or {}).items() if k not in _SERVE_ACTOR_OPTIONS}
    runtime_env = merge_runtime_envs(deployment_env, options.pop("runtime_env", None) or {})
    env_vars = dict(runtime_env.get("env_vars", {}))
    reserved = sorted(set(env_vars) & set(DEPLOYMENT_ACTOR_CONTEXT_ENV.values()))
    if reserved:
        raise ValueError(f"Deployment actor '{entry['name']}' may not set Serve's reserved env vars {reserved}.")
    context = {"app_name": dep_id.app_name, "deployment": dep_id.name, "actor_name": entry["name"],
               "code_version": version}
    env_vars.update({DEPLOYMENT_ACTOR_CONTEXT_ENV[k]: v for k, v in context.items()})
    runtime_env["env_vars"] = env_vars
    options["runtime_env"] = runtime_env
    return options


def build_deployment_actors(config: dict[str, Any], dep_id: DeploymentID, version: str) -> dict[str, tuple[str, bytes]]:
    """Pickle the deployment-scoped actors declared in `config` (a DeploymentConfig
    dump; its entries' classes are replaced by their import paths, in place).

    Returns name -> (a version that changes with the actor's code, arguments and
    options; the pickled (actor class, init args, init kwargs, Ray options)). An
    import-path class is imported here. Raises what the import raises.
    """
    built: dict[str, tuple[str, bytes]] = {}
    plain = []
    for entry in config.get("deployment_actors") or ():
        cls = import_attr(entry["actor_class"]) if isinstance(entry["actor_class"], str) else entry["actor_class"]
        options = _deployment_actor_options(entry, config["ray_actor_options"].get("runtime_env") or {}, dep_id,
                                            version)
        args, kwargs = tuple(entry.get("init_args") or ()), dict(entry.get("init_kwargs") or {})
        blob = _pickled_by_value(cls, (cls, args, kwargs, options))
        underlying = getattr(cls, "__ray_actor_class__", cls)
        actor_version = code_version(underlying, blob, cloudpickle.dumps((args, kwargs)),
                                     extra=(json.dumps(options, sort_keys=True, default=str),))
        built[entry["name"]] = (actor_version, blob)
        plain.append({**entry, "actor_class": actor_class_path(cls)})
    if plain:
        config["deployment_actors"] = plain
    return built


def build_app(
    root: Application,
    app_name: str,
    route_prefix: Optional[str],
    *,
    runtime_env: Optional[Dict[str, Any]] = None,
    merge_runtime_env: bool = False,
    logging_config: Optional[Dict[str, Any]] = None,
    version_inputs: Tuple[str, ...] = (),
    external_scaler_enabled: bool = False,
) -> BuiltApplication:
    """Pickle every deployment of the graph rooted at `root` into complete specs.

    `runtime_env` is every replica's default (see `_actor_options` for
    `merge_runtime_env`); `logging_config` (a LoggingConfig dump) is used by
    deployments that set none; `version_inputs` (e.g. import path, runtime_env)
    are part of every code_version. Raises TypeError if `root` is not an
    Application, ValueError for a cycle, invalid options, or autoscaling with
    `external_scaler_enabled`.
    """
    if not isinstance(root, Application):
        raise TypeError(
            "serve.run expects an Application: call `.bind()` on your deployment, "
            f"got {type(root).__name__}."
        )
    apps = _collect(root)
    names = _unique_names(apps)
    specs = []
    for app in apps:
        dep = app.deployment
        options = dep.explicit_options
        config = DeploymentConfig.from_options({k: v for k, v in options.items() if k not in _NOT_CONFIG}).model_dump()
        config["ray_actor_options"] = _actor_options(config["ray_actor_options"], runtime_env or {}, merge_runtime_env)
        if logging_config is not None and not config.get("logging_config"):
            config["logging_config"] = copy.deepcopy(logging_config)
        config["request_router_config"] = ship_request_router(config["request_router_config"])
        serialized_def = cloudpickle.dumps(dep.func_or_class)
        init = (_replace_apps(list(app.args), names, app_name), _replace_apps(app.kwargs, names, app_name))
        serialized_init = cloudpickle.dumps(init)
        version = code_version(dep.func_or_class, serialized_def, serialized_init, options.get("version"),
                               extra=version_inputs)
        actors = build_deployment_actors(config, DeploymentID(names[id(app)], app_name), version)
        specs.append(
            DeploymentSpec(
                name=names[id(app)],
                serialized_def=serialized_def,
                serialized_init_args=serialized_init,
                config=config,
                code_version=version,
                is_function=inspect.isfunction(dep.func_or_class),
                ingress=app is root,
                explicit_options=_explicit_options(options, config["request_router_config"]),
                def_name=getattr(dep.func_or_class, "__name__", ""),
                deployment_actors=actors,
            )
        )
    built = BuiltApplication(name=app_name, route_prefix=route_prefix, ingress=names[id(root)], deployments=specs,
                             external_scaler_enabled=bool(external_scaler_enabled))
    built.check_external_scaler()
    return built
