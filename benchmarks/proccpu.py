"""CPU time of serving processes over a load run, and who listens on a port (Linux /proc).

psutil is not a dependency, so both read /proc directly:

- a process's CPU time is utime + stime of /proc/<pid>/stat (all its threads),
  in clock ticks; a process's children are sampled as separate pids;
- the process listening on a TCP port is found from /proc/net/tcp{,6} (the
  socket inode of the LISTEN entry) and the `socket:[inode]` links in
  /proc/<pid>/fd of the candidate processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set

CLK_TCK = os.sysconf("SC_CLK_TCK")
TCP_LISTEN = "0A"
CPU_METHOD = ("utime+stime from /proc/<pid>/stat over the run (all work of those processes, "
              "background included) / requests served")


def cpu_seconds(pid: int) -> Optional[float]:
    """utime + stime of `pid` in seconds, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # Fields after the parenthesised command name start at field 3 (state):
    # utime is field 14, stime field 15 (proc(5)).
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_name(pid: int) -> str:
    """The kernel's command name (/proc/<pid>/comm), e.g. "haproxy"; "" if unreadable."""
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def read_environ(pid: int) -> Dict[str, str]:
    """The environment `pid` was started with ({} if unreadable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            raw = fh.read()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env


@dataclass
class CpuWindow:
    """CPU seconds per group of pids between `start()` and `stop()`."""

    groups: Dict[str, List[int]]
    _before: Dict[int, Optional[float]] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)
    lost_pids: List[int] = field(default_factory=list)

    def start(self) -> None:
        """Sample every pid now."""
        self._before = {pid: cpu_seconds(pid) for pids in self.groups.values() for pid in pids}

    def stop(self) -> Dict[str, float]:
        """Sample again; the seconds each group used in between (a pid gone meanwhile counts 0)."""
        for group, pids in self.groups.items():
            total = 0.0
            for pid in pids:
                before, after = self._before.get(pid), cpu_seconds(pid)
                if before is None or after is None:
                    self.lost_pids.append(pid)
                    continue
                total += after - before
            self.seconds[group] = total
        return self.seconds

    def per_request_us(self, requests: int) -> Dict[str, float]:
        """Microseconds of CPU per request for each group."""
        if requests <= 0:
            return {}
        return {group: secs * 1e6 / requests for group, secs in self.seconds.items()}


def _listen_inodes(port: int) -> Set[str]:
    inodes: Set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                lines = fh.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == TCP_LISTEN and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def listener_pids(port: int, candidates: Iterable[int]) -> List[int]:
    """The pids among `candidates` holding a socket that listens on TCP `port`."""
    targets = {f"socket:[{inode}]" for inode in _listen_inodes(port)}
    found = []
    for pid in candidates:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                    found.append(pid)
                    break
            except OSError:
                continue
    return found
