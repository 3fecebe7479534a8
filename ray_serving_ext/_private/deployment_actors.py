"""The controller's side of deployment-scoped actors (Ray Serve 2.60's contract).

Each actor declared in a deployment's `deployment_actors` is created by the
controller, named `deployment_actor_name(deployment, name)` in namespace
"serve", detached and never restarted by Ray (`max_restarts=0`): the
controller checks it with `__ray_ready__` every
DEPLOYMENT_ACTOR_HEALTH_CHECK_PERIOD_S and recreates it when it has died or
failed DEPLOYMENT_ACTOR_HEALTH_CHECK_UNHEALTHY_THRESHOLD checks in a row. A
changed declaration (code, arguments or options) replaces the actor; a removed
one, or the deployment's deletion, kills it. A new actor is only created once
its name is free, so a replacement never attaches to the instance it replaces.
The deployment starts its replicas only once all its actors are ready.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray import cloudpickle

from ray_serving_ext._private.cluster import (
    PendingCall,
    get_serve_actor,
    kill_actor,
    start_named_actor,
)
from ray_serving_ext._private.common import DeploymentID, deployment_actor_name
from ray_serving_ext._private.constants import (
    DEPLOYMENT_ACTOR_HEALTH_CHECK_PERIOD_S,
    DEPLOYMENT_ACTOR_HEALTH_CHECK_TIMEOUT_S,
    DEPLOYMENT_ACTOR_HEALTH_CHECK_UNHEALTHY_THRESHOLD,
    DEPLOYMENT_ACTOR_MAX_START_FAILURES,
)

logger = logging.getLogger("ray_serving_ext.controller")


@dataclass
class _Actor:
    """One declared actor and where its current instance is in its life."""

    name: str
    ray_name: str
    version: str
    blob: bytes
    handle: Any = None
    ready: bool = False
    call: PendingCall | None = None  # the __ray_ready__ in flight (start or health check)
    call_sent_at: float = 0.0
    last_check: float = 0.0
    check_failures: int = 0
    start_failures: int = 0
    last_error: str = ""
    # Set when we killed an instance: its successor waits for the name to be free
    # (instead of adopting the dying instance, as after a controller restart).
    awaiting_release: bool = False


class DeploymentActors:
    """The deployment-scoped actors of one deployment; `update()` takes one step."""

    def __init__(self, deployment_id: DeploymentID,
                 start_actor: Callable[..., Any] = start_named_actor,
                 lookup: Callable[[str], Any] | None = None,
                 kill: Callable[[Any], None] = kill_actor) -> None:
        self.id = deployment_id
        self.actors: dict[str, _Actor] = {}
        self._start_actor = start_actor
        self._lookup = lookup or _live_actor
        self._kill = kill

    # ---- goal ------------------------------------------------------------------------
    def sync(self, declared: dict[str, tuple[str, bytes]]) -> None:
        """Make `declared` (name -> (version, pickled class/args/options)) the goal:
        actors no longer declared or declared differently are killed (the latter to be
        recreated); new ones are created by the next steps."""
        for name, entry in list(self.actors.items()):
            if name not in declared:
                self._stop(entry, reason="no longer declared")
                del self.actors[name]
            elif declared[name][0] != entry.version:
                self._stop(entry, reason="its declaration changed")
                entry.version, entry.blob, entry.start_failures = declared[name][0], declared[name][1], 0
        for name, (version, blob) in declared.items():
            if name not in self.actors:
                self.actors[name] = _Actor(name, deployment_actor_name(self.id, name), version, blob)

    def kill_all(self) -> None:
        """Kill every actor now (the deployment is gone or Serve shuts down)."""
        for entry in self.actors.values():
            self._stop(entry, reason="the deployment is deleted")
        self.actors.clear()

    # ---- one step --------------------------------------------------------------------
    def update(self) -> None:
        """Create missing actors, finish starting ones, health-check running ones."""
        now = time.time()
        for entry in self.actors.values():
            if entry.handle is None:
                self._try_start(entry, now)
            elif entry.call is not None and entry.call.done():
                self._on_reply(entry, now)
            elif entry.call is not None and entry.ready and now - entry.call_sent_at > DEPLOYMENT_ACTOR_HEALTH_CHECK_TIMEOUT_S:
                entry.call = None
                self._on_check_failed(entry, f"no health check reply in {DEPLOYMENT_ACTOR_HEALTH_CHECK_TIMEOUT_S}s")
            elif entry.call is None and now - entry.last_check >= DEPLOYMENT_ACTOR_HEALTH_CHECK_PERIOD_S:
                self._send_check(entry, now)

    def all_ready(self) -> bool:
        """True when every declared actor is running (vacuously, when none is)."""
        return all(entry.ready for entry in self.actors.values())

    def not_ready(self) -> list[str]:
        """The declared names whose actor is not running yet, sorted."""
        return sorted(name for name, entry in self.actors.items() if not entry.ready)

    def failure(self) -> str:
        """Why the deployment cannot run ('' unless an actor failed to start
        DEPLOYMENT_ACTOR_MAX_START_FAILURES times in a row)."""
        for entry in self.actors.values():
            if entry.start_failures >= DEPLOYMENT_ACTOR_MAX_START_FAILURES:
                return (f"Deployment actor '{entry.name}' failed to start {entry.start_failures} times in a row. "
                        f"Last error: {entry.last_error}")
        return ""

    # ---- internals -------------------------------------------------------------------
    def _try_start(self, entry: _Actor, now: float) -> None:
        if entry.start_failures >= DEPLOYMENT_ACTOR_MAX_START_FAILURES:
            return  # given up until the declaration changes
        existing = self._lookup(entry.ray_name)
        if existing is not None and entry.awaiting_release:
            return  # the instance we killed still holds the name
        entry.awaiting_release = False
        if existing is not None:  # left by a previous controller: adopt it
            entry.handle = existing
            self._send_check(entry, now)
            return
        try:
            cls, args, kwargs, options = cloudpickle.loads(entry.blob)
            entry.handle = self._start_actor(cls, entry.ray_name, options, args, kwargs)
        except Exception as exc:  # noqa: BLE001 - the user's class or options: a failed start
            entry.start_failures += 1
            entry.last_error = _one_line(exc)
            logger.warning("Could not create deployment actor %s of %s: %s", entry.name, self.id, entry.last_error)
            return
        logger.info("Creating deployment actor %s of %s as %s.", entry.name, self.id, entry.ray_name)
        self._send_check(entry, now)

    def _send_check(self, entry: _Actor, now: float) -> None:
        entry.call = PendingCall(entry.handle.__ray_ready__.remote())
        entry.call_sent_at = entry.last_check = now

    def _on_reply(self, entry: _Actor, now: float) -> None:
        call, entry.call = entry.call, None
        entry.last_check = now
        try:
            call.result()
        except ray.exceptions.RayActorError as exc:
            if not entry.ready:
                entry.start_failures += 1
            entry.last_error = _one_line(exc)
            logger.warning("Deployment actor %s of %s died: %s; recreating it.", entry.name, self.id, entry.last_error)
            self._stop(entry, reason="it died")
            return
        except Exception as exc:  # noqa: BLE001 - any other failure counts against its health
            self._on_check_failed(entry, _one_line(exc))
            return
        if not entry.ready:
            logger.info("Deployment actor %s of %s is ready.", entry.name, self.id)
        entry.ready, entry.check_failures, entry.start_failures = True, 0, 0

    def _on_check_failed(self, entry: _Actor, error: str) -> None:
        entry.check_failures += 1
        entry.last_error = error
        if entry.check_failures >= DEPLOYMENT_ACTOR_HEALTH_CHECK_UNHEALTHY_THRESHOLD:
            logger.warning("Deployment actor %s of %s failed %d health checks; recreating it.",
                           entry.name, self.id, entry.check_failures)
            self._stop(entry, reason="it failed its health checks")

    def _stop(self, entry: _Actor, reason: str) -> None:
        """Kill the current instance (if any); the entry is then due to be recreated."""
        if entry.handle is not None:
            logger.info("Killing deployment actor %s of %s: %s.", entry.name, self.id, reason)
            self._kill(entry.handle)
            entry.awaiting_release = True
        entry.handle, entry.call, entry.ready, entry.check_failures = None, None, False, 0


def _live_actor(ray_name: str) -> Any:
    """The actor holding `ray_name` in the serve namespace, or None."""
    try:
        return get_serve_actor(ray_name)
    except ValueError:
        return None


def _one_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else exc!r}"
