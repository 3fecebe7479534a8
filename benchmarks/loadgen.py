"""HTTP load generation: wrk when installed, else a Python asyncio client.

Both run as their own process (never inside the process being measured) and
both return a `LoadResult`. One generator is chosen per run and used for all
systems alike, so figures are comparable within a run.

Run directly, this module is the Python fallback generator:

    python -m benchmarks.loadgen --port 8000 --path / -c 16 -d 5 [--body-bytes N]

It prints one JSON `LoadResult` on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from benchmarks.common import HOST

ECHO_LUA = Path(__file__).with_name("echo.lua")
WRK_TIMEOUT = "10s"  # per-request timeout; generous so slow echoes count as slow, not failed


@dataclass
class LoadResult:
    """Outcome of one fixed-duration load run against one URL."""

    tool: str
    connections: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers plus socket errors/timeouts

    def to_dict(self) -> Dict[str, object]:
        """Plain dict for JSON."""
        return asdict(self)


def wrk_available() -> bool:
    """True when a `wrk` binary is on PATH."""
    return shutil.which("wrk") is not None


def run_load(
    tool: str, port: int, path: str, connections: int, duration_s: int, body_bytes: int = 0
) -> LoadResult:
    """Load `http://127.0.0.1:port{path}` with `connections` keep-alive connections.

    With body_bytes > 0 each request is a POST carrying that many bytes.
    `tool` is "wrk" or "python".
    """
    if tool == "wrk":
        return _run_wrk(port, path, connections, duration_s, body_bytes)
    if tool == "python":
        return _run_python_subprocess(port, path, connections, duration_s, body_bytes)
    raise ValueError(f"unknown load generator {tool!r}")


# --------------------------------------------------------------------------- wrk


def _run_wrk(port: int, path: str, connections: int, duration_s: int, body_bytes: int) -> LoadResult:
    threads = 1 if connections == 1 else 2
    cmd = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, int(duration_s))}s",
        "--latency", "--timeout", WRK_TIMEOUT,
    ]
    env = dict(os.environ)
    if body_bytes:
        cmd += ["-s", str(ECHO_LUA)]
        env["BENCH_BODY_BYTES"] = str(body_bytes)
    cmd.append(f"http://{HOST}:{port}{path}")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=duration_s + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return parse_wrk_output(proc.stdout, connections, duration_s)


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_LAT_RE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_RPS_RE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL_RE = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_NON2XX_RE = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_RE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def parse_wrk_output(text: str, connections: int, duration_s: float) -> LoadResult:
    """Parse `wrk --latency` output: Requests/sec, the 50%/99% latencies and errors."""
    rps_match = _RPS_RE.search(text)
    if rps_match is None:
        raise ValueError(f"no Requests/sec in wrk output:\n{text}")
    latencies = {pct: float(value) * _UNIT_MS[unit] for pct, value, unit in _LAT_RE.findall(text)}
    total = _TOTAL_RE.search(text)
    errors = sum(int(n) for n in _NON2XX_RE.findall(text))
    socket_errors = _SOCKET_RE.search(text)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return LoadResult(
        tool="wrk",
        connections=connections,
        duration_s=float(total.group(2)) * _UNIT_MS[total.group(3)] / 1e3 if total else float(duration_s),
        requests=int(total.group(1)) if total else 0,
        rps=float(rps_match.group(1)),
        p50_ms=latencies.get("50", float("nan")),
        p99_ms=latencies.get("99", float("nan")),
        errors=errors,
    )


# ------------------------------------------------------------- Python fallback


def _run_python_subprocess(port: int, path: str, connections: int, duration_s: int, body_bytes: int) -> LoadResult:
    cmd = [
        sys.executable, "-m", "benchmarks.loadgen", "--port", str(port), "--path", path,
        "-c", str(connections), "-d", str(duration_s), "--body-bytes", str(body_bytes),
    ]
    root = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=duration_s + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"python load generator failed ({proc.returncode}): {proc.stderr.strip()}")
    return LoadResult(**json.loads(proc.stdout.strip().splitlines()[-1]))


def _build_request(path: str, body_bytes: int) -> bytes:
    if body_bytes <= 0:
        return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {body_bytes}\r\n\r\n"
    ).encode()
    return head + b"x" * body_bytes


async def _read_response(reader: asyncio.StreamReader) -> Tuple[int, bool]:
    """Read one HTTP/1.1 response; returns (status, connection_kept_alive)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip().lower()
    if headers.get("transfer-encoding") == "chunked":
        await _read_chunked(reader)
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection") != "close"


async def _read_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        await reader.readexactly(size + 2)  # chunk data plus its CRLF
        if size == 0:
            return


async def _connection_loop(
    port: int, request: bytes, deadline: float, latencies: List[float], errors: List[int]
) -> None:
    reader: Optional[asyncio.StreamReader] = None
    writer: Optional[asyncio.StreamWriter] = None
    while time.perf_counter() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port)
            start = time.perf_counter()
            writer.write(request)
            status, keep_alive = await asyncio.wait_for(_read_response(reader), timeout=10.0)
            latencies.append(time.perf_counter() - start)
            if not 200 <= status < 400:
                errors[0] += 1
            if not keep_alive:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
            errors[0] += 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


def _percentile_ms(sorted_s: List[float], pct: float) -> float:
    if not sorted_s:
        return float("nan")
    index = min(len(sorted_s) - 1, max(0, int(round(pct / 100.0 * len(sorted_s))) - 1))
    return sorted_s[index] * 1e3


async def python_load(port: int, path: str, connections: int, duration_s: float, body_bytes: int) -> LoadResult:
    """The fallback generator: `connections` asyncio keep-alive clients for `duration_s`."""
    request = _build_request(path, body_bytes)
    latencies: List[float] = []
    errors = [0]
    start = time.perf_counter()
    deadline = start + duration_s
    await asyncio.gather(*(_connection_loop(port, request, deadline, latencies, errors) for _ in range(connections)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return LoadResult(
        tool="python",
        connections=connections,
        duration_s=elapsed,
        requests=len(latencies),
        rps=len(latencies) / elapsed if elapsed > 0 else 0.0,
        p50_ms=_percentile_ms(latencies, 50),
        p99_ms=_percentile_ms(latencies, 99),
        errors=errors[0],
    )


def _main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("-c", "--connections", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=5.0)
    parser.add_argument("--body-bytes", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(python_load(args.port, args.path, args.connections, args.duration, args.body_bytes))
    print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
