"""The `serve-ext` command line: Ray Serve's `serve` CLI for ray_serving_ext.

Verbs: start, run, deploy, build, status, config, shutdown — same names,
arguments and options as Ray Serve's. Every verb but `build` connects to a
running Ray cluster (`--address`/`-a`, default `$RAY_ADDRESS`, else "auto")
in namespace "serve"; only `run` starts a local cluster when none is found.

Exit status 0 on success; 1 with a one-line reason on stderr (no traceback)
for expected failures: an invalid config (the file and one `field.path:
reason` line per problem), an application that cannot be imported or built,
no Ray cluster, no Serve instance.
"""

from __future__ import annotations

import json
import logging
import pathlib
import signal
import time
from typing import Any, Dict, List, Optional, Tuple

import click
import ray
import yaml
from pydantic import ValidationError

from ray_serving_ext._private.client import ServeControllerClient
from ray_serving_ext._private.cluster import find_controller, host_port, probe, stale_bootstrap_address
from ray_serving_ext._private.config_deploy import (
    AppBuildError,
    build_apps,
    build_config_from_import_paths,
    deploy_config,
)
from ray_serving_ext._private.constants import DEFAULT_APP_NAME, SERVE_NAMESPACE, VERSION, default_ray_address
from ray_serving_ext._private.rest_client import RestClient, is_http_address
from ray_serving_ext.config import ControllerOptions, HTTPOptions, ProxyLocation, TracingConfig, format_validation_error
from ray_serving_ext.config_file import ConfigError, ServeApplicationSchema, ServeDeploySchema, load_config_file
from ray_serving_ext.exceptions import RayServeException
from ray_serving_ext.schema import ServeInstanceDetails, ServeStatus

PROG_NAME = "serve-ext"
# How long to wait for a "host:port" cluster address to accept a connection.
_PROBE_TIMEOUT_S = 3.0


def _default_address() -> str:
    return default_ray_address()


def _address_option(default: Any = _default_address) -> Any:
    return click.option(
        "--address",
        "-a",
        default=default,
        show_default="$RAY_ADDRESS or auto",
        type=str,
        help="Address of the running Ray cluster (host:port), or 'auto'; for deploy, status, config and "
             "shutdown also an http:// address of Serve's REST API (http://127.0.0.1:8266 unless "
             "RAY_SERVE_EXT_ADMIN_PORT says otherwise; $RAY_SERVE_EXT_API_KEY is sent as its Bearer key).",
    )


# ---------------------------------------------------------------------------- output


class _ConfigDumper(yaml.SafeDumper):
    """Block-style YAML with a blank line between top-level keys (as `serve build`)."""

    def write_line_break(self, data: Optional[str] = None) -> None:
        super().write_line_break(data)
        if len(self.indents) == 1:
            super().write_line_break()


def _represent_str(dumper: yaml.SafeDumper, data: str) -> Any:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_ConfigDumper.add_representer(str, _represent_str)


def dump_yaml(data: Any, spaced: bool = False) -> str:
    """`data` as block-style YAML in insertion order."""
    dumper = _ConfigDumper if spaced else yaml.SafeDumper
    return yaml.dump(data, Dumper=dumper, default_flow_style=False, sort_keys=False, width=100, indent=2)


def _fail(message: str) -> "click.ClickException":
    return click.ClickException(message)


# ---------------------------------------------------------------------------- connecting


def _try_connect(address: str, kwargs: Dict[str, Any]) -> Optional[str]:
    """Connect to the cluster at `address`; None on success, else the reason.

    A "host:port" address is probed first, to fail in seconds instead of Ray's
    minute of retries when nothing listens there.
    """
    target = host_port(address)
    reason = probe(target, _PROBE_TIMEOUT_S) if target is not None else None
    if reason is not None:
        return f"Could not connect to a Ray cluster at '{address}': {reason}."
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"Could not connect to a Ray cluster at '{address}': {reason}"
    return None


def connect(address: str, allow_local: bool = False, log_to_driver: bool = False) -> None:
    """Connect this process to Ray in namespace "serve".

    With `allow_local` and the address "auto", start a local cluster when none
    is running (as `serve run` does). Raises ClickException otherwise.
    """
    if ray.is_initialized():
        return
    kwargs = {"namespace": SERVE_NAMESPACE, "logging_level": logging.WARNING, "log_to_driver": log_to_driver}
    stale = stale_bootstrap_address() if address == "auto" else None
    if stale:  # "auto" would join it and retry for ever
        error: Optional[str] = (f"Could not connect to a Ray cluster: Ray's last cluster address {stale} does "
                                "not answer (its head was stopped without cleaning up).")
    else:
        error = _try_connect(address, kwargs)
    if error is None:
        return
    if not (allow_local and address == "auto"):
        raise _fail(error)
    click.echo("No running Ray cluster found; starting a local one.", err=True)
    ray.init(address="local", **kwargs)


def _client() -> Optional[ServeControllerClient]:
    controller = find_controller()
    return None if controller is None else ServeControllerClient(controller)


def _require_client(address: str) -> ServeControllerClient:
    connect(address)
    client = _client()
    if client is None:
        raise _fail(f"No Serve instance is running on the Ray cluster at '{address}'.")
    return client


def _ensure_serve(
    http_options: Optional[HTTPOptions], proxy_location: str, warn_if_different: bool = False,
    checkpoint_path: Optional[str] = None, tracing_config: Optional[TracingConfig] = None,
    controller_env: Optional[Dict[str, str]] = None,
) -> ServeControllerClient:
    """The running instance's client, starting a detached instance when there is none
    (with `tracing_config`, if given; a running one uses it for replicas it starts
    from now on, as Ray Serve does with a config file's tracing_config).

    An instance that is already running keeps its HTTP options; with
    `warn_if_different`, a warning says so if `http_options` differ from them.
    `controller_env` goes into a new controller's environment.
    """
    client = _client()
    if client is None:
        from ray_serving_ext import api

        try:
            controller_options = ControllerOptions(runtime_env={"env_vars": controller_env}) if controller_env else None
            api.start(detached=True, http_options=http_options, proxy_location=proxy_location,
                      checkpoint_path=checkpoint_path, tracing_config=tracing_config,
                      controller_options=controller_options)
        except (ValueError, ImportError, RayServeException, RuntimeError) as exc:
            raise _fail(f"Serve did not start: {exc}") from None
        client = _client()
        if client is None:
            raise _fail("Serve did not start on the Ray cluster.")
        return client
    if tracing_config is not None:
        client.set_tracing_config(tracing_config)
    if warn_if_different and http_options is not None:
        current = client.get_http_config()
        wanted = {"host": http_options.host, "port": http_options.port}
        if any(current.get(k) != v for k, v in wanted.items()):
            click.echo(
                f"Warning: Serve is already running with HTTP on {current.get('host')}:{current.get('port')}; "
                f"the requested {wanted['host']}:{wanted['port']} takes effect only after "
                f"`{PROG_NAME} shutdown`.",
                err=True,
            )
    return client


# ---------------------------------------------------------------------------- targets


def _parse_arguments(arguments: Tuple[str, ...]) -> Dict[str, str]:
    args: Dict[str, str] = {}
    for arg in arguments:
        key, sep, value = arg.partition("=")
        if not sep or not key or not value:
            raise _fail(f"Invalid application argument '{arg}', must be of the form '<key>=<val>'.")
        args[key] = value
    return args


def _runtime_env(runtime_env_json: Optional[str], working_dir: Optional[str]) -> Dict[str, Any]:
    env: Dict[str, Any] = {}
    if runtime_env_json:
        try:
            env = json.loads(runtime_env_json)
        except json.JSONDecodeError as exc:
            raise _fail(f"--runtime-env-json is not valid JSON: {exc}") from None
        if not isinstance(env, dict):
            raise _fail("--runtime-env-json must be a JSON object.")
    if working_dir:
        env["working_dir"] = working_dir
    return env


def load_target(
    target: str,
    arguments: Tuple[str, ...] = (),
    name: Optional[str] = None,
    route_prefix: Optional[str] = None,
    runtime_env: Optional[Dict[str, Any]] = None,
) -> Tuple[ServeDeploySchema, bool]:
    """The config to deploy for CONFIG_OR_IMPORT_PATH, and whether it came from a file.

    A file is read and validated (ConfigError names it and every bad field);
    anything else is an import path made into a one-application config.
    """
    if pathlib.Path(target).is_file():
        for given, option in ((arguments, "Application arguments"), (name, "--name"), (route_prefix, "--route-prefix")):
            if given:
                click.echo(f"Warning: {option} is ignored when deploying a config file.", err=True)
        try:
            return load_config_file(target), True
        except ConfigError as exc:
            raise _fail(str(exc)) from None
    fields: Dict[str, Any] = {"import_path": target, "args": _parse_arguments(arguments)}
    fields["name"] = name or DEFAULT_APP_NAME
    if route_prefix is not None:
        fields["route_prefix"] = route_prefix
    if runtime_env:
        fields["runtime_env"] = runtime_env
    try:
        app = ServeApplicationSchema.model_validate(fields)
        return ServeDeploySchema(applications=[app]), False
    except ValidationError as exc:
        raise _fail(f"Invalid application '{target}':\n{format_validation_error(exc)}") from None


def _serve_for(schema: ServeDeploySchema, is_file: bool) -> ServeControllerClient:
    """The instance to deploy `schema` to: a config file's http_options and
    proxy_location (and tracing_config) start it if needed (an import path gets
    the defaults of `serve.start`); a warning says when a running instance
    listens elsewhere than the file's explicit http_options."""
    http = schema.http_options.to_http_options() if is_file else None
    explicit = is_file and "http_options" in schema.model_fields_set
    return _ensure_serve(http, schema.proxy_location.value, warn_if_different=explicit,
                         tracing_config=schema.tracing_config)


def _deploy(schema: ServeDeploySchema, is_file: bool, declarative: bool) -> Tuple[ServeControllerClient, List[str]]:
    """Build every app, then (starting Serve if needed) deploy them: a config
    that cannot be built changes nothing on the cluster."""
    try:
        built = build_apps(list(schema.applications), logging_config=schema.logging_config)
        client = _serve_for(schema, is_file)
        result = deploy_config(client, schema, declarative=declarative, built=built)
    except (AppBuildError, RayServeException) as exc:
        raise _fail(str(exc)) from None
    if result.deleted:
        click.echo(f"Deleting applications not in the config: {', '.join(result.deleted)}.", err=True)
    return client, result.deployed


# ---------------------------------------------------------------------------- commands


@click.group(
    help="CLI for managing ray_serving_ext (Ray Serve-compatible) applications on a Ray cluster.",
    context_settings={"help_option_names": ["--help", "-h"]},
)
def cli() -> None:
    """The command group."""


@cli.command(help="Start Serve on the Ray cluster (detached: it outlives this command).")
@_address_option()
@click.option("--http-host", default="127.0.0.1", show_default=True, type=str, help="Host for HTTP proxies to listen on.")
@click.option("--http-port", default=8000, show_default=True, type=int, help="Port for HTTP proxies to listen on.")
@click.option(
    "--proxy-location",
    default=ProxyLocation.EveryNode.value,
    show_default=True,
    type=click.Choice([p.value for p in ProxyLocation]),
    help="Where to run HTTP proxies.",
)
@click.option("--checkpoint-path", default=None, type=str,
              help="Save the goal state here (file://, s3://, gs://, custom://module.Class/path) and "
                   "restore every application from it when it already holds state.")
@click.option("--admin-port", default=None, type=click.IntRange(0, 65535),
              help="Serve Ray Serve's REST API (/api/serve/applications/) on this port of the controller's node "
                   "(RAY_SERVE_EXT_ADMIN_PORT; default 8266, 0 turns it off).")
@click.option("--admin-host", default=None, type=str,
              help="Host for the REST API (RAY_SERVE_EXT_ADMIN_HOST; default 127.0.0.1). Off loopback, give it keys.")
@click.option("--admin-api-keys-file", default=None, type=str,
              help="A file on the controller's node with the REST API's bearer keys, one per line "
                   "(RAY_SERVE_EXT_ADMIN_API_KEYS_FILE).")
def start(address: str, http_host: str, http_port: int, proxy_location: str, checkpoint_path: Optional[str],
          admin_port: Optional[int], admin_host: Optional[str], admin_api_keys_file: Optional[str]) -> None:
    """Start a detached Serve instance, or leave the running one as it is."""
    connect(address)
    if _client() is not None:
        click.echo("Serve is already running on this Ray cluster; nothing to start.", err=True)
        return
    try:
        options = HTTPOptions(host=http_host, port=http_port)
    except ValidationError as exc:
        raise _fail(f"Invalid HTTP options: {format_validation_error(exc).replace(chr(10), '; ')}") from None
    env = {name: str(value) for name, value in (
        ("RAY_SERVE_EXT_ADMIN_PORT", admin_port), ("RAY_SERVE_EXT_ADMIN_HOST", admin_host),
        ("RAY_SERVE_EXT_ADMIN_API_KEYS_FILE", admin_api_keys_file)) if value is not None}
    client = _ensure_serve(options, proxy_location, checkpoint_path=checkpoint_path, controller_env=env)
    address = client.get_admin_address()
    admin = f"; REST API on {address}" if address else "; no REST API: its port is 0, or was taken (controller log)"
    click.echo(f"Serve started (HTTP on {http_host}:{http_port}, proxies: {proxy_location}{admin}).")


_TARGET_HELP = "A YAML config file, or the import path of an Application or application builder."


def _target_options(fn: Any) -> Any:
    for decorator in reversed(
        [
            click.argument("config_or_import_path"),
            click.argument("arguments", nargs=-1, required=False),
            click.option("--runtime-env-json", default=None, type=str,
                         help="JSON runtime_env for an import path (ignored for a config file)."),
            click.option("--working-dir", default=None, type=str,
                         help="Local directory or remote URI shipped to the application's workers "
                              "(ignored for a config file)."),
            click.option("--name", default=None, type=str,
                         help=f"Application name for an import path (default '{DEFAULT_APP_NAME}')."),
        ]
    ):
        fn = decorator(fn)
    return fn


@cli.command(help="Deploy applications from a config file (or an import path); returns at once. "
                  "Applications not in the config are deleted. " + _TARGET_HELP)
@_target_options
@_address_option()
def deploy(
    config_or_import_path: str,
    arguments: Tuple[str, ...],
    runtime_env_json: Optional[str],
    working_dir: Optional[str],
    name: Optional[str],
    address: str,
) -> None:
    """Validate, build, send the goal, return without waiting for RUNNING."""
    env = _runtime_env(runtime_env_json, working_dir)
    schema, is_file = load_target(config_or_import_path, arguments, name, None, env)
    if is_http_address(address):  # Ray Serve's REST API: the instance builds and deploys it
        try:
            RestClient(address).deploy(schema.model_dump(mode="json", exclude_unset=True))
        except RayServeException as exc:
            raise _fail(str(exc)) from None
    else:
        connect(address)
        _deploy(schema, is_file, declarative=True)
    click.echo(
        "\nSent deploy request successfully.\n"
        f" * Use `{PROG_NAME} status` to check applications' statuses.\n"
        f" * Use `{PROG_NAME} config` to see the current application config(s).\n"
    )


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _wait_running(client: ServeControllerClient, names: List[str]) -> None:
    for app_name in names:
        try:
            client.wait_for_application_running(app_name)
        except (RuntimeError, TimeoutError) as exc:
            raise _fail(str(exc).splitlines()[0]) from None
        click.echo(f"Application '{app_name}' is RUNNING.", err=True)


def _block_then_shutdown(client: ServeControllerClient) -> None:
    """Sleep until Ctrl-C or SIGTERM, then shut Serve down."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        click.echo("Got interrupted, shutting down Serve...", err=True)
        client.shutdown()


@cli.command(help="Run applications and block until Ctrl-C or SIGTERM, then shut Serve down. " + _TARGET_HELP)
@_target_options
@_address_option()
@click.option("--route-prefix", default=None, type=str, help="Route prefix for an import path (default '/').")
@click.option("--blocking/--non-blocking", default=True, show_default=True,
              help="Block until interrupted (then shut down), or return once the applications are RUNNING.")
def run(
    config_or_import_path: str,
    arguments: Tuple[str, ...],
    runtime_env_json: Optional[str],
    working_dir: Optional[str],
    name: Optional[str],
    address: str,
    route_prefix: Optional[str],
    blocking: bool,
) -> None:
    """Deploy, wait for RUNNING, then block or return."""
    env = _runtime_env(runtime_env_json, working_dir)
    schema, is_file = load_target(config_or_import_path, arguments, name, route_prefix, env)
    connect(address, allow_local=True, log_to_driver=blocking)
    client, names = _deploy(schema, is_file, declarative=is_file)
    try:
        _wait_running(client, names)
    except click.ClickException:
        if blocking:  # as `serve run`: a run that cannot come up leaves nothing behind
            client.shutdown()
        raise
    if blocking:
        _block_then_shutdown(client)


@cli.command(help="Write a config file for the Applications at IMPORT_PATHS (names app1, app2, ...).")
@click.argument("import_paths", nargs=-1, required=True)
@click.option("--app-dir", "-d", default=".", show_default=True, type=str,
              help="Directory put first on sys.path to import the applications.")
@click.option("--output-path", "-o", default=None, type=str,
              help="Where to write the YAML config; stdout when not given.")
def build(import_paths: Tuple[str, ...], app_dir: str, output_path: Optional[str]) -> None:
    """Import locally, write the config."""
    try:
        config = build_config_from_import_paths(list(import_paths), app_dir=app_dir)
    except AppBuildError as exc:
        raise _fail(str(exc)) from None

    text = f"# This file was generated using the `{PROG_NAME} build` command on ray_serving_ext v{VERSION}.\n\n"
    text += dump_yaml(config, spaced=True)
    text = text.rstrip("\n") + "\n"
    if output_path:
        with open(output_path, "w", encoding="utf-8") as f:
            f.write(text)
        click.echo(f"Wrote the config to {output_path}. Application names default to app1, app2, ...", err=True)
    else:
        click.echo(text, nl=False)


def _status_view(status: ServeStatus) -> Dict[str, Any]:
    """Ray Serve's `serve status` shape (see `ServeStatus.status_view`)."""
    return status.status_view()


@cli.command(help="Print the status of Serve's proxies, applications and deployments as YAML.")
@_address_option()
@click.option("--name", "-n", default=None, type=str, help="Only this application's status.")
def status(address: str, name: Optional[str]) -> None:
    """YAML of `serve.status()`."""
    if is_http_address(address):
        view = ServeInstanceDetails.model_validate(_rest_details(address))._get_status().status_view()
    else:
        view = _status_view(_require_client(address).get_serve_status())
    if name is None:
        click.echo(dump_yaml(view), nl=False)
        return
    if name not in view["applications"]:
        raise _fail(f"Application '{name}' does not exist.")
    click.echo(dump_yaml(view["applications"][name]), nl=False)


@cli.command(help="Print the config(s) the Serve instance was last sent, as YAML documents.")
@_address_option()
@click.option("--name", "-n", default=None, type=str, help="Only this application's config.")
def config(address: str, name: Optional[str]) -> None:
    """YAML of each application's goal config (apps deployed from Python have none)."""
    if is_http_address(address):
        apps = _rest_details(address).get("applications", {})
        configs = {n: a.get("deployed_app_config") for n, a in apps.items() if a.get("deployed_app_config")}
    else:
        configs = {n: c for n, c in _require_client(address).get_app_configs().items() if c is not None}
    if name is not None:
        if name not in configs:
            raise _fail(f'No config has been deployed for application "{name}".')
        click.echo(dump_yaml(configs[name]), nl=False)
        return
    if not configs:
        click.echo("No configuration was found.")
        return
    click.echo("\n---\n\n".join(dump_yaml(c) for c in configs.values()), nl=False)


@cli.command(help="Shut down Serve on the cluster, deleting all applications.")
@_address_option()
@click.option("--yes", "-y", is_flag=True, help="Bypass the confirmation prompt.")
def shutdown(address: str, yes: bool) -> None:
    """Delete everything and stop the controller; returns when it is gone."""
    client = None if is_http_address(address) else _require_client(address)
    if not yes:
        click.confirm(
            f"This will shut down Serve on the cluster at '{address}' and delete all applications "
            "there. Do you want to continue?",
            abort=True,
        )
    try:
        if client is None:
            RestClient(address).shutdown()
            click.echo("Sent the shutdown request; applications will be deleted asynchronously.")
            return
        client.shutdown()
    except RayServeException as exc:
        raise _fail(str(exc)) from None
    click.echo("Serve has been shut down; all applications were deleted.")


def _rest_details(address: str) -> Dict[str, Any]:
    try:
        return RestClient(address).details()
    except RayServeException as exc:
        raise _fail(str(exc)) from None


def main() -> None:
    """Entry point of the `serve-ext` console script and `python -m ray_serving_ext`."""
    cli(prog_name=PROG_NAME)


if __name__ == "__main__":
    main()
