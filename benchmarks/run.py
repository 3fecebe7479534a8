"""Benchmark ray_serving_ext against Ray Serve (and the plain-uvicorn ceiling).

    python -m benchmarks.run [--quick] [--out results.json]
        [--systems ours,rayserve,rayserve-throughput,rayserve-haproxy,uvicorn]

Each system is measured in its own subprocess (`benchmarks.serve_bench` with a
fresh local Ray for ours and each Ray Serve mode, `benchmarks.ceiling` for
uvicorn), one after the other, never concurrently; the Ray Serve mode is set
by that subprocess's environment (`benchmarks.systems`). Prints a Markdown
table with each figure, the fastest Ray Serve mode for it, the ratio
ours/that mode and PASS/MISS against the issue #5 targets, and writes
everything as JSON to --out. Exits non-zero if any benchmark step crashed
(targets are never asserted). A full run's systems share a 14-minute budget
(FULL_BUDGET_S; each system's timeout keeps the reserves of those after it), so
all five end within 15 minutes. --quick is the CI smoke mode: about a second per
load run, 200 handle calls, and only `ours` unless --systems says otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from benchmarks.common import Settings, log
from benchmarks.loadgen import wrk_available
from benchmarks.report import compare, format_table
from benchmarks.systems import ALL_SYSTEMS, MODE_LABELS, SERVE_SYSTEMS, mode_env_of, system_env

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "latest.json"
CHILD_MODULES = {**{s: "benchmarks.serve_bench" for s in SERVE_SYSTEMS}, "uvicorn": "benchmarks.ceiling"}
# Per system subprocess, seconds (quick, full): the most one system may take.
TIMEOUT_S = {**{s: (180, 300) for s in SERVE_SYSTEMS}, "uvicorn": (60, 90)}
# A full run of all systems must end within 15 minutes: the systems share this
# budget, and each one's timeout leaves the systems after it their RESERVE_S
# (about what a full run of one needs on a busy 2-core machine).
FULL_BUDGET_S = 840.0
RESERVE_S = {**{s: 150.0 for s in SERVE_SYSTEMS}, "uvicorn": 45.0}


def timeout_for(system: str, later: List[str], quick: bool, budget_left_s: float) -> float:
    """`system`'s timeout: its own bound, in a full run also what the budget leaves after `later`'s reserves.

    Never below its own reserve, so with every system using its whole timeout
    the run still ends at the budget (the reserves of the systems still to run
    are always kept).
    """
    own = float(TIMEOUT_S[system][0 if quick else 1])
    if quick:
        return own
    spare = budget_left_s - sum(RESERVE_S[s] for s in later)
    return max(min(RESERVE_S[system], own), min(own, spare))


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke mode: a few seconds per system")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument("--systems", default=None,
                        help=f"comma-separated subset of {','.join(ALL_SYSTEMS)} (default: all; ours with --quick)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto",
                        help="HTTP load generator; auto = wrk if installed, else the Python asyncio client")
    parser.add_argument("--duration", type=int, default=None, help="seconds per HTTP load run (default 8, quick 1)")
    args = parser.parse_args(argv)
    args.systems = _parse_systems(parser, args.systems, args.quick)
    return args


def _parse_systems(parser: argparse.ArgumentParser, value: Optional[str], quick: bool) -> List[str]:
    if value is None:
        return ["ours"] if quick else list(ALL_SYSTEMS)
    systems = [s.strip() for s in value.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(ALL_SYSTEMS))
    if unknown or not systems:
        parser.error(f"--systems: unknown {unknown}; choose from {','.join(ALL_SYSTEMS)}")
    return systems


def choose_loadgen(requested: str) -> str:
    """wrk when asked for or available; otherwise the Python client, for every system alike."""
    if requested == "auto":
        if wrk_available():
            return "wrk"
        log("run", "wrk not found: using the Python asyncio load generator for all systems "
                   "(install wrk with `apt-get install -y wrk` for higher ceilings)")
        return "python"
    if requested == "wrk" and not wrk_available():
        raise SystemExit("--loadgen wrk given but wrk is not installed (apt-get install -y wrk)")
    return requested


def child_env(base: Dict[str, str]) -> Dict[str, str]:
    """The environment for a system's subprocess: never attach to someone else's Ray."""
    env = dict(base)
    env.pop("RAY_ADDRESS", None)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_system(system: str, settings: Settings, workdir: Path, timeout_s: float) -> Dict[str, Any]:
    """Measure one system in its own subprocess (with its mode's environment) and return its result dict."""
    out = workdir / f"{system}.json"
    cmd = [sys.executable, "-m", CHILD_MODULES[system], "--system", system, "--out", str(out), *settings.to_args()]
    log("run", f"=== {system} (timeout {timeout_s:.0f}s): {' '.join(cmd[1:])}")
    loadavg_before = os.getloadavg()
    start = time.monotonic()
    with system_env(system, child_env(dict(os.environ))) as env:
        serve_env = {k: v for k, v in env.items() if k.startswith("RAY_SERVE_")}
        log("run", f"=== {system}: environment {serve_env}")
        code = _run_child(cmd, env, timeout_s)
    elapsed = time.monotonic() - start
    log("run", f"=== {system}: {'timed out' if code is None else f'exit {code}'} after {elapsed:.0f}s")
    result: Dict[str, Any] = {"system": system}
    if out.exists():  # the child rewrites it after every step: partial results survive a kill
        result = json.loads(out.read_text())
    errors = result.setdefault("errors", {})
    if code is None:
        errors["timeout"] = f"killed after {timeout_s:.0f}s"
    elif code != 0 and not errors:
        errors["subprocess"] = f"exited {code}" + ("" if out.exists() else " without writing a result")
    result["wall_s"] = elapsed
    result["mode_env"] = mode_env_of(env)
    result["ray_serve_env"] = serve_env
    result["loadavg_before_after"] = [loadavg_before, os.getloadavg()]  # 1/5/15-min: how shared the machine was
    return result


def _run_child(cmd: List[str], env: Dict[str, str], timeout_s: float) -> Optional[int]:
    """Run `cmd` in its own session; its exit code, or None if it was killed at the timeout."""
    proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, start_new_session=True)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return None


def _kill_group(proc: "subprocess.Popen[bytes]") -> None:
    """Stop the timed-out subprocess started here, and the processes it started (its own session)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue


def metadata(settings: Settings, systems: List[str]) -> Dict[str, Any]:
    """When, where and how this run was made."""
    import ray

    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "-m", "benchmarks.run", *sys.argv[1:]]),
        "systems": systems,
        "settings": settings.to_dict(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "ray": ray.__version__,
        "loadavg_at_start": os.getloadavg(),
    }


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    settings = Settings.make(args.quick, choose_loadgen(args.loadgen), args.duration)
    meta = metadata(settings, args.systems)
    results: Dict[str, Dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        deadline = time.monotonic() + FULL_BUDGET_S
        for i, system in enumerate(args.systems):
            timeout_s = timeout_for(system, args.systems[i + 1 :], settings.quick, deadline - time.monotonic())
            results[system] = run_system(system, settings, Path(tmp), timeout_s)
    meta["loadavg_at_end"] = os.getloadavg()
    rows = compare(results, settings.handle_calls, max(settings.levels))
    failed = {s: sorted(r.get("errors", {})) for s, r in results.items() if r.get("errors")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "systems": results, "comparison": rows, "failed": failed}, indent=2))
    print(f"\nServe benchmark, {meta['date_utc']}, {meta['cpus']} CPUs, load generator {settings.loadgen}, "
          f"{settings.duration_s}s per load run{' (quick)' if settings.quick else ''}\n")
    print(format_table(rows))
    wall = ", ".join(f"{s} {r['wall_s']:.0f}s" for s, r in results.items())
    print(f"\nBetter: 'higher' or 'lower' per row. Best RS: the fastest Ray Serve mode for that row "
          f"({', '.join(f'{k} = {v}' for k, v in MODE_LABELS.items())}); ours/best is ours divided by it. "
          f"CPU rows: utime+stime per request at 64 connections (haproxy counted in the proxy). "
          f"Wall time per system: {wall}. JSON: {args.out}")
    if failed:
        print(f"FAILED steps: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
