"""Push of controller state to proxies and routers by long polling.

The controller (host) keeps a versioned snapshot per key; a client asks with
the versions it has and the call returns as soon as any key is newer, or
after LONG_POLL_TIMEOUT_S with nothing. While the controller is unreachable
clients keep the last snapshot they had, so routing goes on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Dict, Optional, Tuple

from ray_serving_ext._private.constants import LONG_POLL_RETRY_S, LONG_POLL_TIMEOUT_S

logger = logging.getLogger(__name__)


class LongPollHost:
    """Controller side: versioned snapshots and waiters."""

    def __init__(self) -> None:
        self._snapshots: Dict[str, Tuple[int, Any]] = {}
        self._changed = asyncio.Event()
        # Versions start from a per-controller-instance epoch so a restarted
        # controller never repeats a version a client already holds.
        import time

        self._epoch = int(time.time() * 1000) << 20

    def notify_changed(self, key: str, value: Any) -> None:
        version = self._snapshots[key][0] + 1 if key in self._snapshots else self._epoch
        self._snapshots[key] = (version, value)
        self._changed.set()
        self._changed = asyncio.Event()

    def get(self, key: str) -> Optional[Any]:
        entry = self._snapshots.get(key)
        return entry[1] if entry else None

    def _newer(self, versions: Dict[str, int]) -> Dict[str, Tuple[int, Any]]:
        return {
            key: self._snapshots[key]
            for key, version in versions.items()
            if key in self._snapshots and self._snapshots[key][0] != version
        }

    async def listen_for_change(self, versions: Dict[str, int], timeout_s: float = LONG_POLL_TIMEOUT_S) -> Dict[str, Tuple[int, Any]]:
        """Snapshots of the keys newer than `versions`; waits for one, up to timeout_s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            updates = self._newer(versions)
            if updates:
                return updates
            remaining = deadline - loop.time()
            if remaining <= 0:
                return {}
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                return {}


class LongPollClient:
    """Client side: one task that keeps `callbacks` fed with the newest snapshots."""

    def __init__(
        self,
        get_controller: Callable[[], Any],
        callbacks: Dict[str, Callable[[Any], None]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._get_controller = get_controller
        self._callbacks = dict(callbacks)
        self._versions: Dict[str, int] = {key: -1 for key in callbacks}
        self._loop = loop
        self._stopped = False
        self._task = loop.create_task(self._run())

    def stop(self) -> None:
        self._stopped = True
        self._task.cancel()

    async def _run(self) -> None:
        while not self._stopped:
            try:
                controller = self._get_controller()
                updates = await controller.listen_for_change.remote(dict(self._versions))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # controller restarting or gone: keep what we know
                logger.debug("long poll failed (%s); retrying", exc)
                await asyncio.sleep(LONG_POLL_RETRY_S)
                continue
            for key, (version, value) in updates.items():
                self._versions[key] = version
                try:
                    self._callbacks[key](value)
                except Exception:  # a bad callback must not stop updates
                    logger.exception("long poll callback for %s failed", key)
