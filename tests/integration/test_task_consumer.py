"""Task consumers on real Ray with the Celery adapter: a @serve.deployment @task_consumer
class consumes tasks the test enqueues, retries failures into the failed-task queue, sends
unknown tasks to the unprocessable queue and stops consuming when its app is deleted.

Celery runs on its filesystem broker and a file:// result backend inside the test's
tmp_path, so no broker service is needed.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List

import pytest

import ray_serving_ext as serve
from ray_serving_ext.schema import CeleryAdapterConfig, TaskProcessorConfig
from ray_serving_ext.task_consumer import instantiate_adapter_from_config, task_consumer, task_handler
from tests.utils import wait_for_condition

pytest.importorskip("celery", reason="celery is not installed (pip install 'ray_serving_ext[celery]')")

QUEUE, FAILED, UNPROCESSABLE = "tc_tasks", "tc_failed", "tc_unprocessable"
MAX_RETRIES = 2


def _atomic_filesystem_puts() -> None:
    """Make this process's kombu filesystem transport write each message atomically.

    kombu writes a message file in place, and a consumer listing the folder meanwhile
    moves it and reads it empty: Celery's worker then dies of the JSONDecodeError
    ("Unrecoverable error"), which failed this module's first test now and then. Each
    message is written under a name no queue matches, then renamed into place. It
    changes the test's broker only; it runs in the test process and in the replicas.
    """
    from kombu.transport import filesystem
    from kombu.utils.encoding import str_to_bytes
    from kombu.utils.json import dumps

    if getattr(filesystem.Channel._put, "atomic", False):
        return

    def _put(self: Any, queue: str, payload: Any, **kwargs: Any) -> None:
        name = f"{int(round(time.monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        with open(final + ".part", "wb") as f:
            f.write(str_to_bytes(dumps(payload)))
        os.replace(final + ".part", final)

    _put.atomic = True  # type: ignore[attr-defined]
    filesystem.Channel._put = _put


def _config(tmp_path: Path) -> TaskProcessorConfig:
    _atomic_filesystem_puts()
    queues = tmp_path / "broker"
    for folder in ("queues", "processed", "control", "results"):
        (queues / folder).mkdir(parents=True, exist_ok=True)
    return TaskProcessorConfig(
        queue_name=QUEUE,
        max_retries=MAX_RETRIES,
        failed_task_queue_name=FAILED,
        unprocessable_task_queue_name=UNPROCESSABLE,
        adapter_config=CeleryAdapterConfig(
            broker_url="filesystem://",
            backend_url=f"file://{queues / 'results'}",
            # kombu's filesystem transport: one folder both ways (producer and consumer
            # share it), processed messages kept, exchange bindings in control_folder.
            broker_transport_options={
                "data_folder_in": str(queues / "queues"), "data_folder_out": str(queues / "queues"),
                "store_processed": True, "processed_folder": str(queues / "processed"),
                "control_folder": str(queues / "control"), "polling_interval": 0.2,
            },
        ),
    )


def _consumer_app(config: TaskProcessorConfig, attempts_file: Path, max_ongoing_requests: int = 3,
                  health_check_period_s: float = 10) -> Any:
    @serve.deployment(max_ongoing_requests=max_ongoing_requests, graceful_shutdown_timeout_s=5,
                      graceful_shutdown_wait_loop_s=0.2, health_check_period_s=health_check_period_s)
    @task_consumer(task_processor_config=config)
    class Consumer:
        def __init__(self, offset: int) -> None:
            _atomic_filesystem_puts()  # before the consumer starts: its retries are puts too
            self.offset = offset

        @task_handler(name="add")
        def add(self, x: int, y: int) -> int:
            return x + y + self.offset

        @task_handler
        def always_fails(self, tag: str) -> None:
            with open(attempts_file, "a") as f:
                f.write(tag + "\n")
            raise ValueError(f"failing on purpose: {tag}")

        def __call__(self) -> str:
            return "still serves requests"

        def __del__(self) -> None:
            # Runs in the replica's teardown, after the consumer was told to stop.
            alive = sorted(t.name for t in threading.enumerate() if t.is_alive())
            (attempts_file.parent / "teardown_threads.json").write_text(json.dumps(alive))

    return Consumer.bind(100)


def _queued(config: TaskProcessorConfig, queue: str) -> List[Dict[str, Any]]:
    """The messages waiting in `queue` (nobody consumes the dead-letter queues):
    each as its Celery headers plus the decoded `args`."""
    folder = Path(config.adapter_config.broker_transport_options["data_folder_out"])
    messages = []
    for path in sorted(folder.glob(f"*.{queue}.msg")):
        payload = json.loads(path.read_text())
        args, _kwargs, _embed = json.loads(base64.b64decode(payload["body"]))
        messages.append({**payload["headers"], "args": args})
    return messages


def _status(adapter: Any, task_id: str, wanted: str) -> Any:
    result = adapter.get_task_status_sync(task_id)
    return result if result.status == wanted else None


def test_tasks_run_retry_and_dead_letter(serve_url, tmp_path):
    config = _config(tmp_path)
    attempts = tmp_path / "attempts.txt"
    handle = serve.run(_consumer_app(config, attempts), name="tc", route_prefix=None)
    assert handle.remote().result(timeout_s=30) == "still serves requests"
    producer = instantiate_adapter_from_config(config)

    sent = producer.enqueue_task_sync("add", args=[1, 2])
    assert sent.status == "PENDING" and sent.created_at is not None
    done = wait_for_condition(lambda: _status(producer, sent.id, "SUCCESS"), timeout=60,
                              message="the add task finished")
    assert done.result == 103 and done.id == sent.id

    failing = producer.enqueue_task_sync("always_fails", kwargs={"tag": "t1"})
    unknown = producer.enqueue_task_sync("no_such_task", args=["x"])
    wait_for_condition(lambda: _status(producer, failing.id, "FAILURE"), timeout=60,
                       message="the failing task failed for good")
    # The first run plus max_retries retries, then the failed-task queue.
    assert attempts.read_text().split() == ["t1"] * (MAX_RETRIES + 1)
    failed = wait_for_condition(lambda: _queued(config, FAILED), timeout=30)
    assert [(m["task"], m["args"][0]) for m in failed] == [("always_fails", failing.id)]
    assert "failing on purpose: t1" in failed[0]["args"][1]

    dead = wait_for_condition(lambda: _queued(config, UNPROCESSABLE), timeout=30)
    assert [(m["task"], m["args"][:2]) for m in dead] == [("no_such_task", ["no_such_task", unknown.id])]
    # It never ran: Celery records it as failed with NotRegistered.
    never_ran = producer.get_task_status_sync(unknown.id)
    assert never_ran.status == "FAILURE" and "no_such_task" in str(never_ran.result)
    assert type(never_ran.result).__name__ == "NotRegistered"


def test_consumer_runs_with_max_ongoing_requests_threads(serve_url, tmp_path):
    config = _config(tmp_path)
    serve.run(_consumer_app(config, tmp_path / "attempts.txt", max_ongoing_requests=4), name="tc_conc",
              route_prefix=None)
    producer = instantiate_adapter_from_config(config)
    pongs = wait_for_condition(producer.health_check_sync, timeout=60, message="the replica's worker answers ping")
    assert len(pongs) == 1 and list(pongs[0].values()) == [{"ok": "pong"}]
    (worker,) = pongs[0]
    assert worker.startswith(f"celery@{QUEUE}_")  # named after the replica

    stats = wait_for_condition(producer.get_metrics_sync, timeout=30, message="the worker reports stats")
    pool = stats[worker]["pool"]
    assert pool["max-concurrency"] == 4
    assert pool["implementation"] == "celery.concurrency.thread:TaskPool"  # the threads pool


def test_deleting_the_app_stops_the_consumer(serve_url, tmp_path):
    config = _config(tmp_path)
    serve.run(_consumer_app(config, tmp_path / "attempts.txt"), name="tc_stop", route_prefix=None)
    producer = instantiate_adapter_from_config(config)
    wait_for_condition(producer.health_check_sync, timeout=60, message="the replica's worker answers ping")

    serve.delete("tc_stop")
    # The replica's graceful teardown stopped the worker thread before the user's __del__ ran.
    teardown = json.loads((tmp_path / "teardown_threads.json").read_text())
    assert teardown and "celery-worker" not in teardown
    assert producer.health_check_sync() == []  # no worker answers any more
    late = producer.enqueue_task_sync("add", args=[1, 1])
    time.sleep(1.5)  # a negative check: 7 polling intervals of a worker, and nobody took the task
    assert producer.get_task_status_sync(late.id).status == "PENDING"
    assert [m["id"] for m in _queued(config, QUEUE)] == [late.id]


def test_a_consumer_that_stopped_by_itself_fails_its_health_check_and_is_replaced(serve_url, tmp_path):
    config = _config(tmp_path)
    serve.run(_consumer_app(config, tmp_path / "attempts.txt", health_check_period_s=1), name="tc_dead",
              route_prefix=None)
    producer = instantiate_adapter_from_config(config)
    (first,) = wait_for_condition(producer.health_check_sync, timeout=60, message="the replica's worker answers ping")[0]
    # End the worker behind the adapter's back, as Celery does on an unrecoverable error.
    producer._app.control.broadcast("shutdown", destination=[first])

    def a_new_worker() -> List[str]:
        names = [name for pong in producer.health_check_sync() for name in pong]
        return names if names and first not in names else []

    wait_for_condition(a_new_worker, timeout=90, message="a replacement replica's worker answers ping")
    sent = producer.enqueue_task_sync("add", args=[2, 3])
    done = wait_for_condition(lambda: _status(producer, sent.id, "SUCCESS"), timeout=60, message="it consumes")
    assert done.result == 105
