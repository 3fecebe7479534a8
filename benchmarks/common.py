"""Small helpers shared by the benchmark processes: ports, HTTP polling, logging."""

from __future__ import annotations

import argparse
import http.client
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

from tests.utils import free_port as free_port  # one port picker for tests and benchmarks

HOST = "127.0.0.1"


def http_request(
    port: int, path: str, method: str = "GET", body: Optional[bytes] = None, timeout: float = 10.0
) -> Tuple[int, bytes]:
    """One HTTP request to 127.0.0.1:port; returns (status, body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_for_200(port: int, path: str, timeout_s: float, interval_s: float = 0.01) -> float:
    """Poll GET path until it answers 200; returns the monotonic time it did.

    Connection errors and non-200 answers count as "not yet". Raises
    TimeoutError after `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            status, _ = http_request(port, path, timeout=2.0)
            if status == 200:
                return time.monotonic()
            last = f"HTTP {status}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(interval_s)
    raise TimeoutError(f"GET {path} on port {port} not 200 within {timeout_s}s (last: {last})")


def log(tag: str, message: str) -> None:
    """A progress line on stderr, tagged with the system being measured."""
    print(f"[bench:{tag}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Settings:
    """How long and how hard to measure; identical for every system in a run."""

    quick: bool
    loadgen: str  # "wrk" or "python"
    duration_s: int  # each measured HTTP load run
    warmup_s: int  # HTTP warm-up before each application's runs
    levels: Tuple[int, ...] = (1, 16, 64)  # concurrent connections, no-op app
    handle_calls: int = 2000  # calls in flight per handle round
    handle_rounds: int = 3  # measured rounds (plus one warm-up round)
    echo_connections: int = 8
    echo_body_bytes: int = 1 << 20
    composition_connections: int = 16

    @classmethod
    def make(cls, quick: bool, loadgen: str, duration_s: Optional[int] = None) -> "Settings":
        """Defaults for a full run, or the few-seconds smoke mode with `quick`."""
        if quick:
            return cls(quick=True, loadgen=loadgen, duration_s=duration_s or 1, warmup_s=1,
                       handle_calls=200, handle_rounds=1)
        # Five systems (ours, three Ray Serve modes, uvicorn) in under 15 minutes on 2 cores.
        return cls(quick=False, loadgen=loadgen, duration_s=duration_s or 8, warmup_s=2, handle_rounds=2)

    def to_args(self) -> List[str]:
        """Command-line arguments that rebuild these settings in a child process."""
        args = ["--loadgen", self.loadgen, "--duration", str(self.duration_s)]
        return args + (["--quick"] if self.quick else [])

    def to_dict(self) -> Dict[str, object]:
        """Plain dict for JSON."""
        return asdict(self)


def add_settings_args(parser: argparse.ArgumentParser) -> None:
    """The arguments `Settings.to_args` produces."""
    parser.add_argument("--quick", action="store_true", help="smoke mode: a few seconds per system")
    parser.add_argument("--loadgen", choices=("wrk", "python"), default="wrk")
    parser.add_argument("--duration", type=int, default=None, help="seconds per HTTP load run")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Inverse of `Settings.to_args`."""
    return Settings.make(args.quick, args.loadgen, args.duration)
