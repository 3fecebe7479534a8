"""`@serve.batch`: gather concurrent calls into one call on a list.

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def handle_batch(self, inputs: List[str]) -> List[str]:
        return model(inputs)

    async def __call__(self, request):
        return await self.handle_batch(await request.body())

Each caller passes one item and gets its own result back. A batch is sent
when it is full or when `batch_wait_timeout_s` has passed since its first
item arrived. If the function raises, every caller in that batch gets the
exception. The limits can be changed at run time (e.g. from `reconfigure`)
with `set_max_batch_size` / `set_batch_wait_timeout_s` on the decorated method.

An `async def` generator streams: each value it yields is a list with one
entry per caller, and each caller iterates its own entries. An entry that is
`StopIteration` (or `StopAsyncIteration`) ends that caller's stream while the
others go on. As in Ray Serve, a batch holding requests for several
multiplexed models is split into one call per model id.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Tuple

from ray_serving_ext.context import get_multiplexed_model_id

_STREAM_END = (StopIteration, StopAsyncIteration)


class _Item:
    """One caller's arguments; its future (cancelled when the caller goes away) and,
    for a streaming batch function, the queue its values arrive on."""

    __slots__ = ("args", "kwargs", "future", "stream", "model_id")

    def __init__(self, args: Tuple[Any, ...], kwargs: Dict[str, Any], future: asyncio.Future,
                 stream: Optional[asyncio.Queue] = None) -> None:
        self.args = args
        self.kwargs = kwargs
        self.future = future
        self.stream = stream
        self.model_id = get_multiplexed_model_id()


class _BatchQueue:
    """Items waiting for one batched function, drained by up to max_concurrent_batches workers."""

    def __init__(self, handler: Callable[..., Any], config: "_BatchConfig") -> None:
        self._handler = handler
        self._config = config
        self._queue: asyncio.Queue = asyncio.Queue()
        self._workers: List[asyncio.Task] = []
        self._deferred: Optional[_Item] = None  # took it, but it did not fit the last batch
        self._loop = asyncio.get_running_loop()

    def put(self, item: _Item) -> None:
        self._queue.put_nowait(item)
        self._workers = [w for w in self._workers if not w.done()]
        if len(self._workers) < self._config.max_concurrent_batches:
            self._workers.append(self._loop.create_task(self._run()))

    def _take(self) -> Optional[_Item]:
        """The next waiting item without blocking (a deferred item first), or None."""
        if self._deferred is not None:
            item, self._deferred = self._deferred, None
            return item
        return None if self._queue.empty() else self._queue.get_nowait()

    async def _wait_item(self, timeout: Optional[float]) -> Optional[_Item]:
        """The next item, waiting up to `timeout` seconds (None: forever); None on timeout."""
        item = self._take()
        if item is not None or (timeout is not None and timeout <= 0):
            return item
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def _size(self, batch: List[_Item]) -> int:
        size_fn = self._config.batch_size_fn
        if size_fn is None:
            return len(batch)
        return size_fn([_first_arg(item) for item in batch])

    async def _next_batch(self) -> List[_Item]:
        first = await self._wait_item(None)
        assert first is not None
        max_size = self._config.max_batch_size
        if self._config.batch_size_fn is not None and self._size([first]) > max_size:
            _fail_all([first], RuntimeError(
                "Size of item is greater than max_batch_size. Please increase the "
                "max_batch_size or check the implementation of the batch_size_fn."))
            return []
        batch = [first]
        deadline = self._loop.time() + self._config.batch_wait_timeout_s
        while self._size(batch) < max_size:
            item = await self._wait_item(deadline - self._loop.time())
            if item is None:
                break
            batch.append(item)
            if self._size(batch) > max_size:  # only with batch_size_fn: it waits for the next batch
                self._deferred = batch.pop()
                break
        return [item for item in batch if not item.future.done()]  # drop cancelled callers

    async def _run(self) -> None:
        while self._deferred is not None or not self._queue.empty():
            batch = await self._next_batch()
            if batch:
                await self._call(batch)

    async def _call(self, batch: List[_Item]) -> None:
        groups: Dict[str, List[_Item]] = {}
        for item in batch:  # one call per multiplexed model, as Ray Serve splits a batch
            groups.setdefault(item.model_id, []).append(item)
        if len(groups) == 1:
            await self._call_one(batch)
        else:
            await asyncio.gather(*[self._call_one(group) for group in groups.values()])

    async def _call_one(self, batch: List[_Item]) -> None:
        n_args = len(batch[0].args)
        if any(len(item.args) != n_args or item.kwargs.keys() != batch[0].kwargs.keys() for item in batch):
            _fail_all(batch, TypeError("All calls to a @serve.batch function must pass the same arguments."))
            return
        args = [[item.args[i] for item in batch] for i in range(n_args)]
        kwargs = {k: [item.kwargs[k] for item in batch] for k in batch[0].kwargs}
        if batch[0].stream is not None:
            await _stream_results(self._handler(*args, **kwargs), batch)
            return
        try:
            results = _checked(await self._handler(*args, **kwargs), len(batch))
        except Exception as exc:  # every caller of this batch sees the failure
            _fail_all(batch, exc)
            return
        for item, result in zip(batch, results):
            if not item.future.done():
                item.future.set_result(result)


def _checked(results: Any, n: int) -> List[Any]:
    results = list(results)
    if len(results) != n:
        raise TypeError(
            f"@serve.batch function returned {len(results)} results for a batch of {n} inputs; "
            "it must return one result per input, in order."
        )
    return results


_END = object()


async def _stream_results(generator: Any, batch: List[_Item]) -> None:
    """Hand each yielded list out, entry i to caller i; end each caller's stream when
    its entry is a StopIteration sentinel or the generator ends; an error reaches all."""
    open_items = set(range(len(batch)))
    try:
        async for results in generator:
            for i, result in enumerate(_checked(results, len(batch))):
                if i not in open_items:
                    continue
                if result in _STREAM_END or batch[i].future.done():  # the caller stopped, or went away
                    open_items.discard(i)
                    batch[i].stream.put_nowait((_END, None))
                else:
                    batch[i].stream.put_nowait((True, result))
            if not open_items:
                break
    except Exception as exc:
        for i in open_items:
            batch[i].stream.put_nowait((False, exc))
        return
    finally:
        await generator.aclose()
    for i in open_items:
        batch[i].stream.put_nowait((_END, None))


async def _read_stream(item: _Item) -> AsyncIterator[Any]:
    """One caller's values from a streaming batch; leaving early tells the batch it went away."""
    try:
        while True:
            kind, value = await item.stream.get()
            if kind is _END:
                return
            if kind is False:
                raise value
            yield value
    finally:
        if not item.future.done():
            item.future.cancel()


def _first_arg(item: _Item) -> Any:
    """The item a caller passed (what `batch_size_fn` measures)."""
    if item.args:
        return item.args[0]
    return next(iter(item.kwargs.values()), None)


def _fail_all(batch: List[_Item], exc: BaseException) -> None:
    for item in batch:
        if item.stream is not None:
            item.stream.put_nowait((False, exc))
        elif not item.future.done():
            item.future.set_exception(exc)


class _BatchConfig:
    def __init__(
        self,
        max_batch_size: int,
        batch_wait_timeout_s: float,
        max_concurrent_batches: int,
        batch_size_fn: Optional[Callable[[List[Any]], int]] = None,
    ) -> None:
        if batch_size_fn is not None and not callable(batch_size_fn):
            raise TypeError(f"batch_size_fn must be a callable or None, got {type(batch_size_fn)}")
        self.batch_size_fn = batch_size_fn
        self.max_batch_size = 0
        self.batch_wait_timeout_s = 0.0
        self.max_concurrent_batches = 0
        self.set_max_batch_size(max_batch_size)
        self.set_batch_wait_timeout_s(batch_wait_timeout_s)
        if not isinstance(max_concurrent_batches, int) or max_concurrent_batches < 1:
            raise ValueError("max_concurrent_batches must be an integer >= 1.")
        self.max_concurrent_batches = max_concurrent_batches

    def set_max_batch_size(self, value: int) -> None:
        if not isinstance(value, int) or value < 1:
            raise ValueError("max_batch_size must be an integer >= 1.")
        self.max_batch_size = value

    def set_batch_wait_timeout_s(self, value: float) -> None:
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError("batch_wait_timeout_s must be a number >= 0.")
        self.batch_wait_timeout_s = float(value)


def batch(
    _func: Optional[Callable[..., Any]] = None,
    /,
    max_batch_size: int = 10,
    batch_wait_timeout_s: float = 0.01,
    max_concurrent_batches: int = 1,
    batch_size_fn: Optional[Callable[[List[Any]], int]] = None,
) -> Any:
    """Make an async function (or method) that takes lists be called one item at a time.

    A batch holds at most `max_batch_size` items or, with `batch_size_fn`, items
    whose size (`batch_size_fn(list_of_items)`) is at most `max_batch_size`: an
    item that would overflow the batch waits for the next one, and an item too
    big on its own fails its caller with RuntimeError. As in Ray Serve 2.60 the
    function must be `async def`, or an `async def` generator to stream (a
    TypeError otherwise).
    """
    options = (max_batch_size, batch_wait_timeout_s, max_concurrent_batches, batch_size_fn)
    _BatchConfig(*options)  # bad options raise here, before any function is decorated

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        streaming = inspect.isasyncgenfunction(func)
        if not inspect.iscoroutinefunction(func) and not streaming:
            raise TypeError("Functions decorated with @serve.batch must be 'async def'")
        config = _BatchConfig(*options)
        is_method = next(iter(inspect.signature(func).parameters), None) == "self"
        queues: Dict[Any, _BatchQueue] = {}

        def queue_for(owner: Any) -> _BatchQueue:
            loop = asyncio.get_running_loop()
            key = (id(owner), id(loop))
            queue = queues.get(key)
            if queue is None:
                handler = functools.partial(func, owner) if is_method else func
                queue = queues[key] = _BatchQueue(handler, config)
            return queue

        def enqueue(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> _Item:
            owner = args[0] if is_method else None
            call_args = args[1:] if is_method else args
            item = _Item(call_args, kwargs, asyncio.get_running_loop().create_future(),
                         asyncio.Queue() if streaming else None)
            queue_for(owner).put(item)
            return item

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            return await enqueue(args, kwargs).future

        @functools.wraps(func)
        def stream_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            return _read_stream(enqueue(args, kwargs))

        if streaming:
            wrapper = stream_wrapper  # type: ignore[assignment]

        wrapper.set_max_batch_size = config.set_max_batch_size  # type: ignore[attr-defined]
        wrapper.set_batch_wait_timeout_s = config.set_batch_wait_timeout_s  # type: ignore[attr-defined]
        wrapper._serve_batch_config = config  # type: ignore[attr-defined]
        return wrapper

    return decorator(_func) if _func is not None else decorator
