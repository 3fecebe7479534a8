"""The comparison table: each figure for ours, Ray Serve and uvicorn, the ratio
ours/Ray Serve, and PASS/MISS against the targets of issue #5."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

HIGHER = "higher"
LOWER = "lower"


@dataclass(frozen=True)
class Metric:
    """One row: where the figure sits in a system's result and how to judge it."""

    label: str
    path: Tuple[str, ...]
    unit: str
    better: str  # HIGHER or LOWER is better
    target: Optional[float] = None  # bound on ours/Ray Serve; >= for HIGHER, <= for LOWER

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


def metrics(handle_calls: int = 2000) -> List[Metric]:
    """Every row of the table, in order; `handle_calls` only labels the handle row."""
    return [
        _http(1, "rps", "req/s", HIGHER),
        _http(1, "p50_ms", "ms", LOWER, 1 / 3),
        _http(1, "p99_ms", "ms", LOWER),
        _http(16, "rps", "req/s", HIGHER),
        _http(16, "p50_ms", "ms", LOWER),
        _http(16, "p99_ms", "ms", LOWER),
        _http(64, "rps", "req/s", HIGHER, 5.0),
        _http(64, "p50_ms", "ms", LOWER),
        _http(64, "p99_ms", "ms", LOWER, 1 / 5),
        Metric(f"Handle calls/s ({handle_calls} in flight)", ("handle", "calls_per_s"), "calls/s", HIGHER, 5.0),
        Metric("1 MiB echo req/s @8", ("echo", "rps"), "req/s", HIGHER, 2.0),
        Metric("1 MiB echo p50 @8", ("echo", "p50_ms"), "ms", LOWER),
        Metric("Composition req/s @16", ("composition", "rps"), "req/s", HIGHER, 2.0),
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


def compare(systems: Dict[str, Dict[str, Any]], handle_calls: int = 2000) -> List[Dict[str, Any]]:
    """One dict per metric: values per system, ratio ours/Ray Serve, target and status."""
    rows = []
    for metric in metrics(handle_calls):
        ours = lookup(systems.get("ours"), metric.path)
        rayserve = lookup(systems.get("rayserve"), metric.path)
        ratio = ours / rayserve if ours is not None and rayserve else None
        rows.append({
            "metric": metric.label,
            "unit": metric.unit,
            "better": metric.better,
            "ours": ours,
            "rayserve": rayserve,
            "uvicorn": lookup(systems.get("uvicorn"), metric.path),
            "ratio_ours_over_rayserve": ratio,
            "target": metric.target_text() or None,
            "status": judge(metric, ratio) or None,
        })
    return rows


def _fmt(value: Optional[float], unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("req/s", "calls/s"):
        return f"{value:,.0f}"
    if unit == "MiB":
        return f"{value:,.1f}"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def format_table(rows: List[Dict[str, Any]]) -> str:
    """A Markdown table (readable as plain text too)."""
    header = ["Figure", "Unit", "Better", "ours", "Ray Serve", "uvicorn", "ours/RS", "Target", "Status"]
    lines = [header]
    for row in rows:
        ratio = row["ratio_ours_over_rayserve"]
        lines.append([
            row["metric"], row["unit"], row["better"],
            _fmt(row["ours"], row["unit"]), _fmt(row["rayserve"], row["unit"]), _fmt(row["uvicorn"], row["unit"]),
            "-" if ratio is None else f"{ratio:.2f}x",
            row["target"] or "", row["status"] or "",
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = set(range(3, 7))

    def render(cells: List[str]) -> str:
        padded = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i in numeric else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([render(lines[0]), rule] + [render(line) for line in lines[1:]])
