"""Measure one Serve implementation in this process, on a fresh local Ray.

    python -m benchmarks.serve_bench --system ours|ours-direct|rayserve|rayserve-throughput|rayserve-haproxy --out FILE [--quick]

`ours` imports `ray_serving_ext as serve`, the three Ray Serve modes do `from
ray import serve` (the mode is chosen by environment variables that
`benchmarks.run` sets for this process, see `benchmarks.systems`; the
`serve_mode` step checks them in the Serve actors and, for HAProxy mode, that
an haproxy process listens on the HTTP port); everything after that is the
same code, through the public API only (serve.start / run / delete / shutdown_async
and handles). Each step is isolated:
one that raises is recorded under "errors" and the others still run; the exit
code is 1 if any step failed. Started by `benchmarks.run`, one subprocess per
system, so the systems never share a Ray cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import importlib
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Coroutine, Dict, List, Optional, Tuple, TypeVar

from benchmarks import apps, proccpu, procmem, systems
from benchmarks.common import HOST, Settings, add_settings_args, free_port, http_request, log, settings_from_args, wait_for_200
from benchmarks.loadgen import LoadResult, run_load

SYSTEM_MODULES = {"ours": "ray_serving_ext", "ours-direct": "ray_serving_ext", **{mode: "ray.serve" for mode in systems.RAYSERVE_MODES}}
RAY_INIT_KWARGS: Dict[str, Any] = {
    "address": "local",  # always a new cluster: never attach to one found on the machine
    "num_cpus": 4,
    "include_dashboard": False,
    "log_to_driver": False,  # replicas' per-request logs must not be printed by this driver
}
DEPLOY_TIMEOUT_S = 120.0
SHUTDOWN_TIMEOUT_S = 60.0  # a longer serve.shutdown is reported as an error; ray.shutdown still runs
T = TypeVar("T")


class SystemBench:
    """The benchmark steps for one Serve module; results accumulate in `self.result`."""

    def __init__(self, system: str, serve: ModuleType, settings: Settings, out: Path) -> None:
        self.system = system
        self.out = out
        self.serve = serve
        self.settings = settings
        self.port = free_port()
        self.handle: Any = None
        # Handle calls and serve.shutdown_async run on one event loop that keeps
        # running in a thread until Serve is shut down, as in an async app: in
        # throughput-optimized mode a handle's router lives on its caller's loop
        # and needs that loop running for controller updates and its shutdown.
        self.loop = LoopThread()
        self.result: Dict[str, Any] = {"system": system, "module": serve.__name__, "errors": {}, "step_s": {}}

    # ----------------------------------------------------------------- helpers

    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run one step, recording its result under `name` or its traceback under errors.

        The result file is rewritten after every step, so a run killed later
        (say, by a hung shutdown) still reports what it measured.
        """
        log(self.system, f"{name} ...")
        start = time.monotonic()
        try:
            value = fn()
        except Exception:  # noqa: BLE001 - recorded, the run goes on
            value = None
            self.result["errors"][name] = traceback.format_exc()
            log(self.system, f"{name} FAILED:\n{self.result['errors'][name]}")
        else:
            log(self.system, f"{name} done in {time.monotonic() - start:.1f}s")
        self.result["step_s"][name] = time.monotonic() - start
        if value is not None:
            self.result[name] = value
        self.save()
        return value

    def save(self) -> None:
        """Write the result so far to the output file."""
        self.out.write_text(json.dumps(self.result, indent=2, default=str))

    def load(self, path: str, connections: int, duration_s: int, body_bytes: int = 0) -> LoadResult:
        """One load run against this system's proxy; errors in the run are logged."""
        result = run_load(self.settings.loadgen, self.port, path, connections, duration_s, body_bytes)
        if result.errors:
            log(self.system, f"{path} c={connections}: {result.errors} errors during the run")
        return result

    def warm_up(self, path: str, connections: int, body_bytes: int = 0) -> None:
        """An unmeasured load run, so first-call costs are out of the figures."""
        self.load(path, connections, self.settings.warmup_s, body_bytes)

    def redeploy(self, old: str, new: str, app: Any) -> None:
        """Replace application `old` by `new`, routed at /new (serve.run returns once it is RUNNING)."""
        self.serve.delete(old)
        self.serve.run(app, name=new, route_prefix=f"/{new}")

    # ------------------------------------------------------------------- steps

    def deploy_to_200(self) -> float:
        """Seconds from serve.start + serve.run of the no-op app to its first HTTP 200."""
        start = time.monotonic()
        self.serve.start(http_options={"host": HOST, "port": self.port})
        self.handle = self.serve.run(apps.noop_app(self.serve), name="noop", route_prefix="/noop")
        ready = wait_for_200(self.port, "/noop", DEPLOY_TIMEOUT_S)
        status, body = http_request(self.port, "/noop")
        if (status, body) != (200, apps.NOOP_REPLY.encode()):
            raise AssertionError(f"no-op answered {status} {body[:100]!r}")
        return ready - start

    def serve_mode(self) -> Dict[str, Any]:
        """Check that the mode this system stands for is the one running; raise if not.

        Every serving actor must have been started with the system's mode
        switches in its environment; in HAProxy mode an haproxy process must
        run below the HAProxyManager actor and be what listens on the HTTP
        port, and in the other modes no haproxy may run; with our direct ingress a replica
        must hold the HTTP port's socket, and without it none may.
        """
        processes = procmem.serving_actor_processes()
        expected = systems.expected_mode_env(self.system)
        actors = [{"pid": p.pid, "title": p.title, "mode_env": systems.mode_env_of(proccpu.read_environ(p.pid))}
                  for p in processes]
        haproxy = [pid for p in processes for pid in p.tree if proccpu.process_name(pid) == "haproxy"]
        listeners = [{"pid": pid, "comm": proccpu.process_name(pid), "title": procmem.process_title(pid)}
                     for pid in proccpu.listener_pids(self.port, procmem.descendant_pids())]
        problems = [f"{a['title']} (pid {a['pid']}) has {a['mode_env']}, expected {expected}"
                    for a in actors if a["mode_env"] != expected]
        if self.system == "rayserve-haproxy":
            if not haproxy:
                problems.append("no haproxy process below the serving actors")
            if not any(lst["comm"] == "haproxy" for lst in listeners):
                problems.append(f"port {self.port} is not served by haproxy: {listeners}")
        elif haproxy:
            problems.append(f"haproxy processes {haproxy} running outside HAProxy mode")
        replica_listens = any("ReplicaActor" in (lst["title"] or "") for lst in listeners)
        if self.system == "ours-direct" and not replica_listens:
            problems.append(f"port {self.port} is not held by a replica (direct ingress): {listeners}")
        elif self.system == "ours" and replica_listens:
            problems.append(f"a replica holds port {self.port} without direct ingress: {listeners}")
        if not actors:
            problems.append("no serving actor processes found")
        if problems:
            raise AssertionError("; ".join(problems))
        return {"expected_env": expected, "actors": actors, "haproxy_pids": haproxy, "http_listeners": listeners,
                "driver_constants": _serve_mode_constants(self.serve)}

    def http_noop(self) -> Dict[str, Dict[str, Any]]:
        """Throughput and latency of the no-op app at each connection level.

        The run at the highest level also measures the CPU time the serving
        processes use per request (stored as `cpu_at_<level>`).
        """
        top = max(self.settings.levels)
        self.warm_up("/noop", top)
        runs: Dict[str, Dict[str, Any]] = {}
        for c in self.settings.levels:
            if c == top:
                result, cpu = self.load_with_cpu("/noop", c)
                self.result[f"cpu_at_{c}"] = cpu
            else:
                result = self.load("/noop", c, self.settings.duration_s)
            runs[str(c)] = result.to_dict()
        return runs

    def load_with_cpu(self, path: str, connections: int) -> Tuple[LoadResult, Dict[str, Any]]:
        """One measured load run, with utime+stime of each serving role's processes over it."""
        processes = procmem.serving_actor_processes()
        groups = procmem.pids_by_role(processes)
        groups["haproxy"] = [pid for p in processes for pid in p.tree if proccpu.process_name(pid) == "haproxy"]
        groups["serving"] = groups.get("proxy", []) + groups.get("replica", [])  # haproxy is in proxy
        window = proccpu.CpuWindow(groups)
        window.start()
        result = self.load(path, connections, self.settings.duration_s)
        seconds = window.stop()
        return result, {
            "requests": result.requests,
            "cpu_s": seconds,
            "us_per_request": window.per_request_us(result.requests),
            "pids": groups,
            "lost_pids": window.lost_pids,
            "method": proccpu.CPU_METHOD,
        }

    def two_replicas(self) -> Dict[str, Any]:
        """Req/s and latency of the no-op app with 2 replicas at the highest connection level."""
        self.redeploy("comp", "noop2", apps.noop_app(self.serve, num_replicas=2))
        wait_for_200(self.port, "/noop2", DEPLOY_TIMEOUT_S)
        top = max(self.settings.levels)
        self.warm_up("/noop2", top)
        return {**self.load("/noop2", top, self.settings.duration_s).to_dict(), "replicas": 2}

    def handle_throughput(self) -> Dict[str, Any]:
        """Calls/s with `handle_calls` handle calls in flight (asyncio.gather), over several rounds."""
        rounds = self.loop.run(_handle_rounds(self.handle, self.settings.handle_calls, self.settings.handle_rounds))
        total_s = sum(rounds)
        calls = self.settings.handle_calls * len(rounds)
        return {
            "calls_in_flight": self.settings.handle_calls,
            "round_s": rounds,
            "calls_per_s": calls / total_s,
            "best_round_calls_per_s": self.settings.handle_calls / min(rounds),
        }

    def memory(self) -> Dict[str, Any]:
        """Summed RSS of controller, proxy and replica processes (no-op app deployed)."""
        import ray

        named = [a for a in ray.util.list_named_actors(all_namespaces=True) if a.get("namespace") == "serve"]
        processes = procmem.serving_actor_processes()
        summary = procmem.summarize(processes, len(named))
        summary["named_actor_names"] = sorted(a["name"] for a in named)
        if len(processes) != len(named):
            log(self.system, f"memory: {len(processes)} actor processes vs {len(named)} named serve actors")
        return summary

    def echo(self) -> Dict[str, Any]:
        """Req/s of a 1 MiB POST whose body the replica returns; the echo is verified once."""
        size = self.settings.echo_body_bytes
        self.redeploy("noop", "echo", apps.echo_app(self.serve))
        wait_for_200_post(self.port, "/echo", DEPLOY_TIMEOUT_S)
        payload = os.urandom(size)
        status, body = http_request(self.port, "/echo", method="POST", body=payload, timeout=30.0)
        if status != 200 or body != payload:
            raise AssertionError(f"echo answered {status} with {len(body)} bytes (sent {size}, equal={body == payload})")
        self.warm_up("/echo", self.settings.echo_connections, size)
        result = self.load("/echo", self.settings.echo_connections, self.settings.duration_s, size).to_dict()
        return {**result, "body_bytes": size, "verified_echo_bytes": len(body)}

    def composition(self) -> Dict[str, Any]:
        """Req/s and latency of ingress -> A -> B over HTTP."""
        self.redeploy("echo", "comp", apps.composition_app(self.serve))
        wait_for_200(self.port, "/comp", DEPLOY_TIMEOUT_S)
        status, body = http_request(self.port, "/comp")
        if (status, body) != (200, apps.COMPOSITION_REPLY.encode()):
            raise AssertionError(f"composition answered {status} {body[:100]!r}")
        conns = self.settings.composition_connections
        self.warm_up("/comp", conns)
        return self.load("/comp", conns, self.settings.duration_s).to_dict()

    def shutdown_serve(self) -> None:
        """serve.shutdown_async on the handle loop (with a deadline), then stop that loop."""
        try:
            self.loop.run(self.serve.shutdown_async(), SHUTDOWN_TIMEOUT_S)
        finally:
            self.loop.stop()

    def run_all(self) -> Dict[str, Any]:
        """Every step in order; Serve and Ray are shut down at the end whatever happened."""
        import ray

        ray.init(**RAY_INIT_KWARGS)
        self.result["ray_version"] = ray.__version__
        try:
            if self.step("deploy_to_200_s", self.deploy_to_200) is not None:
                self.step("serve_mode", self.serve_mode)
                self.step("http_noop", self.http_noop)
                self.step("handle", self.handle_throughput)
                self.step("memory", self.memory)
                self.step("echo", self.echo)
                self.step("composition", self.composition)
                self.step("two_replicas", self.two_replicas)
        finally:
            self.step("serve_shutdown", self.shutdown_serve)
            self.step("ray_shutdown", ray.shutdown)
        return self.result


def _serve_mode_constants(serve: ModuleType) -> Dict[str, Any]:
    """The mode flags as Ray Serve computed them in this driver ({} for ours)."""
    if serve.__name__ != "ray.serve":
        return {}
    from ray.serve._private import constants

    names = ("RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_ENABLE_DIRECT_INGRESS", "RAY_SERVE_USE_GRPC_BY_DEFAULT",
             "RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD",
             "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP")
    return {name: getattr(constants, name, None) for name in names}


async def _handle_rounds(handle: Any, calls: int, rounds: int) -> List[float]:
    """One warm-up round, then `rounds` timed rounds of `calls` concurrent handle calls."""

    async def one_round() -> float:
        start = time.perf_counter()
        replies = await asyncio.gather(*(handle.remote() for _ in range(calls)))
        elapsed = time.perf_counter() - start
        if replies[0] != apps.NOOP_REPLY or len(replies) != calls:
            raise AssertionError(f"unexpected handle replies: {replies[:3]!r}")
        return elapsed

    await one_round()
    return [await one_round() for _ in range(rounds)]


class LoopThread:
    """An asyncio event loop running in a daemon thread; coroutines are submitted to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-handle-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: Optional[float] = None) -> T:
        """Run `coro` on the loop and wait for it; TimeoutError after `timeout_s`."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            name = getattr(coro, "__qualname__", coro)
            raise TimeoutError(f"{name} did not finish within {timeout_s:.0f}s") from None

    def stop(self) -> None:
        """Stop the loop and close it once its thread has returned."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


def wait_for_200_post(port: int, path: str, timeout_s: float) -> None:
    """Poll with a tiny POST until the route answers 200 (the echo app reads a body)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if http_request(port, path, method="POST", body=b"x", timeout=2.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise TimeoutError(f"POST {path} not 200 within {timeout_s}s")


def load_serve_module(system: str) -> ModuleType:
    """`ray_serving_ext` for ours, `ray.serve` for Ray Serve."""
    return importlib.import_module(SYSTEM_MODULES[system])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=sorted(SYSTEM_MODULES), required=True)
    parser.add_argument("--out", type=Path, required=True, help="where to write this system's JSON result")
    add_settings_args(parser)
    args = parser.parse_args(argv)
    settings = settings_from_args(args)
    try:
        serve = load_serve_module(args.system)
        result = SystemBench(args.system, serve, settings, args.out).run_all()
    except Exception:  # noqa: BLE001 - import or ray.init failed: still write a result
        result = {"system": args.system, "errors": {"setup": traceback.format_exc()}}
        log(args.system, f"setup FAILED:\n{result['errors']['setup']}")
        args.out.write_text(json.dumps(result, indent=2, default=str))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
