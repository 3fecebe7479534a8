"""Names, intervals and limits shared by the controller, proxies, replicas and handles.

This is the only module that reads environment variables. Tunables are read
once, at import time, from a variable of the same name (prefixed RAY_SERVE_ as
Ray Serve's are). The few settings that must follow the environment of the
process calling the API at that moment (log encoding, checkpoint storage, the
CLI's address) are functions that read it when called.
"""

from __future__ import annotations

import os


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def _env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_value(name: str) -> str:
    """The current value of a variable the user named (e.g. `http_options.api_keys_env`),
    read when asked rather than at import: "" when unset."""
    return os.environ.get(name, "")


# The release; `ray_serving_ext.__version__` and checkpoints carry it.
VERSION = "0.1.0"

SERVE_NAMESPACE = "serve"
CONTROLLER_NAME = "SERVE_CONTROLLER_ACTOR"
PROXY_NAME_PREFIX = "SERVE_PROXY_ACTOR-"
REPLICA_NAME_PREFIX = "SERVE_REPLICA::"

DEFAULT_APP_NAME = "default"

# Header carrying the request id, kept from the client when it sends one.
REQUEST_ID_HEADER = "x-request-id"

# The direct TCP data path; RAY_SERVE_EXT_TRANSPORT=ray sends requests as Ray actor calls instead.
USE_DIRECT_TRANSPORT = _env_str("RAY_SERVE_EXT_TRANSPORT", "tcp").lower() != "ray"
# The proxy forwards plain HTTP requests from uvicorn's parser callbacks, skipping
# the ASGI round (fast_http.py); RAY_SERVE_EXT_HTTP_FAST_PATH=0 sends every request
# through the proxy's ASGI app instead.
HTTP_FAST_PATH = _env_str("RAY_SERVE_EXT_HTTP_FAST_PATH", "1") not in ("0", "false", "False")
# How often every serving process pushes its metrics and load to the controller.
METRICS_PUSH_INTERVAL_S = _env_float("RAY_SERVE_EXT_METRICS_PUSH_INTERVAL_S", 1.0)
# Bound on one config-file build task (a runtime_env with pip packages can take minutes).
CONFIG_BUILD_TIMEOUT_S = _env_float("RAY_SERVE_CONFIG_BUILD_TIMEOUT_S", 600.0)

# Flow control on the data path (bytes, per stream). A response stream (HTTP body,
# handle stream, WebSocket messages to the client) has at most STREAM_WINDOW_BYTES
# sent by the replica and not yet taken by the caller; messages to a running request
# (a streamed request body, a WebSocket client's messages) at most INBOUND_WINDOW_BYTES
# not yet read by the replica. A request body larger than BODY_STREAM_THRESHOLD_BYTES
# is streamed to the replica under that window instead of read whole by the proxy.
# The data-path port: a connection must send HELLO (at most HELLO_MAX_BYTES) within
# HELLO_TIMEOUT_S or it is closed before anything else is read; after that, a frame
# may be at most MAX_FRAME_BYTES (a handle call's pickled arguments, one body chunk).
HELLO_MAX_BYTES = 1024
HELLO_TIMEOUT_S = _env_float("RAY_SERVE_EXT_HELLO_TIMEOUT_S", 5.0)
MAX_FRAME_BYTES = _env_int("RAY_SERVE_EXT_MAX_FRAME_BYTES", 1024 * 1024 * 1024)
STREAM_WINDOW_BYTES = _env_int("RAY_SERVE_EXT_STREAM_WINDOW_BYTES", 2 * 1024 * 1024)
INBOUND_WINDOW_BYTES = _env_int("RAY_SERVE_EXT_INBOUND_WINDOW_BYTES", 2 * 1024 * 1024)
BODY_STREAM_THRESHOLD_BYTES = _env_int("RAY_SERVE_EXT_BODY_STREAM_THRESHOLD_BYTES", 2 * 1024 * 1024)

# Ray Serve's bound on one `record_autoscaling_stats()` call in a replica.
RECORD_AUTOSCALING_STATS_TIMEOUT_S = _env_float("RAY_SERVE_RECORD_AUTOSCALING_STATS_TIMEOUT_S", 10.0)

# How often the controller's reconcile loop runs.
CONTROL_LOOP_INTERVAL_S = _env_float("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", 0.1)
# A long-poll call returns after this long even when nothing changed.
LONG_POLL_TIMEOUT_S = _env_float("RAY_SERVE_LONG_POLL_TIMEOUT_S", 30.0)
# Back-off between long-poll attempts while the controller is unreachable.
LONG_POLL_RETRY_S = _env_float("RAY_SERVE_LONG_POLL_RETRY_S", 0.2)

# A replica is replaced after this many consecutive failed health checks.
HEALTH_CHECK_FAILURE_THRESHOLD = _env_int("RAY_SERVE_HEALTH_CHECK_FAILURE_THRESHOLD", 3)
# A version is DEPLOY_FAILED after min(max_constructor_retry_count, this * target replicas)
# constructor failures in a row (Ray Serve's rule and variable).
MAX_PER_REPLICA_RETRY_COUNT = _env_int("RAY_SERVE_MAX_PER_REPLICA_RETRY_COUNT", 3)
# Defaults of the deployment options max_constructor_retry_count and rolling_update_percentage.
DEFAULT_CONSTRUCTOR_RETRY_COUNT = 20
DEFAULT_ROLLING_UPDATE_PERCENTAGE = 0.2
# A replica still not placed after this long makes the deployment say why.
SLOW_STARTUP_WARNING_S = _env_float("RAY_SERVE_SLOW_STARTUP_WARNING_S", 30.0)
# Proxies are health-checked this often.
PROXY_HEALTH_CHECK_PERIOD_S = _env_float("RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S", 5.0)
# HTTP proxy processes per node (set in the controller's environment). Above 1 they share
# the port with SO_REUSEPORT and the kernel spreads connections over them (proxy_state.py).
PROXIES_PER_NODE = max(1, _env_int("RAY_SERVE_EXT_PROXIES_PER_NODE", 1))
# The default of http_options.direct_ingress (read where serve.start builds the options):
# RAY_SERVE_EXT_DIRECT_INGRESS=1 has ingress replicas accept their node's HTTP connections.
DIRECT_INGRESS_DEFAULT = _env_str("RAY_SERVE_EXT_DIRECT_INGRESS", "0") in ("1", "true", "True")

# Tracing (Ray Serve's variables): the exporter function's import path ("" leaves
# tracing off unless a TracingConfig turns it on) and the fraction of root traces sampled.
TRACING_EXPORTER_IMPORT_PATH = _env_str("RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH", "")
TRACING_SAMPLING_RATIO = _env_float("RAY_SERVE_TRACING_SAMPLING_RATIO", 0.01)

# Ray Serve's hook for proxy middlewares: "module:callable" returning a list of Starlette
# Middleware, called where a proxy builds its HTTP server (proxy_middlewares.py).
HTTP_PROXY_CALLBACK_IMPORT_PATH = _env_str("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", "")

# The controller's admin HTTP API (Ray Serve's REST API, the external scaler's endpoint): on
# with every instance, on loopback port 8266 (Ray's dashboard has 8265); port 0 turns it off.
# Read in the controller's environment: `serve-ext start --admin-port`, or
# ControllerOptions(runtime_env={"env_vars": {"RAY_SERVE_EXT_ADMIN_PORT": "8270"}}).
DEFAULT_ADMIN_PORT = 8266
ADMIN_HOST = _env_str("RAY_SERVE_EXT_ADMIN_HOST", "127.0.0.1")
ADMIN_PORT = _env_int("RAY_SERVE_EXT_ADMIN_PORT", DEFAULT_ADMIN_PORT)
# Its API keys (admin_server.py): a keys file, and/or the name of a variable holding keys.
ADMIN_API_KEYS_FILE = _env_str("RAY_SERVE_EXT_ADMIN_API_KEYS_FILE", "")
ADMIN_API_KEYS_ENV = _env_str("RAY_SERVE_EXT_ADMIN_API_KEYS_ENV", "")
# ---- request routing (Ray Serve's names and defaults) ---------------------------------
# Backoff of a custom request router while no replica it chose has room
# (RequestRouterConfig's defaults for initial_backoff_s, backoff_multiplier, max_backoff_s).
ROUTER_RETRY_INITIAL_BACKOFF_S = _env_float("RAY_SERVE_ROUTER_RETRY_INITIAL_BACKOFF_S", 0.025)
ROUTER_RETRY_BACKOFF_MULTIPLIER = _env_float("RAY_SERVE_ROUTER_RETRY_BACKOFF_MULTIPLIER", 2.0)
ROUTER_RETRY_MAX_BACKOFF_S = _env_float("RAY_SERVE_ROUTER_RETRY_MAX_BACKOFF_S", 0.5)
# How often a replica calls the user's record_routing_stats(), and its bound.
DEFAULT_REQUEST_ROUTING_STATS_PERIOD_S = 10.0
DEFAULT_REQUEST_ROUTING_STATS_TIMEOUT_S = 30.0
# MultiplexMixin waits this long (randomised up to 2x) for a replica holding the model.
MULTIPLEXED_MODEL_ID_MATCHING_TIMEOUT_S = _env_float("RAY_SERVE_MULTIPLEXED_MODEL_ID_MATCHING_TIMEOUT_S", 1.0)
# Entries of RequestRouter.replica_queue_len_cache are stale after this long.
QUEUE_LENGTH_CACHE_TIMEOUT_S = _env_float("RAY_SERVE_QUEUE_LENGTH_CACHE_TIMEOUT_S", 10.0)
# Whether a proxy's custom request router (LocalityMixin) prefers replicas on its node / zone.
PROXY_PREFER_LOCAL_NODE_ROUTING = _env_str("RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING", "1") == "1"
PROXY_PREFER_LOCAL_AZ_ROUTING = _env_str("RAY_SERVE_PROXY_PREFER_LOCAL_AZ_ROUTING", "1") == "1"
# Deployment-scoped actors: their Ray names start with this; the controller checks
# each with `__ray_ready__` this often, gives a check this long, and recreates the
# actor after this many failed checks in a row (at once when it has died).
DEPLOYMENT_ACTOR_NAME_PREFIX = "SERVE_DEPLOYMENT_ACTOR::"
# A deployment actor that fails to start this many times in a row fails its deployment.
DEPLOYMENT_ACTOR_MAX_START_FAILURES = _env_int("RAY_SERVE_DEPLOYMENT_ACTOR_MAX_START_FAILURES", 3)
DEPLOYMENT_ACTOR_HEALTH_CHECK_PERIOD_S = _env_float("RAY_SERVE_DEPLOYMENT_ACTOR_HEALTH_CHECK_PERIOD_S", 2.0)
DEPLOYMENT_ACTOR_HEALTH_CHECK_TIMEOUT_S = _env_float("RAY_SERVE_DEPLOYMENT_ACTOR_HEALTH_CHECK_TIMEOUT_S", 30.0)
DEPLOYMENT_ACTOR_HEALTH_CHECK_UNHEALTHY_THRESHOLD = _env_int(
    "RAY_SERVE_DEPLOYMENT_ACTOR_HEALTH_CHECK_UNHEALTHY_THRESHOLD", 3)

# Default resources of a replica when ray_actor_options does not say (as Ray Serve).
DEFAULT_REPLICA_NUM_CPUS = 1.0

# Where the controller keeps its goal state inside the cluster (GCS key-value store).
KV_NAMESPACE = b"ray_serving_ext"
CHECKPOINT_KEY = "serve-controller-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


# ---- read when called: they follow the calling process's environment -----------------
S3_ENDPOINT_ENV = "RAY_SERVE_EXT_S3_ENDPOINT_URL"
STORAGE_OPTIONS_ENV = "RAY_SERVE_EXT_CHECKPOINT_STORAGE_OPTIONS"


# What a deployment-scoped actor's process is told about itself (Ray Serve 2.60's names),
# through the env_vars of the runtime_env the controller starts it with.
DEPLOYMENT_ACTOR_CONTEXT_ENV = {
    "app_name": "RAY_SERVE_INTERNAL_DEPLOYMENT_APP_NAME",
    "deployment": "RAY_SERVE_INTERNAL_DEPLOYMENT_NAME",
    "actor_name": "RAY_SERVE_INTERNAL_DEPLOYMENT_ACTOR_NAME",
    "code_version": "RAY_SERVE_INTERNAL_DEPLOYMENT_CODE_VERSION",
}


def deployment_actor_context_env() -> dict:
    """The deployment-actor context variables of this process (key -> value), for
    each key of ``DEPLOYMENT_ACTOR_CONTEXT_ENV`` that is set."""
    return {key: os.environ[var] for key, var in DEPLOYMENT_ACTOR_CONTEXT_ENV.items() if var in os.environ}


def default_log_encoding() -> str:
    """``JSON`` if ``$RAY_SERVE_LOG_ENCODING`` says so (as in Ray Serve), else ``TEXT``."""
    return "JSON" if _env_str("RAY_SERVE_LOG_ENCODING") == "JSON" else "TEXT"


def prometheus_host() -> str:
    """The Prometheus server autoscaling policies query by default: ``$RAY_PROMETHEUS_HOST`` ('' if unset)."""
    return _env_str("RAY_PROMETHEUS_HOST") or ""


def prometheus_headers() -> str:
    """HTTP headers for Prometheus queries, JSON-encoded: ``$RAY_PROMETHEUS_HEADERS`` (default ``{}``)."""
    return _env_str("RAY_PROMETHEUS_HEADERS") or "{}"


def ray_address_env() -> str:
    """``$RAY_ADDRESS`` as it is now ("" when unset): the cluster Ray itself would join."""
    return _env_str("RAY_ADDRESS")


def default_ray_address() -> str:
    """The CLI's default cluster address: ``$RAY_ADDRESS``, else ``auto``."""
    return ray_address_env() or "auto"


def runtime_env_include_gitignore() -> bool:
    """Whether uploads of a local working_dir honour .gitignore (Ray's own switch)."""
    return _env_str("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"


def checkpoint_storage_options_json() -> str:
    """``$RAY_SERVE_EXT_CHECKPOINT_STORAGE_OPTIONS``: extra fsspec options as JSON."""
    return _env_str(STORAGE_OPTIONS_ENV).strip()


def s3_endpoint_url() -> str:
    """``$RAY_SERVE_EXT_S3_ENDPOINT_URL``: an S3-compatible endpoint (MinIO, moto)."""
    return _env_str(S3_ENDPOINT_ENV).strip()
