"""The comparison table: each figure for ours, each Ray Serve mode and uvicorn,
which Ray Serve mode was fastest for it, the ratio ours/that mode, and
PASS/MISS against the targets of issue #14, for ours as shipped and for ours with
direct ingress (`ours-direct`).

"Fastest" is per figure: the highest value where higher is better
(throughput), the lowest where lower is better (latency, time, memory, CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from benchmarks.systems import ALL_SYSTEMS, MODE_LABELS, RAYSERVE_MODES

HIGHER = "higher"
LOWER = "lower"


@dataclass(frozen=True)
class Metric:
    """One row: where the figure sits in a system's result and how to judge it."""

    label: str
    path: Tuple[str, ...]
    unit: str
    better: str  # HIGHER or LOWER is better
    target: Optional[float] = None  # bound on ours/best Ray Serve mode; >= for HIGHER, <= for LOWER

    def target_text(self) -> str:
        """The target as written in the issue, e.g. ">=5x" or "<=1/5"."""
        if self.target is None:
            return ""
        if self.better == HIGHER:
            return f">={self.target:g}x"
        if self.target < 1:
            return f"<=1/{round(1 / self.target):g}"
        return f"<={self.target:g}x"


def _http(level: int, field: str, unit: str, better: str, target: Optional[float] = None) -> Metric:
    names = {"rps": "req/s", "p50_ms": "p50", "p99_ms": "p99"}
    return Metric(f"HTTP no-op {names[field]} @{level}", ("http_noop", str(level), field), unit, better, target)


def _cpu(role: str, text: str, level: int) -> Metric:
    return Metric(f"CPU/request {text} @{level}", (f"cpu_at_{level}", "us_per_request", role), "us", LOWER)


def metrics(handle_calls: int = 2000, top_level: int = 64) -> List[Metric]:
    """Every row of the table, in order; the arguments only label rows. Targets are
    issue #14's, on the ratio to the fastest Ray Serve mode of the same run.

    `top_level` is the highest connection level, the one the CPU and the
    2-replica figures are taken at.
    """
    return [
        _http(1, "rps", "req/s", HIGHER),
        _http(1, "p50_ms", "ms", LOWER, 1 / 2),
        _http(1, "p99_ms", "ms", LOWER),
        _http(16, "rps", "req/s", HIGHER),
        _http(16, "p50_ms", "ms", LOWER),
        _http(16, "p99_ms", "ms", LOWER),
        _http(64, "rps", "req/s", HIGHER, 2.0),
        _http(64, "p50_ms", "ms", LOWER),
        _http(64, "p99_ms", "ms", LOWER, 1 / 2),
        Metric(f"HTTP no-op req/s @{top_level}, 2 replicas", ("two_replicas", "rps"), "req/s", HIGHER),
        _cpu("proxy", "proxy (+haproxy)", top_level),
        _cpu("replica", "replica", top_level),
        _cpu("serving", "proxy+replica", top_level),
        Metric(f"Handle calls/s ({handle_calls} in flight)", ("handle", "calls_per_s"), "calls/s", HIGHER, 5.0),
        Metric("1 MiB echo req/s @8", ("echo", "rps"), "req/s", HIGHER, 2.0),
        Metric("1 MiB echo p50 @8", ("echo", "p50_ms"), "ms", LOWER),
        Metric("Composition req/s @16", ("composition", "rps"), "req/s", HIGHER, 3.0),
        Metric("Composition p50 @16", ("composition", "p50_ms"), "ms", LOWER),
        Metric("Composition p99 @16", ("composition", "p99_ms"), "ms", LOWER),
        Metric("Deploy to first 200", ("deploy_to_200_s",), "s", LOWER, 1.0),
        Metric("Serving actors RSS", ("memory", "rss_mib"), "MiB", LOWER, 1.0),
    ]


def lookup(result: Optional[Dict[str, Any]], path: Tuple[str, ...]) -> Optional[float]:
    """The number at `path` in a system's result, or None if absent or not finite."""
    node: Any = result
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    if not isinstance(node, (int, float)) or not math.isfinite(node):
        return None
    return float(node)


def judge(metric: Metric, ratio: Optional[float]) -> str:
    """PASS / MISS against the target, "" without a target, "n/a" without a ratio."""
    if metric.target is None:
        return ""
    if ratio is None:
        return "n/a"
    ok = ratio >= metric.target if metric.better == HIGHER else ratio <= metric.target
    return "PASS" if ok else "MISS"


def best_mode(values: Dict[str, Optional[float]], better: str) -> Optional[str]:
    """The Ray Serve mode with the best value (highest for HIGHER, lowest for LOWER).

    Modes without a value are skipped; on a tie the first in RAYSERVE_MODES
    wins; None if no mode has a value.
    """
    present = [(mode, values[mode]) for mode in RAYSERVE_MODES if values.get(mode) is not None]
    if not present:
        return None
    pick = max if better == HIGHER else min
    return pick(present, key=lambda item: float(item[1] or 0.0))[0]


def compare(
    systems: Dict[str, Dict[str, Any]], handle_calls: int = 2000, top_level: int = 64
) -> List[Dict[str, Any]]:
    """One dict per metric: the value of every system, the best Ray Serve mode, ratio ours/it, target, status."""
    rows = []
    for metric in metrics(handle_calls, top_level):
        values = {system: lookup(systems.get(system), metric.path) for system in ALL_SYSTEMS}
        mode = best_mode(values, metric.better)
        best = values[mode] if mode is not None else None
        ratio = _ratio(values["ours"], best)
        direct = _ratio(values["ours-direct"], best)
        rows.append({
            "metric": metric.label,
            "unit": metric.unit,
            "better": metric.better,
            **values,
            "best_rayserve_mode": mode,
            "best_rayserve": best,
            "ratio_ours_over_best_rayserve": ratio,
            "ratio_direct_over_best_rayserve": direct,
            "target": metric.target_text() or None,
            "status": judge(metric, ratio) or None,
            "status_direct": judge(metric, direct) or None,
        })
    return rows


def _ratio(value: Optional[float], best: Optional[float]) -> Optional[float]:
    return value / best if value is not None and best else None


def _fmt_ratio(ratio: Optional[float]) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _fmt(value: Optional[float], unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("req/s", "calls/s"):
        return f"{value:,.0f}"
    if unit == "MiB":
        return f"{value:,.1f}"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def format_table(rows: List[Dict[str, Any]]) -> str:
    """A Markdown table (readable as plain text too): one row per figure, one column per system,
    then the fastest Ray Serve mode and how ours, as shipped and with direct ingress, compare."""
    columns = ["ours", "ours-direct", *RAYSERVE_MODES, "uvicorn"]
    header = ["Figure", "Unit", "Better", "ours", "ours direct", *(f"RS {MODE_LABELS[m]}" for m in RAYSERVE_MODES),
              "uvicorn", "best RS", "ours/best RS", "direct/best RS", "Target", "Status", "Status direct"]
    lines = [header]
    for row in rows:
        mode = row["best_rayserve_mode"]
        lines.append([
            row["metric"], row["unit"], row["better"],
            *(_fmt(row.get(system), row["unit"]) for system in columns),
            MODE_LABELS[mode] if mode else "-",
            _fmt_ratio(row["ratio_ours_over_best_rayserve"]), _fmt_ratio(row.get("ratio_direct_over_best_rayserve")),
            row["target"] or "", row["status"] or "", row.get("status_direct") or "",
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    first_number, ratio_col = 3, 3 + len(columns) + 1
    numeric = set(range(first_number, first_number + len(columns))) | {ratio_col, ratio_col + 1}

    def render(cells: List[str]) -> str:
        padded = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i in numeric else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([render(lines[0]), rule] + [render(line) for line in lines[1:]])
