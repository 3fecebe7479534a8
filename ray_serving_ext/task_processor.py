"""The Celery task processor adapter (Ray Serve 2.60's `ray.serve.task_processor`).

`CeleryTaskProcessorAdapter` runs a Celery worker in a thread of the replica
(the "threads" pool, as many threads as the consumer concurrency), consuming
`TaskProcessorConfig.queue_name`. Tasks are acknowledged only once they
finished (acks_late) and requeued when the worker is lost; a handler that
raises is retried with exponential backoff up to `max_retries` times and then
sent, if configured, to the failed-task queue; a task without a handler goes to
the unprocessable-task queue. Results are stored in the result backend.

Celery is an optional dependency (`pip install 'ray_serving_ext[celery]'`): it
is imported only when an adapter is created, so this module imports without it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional

from ray_serving_ext.context import _get_replica_context_or_none
from ray_serving_ext.schema import (
    DEFAULT_CONSUMER_CONCURRENCY, CeleryAdapterConfig, TaskProcessorAdapter, TaskProcessorConfig, TaskResult,
)

__all__ = ["CeleryTaskProcessorAdapter"]

logger = logging.getLogger("ray_serving_ext.task_processor")

# Settings the adapter owns: app_custom_config may not change them.
CELERY_MANAGED_APP_CONFIG = (
    "worker_pool", "worker_concurrency", "task_ignore_result", "task_acks_late", "task_reject_on_worker_lost",
)
# The worker runs inside a replica process that is not Celery's: by default it leaves
# the process's stdout/stderr and root logger alone (app_custom_config may turn them on).
_PROCESS_FRIENDLY_APP_CONFIG = {"worker_redirect_stdouts": False, "worker_hijack_root_logger": False}
# Retry backoff: exponential (1 s, 2 s, 4 s, ...), capped, without jitter.
_RETRY_BACKOFF_MAX_S = 60
_CELERY_MISSING = (
    "The Celery task processor adapter needs Celery, which is not installed. "
    "Install it with: pip install 'ray_serving_ext[celery]'"
)


def _import_celery() -> Any:
    """The `celery` package, or an ImportError that says how to install it."""
    try:
        import celery
        import celery.signals  # noqa: F401 - the adapter connects to its signals
    except ImportError as exc:
        raise ImportError(_CELERY_MISSING) from exc
    return celery


class CeleryTaskProcessorAdapter(TaskProcessorAdapter):
    """A `TaskProcessorAdapter` on Celery. Its operations are synchronous (the
    `*_async` methods run them in a thread)."""

    def __init__(self, config: TaskProcessorConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._celery = _import_celery()
        if not isinstance(config.adapter_config, CeleryAdapterConfig):
            raise TypeError("TaskProcessorConfig.adapter_config must be an instance of CeleryAdapterConfig")
        custom = config.adapter_config.app_custom_config or {}
        conflicting = sorted(set(custom) & set(CELERY_MANAGED_APP_CONFIG))
        if conflicting:
            raise ValueError(
                f"The following configuration keys cannot be changed via app_custom_config: {conflicting}. "
                "These are managed internally by the CeleryTaskProcessorAdapter.")
        self._config = config
        self._app: Any = None
        self._worker_thread: Optional[threading.Thread] = None
        self._worker_hostname: Optional[str] = None

    # ---- setup ---------------------------------------------------------------------------
    def initialize(self, consumer_concurrency: int = DEFAULT_CONSUMER_CONCURRENCY) -> None:
        """Create the Celery app: queues, routing, reliability settings and dead-letter hooks."""
        config, adapter_config = self._config, self._config.adapter_config
        self._app = self._celery.Celery(config.queue_name, broker=adapter_config.broker_url,
                                        backend=adapter_config.backend_url)
        settings: Dict[str, Any] = {
            **_PROCESS_FRIENDLY_APP_CONFIG,
            "worker_pool": "threads",
            "worker_concurrency": consumer_concurrency,
            "task_ignore_result": False,  # results are looked up by get_task_status_sync
            "task_acks_late": True,  # a task is acknowledged only once it finished
            "task_reject_on_worker_lost": True,  # and requeued if its worker died meanwhile
            **(adapter_config.app_custom_config or {}),
        }
        queues = [config.queue_name, config.failed_task_queue_name, config.unprocessable_task_queue_name]
        settings["task_queues"] = {
            q: {"exchange": q, "exchange_type": "direct", "routing_key": q} for q in queues if q
        }
        settings["task_routes"] = {"*": {"queue": config.queue_name}}
        if adapter_config.broker_transport_options is not None:
            settings["broker_transport_options"] = adapter_config.broker_transport_options
        self._app.conf.update(settings)
        # Celery's signals are process-wide; the handlers ignore other apps' tasks. They are
        # held weakly, so an adapter that is dropped stops receiving them.
        if config.failed_task_queue_name:
            self._celery.signals.task_failure.connect(self._handle_task_failure)
        if config.unprocessable_task_queue_name:
            self._celery.signals.task_unknown.connect(self._handle_unknown_task)

    def register_task_handle(self, func: Callable, name: Optional[str] = None) -> None:
        """Register `func` as the Celery task `name`, retried per max_retries with backoff."""
        if inspect.iscoroutinefunction(func):
            raise NotImplementedError(
                "Async task handlers are not supported yet. Please use synchronous functions for task handlers.")
        options: Dict[str, Any] = {
            "autoretry_for": (Exception,),
            "retry_kwargs": {"max_retries": self._config.max_retries},
            "retry_backoff": True,
            "retry_backoff_max": _RETRY_BACKOFF_MAX_S,
            "retry_jitter": False,
            **(self._config.adapter_config.task_custom_config or {}),
        }
        if name:
            options["name"] = name
        self._app.task(**options)(func)

    # ---- producing and looking up --------------------------------------------------------
    def enqueue_task_sync(self, task_name: str, args: Optional[Any] = None, kwargs: Optional[Any] = None,
                          **options: Any) -> TaskResult:
        """Send the task to the consumer queue; `options` go to Celery's send_task."""
        sent = self._app.send_task(task_name, args=args, kwargs=kwargs, queue=self._config.queue_name, **options)
        return TaskResult(id=sent.id, status=sent.status, created_at=time.time(), result=sent.result)

    def get_task_status_sync(self, task_id: str) -> TaskResult:
        """The task's state in the result backend (PENDING until a worker reported on it)."""
        found = self._app.AsyncResult(task_id)
        return TaskResult(id=found.id, status=found.status, result=found.result)

    def cancel_task_sync(self, task_id: str) -> None:
        """Revoke the task (Celery honours this with brokers that support broadcast)."""
        self._app.control.revoke(task_id)

    def get_metrics_sync(self) -> Dict[str, Any]:
        """Celery's per-worker stats (`inspect().stats()`); None when no worker answered."""
        return self._app.control.inspect().stats()

    def health_check_sync(self) -> List[Dict]:
        """Celery's ping: `[{"celery@<hostname>": {"ok": "pong"}}, ...]`, one entry per live worker."""
        return self._app.control.ping()

    async def enqueue_task_async(self, task_name: str, args: Optional[Any] = None, kwargs: Optional[Any] = None,
                                 **options: Any) -> TaskResult:
        return await asyncio.to_thread(self.enqueue_task_sync, task_name, args, kwargs, **options)

    async def get_task_status_async(self, task_id: str) -> TaskResult:
        return await asyncio.to_thread(self.get_task_status_sync, task_id)

    async def cancel_task_async(self, task_id: str) -> None:
        await asyncio.to_thread(self.cancel_task_sync, task_id)

    async def get_metrics_async(self) -> Dict[str, Any]:
        return await asyncio.to_thread(self.get_metrics_sync)

    async def health_check_async(self) -> List[Dict]:
        return await asyncio.to_thread(self.health_check_sync)

    # ---- the worker ----------------------------------------------------------------------
    def start_consumer(self, **kwargs: Any) -> None:
        """Start the Celery worker in a thread (no-op when it already runs)."""
        if self._worker_thread is not None and self._worker_thread.is_alive():
            logger.info("Celery worker thread is already running.")
            return
        # One worker per replica: named after the replica, so stop_consumer can address it.
        context = _get_replica_context_or_none()
        unique_id = context.replica_tag if context is not None else uuid.uuid4().hex
        self._worker_hostname = f"{self._app.main}_{unique_id}"
        argv = ["worker", f"--hostname={self._worker_hostname}", "-Q", self._config.queue_name]
        # A daemon thread: a replica that is killed outright must not wait for it.
        self._worker_thread = threading.Thread(target=self._app.worker_main, args=(argv,),
                                               name="celery-worker", daemon=True)
        self._worker_thread.start()
        logger.info("Celery worker thread started with hostname: %s", self._worker_hostname)

    def consumer_running(self) -> bool:
        """Whether the worker thread started by `start_consumer` still runs (Celery ends it
        on an unrecoverable error, e.g. a broker message it cannot decode)."""
        return self._worker_thread is not None and self._worker_thread.is_alive()

    def stop_consumer(self, timeout: float = 10.0) -> None:
        """Ask the worker to shut down (it finishes running tasks) and wait up to `timeout` s."""
        thread = self._worker_thread
        if thread is None or not thread.is_alive():
            logger.info("Celery worker thread is not running.")
            return
        try:
            self._app.control.broadcast("shutdown", destination=[f"celery@{self._worker_hostname}"])
        except Exception:  # noqa: BLE001 - e.g. the broker is gone; the daemon thread dies with the process
            logger.exception("Could not send the shutdown command to Celery worker %s.", self._worker_hostname)
        thread.join(timeout=timeout)
        if thread.is_alive():
            logger.warning("Celery worker thread did not terminate after %s seconds.", timeout)
        else:
            logger.info("Celery worker thread has stopped.")
        self._worker_thread = None

    # ---- dead-letter queues --------------------------------------------------------------
    def _handle_task_failure(self, sender: Any = None, task_id: Optional[str] = None, args: Any = None,
                             kwargs: Any = None, einfo: Any = None, **_: Any) -> None:
        """On a task's final failure (retries exhausted): send it to the failed-task queue as
        [task_id, exception, args, kwargs, traceback]."""
        if getattr(sender, "app", None) is not self._app or not self._config.failed_task_queue_name:
            return
        exception = getattr(einfo, "exception", None)
        self._move_task_to_queue(self._config.failed_task_queue_name, sender.name,
                                 [task_id, str(exception), str(args), str(kwargs), str(einfo)])
        logger.error("Task %s failed after max retries. Exception: %s. Moved it to the %s queue.",
                     task_id, exception, self._config.failed_task_queue_name)

    def _handle_unknown_task(self, sender: Any = None, name: Optional[str] = None, id: Optional[str] = None,
                             message: Any = None, exc: Any = None, **kwargs: Any) -> None:
        """On a task no handler is registered for: send it to the unprocessable-task queue as
        [name, id, message, exception, extra]."""
        if getattr(sender, "app", None) is not self._app or not self._config.unprocessable_task_queue_name:
            return
        logger.info("Unknown task detected by Celery. Name: %s, ID: %s, Exc: %s", name, id, exc)
        self._move_task_to_queue(self._config.unprocessable_task_queue_name, name,
                                 [name, id, str(message), str(exc), str(kwargs)])

    def _move_task_to_queue(self, queue_name: str, task_name: Optional[str], args: List[Any]) -> None:
        logger.info("Moving task %s to queue %s.", task_name, queue_name)
        try:
            self._app.send_task(name=task_name, queue=queue_name, args=args)
        except Exception:
            logger.exception("Failed to move task %s to queue %s.", task_name, queue_name)
            raise
