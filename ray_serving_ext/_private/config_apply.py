"""Applying a config from inside the controller: what the REST API's PUT does.

`serve-ext deploy` builds a config's applications (each imported in a Ray task
with its runtime_env) and then hands the controller the whole goal in one call
(`config_deploy.deploy_config`). A PUT to `/api/serve/applications/` does the
same, from the controller itself: the request is answered as soon as the body
is valid (as Ray Serve answers; builds can take minutes with a runtime_env),
and the build and deploy run in one worker thread, one config at a time, in
the order they came. A config whose apps cannot all be built changes nothing,
and the apps that failed show DEPLOY_FAILED with the reason, as with the CLI.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional

logger = logging.getLogger("ray_serving_ext.controller")

CALL_TIMEOUT_S = 120.0


class _InController:
    """What `deploy_config` asks of a client, answered by the controller's own methods
    (run on its event loop from the worker thread)."""

    def __init__(self, controller: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._controller = controller
        self._loop = loop

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=CALL_TIMEOUT_S)

    def get_serve_status(self) -> Any:
        return self._call(self._controller.get_serve_status())

    def get_http_options(self) -> Any:
        return self._call(self._controller.get_http_options())

    def deploy_applications(self, built: List[Any], configs: List[Optional[Dict[str, Any]]], delete_missing: bool,
                            target_capacity: Optional[float] = None) -> None:
        self._call(self._controller.deploy_applications(built, configs, delete_missing, target_capacity))

    def record_build_failures(self, failures: Dict[str, str]) -> None:
        self._call(self._controller.record_build_failures(failures))


class ConfigApplier:
    """Builds and deploys configs submitted by the REST API, one after another."""

    def __init__(self, controller: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._client = _InController(controller, loop)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serve-config-apply")

    def submit(self, schema: Any) -> None:
        """Apply `schema` (a validated ServeDeploySchema) declaratively, after those before it."""
        self._executor.submit(self._apply, schema)

    def _apply(self, schema: Any) -> None:
        from ray_serving_ext._private.config_deploy import AppBuildError, deploy_config

        try:
            self._warn_if_http_options_differ(schema)
            result = deploy_config(self._client, schema, declarative=True)
            logger.info("Applied a config from the REST API: %s deployed%s.", ", ".join(result.deployed) or "nothing",
                        f", {', '.join(result.deleted)} deleted" if result.deleted else "")
        except AppBuildError as exc:  # the failing apps' statuses say why; nothing changed
            logger.error("A config from the REST API was not applied: %s", exc)
        except Exception:
            logger.exception("A config from the REST API was not applied.")

    def _warn_if_http_options_differ(self, schema: Any) -> None:
        # HTTP options are fixed when Serve starts (as in Ray Serve, whose PUT logs the same warning):
        # the config's are compared field by field, only those it sets, and ignored.
        given = schema.http_options.model_dump(include=schema.http_options.model_fields_set)
        running = self._client.get_http_options().model_dump()
        differ = sorted(name for name, value in given.items() if name in running and running[name] != value)
        if differ:
            logger.warning("Serve is already running on this Ray cluster and its HTTP options cannot be updated "
                           "without restarting it; the config's %s differ from the running instance's and are "
                           "ignored.", differ)

    def stop(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
