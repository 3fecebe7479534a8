"""Autoscaling: from reported load to a target number of replicas.

Callers (handles and proxies) report, per deployment, the requests they have
queued plus in flight. The controller keeps each source's reports for
`look_back_period_s`, averages each over the window, sums across sources,
and proposes `ceil(total / target_ongoing_requests)` (moved toward by the
up/down-scaling factor, clamped to [min_replicas, max_replicas]). A proposal
above the current target is applied once it has held for `upscale_delay_s`,
one below after `downscale_delay_s`, in wall-clock time. With no replica at
all and a request waiting, it scales to at least one at once (cold start).
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Deque, Dict, Optional, Tuple

from ray_serving_ext.config import AutoscalingConfig

# A source that stopped reporting (process gone) is forgotten after this long.
SOURCE_TTL_S = 30.0


class LoadWindow:
    """Timestamped load reports from many sources for one deployment."""

    def __init__(self) -> None:
        self._samples: Dict[str, Deque[Tuple[float, float]]] = {}

    def record(self, source: str, value: float, now: Optional[float] = None) -> None:
        now = time.time() if now is None else now
        self._samples.setdefault(source, deque()).append((now, float(value)))

    def average_total(self, look_back_s: float, now: Optional[float] = None) -> float:
        """Sum over sources of each one's mean load within the window."""
        now = time.time() if now is None else now
        total = 0.0
        for source in list(self._samples):
            samples = self._samples[source]
            while samples and samples[0][0] < now - max(look_back_s, SOURCE_TTL_S):
                samples.popleft()
            if not samples:
                del self._samples[source]
                continue
            recent = [v for t, v in samples if t >= now - look_back_s]
            if not recent:  # nothing in the window: the latest value still stands
                recent = [samples[-1][1]]
            total += sum(recent) / len(recent)
        return total

    def latest_total(self) -> float:
        return sum(s[-1][1] for s in self._samples.values() if s)


def desired_replicas(config: AutoscalingConfig, total_load: float, current: int) -> int:
    """The replica count the policy wants now, before delays."""
    raw = math.ceil(total_load / config.target_ongoing_requests) if total_load > 0 else 0
    if raw > current:
        factor = config.get_upscaling_factor()
        wanted = current + math.ceil((raw - current) * factor) if factor != 1 else raw
    elif raw < current:
        factor = config.get_downscaling_factor()
        wanted = current - math.floor((current - raw) * factor) if factor != 1 else raw
    else:
        wanted = raw
    return max(config.min_replicas, min(config.max_replicas, wanted))


class AutoscalingState:
    """Per-deployment decision state: what was proposed since when."""

    def __init__(self, config: AutoscalingConfig, initial_target: int) -> None:
        self.config = config
        self.window = LoadWindow()
        self.target = initial_target
        self._up_since: Optional[float] = None
        self._down_since: Optional[float] = None
        self.last_total = 0.0
        self.last_desired = initial_target

    def update_config(self, config: AutoscalingConfig) -> None:
        self.config = config
        self.target = max(config.min_replicas, min(config.max_replicas, self.target))

    def decide(self, now: Optional[float] = None) -> int:
        """Advance the policy by one step; returns the (possibly new) target."""
        now = time.time() if now is None else now
        cfg = self.config
        total = self.window.average_total(cfg.look_back_period_s, now)
        self.last_total = total
        desired = desired_replicas(cfg, total, self.target)
        self.last_desired = desired
        if self.target == 0 and self.window.latest_total() > 0:
            self.target = max(1, desired)  # a request is waiting with no replica: cold start now
            self._up_since = self._down_since = None
            return self.target
        if desired > self.target:
            self._down_since = None
            self._up_since = self._up_since if self._up_since is not None else now
            if now - self._up_since >= cfg.upscale_delay_s:
                self.target, self._up_since = desired, None
        elif desired < self.target:
            self._up_since = None
            self._down_since = self._down_since if self._down_since is not None else now
            if now - self._down_since >= cfg.downscale_delay_s:
                self.target, self._down_since = desired, None
        else:
            self._up_since = self._down_since = None
        return self.target
