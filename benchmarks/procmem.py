"""Resident memory of the serving actors, read from /proc (Linux).

Ray gives no public call for an actor's PID without the dashboard's state API,
and psutil is not a dependency of Ray. So: every Ray worker process sets its
title to ``ray::ClassName`` (``ray::ClassName.method`` while a sync method
runs) and idle workers are ``ray::IDLE``. The worker processes of the local
cluster this driver started are descendants of the driver (driver -> raylet ->
workers), so scanning only the driver's descendants never counts another
cluster on the same machine. Every descendant titled ``ray::...`` that is not
idle and not one of Ray's own agents is a serving actor; its own children (if
any) are added to it. The count is cross-checked against the named actors in
namespace "serve" (SERVE_CONTROLLER_ACTOR, SERVE_PROXY_ACTOR-*,
SERVE_REPLICA::*), which both systems use.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

RAY_SYSTEM_TITLES = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")
MIB = 1024 * 1024


@dataclass
class ActorProcess:
    """One serving-actor process and its memory (its own children included)."""

    pid: int
    title: str
    role: str
    rss_mib: float
    uss_mib: float
    tree: List[int]  # pid and its descendants (e.g. the haproxy child of HAProxyManager)


def _children_map() -> Dict[int, List[int]]:
    """ppid -> child pids, for every process visible in /proc."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after it.
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _descendants(pid: int, children: Dict[int, List[int]]) -> List[int]:
    out: List[int] = []
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        out.append(child)
        stack.extend(children.get(child, []))
    return out


def descendant_pids(root_pid: Optional[int] = None) -> List[int]:
    """Every live descendant of `root_pid` (default: this process)."""
    return _descendants(root_pid or os.getpid(), _children_map())


def process_title(pid: int) -> str:
    """The process title (argv[0] as rewritten by Ray), or "" if unreadable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return ""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip()


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _uss_kib(pid: int) -> int:
    """Unique set size: private clean + private dirty pages (smaps_rollup)."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1])
    except OSError:
        pass
    return total


def role_of(title: str) -> str:
    """controller / proxy / replica / other, from a Ray process title."""
    name = title[len("ray::") :]
    if "Controller" in name:
        return "controller"
    if "Proxy" in name:
        return "proxy"
    if "Replica" in name:
        return "replica"
    return "other"


def is_serving_actor(title: str) -> bool:
    """A Ray worker process running an actor that is not one of Ray's own."""
    return title.startswith("ray::") and not title.startswith(RAY_SYSTEM_TITLES)


def serving_actor_processes(root_pid: Optional[int] = None) -> List[ActorProcess]:
    """The serving-actor processes below `root_pid` (default: this process)."""
    children = _children_map()
    found: List[ActorProcess] = []
    for pid in _descendants(root_pid or os.getpid(), children):
        title = process_title(pid)
        if not is_serving_actor(title):
            continue
        tree = [pid] + _descendants(pid, children)
        found.append(
            ActorProcess(
                pid=pid,
                title=title,
                role=role_of(title),
                rss_mib=sum(_status_kib(p, "VmRSS") for p in tree) / 1024,
                uss_mib=sum(_uss_kib(p) for p in tree) / 1024,
                tree=tree,
            )
        )
    return sorted(found, key=lambda proc: (proc.role, proc.pid))


def pids_by_role(processes: List[ActorProcess]) -> Dict[str, List[int]]:
    """role -> every pid of that role's actor processes and their children."""
    groups: Dict[str, List[int]] = {}
    for proc in processes:
        groups.setdefault(proc.role, []).extend(proc.tree)
    return groups


def summarize(processes: List[ActorProcess], named_actors: int) -> Dict[str, object]:
    """Totals by role plus the per-process list, for the JSON result."""
    by_role: Dict[str, float] = {}
    for proc in processes:
        by_role[proc.role] = by_role.get(proc.role, 0.0) + proc.rss_mib
    return {
        "rss_mib": sum(p.rss_mib for p in processes),
        "uss_mib": sum(p.uss_mib for p in processes),
        "rss_mib_by_role": by_role,
        "process_count": len(processes),
        "named_serve_actors": named_actors,
        "processes": [asdict(p) for p in processes],
        "method": "/proc scan of the driver's descendants titled ray::<Class>",
    }
