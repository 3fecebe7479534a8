"""A replica's periodic `record_routing_stats()` report, for custom request routers.

If the deployment's class defines ``record_routing_stats(self) -> Dict[str, Any]``
(sync or async), the replica calls it once it is initialized and then every
``request_routing_stats_period_s``, each call bounded by
``request_routing_stats_timeout_s`` (both read from its current config, so a
reconfigure applies at the next call). Each result goes to the controller,
which hands it to every caller's router as ``RunningReplica.routing_stats``.
A call that raises, times out or returns something else than a dict with str
keys is logged and skipped; the next period tries again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ray_serving_ext._private.cluster import get_controller

logger = logging.getLogger("ray_serving_ext.replica")


def start_routing_stats(replica: Any) -> asyncio.Task | None:
    """Start the report loop on the running loop if the user class defines the method.

    `replica` is the ReplicaActor: this reads its `_user`, `_config`,
    `_shutting_down` and names.
    """
    instance = replica._user.instance if replica._user is not None else None
    fn = getattr(instance, "record_routing_stats", None)
    if not callable(fn):
        return None
    return asyncio.get_running_loop().create_task(_report(replica, fn))


def valid_routing_stats(result: Any) -> bool:
    """What may be reported: a dict keyed by str."""
    return isinstance(result, dict) and all(isinstance(k, str) for k in result)


async def _report(replica: Any, fn: Callable[[], Any]) -> None:
    user = replica._user
    first = True
    while not replica._shutting_down:
        config = replica._config.request_router_config
        if not first:
            await asyncio.sleep(config.request_routing_stats_period_s)
            if replica._shutting_down:
                return
        first = False
        try:
            result = await asyncio.wait_for(user.call_maybe_async(fn, control=True),
                                            config.request_routing_stats_timeout_s)
        except asyncio.TimeoutError:
            logger.error("record_routing_stats timed out after %ss.", config.request_routing_stats_timeout_s)
            continue
        except Exception:
            logger.exception("record_routing_stats raised.")
            continue
        if not valid_routing_stats(result):
            logger.error("record_routing_stats returned %r; expected a Dict[str, Any].", type(result).__name__)
            continue
        try:
            get_controller().record_routing_stats.remote(
                replica._app_name, replica._deployment_name, replica._replica_id, dict(result))
        except Exception:
            logger.warning("Could not send routing stats to the controller.", exc_info=True)
