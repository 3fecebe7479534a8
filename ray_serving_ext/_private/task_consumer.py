"""The replica's side of task consumers: what marks a user object as one, and the
two lifecycle steps the replica runs on it.

`ray_serving_ext.task_consumer.task_consumer` makes classes that inherit from
`TaskConsumerWrapper`. The replica (through UserCallable) calls
`start_task_consumer` right after the user constructor and `stop_task_consumer`
on graceful shutdown; both do nothing for any other object, so the replica
needs no knowledge of adapters.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("ray_serving_ext.task_consumer")


class TaskConsumerWrapper:
    """Base of every `@task_consumer` class: the hooks the replica calls."""

    def initialize_callable(self, consumer_concurrency: int) -> None:
        """Create the adapter, register the task handlers and start consuming."""
        raise NotImplementedError

    def _stop_task_consumer(self) -> None:
        """Stop consuming (no-op when never started or already stopped)."""
        raise NotImplementedError


def is_task_consumer(instance: Any) -> bool:
    """Whether `instance` is a `@task_consumer` deployment's user object."""
    return isinstance(instance, TaskConsumerWrapper)


def start_task_consumer(instance: Any, consumer_concurrency: int) -> None:
    """Start `instance`'s consumer with this concurrency, if it is a task consumer.

    Raises what the adapter raises, so a consumer that cannot start fails the
    replica's initialization (and the deployment reports it), as in Ray Serve.
    """
    if is_task_consumer(instance):
        instance.initialize_callable(consumer_concurrency)


def stop_task_consumer(instance: Any) -> None:
    """Stop `instance`'s consumer, if it is a task consumer; errors are logged, not raised,
    so the rest of the replica's teardown still runs."""
    if not is_task_consumer(instance):
        return
    try:
        instance._stop_task_consumer()
    except Exception:  # noqa: BLE001 - shutdown goes on; the failure is logged
        logger.exception("Stopping the task consumer raised.")
