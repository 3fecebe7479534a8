"""Task consumers without Ray: the schema models, @task_handler, instantiate_adapter_from_config,
the @task_consumer wrapper and the replica's start/stop hook (UserCallable), driven by an
in-memory TaskProcessorAdapter defined here; and the Celery adapter's checks and settings."""

from __future__ import annotations

import asyncio
import inspect
import queue
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest
from pydantic import ValidationError

from ray_serving_ext._private.task_consumer import TaskConsumerWrapper, start_task_consumer, stop_task_consumer
from ray_serving_ext.schema import (
    DEFAULT_CONSUMER_CONCURRENCY, CeleryAdapterConfig, TaskProcessorAdapter, TaskProcessorConfig, TaskResult,
)
from ray_serving_ext.task_consumer import instantiate_adapter_from_config, task_consumer, task_handler

REPO_ROOT = Path(__file__).resolve().parents[2]


class InMemoryAdapter(TaskProcessorAdapter):
    """A working adapter on a queue.Queue: `consumer_concurrency` threads run the handlers."""

    instances: List["InMemoryAdapter"] = []

    def __init__(self, config: TaskProcessorConfig) -> None:
        super().__init__()
        self.config = config
        self.handlers: Dict[str, Callable] = {}
        self.results: Dict[str, TaskResult] = {}
        self.tasks: "queue.Queue[Any]" = queue.Queue()
        self.threads: List[threading.Thread] = []
        self.concurrency: Optional[int] = None
        self.stops = 0
        InMemoryAdapter.instances.append(self)

    def initialize(self, consumer_concurrency: int = DEFAULT_CONSUMER_CONCURRENCY) -> None:
        self.concurrency = consumer_concurrency

    def register_task_handle(self, func: Callable, name: Optional[str] = None) -> None:
        self.handlers[name or func.__name__] = func

    def enqueue_task_sync(self, task_name: str, args: Optional[Any] = None, kwargs: Optional[Any] = None,
                          **options: Any) -> TaskResult:
        task_id = uuid.uuid4().hex
        self.results[task_id] = TaskResult(id=task_id, status="PENDING", result=None)
        self.tasks.put((task_id, task_name, args or [], kwargs or {}))
        return self.results[task_id]

    def get_task_status_sync(self, task_id: str) -> TaskResult:
        return self.results[task_id]

    def _consume(self) -> None:
        while (item := self.tasks.get()) is not None:
            task_id, name, args, kwargs = item
            try:
                result = TaskResult(id=task_id, status="SUCCESS", result=self.handlers[name](*args, **kwargs))
            except Exception as exc:  # noqa: BLE001 - recorded as the task's outcome
                result = TaskResult(id=task_id, status="FAILURE", result=exc)
            self.results[task_id] = result

    def start_consumer(self, **kwargs: Any) -> None:
        self.threads = [threading.Thread(target=self._consume, daemon=True) for _ in range(self.concurrency or 1)]
        for thread in self.threads:
            thread.start()

    def stop_consumer(self, timeout: float = 10.0) -> None:
        self.stops += 1
        for _ in self.threads:
            self.tasks.put(None)
        for thread in self.threads:
            thread.join(timeout)

    def cancel_task_sync(self, task_id: str) -> None:
        self.results[task_id] = TaskResult(id=task_id, status="REVOKED", result=None)

    def get_metrics_sync(self) -> Dict[str, Any]:
        return {"queued": self.tasks.qsize()}

    def health_check_sync(self) -> List[Dict]:
        return [{f"thread-{i}": {"ok": t.is_alive()}} for i, t in enumerate(self.threads)]


class NotAnAdapter:
    def __init__(self, config: Any) -> None:
        self.config = config


class BrokenAdapter(InMemoryAdapter):
    def initialize(self, consumer_concurrency: int = DEFAULT_CONSUMER_CONCURRENCY) -> None:
        raise ConnectionError("broker unreachable")


def _config(adapter: Any = InMemoryAdapter, **kwargs: Any) -> TaskProcessorConfig:
    return TaskProcessorConfig(queue_name="q", adapter=adapter, adapter_config={"any": "thing"}, **kwargs)


def _wait_status(adapter: TaskProcessorAdapter, task_id: str) -> TaskResult:
    for _ in range(500):
        result = adapter.get_task_status_sync(task_id)
        if result.status != "PENDING":
            return result
        threading.Event().wait(0.01)
    raise AssertionError(f"task {task_id} never ran")


# ---- schema -------------------------------------------------------------------------------

def test_task_processor_config_defaults_and_required_fields():
    config = TaskProcessorConfig(queue_name="q", adapter_config=CeleryAdapterConfig(broker_url="b", backend_url="r"))
    assert config.adapter == "ray_serving_ext.task_processor.CeleryTaskProcessorAdapter"
    assert config.max_retries == 3
    assert config.failed_task_queue_name is None and config.unprocessable_task_queue_name is None
    with pytest.raises(ValidationError, match="queue_name"):
        TaskProcessorConfig(adapter_config=None)
    with pytest.raises(ValidationError, match="adapter_config"):
        TaskProcessorConfig(queue_name="q")
    with pytest.raises(ValidationError, match="adapter"):
        TaskProcessorConfig(queue_name="q", adapter_config=None, adapter=42)
    assert TaskProcessorConfig(queue_name="q", adapter_config=None, adapter=InMemoryAdapter).adapter is InMemoryAdapter


def test_default_adapter_path_is_our_celery_adapter():
    from ray_serving_ext import task_processor

    module, _, name = TaskProcessorConfig.model_fields["adapter"].default.rpartition(".")
    assert module == task_processor.__name__ and getattr(task_processor, name) is task_processor.CeleryTaskProcessorAdapter


def test_celery_adapter_config_and_task_result():
    celery_config = CeleryAdapterConfig(broker_url="redis://h", backend_url="redis://h/1")
    assert (celery_config.app_custom_config, celery_config.task_custom_config,
            celery_config.broker_transport_options) == (None, None, None)
    with pytest.raises(ValidationError, match="backend_url"):
        CeleryAdapterConfig(broker_url="redis://h")
    result = TaskResult(id="t", status="SUCCESS", result={"x": 1})
    assert result.created_at is None and result.result == {"x": 1}
    with pytest.raises(ValidationError, match="result"):
        TaskResult(id="t", status="SUCCESS")


def test_models_have_ray_serves_fields():
    ray_schema = pytest.importorskip("ray.serve.schema", reason="ray[serve] is not installed")
    from ray_serving_ext import schema

    for name in ("CeleryAdapterConfig", "TaskProcessorConfig", "TaskResult"):
        theirs, ours = getattr(ray_schema, name), getattr(schema, name)
        assert set(ours.model_fields) == set(theirs.model_fields), name
        for field, info in theirs.model_fields.items():
            if field != "adapter":  # theirs defaults to Ray's adapter, ours to ours
                assert ours.model_fields[field].default == info.default, (name, field)
                assert ours.model_fields[field].is_required() == info.is_required(), (name, field)


def test_adapter_base_is_abstract_with_async_defaults():
    abstract = {"initialize", "register_task_handle", "enqueue_task_sync", "get_task_status_sync",
                "start_consumer", "stop_consumer", "cancel_task_sync", "get_metrics_sync", "health_check_sync"}
    assert TaskProcessorAdapter.__abstractmethods__ == abstract
    with pytest.raises(TypeError):
        TaskProcessorAdapter()
    adapter = InMemoryAdapter(_config())
    for method, args in [("enqueue_task_async", ("t",)), ("get_task_status_async", ("i",)),
                         ("cancel_task_async", ("i",)), ("get_metrics_async", ()), ("health_check_async", ())]:
        with pytest.raises(NotImplementedError, match=method):
            asyncio.run(getattr(adapter, method)(*args))


# ---- task_handler -------------------------------------------------------------------------

def test_task_handler_names_and_validation():
    @task_handler
    def plain(x):
        return x + 1

    @task_handler(name="custom")
    def named(x):
        return x * 2

    @task_handler()
    async def coro(x):
        return x - 1

    assert (plain._is_task_handler, plain._task_name, plain(1)) == (True, "plain", 2)
    assert (named._task_name, named.__name__, named(3)) == ("custom", "named", 6)
    assert inspect.iscoroutinefunction(coro) and coro._task_name == "coro" and asyncio.run(coro(1)) == 0
    for bad in ("", "   ", 3):
        with pytest.raises(ValueError, match="non-empty string"):
            task_handler(name=bad)


# ---- instantiate_adapter_from_config ------------------------------------------------------

@pytest.mark.parametrize("adapter", [InMemoryAdapter, f"{__name__}.InMemoryAdapter", f"{__name__}:InMemoryAdapter"])
def test_instantiate_adapter_by_class_or_path_and_use_it(adapter):
    instance = instantiate_adapter_from_config(_config(adapter))
    assert type(instance) is InMemoryAdapter and instance.concurrency == DEFAULT_CONSUMER_CONCURRENCY
    instance.register_task_handle(lambda a, b: a * b, "mul")
    instance.start_consumer()
    try:
        sent = instance.enqueue_task_sync("mul", args=[6, 7])
        assert _wait_status(instance, sent.id).result == 42
    finally:
        instance.stop_consumer()


def test_instantiate_adapter_errors():
    with pytest.raises(TypeError, match="must inherit from TaskProcessorAdapter"):
        instantiate_adapter_from_config(_config(NotAnAdapter))
    with pytest.raises(TypeError, match="string path or a callable class"):
        instantiate_adapter_from_config(TaskProcessorConfig.model_construct(queue_name="q", adapter=42,
                                                                            adapter_config=None))
    with pytest.raises(RuntimeError, match="Failed to initialize BrokenAdapter: broker unreachable"):
        instantiate_adapter_from_config(_config(BrokenAdapter))

    def exploding(config):
        raise KeyError("no")

    with pytest.raises(RuntimeError, match="Failed to instantiate exploding"):
        instantiate_adapter_from_config(_config(exploding))
    with pytest.raises(ValueError, match="invalid import path|must contain"):
        instantiate_adapter_from_config(_config("NoSeparator"))
    with pytest.raises(ImportError):
        instantiate_adapter_from_config(_config("no_such_module_xyz.Adapter"))
    with pytest.raises(AttributeError):
        instantiate_adapter_from_config(_config(f"{__name__}.NoSuchAdapter"))


# ---- task_consumer ------------------------------------------------------------------------

class _Base:
    @task_handler(name="inherited")
    def from_base(self) -> str:
        return f"base of {self.tag}"


def _consumer_class(config: TaskProcessorConfig, deleted: List[str]) -> type:
    @task_consumer(task_processor_config=config)
    class Consumer(_Base):
        """Adds an offset."""

        def __init__(self, offset: int) -> None:
            self.offset, self.tag = offset, "c"

        @task_handler
        def add(self, x: int) -> int:
            return x + self.offset

        @task_handler(name="boom")
        def fails(self) -> None:
            raise ValueError("boom")

        def not_a_task(self) -> None:
            pass

        def __del__(self) -> None:
            deleted.append(self.tag)

    return Consumer


def test_task_consumer_registers_bound_handlers_and_starts_and_stops():
    InMemoryAdapter.instances.clear()
    deleted: List[str] = []
    cls = _consumer_class(_config(), deleted)
    assert (cls.__name__, cls.__doc__, cls.__module__) == ("Consumer", "Adds an offset.", __name__)
    consumer = cls(10)
    assert isinstance(consumer, TaskConsumerWrapper) and isinstance(consumer, _Base)
    assert InMemoryAdapter.instances == []  # nothing happens before the replica's hook

    start_task_consumer(consumer, 3)
    (adapter,) = InMemoryAdapter.instances
    assert adapter.concurrency == 3 and len(adapter.threads) == 3
    assert sorted(adapter.handlers) == ["add", "boom", "inherited"]
    assert _wait_status(adapter, adapter.enqueue_task_sync("add", args=[5]).id).result == 15
    assert _wait_status(adapter, adapter.enqueue_task_sync("inherited").id).result == "base of c"
    failed = _wait_status(adapter, adapter.enqueue_task_sync("boom").id)
    assert failed.status == "FAILURE" and isinstance(failed.result, ValueError)

    stop_task_consumer(consumer)
    stop_task_consumer(consumer)  # idempotent
    assert adapter.stops == 1 and not any(t.is_alive() for t in adapter.threads)
    consumer.__del__()  # the user's __del__ still runs; the adapter is not stopped twice
    assert deleted == ["c"] and adapter.stops == 1


def test_task_consumer_rejects_bad_arguments():
    with pytest.raises(TypeError, match="TaskProcessorConfig"):
        task_consumer(task_processor_config={"queue_name": "q"})
    with pytest.raises(TypeError, match="decorates classes"):
        task_consumer(task_processor_config=_config())(lambda: None)


def test_start_failure_raises_and_stop_failure_is_logged(caplog):
    cls = _consumer_class(_config(BrokenAdapter), [])
    with pytest.raises(RuntimeError, match="broker unreachable"):
        start_task_consumer(cls(0), 2)

    class StopFails(InMemoryAdapter):
        def stop_consumer(self, timeout: float = 10.0) -> None:
            raise OSError("stuck")

    consumer = _consumer_class(_config(StopFails), [])(0)
    start_task_consumer(consumer, 1)
    stop_task_consumer(consumer)  # logged, not raised
    assert "Stopping the task consumer raised" in caplog.text
    start_task_consumer(object(), 1)  # other objects: no-ops
    stop_task_consumer(object())


def test_replica_hook_starts_with_max_ongoing_requests_and_stops_on_shutdown():
    from ray import cloudpickle

    from ray_serving_ext._private.user_callable import UserCallable

    InMemoryAdapter.instances.clear()
    user = UserCallable(cloudpickle.dumps(_consumer_class(_config(), [])), cloudpickle.dumps(((7,), {})), 4)

    async def lifecycle() -> InMemoryAdapter:
        await user.initialize(None)
        (adapter,) = InMemoryAdapter.instances
        assert adapter.concurrency == 4 and adapter.stops == 0
        assert _wait_status(adapter, adapter.enqueue_task_sync("add", args=[1]).id).result == 8
        assert await user.call("add", (2,), {}) == 9  # the methods still serve requests
        await user.shutdown()
        return adapter

    adapter = asyncio.run(lifecycle())
    assert adapter.stops == 1 and not any(t.is_alive() for t in adapter.threads)


# ---- the Celery adapter -------------------------------------------------------------------

def test_modules_import_without_celery_and_the_adapter_says_how_to_install_it():
    code = (
        "import sys; sys.modules['celery'] = None\n"
        "from ray_serving_ext import task_processor, task_consumer, schema\n"
        "config = schema.TaskProcessorConfig(queue_name='q', adapter_config=schema.CeleryAdapterConfig("
        "broker_url='memory://', backend_url='cache+memory://'))\n"
        "try:\n"
        "    task_consumer.instantiate_adapter_from_config(config)\n"
        "except ImportError as exc:\n"
        "    print('ImportError:', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ImportError:" in out.stdout and "pip install 'ray_serving_ext[celery]'" in out.stdout


def _celery_config(**kwargs: Any) -> TaskProcessorConfig:
    options = {"queue_name": "jobs", "failed_task_queue_name": "jobs_failed",
               "unprocessable_task_queue_name": "jobs_dead", "max_retries": 5}
    adapter_kwargs = {k: kwargs.pop(k) for k in ("app_custom_config", "task_custom_config") if k in kwargs}
    return TaskProcessorConfig(**{**options, **kwargs}, adapter_config=CeleryAdapterConfig(
        broker_url="memory://", backend_url="cache+memory://", **adapter_kwargs))


def test_celery_adapter_validates_its_config():
    pytest.importorskip("celery", reason="celery is not installed (pip install 'ray_serving_ext[celery]')")
    from ray_serving_ext.task_processor import CeleryTaskProcessorAdapter

    with pytest.raises(TypeError, match="CeleryAdapterConfig"):
        CeleryTaskProcessorAdapter(_config(CeleryTaskProcessorAdapter))
    with pytest.raises(ValueError, match=r"\['task_acks_late', 'worker_pool'\]"):
        CeleryTaskProcessorAdapter(_celery_config(app_custom_config={"worker_pool": "solo", "task_acks_late": False}))


def test_celery_adapter_settings_and_task_registration():
    pytest.importorskip("celery", reason="celery is not installed (pip install 'ray_serving_ext[celery]')")
    from ray_serving_ext.task_processor import CeleryTaskProcessorAdapter

    adapter = instantiate_adapter_from_config(_celery_config(
        adapter=CeleryTaskProcessorAdapter, app_custom_config={"result_expires": 60},
        task_custom_config={"retry_backoff_max": 5}))
    conf = adapter._app.conf
    assert (conf.worker_pool, conf.worker_concurrency, conf.task_acks_late, conf.task_reject_on_worker_lost,
            conf.task_ignore_result, conf.result_expires) == ("threads", DEFAULT_CONSUMER_CONCURRENCY, True, True,
                                                              False, 60)
    assert set(conf.task_queues) == {"jobs", "jobs_failed", "jobs_dead"}
    assert conf.task_routes == {"*": {"queue": "jobs"}}

    def work(x):
        return x

    adapter.register_task_handle(work, "work")
    task = adapter._app.tasks["work"]
    assert (task.autoretry_for, task.retry_kwargs, task.retry_backoff, task.retry_backoff_max, task.retry_jitter) \
        == ((Exception,), {"max_retries": 5}, True, 5, False)

    async def not_yet(x):
        return x

    with pytest.raises(NotImplementedError, match="Async task handlers"):
        adapter.register_task_handle(not_yet, "async_work")


def test_celery_adapter_enqueues_to_its_queue_sync_and_async():
    pytest.importorskip("celery", reason="celery is not installed (pip install 'ray_serving_ext[celery]')")
    adapter = instantiate_adapter_from_config(_celery_config())  # the default adapter: ours
    sent = adapter.enqueue_task_sync("work", args=[1], kwargs={"k": 2})
    assert sent.status == "PENDING" and sent.created_at is not None
    later = asyncio.run(adapter.enqueue_task_async("work", args=[2]))
    assert later.id != sent.id and asyncio.run(adapter.get_task_status_async(later.id)).status == "PENDING"
    with adapter._app.connection_for_read() as conn:  # both wait in the consumer queue, nowhere else
        ids = []
        for name in ("jobs", "jobs_failed", "jobs_dead"):
            with conn.SimpleQueue(name) as q:
                while q.qsize():
                    message = q.get(timeout=1)
                    ids.append((name, message.headers["id"], message.headers["task"]))
                    message.ack()
    assert sorted(ids) == sorted([("jobs", sent.id, "work"), ("jobs", later.id, "work")])
