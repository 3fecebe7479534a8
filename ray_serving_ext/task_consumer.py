"""Asynchronous inference: deployments that consume tasks from a queue (Ray Serve 2.60's
`ray.serve.task_consumer`).

    @serve.deployment
    @task_consumer(task_processor_config=config)
    class Worker:
        @task_handler(name="embed")
        def embed(self, text): ...

Each replica of such a deployment creates the configured `TaskProcessorAdapter`,
registers the class's `@task_handler` methods (bound to the replica's instance)
after the constructor, and starts the adapter's consumer with
`consumer_concurrency` = the deployment's `max_ongoing_requests`. The consumer is
stopped when the replica shuts down. Producers enqueue tasks with an adapter
from `instantiate_adapter_from_config(config)`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
from typing import Any, Callable, Optional, Type

from ray_serving_ext._private.config_types import parse_import_path
from ray_serving_ext._private.task_consumer import TaskConsumerWrapper
from ray_serving_ext.schema import DEFAULT_CONSUMER_CONCURRENCY, TaskProcessorAdapter, TaskProcessorConfig

__all__ = ["instantiate_adapter_from_config", "task_consumer", "task_handler"]

logger = logging.getLogger("ray_serving_ext.task_consumer")

# Class attributes copied from the user's class onto its wrapper, so the deployment
# keeps the user's name, docs and module.
_CLASS_METADATA = ("__name__", "__qualname__", "__module__", "__doc__")


def _resolve_adapter_class(adapter: Any) -> Callable[..., Any]:
    if isinstance(adapter, str):
        module_name, attr_path = parse_import_path(adapter)
        obj: Any = importlib.import_module(module_name)
        for part in attr_path.split("."):
            obj = getattr(obj, part)
        return obj
    if callable(adapter):
        return adapter
    raise TypeError(
        f"Adapter must be either a string path or a callable class, got {type(adapter).__name__}: {adapter}")


def _instantiate_adapter(task_processor_config: TaskProcessorConfig,
                         consumer_concurrency: int = DEFAULT_CONSUMER_CONCURRENCY) -> TaskProcessorAdapter:
    """Build the configured adapter from `task_processor_config` and initialize it.

    A missing optional dependency surfaces as the adapter's ImportError; any other
    failure of the constructor or of `initialize` as a RuntimeError naming the adapter.
    """
    adapter_class = _resolve_adapter_class(task_processor_config.adapter)
    name = getattr(adapter_class, "__name__", repr(adapter_class))
    try:
        adapter = adapter_class(task_processor_config)
    except ImportError:
        raise
    except Exception as exc:
        raise RuntimeError(f"Failed to instantiate {name}: {exc}") from exc
    if not isinstance(adapter, TaskProcessorAdapter):
        raise TypeError(f"{name} must inherit from TaskProcessorAdapter, got {type(adapter).__name__}")
    try:
        adapter.initialize(consumer_concurrency)
    except ImportError:
        raise
    except Exception as exc:
        raise RuntimeError(f"Failed to initialize {name}: {exc}") from exc
    return adapter


def instantiate_adapter_from_config(task_processor_config: TaskProcessorConfig) -> TaskProcessorAdapter:
    """An initialized adapter for `task_processor_config`, e.g. to enqueue tasks from a producer.

    `task_processor_config.adapter` is a `TaskProcessorAdapter` subclass or its import
    path ("pkg.module.Class" or "pkg.module:Class"). Raises ValueError for a malformed
    path, ImportError/AttributeError when it does not resolve, TypeError when the
    adapter is neither a string nor callable or does not build a
    `TaskProcessorAdapter`, RuntimeError when its constructor or `initialize` fails.
    """
    return _instantiate_adapter(task_processor_config)


def _task_handlers(cls: type) -> Any:
    """(method name, task name) for every `@task_handler` function of `cls` and its bases."""
    for attr, fn in inspect.getmembers(cls, predicate=inspect.isfunction):
        if getattr(fn, "_is_task_handler", False):
            yield attr, getattr(fn, "_task_name", attr)


def task_consumer(*, task_processor_config: TaskProcessorConfig) -> Callable[[type], type]:
    """Class decorator (used with arguments) that makes a class a task consumer.

    Returns a subclass of the decorated class that, in a replica, creates the
    adapter, registers its `@task_handler` methods and starts consuming after the
    constructor ran, and stops consuming when the replica shuts down. Apply
    `@serve.deployment` on top of it.
    """
    if not isinstance(task_processor_config, TaskProcessorConfig):
        raise TypeError(
            f"task_processor_config must be a TaskProcessorConfig, got {type(task_processor_config).__name__}.")

    def decorator(target_cls: Type[Any]) -> Type[Any]:
        if not inspect.isclass(target_cls):
            raise TypeError(f"@task_consumer decorates classes, got {type(target_cls).__name__}.")
        return _make_wrapper(target_cls, task_processor_config)

    return decorator


def _make_wrapper(target_cls: Type[Any], config: TaskProcessorConfig) -> Type[Any]:
    user_del = getattr(target_cls, "__del__", None)
    user_check = getattr(target_cls, "check_health", None)

    class _TaskConsumerWrapper(target_cls, TaskConsumerWrapper):  # type: ignore[misc, valid-type]
        _adapter: Optional[TaskProcessorAdapter] = None

        def initialize_callable(self, consumer_concurrency: int) -> None:
            adapter = _instantiate_adapter(config, consumer_concurrency)
            for attr, task_name in _task_handlers(target_cls):
                adapter.register_task_handle(getattr(self, attr), task_name)
            self._adapter = adapter
            adapter.start_consumer()
            logger.info("Task consumer started on queue '%s'.", config.queue_name)

        def check_health(self) -> Any:
            """Fails once the consumer has stopped by itself, so that the controller replaces
            a replica that would otherwise look healthy and consume nothing (unlike Ray
            Serve's, which goes on reporting it healthy); then the user's own check."""
            running = getattr(self._adapter, "consumer_running", None)
            if running is not None and not running():
                raise RuntimeError(f"The task consumer of queue '{config.queue_name}' has stopped.")
            return user_check(self) if user_check is not None else None

        def _stop_task_consumer(self) -> None:
            adapter, self._adapter = self._adapter, None
            if adapter is not None:
                adapter.stop_consumer()

        def __del__(self) -> None:
            # Also stop on collection (idempotent), then run the user's own __del__.
            self._stop_task_consumer()
            if user_del is not None:
                user_del(self)

    for attr in _CLASS_METADATA:
        if hasattr(target_cls, attr):
            setattr(_TaskConsumerWrapper, attr, getattr(target_cls, attr))
    _TaskConsumerWrapper.__wrapped__ = target_cls  # type: ignore[attr-defined]
    return _TaskConsumerWrapper


def task_handler(_func: Optional[Callable] = None, *, name: Optional[str] = None) -> Callable:
    """Mark a method of a `@task_consumer` class as the handler of tasks named `name`
    (default: the method's name). Use as `@task_handler` or `@task_handler(name=...)`.

    Raises ValueError when `name` is given but is not a non-empty string.
    """
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"Task name must be a non-empty string, got {name!r}")

    def decorator(fn: Callable) -> Callable:
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def handler(*args: Any, **kwargs: Any) -> Any:
                return await fn(*args, **kwargs)
        else:
            @functools.wraps(fn)
            def handler(*args: Any, **kwargs: Any) -> Any:
                return fn(*args, **kwargs)
        handler._is_task_handler = True  # type: ignore[attr-defined]
        handler._task_name = name or fn.__name__  # type: ignore[attr-defined]
        return handler

    return decorator(_func) if _func is not None else decorator
