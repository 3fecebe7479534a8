"""Deploying from Serve config files, and generating them (`serve-ext build`).

`build_app_from_schema` turns one `ServeApplicationSchema` into the
`BuiltApplication` the controller takes: it imports the target inside a Ray
task that runs with the app's `runtime_env` (so code shipped in `working_dir`
or `py_modules` is found), calls an application builder with the app's
`args`, applies the file's per-deployment overrides and gives every replica
the app's `runtime_env` as its default. `deploy_config` builds every app of a
file first and only then changes the cluster. `build_config_from_import_paths`
writes the config `serve build` writes.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import os
import sys
import tempfile
import typing
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import ray
from pydantic import BaseModel, ValidationError

from ray_serving_ext._private.build import BuiltApplication, _collect, _unique_names, build_app, map_nested
from ray_serving_ext._private.config_types import import_attr
from ray_serving_ext._private.constants import CONFIG_BUILD_TIMEOUT_S, runtime_env_include_gitignore
from ray_serving_ext.config import NON_CONFIG_OPTIONS, LoggingConfig, format_validation_error
from ray_serving_ext.config_file import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema
from ray_serving_ext.deployment import Application
from ray_serving_ext.exceptions import RayServeException

logger = logging.getLogger("ray_serving_ext")

class AppBuildError(RayServeException, ValueError):
    """An application of a config could not be built; the message names the app
    and its import path and says why, one problem per line. `failures` maps
    each failing app's name to its line."""

    def __init__(self, message: str, failures: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.failures = dict(failures or {})


class DeployResult(NamedTuple):
    """What `deploy_config` changed: apps sent to the controller, apps deleted."""

    deployed: List[str]
    deleted: List[str]


# ---------------------------------------------------------------------------- import


def _import_target(import_path: str, app_name: str) -> Any:
    try:
        return import_attr(import_path)
    except Exception as exc:  # noqa: BLE001 - any import-time failure is the user's
        raise AppBuildError(
            f"Application '{app_name}': failed to import '{import_path}': {type(exc).__name__}: {exc}"
        ) from None


def _builder_model(builder: Any, param: inspect.Parameter) -> Optional[type]:
    """The pydantic model the builder's single parameter is annotated with, if any."""
    annotation = param.annotation
    try:
        annotation = typing.get_type_hints(builder).get(param.name, annotation)
    except Exception:  # noqa: BLE001 - unresolvable hints: fall back to the raw annotation
        pass
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    return None


def call_app_builder(target: Any, args: Dict[str, Any], import_path: str) -> Application:
    """The Application at `import_path`: `target` itself, or what the builder returns.

    A builder takes exactly one parameter; when it is annotated with a pydantic
    model, `args` are validated into that model first (as Ray Serve does).
    Raises AppBuildError naming `import_path` otherwise.
    """
    if isinstance(target, Application):
        if args:
            raise AppBuildError(
                f"'{import_path}' is an Application, not an application builder; "
                "args can only be passed to a builder function."
            )
        return target
    if not inspect.isfunction(target):
        raise AppBuildError(
            f"'{import_path}' must be an Application (from `.bind()`) or an application builder "
            f"function, but it is a {type(target).__name__}."
        )
    params = list(inspect.signature(target).parameters.values())
    if len(params) != 1:
        raise AppBuildError(
            f"Application builder '{import_path}' must take exactly one parameter (the args), "
            f"it takes {len(params)}."
        )
    model = _builder_model(target, params[0])
    built_args: Any = dict(args)
    if model is not None:
        try:
            built_args = model.model_validate(built_args)
        except ValidationError as exc:
            lines = format_validation_error(exc).replace("\n", "; ")
            raise AppBuildError(f"Invalid args for application builder '{import_path}': {lines}") from None
    app = target(built_args)
    if not isinstance(app, Application):
        raise AppBuildError(
            f"Application builder '{import_path}' must return an Application (from `.bind()`), "
            f"but it returned a {type(app).__name__}."
        )
    return app


# ---------------------------------------------------------------------------- overrides


def _swap_apps(value: Any, new: Dict[int, Application]) -> Any:
    """`value` with every Application replaced by its rebuilt copy."""
    return map_nested(value, lambda v: new[id(v)] if isinstance(v, Application) else v)


def _error_reason(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return format_validation_error(exc).replace("\n", "; ")
    return str(exc)


def apply_overrides(
    root: Application, overrides: Dict[str, Dict[str, Any]], app_name: str
) -> Tuple[Application, Dict[str, Any]]:
    """Rebuild the graph under `root` with each named deployment's options merged
    with `overrides[name]` (as `Deployment.options(**overrides)`, so validated).

    Names are the ones the application's deployments get when built (a second
    binding of the same deployment is "Name_1"). Returns the new root and, by
    deployment name, the class or function it serves. Raises AppBuildError for
    an unknown deployment name (listing the app's deployments) or invalid options.
    """
    apps = _collect(root)
    names = _unique_names(apps)
    unknown = sorted(set(overrides) - set(names.values()))
    if unknown:
        raise AppBuildError(
            f"Application '{app_name}': the config overrides deployment(s) {unknown}, which the "
            f"application does not have. Its deployments: {sorted(names.values())}."
        )
    new: Dict[int, Application] = {}
    served: Dict[str, Any] = {}
    for app in apps:  # children come before the parents that bind them
        name = names[id(app)]
        dep = app.deployment
        if overrides.get(name):
            try:
                dep = dep.options(**overrides[name])
            except (TypeError, ValueError) as exc:
                raise AppBuildError(
                    f"Application '{app_name}': invalid options for deployment '{name}': {_error_reason(exc)}"
                ) from None
        new[id(app)] = Application(dep, _swap_apps(tuple(app.args), new), _swap_apps(app.kwargs, new))
        served[name] = dep.func_or_class
    return new[id(root)], served


# ---------------------------------------------------------------------------- runtime_env and versions


def _version_inputs(import_path: str, env: Dict[str, Any]) -> Tuple[str, ...]:
    """What a config-file app's code_versions also depend on: its import path and runtime_env."""
    return (import_path, json.dumps(env, sort_keys=True, default=str))


def _route_prefix(app: ServeApplicationSchema, root: Application) -> Optional[str]:
    if "route_prefix" in app.model_fields_set:
        return app.route_prefix
    return root.deployment.route_prefix or "/"


def build_app_locally(
    app: ServeApplicationSchema,
    runtime_env: Optional[Dict[str, Any]] = None,
    logging_config: Optional[LoggingConfig] = None,
) -> BuiltApplication:
    """Build `app` in this process (no Ray task). `runtime_env` (default: the app's)
    is merged under every replica's own and is part of each code_version; the
    app's logging_config, else `logging_config` (the file's top-level one), is
    used by deployments that set none in code.

    Raises AppBuildError (naming the app and import path) for any failure.
    """
    env = dict(app.runtime_env if runtime_env is None else runtime_env)
    target = _import_target(app.import_path, app.name)
    try:
        root = call_app_builder(target, app.args, app.import_path)
    except AppBuildError as exc:
        raise AppBuildError(f"Application '{app.name}': {exc}") from None
    overrides = {d.name: d.overrides() for d in app.deployments}
    root, _ = apply_overrides(root, overrides, app.name)
    app_logging = app.logging_config or logging_config
    try:
        return build_app(
            root, app.name, _route_prefix(app, root), runtime_env=env, merge_runtime_env=True,
            logging_config=None if app_logging is None else app_logging.model_dump(),
            version_inputs=_version_inputs(app.import_path, env),
            external_scaler_enabled=app.external_scaler_enabled,
        )
    except (TypeError, ValueError) as exc:
        raise AppBuildError(f"Application '{app.name}': {_error_reason(exc)}") from None


def _build_in_worker(
    app: ServeApplicationSchema, runtime_env: Dict[str, Any], logging_config: Optional[LoggingConfig] = None
) -> Tuple[str, Any]:
    """The body of the build task: ("ok", BuiltApplication) or ("error", message)."""
    try:
        return "ok", build_app_locally(app, runtime_env, logging_config)
    except AppBuildError as exc:
        return "error", str(exc)
    except Exception as exc:  # noqa: BLE001 - e.g. a builder that raises
        return "error", (
            f"Application '{app.name}': building '{app.import_path}' raised {type(exc).__name__}: {exc}"
        )


_build_task: Any = None


def _get_build_task() -> Any:
    """The Ray remote function that builds one app (one fresh worker per call, so
    edited modules are imported anew)."""
    global _build_task
    if _build_task is None:
        _build_task = ray.remote(num_cpus=0, max_calls=1)(_build_in_worker)
    return _build_task


def _call_uploader(fn: Any, env: Dict[str, Any], scratch: str) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {"scratch_dir": scratch, "logger": logger}
    if "include_gitignore" in inspect.signature(fn).parameters:
        kwargs["include_gitignore"] = runtime_env_include_gitignore()
    return fn(env, **kwargs)


def upload_runtime_env(runtime_env: Dict[str, Any], app_name: str = "") -> Dict[str, Any]:
    """`runtime_env` with local `working_dir` / `py_modules` uploaded to the
    cluster and replaced by their `gcs://` URIs (which name the content, so they
    change when the code does). Needs a connected Ray. Raises AppBuildError."""
    env = copy.deepcopy(runtime_env or {})
    if not env.get("working_dir") and not env.get("py_modules"):
        return env
    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    try:
        with tempfile.TemporaryDirectory(prefix="serve_ext_upload_") as scratch:
            env = _call_uploader(upload_py_modules_if_needed, env, scratch)
            env = _call_uploader(upload_working_dir_if_needed, env, scratch)
    except Exception as exc:  # noqa: BLE001 - missing dirs, bad URIs, ...
        raise AppBuildError(f"Application '{app_name}': could not upload its runtime_env: {exc}") from None
    env.pop("excludes", None)
    return env


def build_apps(
    apps: List[ServeApplicationSchema], local: bool = False, logging_config: Optional[LoggingConfig] = None
) -> List[BuiltApplication]:
    """Build every app; raise AppBuildError listing every failure (one per line).

    With `local=False` (needs a connected Ray) each app is imported in its own
    Ray task that runs with the app's (uploaded) runtime_env; with `local=True`
    in this process, the runtime_env used as written. `logging_config` (a
    file's top-level one) is the default for apps that set none.
    """
    if local:
        return _collect_results(apps, [_build_in_worker(app, app.runtime_env, logging_config) for app in apps])
    task = _get_build_task()
    pending: List[Any] = []
    for app in apps:
        try:
            env = upload_runtime_env(app.runtime_env, app.name)
        except AppBuildError as exc:
            pending.append(("error", str(exc)))
            continue
        pending.append(task.options(runtime_env=env or None).remote(app, env, logging_config))
    return _collect_results(apps, [p if isinstance(p, tuple) else _get_result(a, p) for a, p in zip(apps, pending)])


def _get_result(app: ServeApplicationSchema, ref: Any) -> Tuple[str, Any]:
    try:
        return ray.get(ref, timeout=CONFIG_BUILD_TIMEOUT_S)
    except ray.exceptions.RuntimeEnvSetupError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
        return "error", f"Application '{app.name}': its runtime_env could not be set up: {reason}"
    except ray.exceptions.GetTimeoutError:
        return "error", f"Application '{app.name}': importing '{app.import_path}' took over {CONFIG_BUILD_TIMEOUT_S:.0f}s."
    except ray.exceptions.RayError as exc:
        return "error", f"Application '{app.name}': the build task failed: {type(exc).__name__}: {exc}"


def _collect_results(apps: List[ServeApplicationSchema], results: List[Tuple[str, Any]]) -> List[BuiltApplication]:
    failures = {app.name: value for app, (kind, value) in zip(apps, results) if kind == "error"}
    if failures:
        raise AppBuildError("\n".join(failures.values()), failures)
    return [value for _, value in results]


def build_app_from_schema(app: ServeApplicationSchema, *, local: bool = False) -> BuiltApplication:
    """One application of a config, built (see `build_apps`)."""
    return build_apps([app], local=local)[0]


# ---------------------------------------------------------------------------- deploy


def app_config_dict(app: ServeApplicationSchema) -> Dict[str, Any]:
    """The app's config as written (fields set in the file only), as plain data."""
    return app.model_dump(mode="json", exclude_unset=True)


def deploy_config(
    client: Any,
    schema: ServeDeploySchema,
    declarative: bool = True,
    built: Optional[List[BuiltApplication]] = None,
) -> DeployResult:
    """Deploy every application of `schema`; with `declarative`, delete running
    applications the file does not name.

    Every app is built (imported, overrides applied; or `built`, from
    `build_apps(schema.applications, logging_config=schema.logging_config)`) before anything changes on the cluster:
    a failure raises AppBuildError and leaves the running apps as they were.
    The controller then applies the whole goal atomically; when it refuses
    (e.g. two apps would share a route prefix) nothing changes and
    RayServeException("Deploying the config failed: ...") says why. Returns
    once the controller has the new goal, without waiting for RUNNING.
    """
    if built is None:
        try:
            built = build_apps(list(schema.applications), logging_config=schema.logging_config)
        except AppBuildError as exc:
            # Apps already running keep their version; their status says why the new one failed.
            if exc.failures and hasattr(client, "record_build_failures"):
                client.record_build_failures(exc.failures)
            raise
    wanted = {b.name for b in built}
    running = [
        name for name, status in client.get_serve_status().applications.items() if str(status.status) != "DELETING"
    ]
    stale = sorted(n for n in running if n not in wanted) if declarative else []
    configs = {app.name: app_config_dict(app) for app in schema.applications}
    try:
        # One controller call: every app changes together, or none does.
        client.deploy_applications(
            built, [configs[b.name] for b in built], delete_missing=declarative,
            target_capacity=schema.target_capacity,
        )
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None) or exc
        raise RayServeException(f"Deploying the config failed: {cause}") from None
    return DeployResult([b.name for b in built], stale)


# ---------------------------------------------------------------------------- build (config generation)


def _deployment_entry(name: str, options: Dict[str, Any]) -> Dict[str, Any]:
    """One `deployments:` entry: the name and the options set in code, validated."""
    opts = {k: v for k, v in options.items() if k not in NON_CONFIG_OPTIONS}
    for key, value in list(opts.items()):
        if isinstance(value, BaseModel):
            opts[key] = value.model_dump(exclude_unset=True)
    try:
        schema = DeploymentSchema.model_validate({"name": name, **opts})
    except ValidationError as exc:
        raise AppBuildError(f"Deployment '{name}': {_error_reason(exc)}") from None
    return schema.model_dump(mode="json", exclude_unset=True)


def _application_entry(import_path: str, name: str, route_prefix: str) -> Dict[str, Any]:
    target = _import_target(import_path, name)
    if not isinstance(target, Application):
        raise AppBuildError(f"Expected '{import_path}' to be an Application but got {type(target).__name__}.")
    apps = _collect(target)
    names = _unique_names(apps)
    return {
        "name": name,
        "route_prefix": route_prefix,
        "import_path": import_path,
        "runtime_env": {},
        "deployments": [_deployment_entry(names[id(a)], a.deployment.explicit_options) for a in apps],
    }


def build_config_from_import_paths(import_paths: List[str], app_dir: Optional[str] = ".") -> Dict[str, Any]:
    """The multi-application config `serve build` writes for `import_paths`.

    Apps are named app1, app2, ...; a single app gets route prefix "/", several
    get "/app1", "/app2", .... Each deployment lists only the options set in
    code. `app_dir` is put first on sys.path for the imports. The result
    validates as a ServeDeploySchema. Raises AppBuildError.
    """
    if not import_paths:
        raise AppBuildError("At least one import path is required.")
    if app_dir is not None:
        path = os.path.abspath(app_dir)
        if path not in sys.path:
            sys.path.insert(0, path)
    applications = []
    for index, import_path in enumerate(import_paths):
        name = f"app{index + 1}"
        route = "/" if len(import_paths) == 1 else f"/{name}"
        applications.append(_application_entry(import_path, name, route))
    config = {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": 8000},
        "applications": applications,
    }
    try:
        ServeDeploySchema.model_validate(config)
    except ValidationError as exc:
        raise AppBuildError(f"The generated config is invalid:\n{format_validation_error(exc)}") from None
    return config
