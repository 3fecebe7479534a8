"""The ceiling: the same no-op as a plain ASGI app under uvicorn, no serving layer.

    python -m benchmarks.ceiling --out FILE [--quick]

Starts `uvicorn benchmarks.ceiling:app` (uvloop, httptools, one worker, no
access log) as a subprocess on a free port, warms it up, and measures it at
the same connection levels as the no-op deployment, with the uvicorn process's
CPU time per request at the highest level. The figures show what HTTP itself
costs on this machine with this load generator.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional

from benchmarks import proccpu, procmem
from benchmarks.common import HOST, Settings, add_settings_args, free_port, log, settings_from_args, wait_for_200
from benchmarks.loadgen import run_load

Receive = Callable[[], Awaitable[Dict[str, Any]]]
Send = Callable[[Dict[str, Any]], Awaitable[None]]
REPLY = b"ok"
STARTUP_TIMEOUT_S = 30.0


async def app(scope: Dict[str, Any], receive: Receive, send: Send) -> None:
    """A no-op ASGI app: every HTTP request gets 200 "ok"."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"2")],
    })
    await send({"type": "http.response.body", "body": REPLY})


def start_uvicorn(port: int) -> "subprocess.Popen[bytes]":
    """uvicorn serving `app` on 127.0.0.1:port with uvloop and httptools, one worker."""
    cmd = [
        sys.executable, "-m", "uvicorn", "benchmarks.ceiling:app", "--host", HOST, "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--workers", "1", "--no-access-log", "--log-level", "warning",
    ]
    return subprocess.Popen(cmd, cwd=str(Path(__file__).resolve().parent.parent))


def stop(proc: "subprocess.Popen[bytes]") -> None:
    """Terminate the uvicorn process started here, killing it if it lingers."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(settings: Settings) -> Dict[str, Any]:
    """The no-op figures for plain uvicorn, shaped like a Serve system's result."""
    port = free_port()
    proc = start_uvicorn(port)
    result: Dict[str, Any] = {"system": "uvicorn", "errors": {}}
    try:
        wait_for_200(port, "/", STARTUP_TIMEOUT_S)
        run_load(settings.loadgen, port, "/", max(settings.levels), settings.warmup_s)
        result["http_noop"] = {}
        top = max(settings.levels)
        for c in settings.levels:
            window = proccpu.CpuWindow({"serving": [proc.pid, *procmem.descendant_pids(proc.pid)]})
            window.start()
            run = run_load(settings.loadgen, port, "/", c, settings.duration_s)
            window.stop()
            result["http_noop"][str(c)] = run.to_dict()
            if c == top:
                result[f"cpu_at_{c}"] = {
                    "requests": run.requests, "cpu_s": window.seconds,
                    "us_per_request": window.per_request_us(run.requests), "pids": window.groups,
                    "method": proccpu.CPU_METHOD,
                }
    except Exception:  # noqa: BLE001 - recorded for the report
        result["errors"]["http_noop"] = traceback.format_exc()
        log("uvicorn", f"FAILED:\n{result['errors']['http_noop']}")
    finally:
        stop(proc)
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--system", default="uvicorn", help=argparse.SUPPRESS)
    add_settings_args(parser)
    args = parser.parse_args(argv)
    start = time.monotonic()
    result = measure(settings_from_args(args))
    log("uvicorn", f"done in {time.monotonic() - start:.1f}s")
    args.out.write_text(json.dumps(result, indent=2))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
