"""Names, intervals and limits shared by the controller, proxies, replicas and handles.

Every tunable can be overridden by an environment variable of the same name
(prefixed RAY_SERVE_ as Ray Serve's are), read once at import time.
"""

from __future__ import annotations

import os


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


SERVE_NAMESPACE = "serve"
CONTROLLER_NAME = "SERVE_CONTROLLER_ACTOR"
PROXY_NAME_PREFIX = "SERVE_PROXY_ACTOR-"
REPLICA_NAME_PREFIX = "SERVE_REPLICA::"

DEFAULT_HTTP_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8000
DEFAULT_APP_NAME = "default"

# Header carrying the request id, kept from the client when it sends one.
REQUEST_ID_HEADER = "x-request-id"

# How often the controller's reconcile loop runs.
CONTROL_LOOP_INTERVAL_S = _env_float("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", 0.1)
# A long-poll call returns after this long even when nothing changed.
LONG_POLL_TIMEOUT_S = _env_float("RAY_SERVE_LONG_POLL_TIMEOUT_S", 30.0)
# Back-off between long-poll attempts while the controller is unreachable.
LONG_POLL_RETRY_S = _env_float("RAY_SERVE_LONG_POLL_RETRY_S", 0.2)

# A replica is replaced after this many consecutive failed health checks.
HEALTH_CHECK_FAILURE_THRESHOLD = _env_int("RAY_SERVE_HEALTH_CHECK_FAILURE_THRESHOLD", 3)
# Constructor failures, per deployment version, before DEPLOY_FAILED.
MAX_CONSTRUCTOR_RETRIES = _env_int("RAY_SERVE_MAX_CONSTRUCTOR_RETRIES", 3)
# A replica still not placed after this long makes the deployment say why.
SLOW_STARTUP_WARNING_S = _env_float("RAY_SERVE_SLOW_STARTUP_WARNING_S", 30.0)
# Proxies are health-checked this often.
PROXY_HEALTH_CHECK_PERIOD_S = _env_float("RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S", 5.0)

# Default resources of a replica when ray_actor_options does not say (as Ray Serve).
DEFAULT_REPLICA_NUM_CPUS = 1.0

# Seconds clients are told to wait after a 503 for backpressure.
BACKPRESSURE_RETRY_AFTER_S = 1

# Where the controller keeps its goal state inside the cluster (GCS key-value store).
KV_NAMESPACE = b"ray_serving_ext"
CHECKPOINT_KEY = "serve-controller-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
